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
  ports mirror instead, which changes the border pixels.
* Dimensions are resized one at a time, in order of increasing scale (height first
  on ties). For ``uint8`` input each pass is rounded back to ``uint8`` (half away
  from zero, saturating) before the next pass, because MATLAB's resize kernel
  returns the input class after every pass; computations are in float64 (MATLAB
  computes in double), so every rounding matches.

Public functions: :func:`imresize` (numpy or torch, dispatching on type) and
:func:`imresize_torch` (torch only).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

__all__ = ["imresize", "imresize_torch", "METHODS"]


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


# --------------------------------------------------------------------------- weights
@lru_cache(maxsize=128)
def _contributions(
    in_len: int, out_len: int, scale: float, method: str, antialiasing: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-pixel source indices and weights along one dimension (imresize.m).

    Returns ``(indices, weights)``, both ``out_len x P``: 0-based ``int64`` indices
    clamped to ``[0, in_len - 1]`` and ``float64`` weights summing to 1 per row.
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
    # Clamp (replicate the end points), as MATLAB does; not mirror.
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
) -> tuple[list[float], list[int], list[int]]:
    """Validate arguments; return per-dim scales, output sizes and the pass order."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are: {', '.join(METHODS)}")
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
    order = sorted(range(2), key=lambda d: scales[d])  # stable: height first on ties
    return scales, out, order


# --------------------------------------------------------------------------- numpy
def _resize_axis_np(img: np.ndarray, axis: int, indices: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sum of gathered rows/columns along ``axis`` in float64.

    Taps are accumulated in order, as MATLAB's loop does, so ties at .5 round alike.
    """
    shape = [1] * img.ndim
    shape[axis] = indices.shape[0]
    out = None
    for k in range(indices.shape[1]):
        term = np.take(img, indices[:, k], axis=axis) * weights[:, k].reshape(shape)
        out = term if out is None else out + term  # noqa: PLR1730
    return out


def _round_uint8(x: np.ndarray) -> np.ndarray:
    """Round half away from zero and saturate to uint8 (MATLAB's double -> uint8)."""
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def _imresize_numpy(img, scale, output_shape, method, antialiasing):
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
        raise ValueError(f"imresize expects an HxW or HxWxC array, got shape {getattr(img, 'shape', None)}")
    is_uint8 = img.dtype == np.uint8
    if not is_uint8 and not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"imresize expects uint8 or float input, got {img.dtype}; convert it first")
    scales, out_hw, order = _plan(img.shape[:2], scale, output_shape, method)
    aa = antialiasing and method != "nearest"
    x = img if is_uint8 else img.astype(np.float64, copy=False)
    for axis in order:
        idx, w = _contributions(x.shape[axis], out_hw[axis], scales[axis], method, aa)
        x = _resize_axis_np(x, axis, idx, w)
        if is_uint8:
            x = _round_uint8(x)
    return x.copy() if x is img else x


# --------------------------------------------------------------------------- public
def imresize(
    img: np.ndarray | torch.Tensor,
    scale: float | Sequence[float] | None = None,
    output_shape: Sequence[int] | None = None,
    method: str = "bicubic",
    antialiasing: bool = True,
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
        return imresize_torch(img, scale, output_shape, method, antialiasing)
    return _imresize_numpy(img, scale, output_shape, method, antialiasing)


def imresize_torch(
    img: torch.Tensor,
    scale: float | Sequence[float] | None = None,
    output_shape: Sequence[int] | None = None,
    method: str = "bicubic",
    antialiasing: bool = True,
) -> torch.Tensor:
    """MATLAB ``imresize`` for float tensors, for data pipelines (not differentiable w.r.t. weights).

    Args:
        img: float tensor ``NxCxHxW`` or ``CxHxW``, CPU or GPU, any value range.
        scale, output_shape, method, antialiasing: as :func:`imresize`.

    Returns:
        Tensor of the same dtype, device and number of dimensions, resized over
        ``H`` and ``W``; no rounding or clamping. Matches the numpy float path to
        about 1e-6 (float32) or better (float64).
    """
    raise NotImplementedError  # filled in below
