"""MATLAB-exact ``imresize`` for numpy arrays and torch tensors.

Super-resolution papers make their LR images with MATLAB ``imresize(hr, 1/scale)``
(bicubic, uint8) and score with it too, so an SR kit must reproduce it pixel for
pixel. The facts taken from MATLAB's ``imresize.m`` that matter:

* Kernels: Keys cubic with ``a = -0.5`` (width 4), ``triangle`` (2), ``box`` and
  ``nearest`` (``-0.5 <= x < 0.5``, width 1), ``lanczos2`` (4), ``lanczos3`` (6).
* When shrinking with antialiasing the kernel is stretched by ``1/scale``
  (``h(x) = scale * k(scale * x)``, width ``w / scale``); weights are then
  normalised to sum 1 per output pixel, and all-zero weight columns are dropped.
* Output size is ``ceil(scale * in)``; with ``output_shape`` the scale of each
  dimension is ``out / in``.
* Source indices outside the image are CLAMPED to the border
  (``min(max(1, idx), in_len)``, i.e. edge pixels are replicated). Many Python
  ports mirror instead, which changes the border pixels. The SelfExSR LR files
  (the benchmark's reference) are reproduced only with clamping; MATLAB R2021a's
  NIQE value, on the other hand, is reproduced only when its ``imresize`` mirrors
  (``aux = [1:n, n:-1:1]``), so ``padding="symmetric"`` offers that too.
* Dimensions are resized one at a time, in order of increasing scale (height first
  on ties). For ``uint8`` input each pass is rounded back to ``uint8`` (half away
  from zero, saturating) before the next pass, because MATLAB's resize kernel
  returns the input class after every pass.

How: per dimension, the (indices, weights) table is built once (cached) and applied
as a sparse matrix product along that axis. The numpy path uses scipy CSR in
float64 with the taps stored in MATLAB's order, so every sum, and hence every uint8
rounding (ties at ``n + 0.5`` are common), is bit-identical to MATLAB's double
arithmetic. Float results are not rounded; since the passes then commute, the float
paths choose the cheaper pass order (differences ~1e-16).

Public functions: :func:`imresize` (numpy or torch, dispatching on type) and
:func:`imresize_torch` (torch only).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["imresize", "imresize_torch", "METHODS", "PADDINGS"]


# --------------------------------------------------------------------------- kernels
# Each kernel is written as in imresize.m, so that the float64 weights match.
def _cubic(x: np.ndarray) -> np.ndarray:
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    return (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1) + (
        -0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2
    ) * ((1 < absx) & (absx <= 2))


def _box(x: np.ndarray) -> np.ndarray:
    return ((-0.5 <= x) & (x < 0.5)).astype(np.float64)


def _triangle(x: np.ndarray) -> np.ndarray:
    return (x + 1) * ((-1 <= x) & (x < 0)) + (1 - x) * ((0 <= x) & (x <= 1))


_EPS = np.finfo(np.float64).eps  # MATLAB's eps, used to make lanczos(0) = 1


def _lanczos2(x: np.ndarray) -> np.ndarray:
    f = (np.sin(np.pi * x) * np.sin(np.pi * x / 2) + _EPS) / ((np.pi**2 * x**2 / 2) + _EPS)
    return f * (np.abs(x) < 2)


def _lanczos3(x: np.ndarray) -> np.ndarray:
    f = (np.sin(np.pi * x) * np.sin(np.pi * x / 3) + _EPS) / ((np.pi**2 * x**2 / 3) + _EPS)
    return f * (np.abs(x) < 3)


# method -> (kernel, kernel width)
METHODS: dict[str, tuple] = {
    "bicubic": (_cubic, 4.0),
    "cubic": (_cubic, 4.0),
    "bilinear": (_triangle, 2.0),
    "triangle": (_triangle, 2.0),
    "box": (_box, 1.0),
    "nearest": (_box, 1.0),
    "lanczos2": (_lanczos2, 4.0),
    "lanczos3": (_lanczos3, 6.0),
}


# How source indices outside the image are brought back inside: clamp (edge pixel
# replicated; the default) or mirror (``aux = [1:n, n:-1:1]``). See the module docstring.
PADDINGS = ("replicate", "symmetric")


# --------------------------------------------------------------------------- weights
@lru_cache(maxsize=128)
def _contributions(
    in_len: int, out_len: int, scale: float, method: str, antialiasing: bool, padding: str = "replicate"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-pixel source indices and weights along one dimension (imresize.m).

    Returns ``(indices, weights)``, both ``out_len x P``: 0-based ``int64`` indices
    in ``[0, in_len - 1]`` (clamped, or mirrored with ``padding="symmetric"``) and
    ``float64`` weights summing to 1 per row.
    Cached, as it depends only on its arguments; the arrays are read-only.
    """
    kernel, width = METHODS[method]
    if scale < 1 and antialiasing:
        # Stretch the kernel: it becomes a low-pass filter matched to the new rate.
        def h(x):
            return scale * kernel(scale * x)

        width = width / scale
    else:
        h = kernel
    x = np.arange(1, out_len + 1, dtype=np.float64)[:, None]  # 1-based output coords
    u = x / scale + 0.5 * (1 - 1 / scale)  # matching input coordinate
    left = np.floor(u - width / 2)
    p = int(math.ceil(width)) + 2  # max number of contributing input pixels
    indices = left + np.arange(p, dtype=np.float64)[None, :]
    weights = h(u - indices)
    weights = weights / np.sum(weights, axis=1, keepdims=True)
    if padding == "symmetric":  # mirror, edge pixel repeated: aux = [1:n, n:-1:1]
        period = np.mod(indices.astype(np.int64) - 1, 2 * in_len)
        indices = np.where(period < in_len, period, 2 * in_len - 1 - period)
    else:  # clamp (replicate the end points), as the MATLAB that made the benchmark's LR files
        indices = np.minimum(np.maximum(1, indices), in_len).astype(np.int64) - 1
    keep = np.any(weights != 0, axis=0)  # drop all-zero columns like MATLAB
    indices = np.ascontiguousarray(indices[:, keep])
    weights = np.ascontiguousarray(weights[:, keep])
    indices.setflags(write=False)
    weights.setflags(write=False)
    return indices, weights


# --------------------------------------------------------------------------- arguments
def _plan(
    in_hw: tuple[int, int],
    scale: float | Sequence[float] | None,
    output_shape: Sequence[int] | None,
    method: str,
    padding: str = "replicate",
) -> tuple[list[float], list[int]]:
    """Validate arguments; return the (height, width) scales and output sizes."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are: {', '.join(METHODS)}")
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}; valid paddings are: {', '.join(PADDINGS)}")
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of `scale` and `output_shape`")
    if scale is not None:
        if isinstance(scale, (int, float, np.integer, np.floating)):
            scales = [float(scale)] * 2
        else:
            scales = [float(s) for s in scale]
            if len(scales) != 2:
                raise ValueError(f"scale must be a number or (scale_h, scale_w), got {scale!r}")
        if not all(s > 0 and math.isfinite(s) for s in scales):
            raise ValueError(f"scale must be positive and finite, got {scale!r}")
        out = [int(math.ceil(s * n)) for s, n in zip(scales, in_hw)]  # MATLAB: ceil(scale*size)
    else:
        out = [int(o) for o in output_shape][:2] if len(output_shape) >= 2 else []
        if len(out) != 2 or any(o != v for o, v in zip(out, list(output_shape)[:2])):
            raise ValueError(f"output_shape must be (height, width) integers, got {output_shape!r}")
        if any(o <= 0 for o in out):
            raise ValueError(f"output_shape must be positive, got {output_shape!r}")
        scales = [o / n for o, n in zip(out, in_hw)]
    if any(n <= 0 for n in in_hw):
        raise ValueError(f"cannot resize an empty image of size {in_hw}")
    return scales, out


# --------------------------------------------------------------------------- numpy
@lru_cache(maxsize=64)
def _scipy_matrix(
    in_len: int, out_len: int, scale: float, method: str, antialiasing: bool, dtype: type = np.float64,
    padding: str = "replicate",
) -> sp.csr_matrix:
    """The ``out_len x in_len`` resampling matrix as scipy CSR (cached), float64 or float32.

    Entries are stored tap by tap, duplicates (clamped border taps) NOT merged, so
    ``matrix @ x`` accumulates ``w[o, 0] * x[idx[o, 0]] + w[o, 1] * x[...] + ...`` in
    exactly the order of MATLAB's loop: uint8 results then round like MATLAB's even
    where the sum lands on ``n + 0.5``.
    """
    idx, w = _contributions(in_len, out_len, scale, method, antialiasing, padding)
    p = idx.shape[1]
    indptr = np.arange(0, out_len * p + 1, p)
    return sp.csr_matrix((w.ravel().astype(dtype), idx.ravel(), indptr), shape=(out_len, in_len))


def _round_uint8(x: np.ndarray) -> np.ndarray:
    """Round half away from zero and saturate to uint8 (MATLAB's double -> uint8).

    Overwrites ``x`` (float64) on the way.
    """
    np.add(x, 0.5, out=x)
    np.floor(x, out=x)
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)


def _resize_axis_numpy(x: np.ndarray, m: sp.csr_matrix) -> np.ndarray:
    """One pass: resize the middle axis of a C-contiguous ``A x L x T`` array.

    ``m`` is the ``L' x L`` resampling matrix. float64 -> float64, float32 -> float32
    (``m`` of the same dtype), uint8 -> uint8 (float64 sums, rounded after the pass
    like MATLAB). Work is done in cache-sized blocks, so no full-size transpose is
    ever made: ``k`` slices ``x[a]`` at a time are laid out as ``L x (k*T)`` and
    multiplied by ``m``; a slice wider than a block (``HxW`` planes) is used as is.
    """
    n_a, in_len, n_t = x.shape
    out_len = m.shape[0]
    is_uint8 = x.dtype == np.uint8
    work = np.float64 if is_uint8 else x.dtype

    def apply(block: np.ndarray) -> np.ndarray:  # (in_len, k) -> (out_len, k)
        y = m @ np.asarray(block, dtype=work)
        return _round_uint8(y) if is_uint8 else y  # MATLAB returns uint8 after every pass

    if n_a == 1 and not is_uint8:
        return apply(x[0])[None]  # one big product, no copy
    out = np.empty((n_a, out_len, n_t), x.dtype)
    k = max(1, _BLOCK // n_t)
    for a0 in range(0, n_a, k):
        if k == 1 and not is_uint8:
            out[a0] = apply(x[a0])
        elif k == 1:  # uint8: column blocks keep the float64 copy and the rounding in cache
            for c0 in range(0, n_t, _BLOCK):
                out[a0, :, c0 : c0 + _BLOCK] = apply(x[a0, :, c0 : c0 + _BLOCK])
        else:
            block = x[a0 : a0 + k].swapaxes(0, 1)  # L x k' x T
            y = apply(np.ascontiguousarray(block).reshape(in_len, -1))
            out[a0 : a0 + k] = y.reshape(out_len, block.shape[1], n_t).swapaxes(0, 1)
    return out


_BLOCK = 256  # columns per block (see _resize_axis_numpy)


def _resize_axis_reference(x: np.ndarray, axis: int, indices: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Slow reference pass: float64 weighted sum of gathered pixels, taps in MATLAB's order.

    The plain statement of what one pass computes; tests check the fast path against it.
    """
    shape = [1] * x.ndim
    shape[axis] = indices.shape[0]
    out = None
    for k in range(indices.shape[1]):
        term = np.take(x, indices[:, k], axis=axis) * weights[:, k].reshape(shape)
        out = term if out is None else out + term
    return out


def _pass_order(in_hw, out_hw, scales, exact_order: bool) -> list[int]:
    """Order of the two passes (0 = height, 1 = width).

    MATLAB: increasing scale, height first on ties; this matters for uint8, which is
    rounded between passes. Without rounding the passes commute (up to float64
    round-off), so the float paths pick the cheaper order: the width pass costs more
    per output value (it transposes blocks), so it goes first, on the smaller image,
    only when the height grows.
    """
    if exact_order:
        return sorted(range(2), key=lambda d: scales[d])  # stable: height first on ties
    return [1, 0] if out_hw[0] > in_hw[0] else [0, 1]


def _imresize_numpy(img, scale, output_shape, method, antialiasing, padding="replicate"):
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
        raise ValueError(
            f"imresize expects a numpy HxW or HxWxC array or a torch tensor, got "
            f"{type(img).__name__} with shape {getattr(img, 'shape', None)}"
        )
    is_uint8 = img.dtype == np.uint8
    if not is_uint8 and not np.issubdtype(img.dtype, np.floating):
        raise ValueError(
            f"imresize expects uint8 or float input, got {img.dtype}; convert it first "
            f"(e.g. img.astype(np.float64))"
        )
    scales, out_hw = _plan(img.shape[:2], scale, output_shape, method, padding)
    aa = antialiasing and method != "nearest"
    x = np.ascontiguousarray(img if is_uint8 else img.astype(np.float64, copy=False))
    for axis in _pass_order(img.shape[:2], out_hw, scales, exact_order=is_uint8):
        m = _scipy_matrix(x.shape[axis], out_hw[axis], scales[axis], method, aa, np.float64, padding)
        h, w = x.shape[:2]
        tail = x.shape[2:]
        x3 = x.reshape(1, h, -1) if axis == 0 else x.reshape(h, w, -1)  # A x L x T
        y = _resize_axis_numpy(x3, m)
        x = y.reshape(out_hw[0], w, *tail) if axis == 0 else y.reshape(h, out_hw[1], *tail)
    return x


# --------------------------------------------------------------------------- torch
@lru_cache(maxsize=64)
def _torch_matrix(
    in_len: int, out_len: int, scale: float, method: str, antialiasing: bool,
    dtype: torch.dtype, device: torch.device, padding: str = "replicate",
) -> torch.Tensor:
    """The ``out_len x in_len`` resampling matrix as a torch sparse CSR tensor (cached; GPU path).

    Clamped taps hitting the same border pixel are merged (their weights added);
    the float path does not need MATLAB's exact summation order.
    """
    idx, w = _contributions(in_len, out_len, scale, method, antialiasing, padding)
    rows = np.repeat(np.arange(out_len), idx.shape[1])
    keep = w.ravel() != 0
    coo = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([rows[keep], idx.ravel()[keep]])),
        torch.from_numpy(w.ravel()[keep]),
        (out_len, in_len),
        check_invariants=True,
    ).coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": fine for mm
        warnings.simplefilter("ignore", UserWarning)
        return coo.to_sparse_csr().to(device=device, dtype=dtype)


def _resize_height_torch(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(GPU) ``B x H x W`` -> ``B x H' x W``: one ``(H' x H) @ (H x W)`` product per image plane,
    written straight into the output (no transposes)."""
    out = x.new_empty((x.shape[0], m.shape[0], x.shape[2]))
    for i in range(x.shape[0]):
        torch.mm(m, x[i], out=out[i])
    return out


def _resize_width_torch(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(GPU) ``B x H x W`` -> ``B x H x W'`` as ``(W' x W) @ (rows x W)^T``, transposed back."""
    b, h, w = x.shape
    y = m @ x.reshape(b * h, w).t()  # W' x (B*H)
    out = x.new_empty((b * h, m.shape[0]))
    out.copy_(y.t())
    return out.view(b, h, m.shape[0])


# --------------------------------------------------------------------------- public
def imresize(
    img: np.ndarray | torch.Tensor,
    scale: float | Sequence[float] | None = None,
    output_shape: Sequence[int] | None = None,
    method: str = "bicubic",
    antialiasing: bool = True,
    padding: str = "replicate",
) -> np.ndarray | torch.Tensor:
    """Resize an image exactly like MATLAB's ``imresize``.

    Args:
        img: numpy ``uint8`` or float array ``HxW`` / ``HxWxC`` (any value range),
            or a float torch tensor ``NxCxHxW`` / ``CxHxW`` on any device (see
            :func:`imresize_torch`).
        scale: resize factor, a number or ``(scale_h, scale_w)``; output size is
            ``ceil(scale * in)``. E.g. ``1/4`` to make an x4 LR image.
        output_shape: ``(out_h, out_w)`` instead of ``scale`` (scale = out / in).
        method: ``bicubic`` (``cubic``), ``bilinear`` (``triangle``), ``box``,
            ``nearest``, ``lanczos2``, ``lanczos3``.
        antialiasing: stretch the kernel when shrinking (MATLAB's default).
            ``nearest`` never antialiases (MATLAB's default for it).
        padding: source pixels outside the image: ``"replicate"`` clamps to the
            edge (reproduces the benchmark's MATLAB-made LR files; the default),
            ``"symmetric"`` mirrors (``aux = [1:n, n:-1:1]``; what MATLAB R2021a's
            NIQE needs, see ``metrics.calculate_niqe``).

    Returns:
        numpy: ``uint8`` for ``uint8`` input (each pass rounded half away from zero
        and saturated, as MATLAB); ``float64`` for float input (not rounded or
        clipped: cubic overshoots). Same layout as the input.
        torch: a tensor of the input's dtype, device and layout.

    Raises:
        ValueError: unknown method, not exactly one of scale / output_shape,
            non-positive scale or size, unsupported dtype or number of dimensions.
    """
    if isinstance(img, torch.Tensor):
        return imresize_torch(img, scale, output_shape, method, antialiasing, padding)
    return _imresize_numpy(img, scale, output_shape, method, antialiasing, padding)


def imresize_torch(
    img: torch.Tensor,
    scale: float | Sequence[float] | None = None,
    output_shape: Sequence[int] | None = None,
    method: str = "bicubic",
    antialiasing: bool = True,
    padding: str = "replicate",
) -> torch.Tensor:
    """MATLAB ``imresize`` for float tensors, for data pipelines (not for autograd).

    Args:
        img: float tensor ``NxCxHxW`` or ``CxHxW``, CPU or GPU, any value range.
        scale, output_shape, method, antialiasing, padding: as :func:`imresize`.

    Returns:
        Tensor of the same dtype, device and number of dimensions, resized over
        ``H`` and ``W``; no rounding or clamping (like the numpy float path, which
        it matches to about 1e-7 in float32). float16/bfloat16 are computed in
        float32. The result does not track gradients.

    CPU tensors go through the numpy engine (scipy sparse products, zero-copy
    views in and out); CUDA tensors use torch sparse CSR products on the device.
    """
    if not isinstance(img, torch.Tensor):
        raise ValueError(f"imresize_torch expects a torch.Tensor, got {type(img).__name__}")
    if img.dim() not in (3, 4):
        raise ValueError(f"imresize_torch expects an NxCxHxW or CxHxW tensor, got shape {tuple(img.shape)}")
    if not img.is_floating_point():
        raise ValueError(
            f"imresize_torch expects a float tensor, got {img.dtype}; use img.float() "
            f"(or pass a uint8 numpy array to imresize for MATLAB's uint8 rounding)"
        )
    scales, out_hw = _plan(tuple(img.shape[-2:]), scale, output_shape, method, padding)
    aa = antialiasing and method != "nearest"
    work = img.detach()
    if work.dtype not in (torch.float32, torch.float64):
        work = work.float()
    lead = work.shape[:-2]
    x = work.reshape(-1, *work.shape[-2:]).contiguous()  # B x H x W, B = N*C
    order = _pass_order(tuple(img.shape[-2:]), out_hw, scales, exact_order=False)
    if x.device.type == "cpu":
        # scipy's single-threaded CSR product: as fast here as torch's, and it does
        # not stall when the CPU is oversubscribed (OpenMP threads spin-wait).
        xs = x.numpy()
        np_dtype = xs.dtype.type
        for d in order:
            m = _scipy_matrix(xs.shape[1 + d], out_hw[d], scales[d], method, aa, np_dtype, padding)
            b, h, w = xs.shape
            if d == 0:
                xs = _resize_axis_numpy(xs, m)  # B x H' x W
            else:
                xs = _resize_axis_numpy(xs.reshape(b * h, w, 1), m).reshape(b, h, out_hw[1])
        x = torch.from_numpy(xs)
    else:
        with torch.no_grad():
            for d in order:
                m = _torch_matrix(x.shape[1 + d], out_hw[d], scales[d], method, aa, x.dtype, x.device, padding)
                x = _resize_height_torch(x, m) if d == 0 else _resize_width_torch(x, m)
    return x.view(*lead, *out_hw).to(img.dtype)
