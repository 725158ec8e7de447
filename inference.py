"""Running a trained generator on images: whole or tile by tile, fp32 or bf16, and scoring it.

* ``super_resolve``: one ``uint8`` image through a network (tiles bound the memory).
* ``bicubic_upscale``: the MATLAB bicubic baseline.
* ``evaluate`` / ``evaluate_hr``: a whole evaluation set scored with ``metrics`` (PSNR, SSIM,
  NIQE, sharpness per image), always in fp32.
* ``cpu_has_native_bf16``: whether bf16 is fast on this CPU.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from imresize import imresize
from metrics import calculate_psnr, calculate_sharpness, calculate_ssim, niqe_or_nan
from utils import img2tensor, tensor2img

try:
    import resource  # the address-space limit (POSIX)
except ImportError:  # Windows
    resource = None


def model_scale(model: torch.nn.Module) -> int:
    """The integer ``scale`` attribute of a network (looking inside DataParallel/DDP wrappers)."""
    scale = getattr(model, "scale", None)
    if scale is None:
        scale = getattr(getattr(model, "module", None), "scale", None)
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(
            f"{type(model).__name__} has no integer 'scale' attribute (got {scale!r}); "
            f"super_resolve needs it to know the output size (SRResNet/Generator/RRDBNet have one)"
        )
    return scale


def _check_lr(lr: np.ndarray, fn_name: str) -> None:
    if not isinstance(lr, np.ndarray):
        raise ValueError(f"{fn_name}: lr must be a numpy uint8 image, got {type(lr).__name__}")
    if lr.dtype != np.uint8:
        raise ValueError(f"{fn_name}: lr must be uint8 (0..255), got {lr.dtype}; "
                         f"use read_image or tensor2img to get the kit's convention")
    if lr.ndim not in (2, 3) or (lr.ndim == 3 and lr.shape[2] != 3):
        raise ValueError(f"{fn_name}: lr must be HxW (grayscale) or HxWx3 (RGB), got shape {lr.shape}")
    if lr.shape[0] < 1 or lr.shape[1] < 1:
        raise ValueError(f"{fn_name}: lr is empty (shape {lr.shape})")


@contextlib.contextmanager
def _exact_fp32() -> Iterator[None]:
    """Turn off TF32 for convolutions and matmuls inside the block (restored after).

    On Ampere+ GPUs cuDNN convolutions default to TF32 (10-bit mantissa), which moves
    PSNR in the last printed digits; reported numbers are computed in true fp32, as on CPU.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


PRECISIONS = ("fp32", "bf16")  # super_resolve's precision options (bf16: never for scoring)


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 is fast.

    Elsewhere (e.g. AVX2-only CPUs) PyTorch emulates bf16 convolutions, many times
    slower than fp32 and with much larger buffers. Uses ``torch.cpu``'s capability checks
    (False when this torch has none).
    """
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)


# Tiles chosen from the free memory (super_resolve with tile=None).
AUTO_TILE_MIN = 8  # smallest LR tile core tried before giving up (with tile_overlap context around it)
_MEMORY_SHARE = 0.5  # share of the free memory one image may take (the rest: other programs, estimate error)


def free_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes this process can still allocate on ``device``, or None when it cannot be told.

    CUDA: ``torch.cuda.mem_get_info``. CPU: the smallest of the system's available memory
    (``MemAvailable``), the address-space limit (``ulimit -v``) minus what the process already
    maps, and the container's (cgroup) limit minus its use.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    room = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            room += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    if resource is not None:
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open("/proc/self/status") as f:
                    room += [limit - int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:")]
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        with contextlib.suppress(OSError, ValueError):
            with open(limit_file) as f:
                limit = f.read().strip()
            if limit != "max" and int(limit) < 1 << 60:
                with open(usage_file) as f:
                    room.append(int(limit) - int(f.read().strip()))
    if not room:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            room.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return max(0, min(room)) if room else None


def _upper_bytes_per_lr_pixel(model: torch.nn.Module, scale: int, dtype: torch.dtype) -> float:
    """A quick upper bound of :func:`_bytes_per_lr_pixel` for the kit's convolutional networks:
    the widest layer's input and output at the output resolution, twice (no forward pass)."""
    widths = [m.weight.shape[0] for m in model.modules()
              if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2]
    size = torch.empty((), dtype=dtype).element_size()
    return 4 * max(widths, default=256) * scale * scale * size + (3 * 3 * 4 + 3) * scale * scale


def _bytes_per_lr_pixel(model: torch.nn.Module, run: Callable[[np.ndarray], np.ndarray], scale: int) -> float:
    """Working memory of ``run`` per LR pixel, from the tensors of a 16x16 probe.

    Every module's input and output are alive together while it runs; the largest such pair
    (x2 for the convolution's buffers and the allocator), plus the float output and its
    conversion to ``uint8``, bounds the memory of an image of any size, since every tensor
    of these networks grows with the pixel count.
    """
    size = 16
    peak = [0]

    def hook(module, inputs, output):
        tensors = [t for t in (*inputs, output) if isinstance(t, torch.Tensor)]
        peak[0] = max(peak[0], sum(t.numel() * t.element_size() for t in tensors))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        run(np.zeros((size, size, 3), dtype=np.uint8))
    finally:
        for handle in handles:
            handle.remove()
    # 3 float copies of the output (clamp, scale, round in tensor2img) and the uint8 result
    return (2 * peak[0] + 3 * 3 * 4 * scale * scale + 3 * scale * scale) / (size * size)


def _is_out_of_memory(err: BaseException) -> bool:
    """An allocator failure (CPU or GPU), as opposed to any other error."""
    text = str(err).lower()  # oneDNN says "could not create a primitive" when its buffers do not fit
    return isinstance(err, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))) or any(
        words in text for words in ("out of memory", "can't allocate memory", "cannot allocate memory",
                                    "could not create a primitive"))


def _auto_tile(h: int, w: int, scale: int, overlap: int, per_pixel: float, free: int | None) -> int | None:
    """The LR tile for a ``h x w`` image: None (the whole image) when it fits in the free memory's
    share, else the largest core whose tile (core plus ``overlap`` on each side) fits.

    Raises:
        MemoryError: not even a tile of :data:`AUTO_TILE_MIN` fits (one line, with the sizes).
    """
    if free is None:
        return None
    budget = _MEMORY_SHARE * free - scale * scale * h * w * 3  # the uint8 result is held whole
    if per_pixel * h * w <= budget:
        return None
    side = int(math.sqrt(max(budget, 0) / per_pixel))
    tile = min(side - 2 * overlap, max(h, w))
    if tile < AUTO_TILE_MIN:
        need = per_pixel * (AUTO_TILE_MIN + 2 * overlap) ** 2 / _MEMORY_SHARE + scale * scale * h * w * 3
        raise MemoryError(
            f"super_resolve: not even one {AUTO_TILE_MIN}x{AUTO_TILE_MIN} tile of this {w}x{h} image (with "
            f"{overlap} px of context) fits in the free memory ({free / 2**20:.0f} MB free, about "
            f"{need / 2**20:.0f} MB needed): close other programs, or run on a smaller image")
    return tile


def _precision_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast block for ``precision``: bf16 autocast (convolutions and matmuls in
    bfloat16, weights cast per call, the model untouched), or autocast switched *off* for
    fp32, so that even a caller inside an autocast block (a training loop validating) gets
    true fp32 scores.

    Raises:
        ValueError: bf16 on a device other than CUDA or a CPU with native bf16 (one line).
    """
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"super_resolve: precision='bf16' runs on 'cpu' or 'cuda', not {device.type!r}; "
                         "use precision='fp32' there")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise ValueError("super_resolve: this CPU has no native bf16 (AVX512-BF16 or AMX), so precision='bf16' "
                         "would be emulated, many times slower than fp32 and using ~10x the memory; "
                         "use precision='fp32' (or bf16 on a GPU)")
    if device.type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _run_tiled(run: Callable[[np.ndarray], np.ndarray], rgb: np.ndarray, scale: int, tile: int | None,
               overlap: int) -> np.ndarray:
    """``run`` (``uint8`` ``hxwx3`` LR -> ``uint8`` ``(scale*h)x(scale*w)x3``) over ``rgb`` in
    ``tile x tile`` cores, each with ``overlap`` LR pixels of context, only the core's output
    kept; ``tile=None`` (or a tile as large as the image): the whole image at once."""
    h, w = rgb.shape[:2]
    if tile is None or (tile >= h and tile >= w):
        return run(rgb)
    sr = np.empty((scale * h, scale * w, 3), dtype=np.uint8)
    cores = [(y, x) for y in range(0, h, tile) for x in range(0, w, tile)]
    for y0, x0 in tqdm(cores, desc="tiles", leave=False, unit="tile"):
        y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
        # Context around the core, clipped at the image border (where the
        # network zero-pads exactly as it does on the whole image).
        py0, px0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
        py1, px1 = min(y1 + overlap, h), min(x1 + overlap, w)
        out = run(rgb[py0:py1, px0:px1])
        oy, ox = scale * (y0 - py0), scale * (x0 - px0)
        sr[scale * y0:scale * y1, scale * x0:scale * x1] = out[oy:oy + scale * (y1 - y0), ox:ox + scale * (x1 - x0)]
    return sr


def _tile_for_free_memory(model: torch.nn.Module, run: Callable[[np.ndarray], np.ndarray], h: int, w: int,
                          scale: int, overlap: int, dtype: torch.dtype, device: torch.device) -> int | None:
    """None (the whole image) when a quick upper bound says it fits in the free memory's share;
    else the network is measured on a small probe and the tile chosen from that (:func:`_auto_tile`)."""
    free = free_memory(device)
    if free is None or _upper_bytes_per_lr_pixel(model, scale, dtype) * h * w <= \
            _MEMORY_SHARE * free - scale * scale * h * w * 3:
        return None
    return _auto_tile(h, w, scale, overlap, _bytes_per_lr_pixel(model, run, scale), free)


def _free_text(device: torch.device) -> str:
    free = free_memory(device)
    return "" if free is None else f" ({free / 2**20:.0f} MB free)"


def _with_smaller_tiles_on_oom(run_tiled: Callable[[int | None], np.ndarray], tile: int | None, h: int, w: int,
                               device: torch.device) -> np.ndarray:
    """``run_tiled(tile)``, halving the tile after each out-of-memory error (the estimate was
    short) down to :data:`AUTO_TILE_MIN`; other errors pass through.

    Raises:
        MemoryError: not even a tile of :data:`AUTO_TILE_MIN` fits (one line, with the sizes).
    """
    while True:
        try:
            return run_tiled(tile)
        except (RuntimeError, MemoryError) as err:
            if not _is_out_of_memory(err):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            smaller = min(tile or max(h, w), max(h, w)) // 2
            if smaller < AUTO_TILE_MIN:
                raise MemoryError(
                    f"super_resolve: not even one {AUTO_TILE_MIN}x{AUTO_TILE_MIN} tile of this {w}x{h} "
                    f"image fits in the free memory{_free_text(device)}: close other programs, or run on a "
                    f"smaller image ({' '.join(str(err).split())[:200]})") from None
            tile = smaller


def super_resolve(
    model: torch.nn.Module,
    lr: np.ndarray,
    tile: int | None = None,
    tile_overlap: int = 40,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Super-resolve one ``uint8`` image with a network, optionally tile by tile.

    The network runs under ``torch.inference_mode()`` in eval mode (its previous
    train/eval mode is restored afterwards) on ``device`` (default: the device of its
    parameters; CPU for a network without parameters). The input is cast to the
    parameters' dtype, so a ``.half()`` model works too.

    Precision: ``"fp32"`` (the default) computes in true fp32 (TF32 off on GPUs, and
    autocast switched off even when the caller is inside an autocast block).
    ``"bf16"`` runs the network under ``torch.autocast(dtype=torch.bfloat16)`` on CUDA or
    on a CPU with native bf16 (AVX512-BF16 or AMX, see :func:`cpu_has_native_bf16`):
    convolutions in bfloat16 (8-bit mantissa), a faster option for users' own images.
    Other CPUs are refused with a ``ValueError``: PyTorch emulates bf16 there, and an
    SRResNet x4 on a 200x200 image took 13x the fp32 time and 10x its memory (6.8 GB) on
    an AVX2 CPU (``benchmarks/bench_inference.py``). The bf16 output differs from fp32 by
    about a level on some pixels, so it is **never used for scoring**: :func:`evaluate`,
    validation and every reported PSNR/SSIM/NIQE call this function with the fp32 default.

    Tiling: with ``tile`` the LR image is cut into ``tile x tile`` cores (the last row
    and column of cores may be smaller); each core is run with ``tile_overlap`` extra
    LR pixels of context on every side (less at the image border) and only the
    core's ``scale*tile`` output is written into a preallocated ``uint8`` result, so
    memory is bounded by one tile whatever the image size. The tiled result equals
    the untiled one (up to float rounding, i.e. at most 1 level on a pixel) when
    ``tile_overlap`` covers the network's receptive field radius in LR pixels. For
    SRResNet/Generator x4 that radius is ``8 + 2 * n_blocks`` (head 4, each residual
    block 2, body conv 1, sub-pixel path 3), i.e. 40 for the default 16 blocks, hence
    the default. RRDBNet's theoretical radius is far larger (~350 for 23 blocks) and
    cannot be covered cheaply; its effective receptive field is much smaller, so
    differences stay small but are not guaranteed to be zero.

    Args:
        model: network mapping ``float32`` ``Nx3xhxw`` in [0, 1] to
            ``Nx3x(scale*h)x(scale*w)``, with an integer attribute ``scale``.
        lr: ``uint8`` ``HxWx3`` RGB, or ``HxW`` grayscale.
        tile: LR tile size in pixels (>= 1), or None: the whole image at once when it fits in
            half the free memory (:func:`free_memory`), else tiles chosen to fit (the result is
            the same, see above).
        tile_overlap: LR context pixels added on each side of a tile (>= 0).
        device: where to run; default the model's parameters' device.
        precision: ``"fp32"`` or ``"bf16"`` (see above).

    Returns:
        ``uint8`` ``(scale*H)x(scale*W)x3``, clamped and rounded as :func:`tensor2img`.
        A grayscale input is replicated to RGB for the network and the result is
        returned as ``(scale*H)x(scale*W)``: the rounded mean of the three output
        channels (grayscale in, grayscale out).

    Raises:
        ValueError: ``lr`` not ``uint8``, not ``HxW``/``HxWx3`` or empty; bad ``tile``,
            ``tile_overlap`` or ``precision`` (or bf16 on a device other than CUDA or a
            CPU with native bf16);
            model without ``scale`` or whose output size does not match ``scale``.
        MemoryError: with ``tile=None``, not even a small tile fits in the free memory; with a
            ``tile``, that tile does not fit (one line each, with the sizes).
    """
    _check_lr(lr, "super_resolve")
    scale = model_scale(model)
    if tile is not None and (not isinstance(tile, (int, np.integer)) or tile < 1):
        raise ValueError(f"super_resolve: tile must be a positive integer or None, got {tile!r}")
    if not isinstance(tile_overlap, (int, np.integer)) or tile_overlap < 0:
        raise ValueError(f"super_resolve: tile_overlap must be an integer >= 0, got {tile_overlap!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"super_resolve: precision must be one of {list(PRECISIONS)}, got {precision!r}")

    gray = lr.ndim == 2
    rgb = np.repeat(lr[:, :, None], 3, axis=2) if gray else lr
    h, w = rgb.shape[:2]
    param = next(iter(model.parameters()), None)
    if device is None:
        device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    device = torch.device(device)
    autocast = _precision_context(device, precision)
    # bf16 input in channels_last (NHWC): the layout of oneDNN's and cuDNN's fast bf16
    # convolutions (on an AVX2 CPU, emulated NCHW bf16 was another 10x slower still).
    layout = torch.channels_last if precision == "bf16" else torch.contiguous_format

    def run(patch: np.ndarray) -> np.ndarray:
        x = img2tensor(patch).to(device=device, dtype=dtype).contiguous(memory_format=layout)
        out = model(x)
        ph, pw = patch.shape[:2]
        if tuple(out.shape) != (1, 3, scale * ph, scale * pw):
            raise ValueError(
                f"super_resolve: the model turned a 1x3x{ph}x{pw} input into {tuple(out.shape)}, "
                f"expected (1, 3, {scale * ph}, {scale * pw}) from its scale={scale}"
            )
        return tensor2img(out)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _exact_fp32(), autocast:
            if tile is None:
                tile = _tile_for_free_memory(model, run, h, w, scale, tile_overlap, dtype, device)
                sr = _with_smaller_tiles_on_oom(
                    lambda t: _run_tiled(run, rgb, scale, t, tile_overlap), tile, h, w, device)
            else:
                try:
                    sr = _run_tiled(run, rgb, scale, tile, tile_overlap)
                except (RuntimeError, MemoryError) as err:
                    if not _is_out_of_memory(err):
                        raise
                    raise MemoryError(
                        f"super_resolve: a {min(tile, h)}x{min(tile, w)} tile of this {w}x{h} image does not "
                        f"fit in the free memory{_free_text(device)}: pass a smaller tile, or tile=None to "
                        f"choose one from the free memory") from None
    finally:
        model.train(was_training)

    if gray:
        # Sum of three uint8 / 3 never ends in .5, so floor(+0.5) is an unbiased round.
        return np.floor(sr.astype(np.float32).sum(axis=2) / 3 + 0.5).astype(np.uint8)
    return sr


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: MATLAB-exact ``imresize(lr, scale)`` on ``uint8``.

    Args:
        lr: ``uint8`` ``HxWx3`` RGB or ``HxW`` grayscale.
        scale: integer upscaling factor (>= 1).

    Returns:
        ``uint8`` of ``scale`` times the size, same number of channels.
    """
    _check_lr(lr, "bicubic_upscale")
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"bicubic_upscale: scale must be a positive integer, got {scale!r}")
    return imresize(lr, int(scale))


def evaluate(
    model: torch.nn.Module | None,
    dataset,
    scale: int,
    device: str | torch.device | None = None,
    tile: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Score a network (or the bicubic baseline) on an evaluation set, MATLAB protocol.

    Each image is super-resolved with :func:`super_resolve` in fp32 (never its bf16
    option: scores must not depend on the hardware's precision), or with
    :func:`bicubic_upscale` when ``model`` is None, and scored against its HR image by :func:`calculate_psnr`
    and :func:`calculate_ssim` on the Y channel with ``crop_border = scale`` (grayscale
    images as they are), the protocol of the published tables, and on its own by
    :func:`calculate_niqe` (no reference; same border shaved). :func:`evaluate_hr` gives
    the HR images' own NIQE, the reference row of a table.

    Args:
        model: SR network with attribute ``scale`` equal to ``scale``, or None for bicubic.
        dataset: a sequence (``len`` + integer indexing, e.g. ``datasets.EvalDataset``)
            of dicts ``{"name": str, "lr": uint8 HxW[x3], "hr": uint8 (scale*H)x(scale*W)[x3]}``.
        scale: upscaling factor of the set; also the border shaved before scoring.
        device: passed to :func:`super_resolve`.
        tile: passed to :func:`super_resolve` (for images too large for memory).
        progress: show a tqdm bar.

    Returns:
        One dict per image, in dataset order: ``{"name": str, "psnr": float (dB),
        "ssim": float, "niqe": float (lower = more natural; NaN for an image smaller than
        two 96x96 blocks after the shave), "sharpness": float (:func:`calculate_sharpness`),
        "seconds": float}`` where ``seconds`` is the wall time of the super-resolution alone
        (not the scoring).

    Raises:
        ValueError: the model's scale differs from ``scale``, or an SR result's shape
            differs from its HR image (the message names the image).
    """
    if model is not None and model_scale(model) != scale:
        raise ValueError(f"evaluate: the model is x{model_scale(model)} but the dataset is x{scale}")
    rows = []
    for i in tqdm(range(len(dataset)), desc="evaluate", disable=not progress, unit="img"):
        item = dataset[i]
        name, lr, hr = item["name"], item["lr"], item["hr"]
        start = time.perf_counter()
        sr = bicubic_upscale(lr, scale) if model is None else super_resolve(model, lr, tile=tile, device=device)
        seconds = time.perf_counter() - start  # super_resolve returns numpy, so GPU work is done
        if sr.shape != hr.shape:
            raise ValueError(
                f"evaluate: image {name!r}: SR result {sr.shape} (LR {lr.shape} x{scale}) does not match "
                f"HR {hr.shape}; HR must be mod-cropped to a multiple of the scale and have as many "
                f"channels as LR"
            )
        rows.append({
            "name": name,
            "psnr": calculate_psnr(sr, hr, crop_border=scale),
            "ssim": calculate_ssim(sr, hr, crop_border=scale),
            "niqe": niqe_or_nan(sr, crop_border=scale),
            "sharpness": calculate_sharpness(sr, hr, crop_border=scale),
            "seconds": seconds,
        })
    return rows


def evaluate_hr(dataset, scale: int, progress: bool = True) -> list[dict]:
    """NIQE of the HR images themselves: the reference row beside :func:`evaluate`'s rows.

    Args:
        dataset: as for :func:`evaluate` (only ``"name"`` and ``"hr"`` are used).
        scale: the set's upscaling factor; ``scale`` border pixels are shaved, as from the
            SR results, so that the HR row is scored on the same pixels.
        progress: show a tqdm bar.

    Returns:
        One dict per image, in dataset order: ``{"name": str, "niqe": float}`` (NaN for an
        image smaller than two 96x96 blocks after the shave).
    """
    rows = []
    for i in tqdm(range(len(dataset)), desc="evaluate HR", disable=not progress, unit="img"):
        item = dataset[i]
        rows.append({"name": item["name"], "niqe": niqe_or_nan(item["hr"], crop_border=scale)})
    return rows
