"""Shared conventions, image I/O, metrics and inference helpers.

Conventions (the one place they are defined; every module follows them):

* Images on disk / in numpy: ``uint8``, RGB colour order, ``HxWx3`` (``HxW`` for a
  grayscale image read with ``keep_gray=True``), values 0..255.
* Tensors fed to and returned by the networks: ``float32``, ``NxCxHxW``, RGB,
  values in ``[0, 1]`` for LR input and SR/HR targets alike. Networks do not clamp
  their output; ``tensor2img`` clamps and rounds when converting back to ``uint8``.
* ``scale`` is the integer upscaling factor; an HR image is ``scale`` times the LR
  size in both dimensions (HR images are mod-cropped to a multiple of ``scale``).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import os
import pickle
import re
import sys
import uuid
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

# The one kit module below this one: imresize imports no kit module (imports flow imresize ->
# utils -> models -> datasets, create_data_lists -> solver -> notebooks).
from imresize import imresize

PathLike = str | os.PathLike

# A truncated file must be an error, not a silently grey-padded image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


class ImageReadError(ValueError):
    """An image file could not be decoded; the message names the file and the reason."""


def read_image(path: PathLike, keep_gray: bool = False) -> np.ndarray:
    """Read an image file into the kit's numpy convention.

    Args:
        path: image file (PNG, JPEG, BMP, TIFF, WebP, ...).
        keep_gray: if True a single-channel image is returned as ``HxW`` (the
            MATLAB evaluation protocol scores grayscale images as they are);
            otherwise it is replicated to RGB.

    Returns:
        ``uint8`` array ``HxWx3`` RGB (or ``HxW`` for grayscale with ``keep_gray``).
        Alpha (RGBA, LA, palette with transparency) is dropped, keeping the stored
        colour values (no compositing); palette images are expanded; 16-bit
        grayscale is rescaled to 8 bit as ``round(v / 257)`` (16-bit colour PNGs are
        reduced by Pillow itself to their high byte, ``v // 256``, at most one
        level away); a 32-bit integer image (Pillow mode ``I``) is read as 8-bit levels
        when its maximum is <= 255, else as 16-bit; a float image (mode ``F``, e.g. a
        float TIFF) whose values all lie in [0, 1] is taken as [0, 1] (``round(255 v)``),
        otherwise as levels in [0, 255] (``round(v)``); CMYK (including Adobe's inverted
        CMYK JPEG) is converted to RGB by Pillow. EXIF orientation is not applied.

    Raises:
        FileNotFoundError: the path does not exist.
        ImageReadError: the file is not a decodable image (truncated, corrupt, not an image),
            or its values have no clear 8-bit meaning (a float image outside [0, 255] or
            with NaN/inf, an integer image outside [0, 65535]).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return _pil_to_array(im, keep_gray)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from err


def _pil_to_array(im: Image.Image, keep_gray: bool) -> np.ndarray:
    mode = im.mode
    if mode == "F":  # 32-bit float (TIFF): [0, 1] or [0, 255], see read_image
        arr = np.asarray(im).astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError("a float image holding NaN or inf values; save it as an 8-bit PNG instead")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"a float image with values in [{lo:g}, {hi:g}]: the kit reads float images in "
                             "[0, 1] or [0, 255] only; rescale it or save it as an 8-bit PNG")
        if hi <= 1:
            arr = arr * 255.0
        arr8 = np.floor(arr + 0.5).astype(np.uint8)  # values >= 0: round half up
        return arr8 if keep_gray else np.repeat(arr8[:, :, None], 3, axis=2)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im).astype(np.float64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(f"a 32-bit integer image with values in [{arr.min():g}, {arr.max():g}]: the kit "
                             "reads 8- and 16-bit images only; rescale it or save it as an 8-bit PNG")
        if mode == "I" and arr.max() <= 255:  # 32-bit container holding 8-bit data
            arr8 = arr.clip(0, 255).astype(np.uint8)
        else:
            arr8 = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
        return arr8 if keep_gray else np.repeat(arr8[:, :, None], 3, axis=2)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("1", "L", "LA"):
        gray = np.asarray(im.convert("L"))
        return gray.copy() if keep_gray else np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGB",):
        return np.asarray(im).copy()
    if mode == "RGBA":
        return np.asarray(im)[:, :, :3].copy()
    if mode.startswith("I;16") or mode == "RGB;16":
        return np.asarray(im.convert("RGB")).copy()
    return np.asarray(im.convert("RGB")).copy()  # CMYK, YCbCr, LAB, HSV, F, ...


# The temporary file of atomic_write, next to its target: ".log.1a2b3c4d5e6f.tmp.csv" for log.csv.
ATOMIC_TEMP_NAME = ".{stem}.{token}.tmp{suffix}"
_ATOMIC_TEMP_RE = re.compile("^" + ATOMIC_TEMP_NAME.replace(".", r"\.").format(
    stem=".+", token="[0-9a-f]{12}", suffix=r"(\.[^.]+)?") + "$")


def atomic_write(path: PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then move the finished file to ``path``; returns ``path``.

    The one place the kit writes files: the temporary file sits in the destination
    folder (so ``os.replace`` is atomic), parents are created, and an error or Ctrl-C
    mid-write removes the temporary file, so ``path`` is either the old file or the new
    one, never a partial one. Not ``mkstemp``: that would make files private (0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / ATOMIC_TEMP_NAME.format(stem=path.stem, token=uuid.uuid4().hex[:12], suffix=path.suffix))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def remove_stale_temps(folder: PathLike) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_write` calls left in ``folder``.

    A process killed mid-write (SIGKILL, power loss) cannot remove its temporary file
    (``ATOMIC_TEMP_NAME``, e.g. a checkpoint-sized ``.checkpoint.<token>.tmp.pth``). Looks in
    ``folder`` and its direct subfolders (a run's ``samples/``, ``generators/``); other
    files are left alone. Call it only on a folder no other process is writing into.

    Returns:
        the paths removed (empty when there were none or ``folder`` does not exist).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for sub in [folder, *(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())]:
        for path in sub.iterdir():
            if path.is_file() and _ATOMIC_TEMP_RE.match(path.name):
                path.unlink()
                removed.append(path)
    return removed


# ---------------------------------------------------------------------- checkpoint files (.pth)
#
# The one place the kit reads and writes ``.pth`` files. A file is a dict saved with
# ``torch.save`` that PyTorch's safe loader (``weights_only=True``) reads: tensors, numbers,
# strings, bytes, None and plain containers (dict, OrderedDict, Counter, list, tuple, set),
# nothing that runs code when loaded. ``save_state`` adds the key ``DIGEST_KEY``: the
# SHA-256 of every tensor (its name = path in the dict, dtype, shape and bytes) and of
# every plain value, in order. ``load_state`` never unpickles code (no fallback to
# ``weights_only=False``) and checks the digest, so flipped bytes are an error, not a
# silently wrong network or a resumed run that diverges later.

DIGEST_KEY = "state_sha256"
_CONTAINERS = (dict, OrderedDict, Counter)
_SEQUENCES = (list, tuple, torch.Size)
_SCALARS = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)
_TEXT_BYTES = set(range(32, 127)) | {9, 10, 13}


class CheckpointError(ValueError):
    """A ``.pth`` file cannot be used; the one-line message names the file and says what is wrong."""


class CheckpointMissingError(CheckpointError, FileNotFoundError):
    """The ``.pth`` file does not exist (also a ``FileNotFoundError``)."""


def _digest_update(h: "hashlib._Hash", obj: object, name: str) -> None:
    """Feed ``obj`` (found at ``name`` inside the saved dict) into the hash ``h``.

    Every item is written with a type tag and a length, so different contents can never
    give the same byte stream. Raises ``TypeError`` for a type the safe loader refuses.
    """
    def put(tag: bytes, data: bytes) -> None:
        h.update(tag + len(data).to_bytes(8, "little") + data)

    if isinstance(obj, torch.Tensor) and type(obj) in (torch.Tensor, torch.nn.Parameter):
        if obj.layout != torch.strided or obj.is_quantized:
            raise TypeError(f"{name}: only dense tensors can be saved, got layout {obj.layout}")
        t = obj.detach().cpu().resolve_conj().resolve_neg().contiguous()
        put(b"T", f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        put(b"D", memoryview(t.reshape(-1).view(torch.uint8).numpy()).tobytes()
            if t.numel() else b"")
    elif type(obj) in _CONTAINERS:
        put(b"M", f"{name}|{len(obj)}".encode())
        for key, value in obj.items():
            if type(key) not in _SCALARS:
                raise TypeError(f"{name}: dict key {key!r} of type {type(key).__name__} cannot be saved")
            put(b"K", f"{type(key).__name__}:{key!r}".encode())
            _digest_update(h, value, f"{name}/{key}")
    elif type(obj) in _SEQUENCES:
        put(b"L", f"{name}|{len(obj)}".encode())
        for i, value in enumerate(obj):
            _digest_update(h, value, f"{name}/{i}")
    elif type(obj) is set:
        put(b"S", f"{name}|{len(obj)}".encode())
        for value in sorted(obj, key=repr):
            _digest_update(h, value, f"{name}/*")
    elif type(obj) in _SCALARS:
        put(b"V", f"{name}|{type(obj).__name__}:{obj!r}".encode())
    else:
        raise TypeError(
            f"{name or 'the state'}: a {type(obj).__name__} cannot be saved in a kit .pth file (only "
            "tensors, numbers, strings and plain dict/list/tuple/set); convert it first, e.g. an "
            "EasyDict with a plain dict, a numpy array with torch.from_numpy")


def state_digest(obj: dict) -> str:
    """SHA-256 (hex) of a state dict as ``save_state`` stores it (the ``DIGEST_KEY`` entry left out).

    Args:
        obj: a dict of tensors and plain values (see the banner above).

    Returns:
        64 hex characters; equal for equal names, dtypes, shapes, tensor bytes and values.

    Raises:
        TypeError: ``obj`` holds something the safe loader would refuse.
    """
    h = hashlib.sha256()
    _digest_update(h, {k: v for k, v in obj.items() if k != DIGEST_KEY}, "")
    return h.hexdigest()


def save_state(path: PathLike, obj: dict) -> Path:
    """Write ``obj`` to ``path`` as a kit ``.pth`` file: safe-loadable, with its SHA-256 digest.

    Args:
        path: destination file; parent folders are created. The write is atomic (see
            :func:`atomic_write`): ``path`` is the old file or the new one, never partial.
        obj: a dict of tensors and plain values (no modules, no EasyDict, no numpy). Tensors
            are saved as they are (device and dtype); load with ``load_state`` (on the CPU).

    Returns:
        ``path``.

    Raises:
        TypeError: ``obj`` is not a dict or holds a type the safe loader would refuse
            (caught here, before anything is written).
    """
    if type(obj) not in _CONTAINERS:
        raise TypeError(f"save_state expects a dict, got {type(obj).__name__}")
    stored = {k: v for k, v in obj.items() if k != DIGEST_KEY}
    stored[DIGEST_KEY] = state_digest(stored)
    return atomic_write(path, lambda tmp: torch.save(stored, tmp))


def _one_line(err: BaseException) -> str:
    """The most telling line of a (possibly multi-line) error message."""
    text = str(err)
    match = re.search(r"GLOBAL ([\w.]+)", text)
    if match:
        return f"it refers to the Python object {match.group(1)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else type(err).__name__


def load_state(path: PathLike, what: str = "checkpoint") -> dict:
    """Read a kit ``.pth`` file safely and check its digest; returns the dict (on the CPU).

    Only PyTorch's safe loader is used (``torch.load(weights_only=True)``): the kit never
    unpickles code, so a file holding Python objects is refused rather than run. Files
    without a digest (written by plain ``torch.save``) load unchecked.

    Args:
        path: the file.
        what: what the file should be, for messages ("generator checkpoint", "training
            checkpoint", ...).

    Returns:
        the saved dict without its ``DIGEST_KEY`` entry; tensors on the CPU.

    Raises:
        CheckpointMissingError: no such file (a ``CheckpointError`` and a ``FileNotFoundError``).
        CheckpointError: one line naming the file and the problem: empty, not a PyTorch file
            (text/HTML, truncated, corrupted), refused by the safe loader, digest mismatch
            (corrupted), or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointMissingError(
            f"no {what} at {path}: train one with train.ipynb (or solver.py), or point to an existing .pth file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes), e.g. a save or copy that did not finish; "
                              "use an intact copy")
    with open(path, "rb") as f:
        head = f.read(512)
    # torch.save writes a zip archive; files from torch < 1.6 are a bare pickle (protocol 2).
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        kind = ("an HTML page (a failed download?)" if head.lstrip()[:1] == b"<"
                else "a text file" if set(head) <= _TEXT_BYTES else "not a PyTorch file")
        raise CheckpointError(f"{what} {path} is not a readable PyTorch checkpoint: it is {kind}; "
                              "use the .pth file itself")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # a damaged pickle stream, not a refused object
            raise CheckpointError(f"{what} {path} is not a readable PyTorch checkpoint (corrupted: "
                                  f"{_one_line(err)}); use an intact copy") from None
        raise CheckpointError(
            f"{what} {path} was refused by the safe loader ({_one_line(err)}): it may contain code, and the kit "
            f"never unpickles code. Only if you made it yourself and trust it: "
            f"python utils.py convert-trusted {path} NEW.pth") from None
    except Exception as err:  # noqa: BLE001 - truncated zip, bad header, storage size mismatch, ...
        raise CheckpointError(f"{what} {path} is not a readable PyTorch checkpoint (truncated or corrupted: "
                              f"{_one_line(err)}); use an intact copy") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {path} holds a {type(obj).__name__}, not a dict; "
                              "it was not written by the kit")
    stored = obj.pop(DIGEST_KEY, None)
    if stored is not None:
        try:
            actual = state_digest(obj)
        except TypeError:
            actual = None
        if actual != stored:
            raise CheckpointError(f"{what} {path} is corrupted: its contents do not match the SHA-256 digest "
                                  "stored in it; use an intact copy (copy or download it again, or retrain)")
    return obj


def save_image(img: np.ndarray, path: PathLike) -> None:
    """Write a ``uint8`` ``HxWx3``/``HxW`` image atomically (see :func:`atomic_write`).

    The format follows the extension; use ``.png`` for lossless output.
    """
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"save_image expects uint8 HxW or HxWx3, got {img.dtype} {img.shape}")
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    atomic_write(path, lambda tmp: Image.fromarray(img).save(tmp, format=fmt))


def img2tensor(img: np.ndarray) -> torch.Tensor:
    """``uint8`` ``HxWx3`` (or ``HxW``) -> ``float32`` ``1x3xHxW`` (``1x1xHxW``) in [0, 1]."""
    if img.dtype != np.uint8:
        raise ValueError(f"img2tensor expects uint8, got {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255).unsqueeze(0)


def tensor2img(tensor: torch.Tensor) -> np.ndarray:
    """``float`` ``[1x]CxHxW`` in [0, 1] -> ``uint8`` ``HxWxC`` (``HxW`` if C == 1).

    Values are clamped to [0, 1] and rounded to the nearest level (x.5 away from 0,
    as MATLAB's ``im2uint8``).
    """
    t = tensor.detach()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"tensor2img expects a single image, got batch of {t.shape[0]}")
        t = t[0]
    arr = t.float().clamp(0, 1).mul(255).cpu().numpy().transpose(1, 2, 0)
    arr = np.floor(arr + 0.5).astype(np.uint8)
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop ``HxW[xC]`` so both sides are multiples of ``scale`` (bottom/right removed)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale, ...]


# --------------------------------------------------------------------------- metrics
# The evaluation protocol of the SR literature (SRCNN, VDSR, SRGAN, the SelfExSR
# benchmark code) is MATLAB's: Y channel of ``rgb2ycbcr`` on uint8 images, ``scale``
# border pixels shaved, PSNR with peak 255 and Wang et al.'s ``ssim_index.m``. Numbers
# computed any other way (RGB, BT.601 full range, float images, 'same' filtering)
# differ by up to ~1 dB and cannot be compared with published tables.

# MATLAB rgb2ycbcr for uint8: T = (1/255) * origT, offset 16 (Poynton, eq. 9.6).
_Y_COEFFS = tuple((1 / 255) * c for c in (65.481, 128.553, 24.966))


def rgb2y(img: np.ndarray) -> np.ndarray:
    """Luma of an RGB image exactly as MATLAB ``rgb2ycbcr`` computes it on ``uint8``.

    ``Y = round(16 + (65.481 R + 128.553 G + 24.966 B) / 255)``, in the range 16..235.
    As in MATLAB (``imlincomb``) the sum is formed in float64 with coefficients
    ``(1/255) * c`` and rounded half away from zero; this is the "limited range"
    BT.601 luma, not the full-range ``0.299 R + 0.587 G + 0.114 B``.

    Args:
        img: ``uint8`` ``HxWx3`` RGB.

    Returns:
        ``uint8`` ``HxW``.
    """
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise ValueError(
            f"rgb2y expects a uint8 numpy image (MATLAB's rgb2ycbcr on uint8), got "
            f"{getattr(img, 'dtype', type(img).__name__)}; convert with tensor2img first"
        )
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb2y expects an HxWx3 RGB image, got shape {img.shape}")
    rgb = img.astype(np.float64)
    # Same accumulation order as imlincomb: K1*A1 + K2*A2 + K3*A3 + offset.
    y = _Y_COEFFS[0] * rgb[..., 0] + _Y_COEFFS[1] * rgb[..., 1] + _Y_COEFFS[2] * rgb[..., 2] + 16.0
    return np.floor(y + 0.5).astype(np.uint8)  # y > 0, so this is round-half-away


def _metric_channels(img: np.ndarray, ref: np.ndarray, crop_border: int, test_y_channel: bool,
                     fn_name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validate a pair of images and return the float64 channel pairs to score."""
    for what, arr in (("img", img), ("ref", ref)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:
            raise ValueError(
                f"{fn_name}: {what} must be a uint8 numpy image, got "
                f"{getattr(arr, 'dtype', type(arr).__name__)}. The MATLAB protocol is defined on "
                f"8-bit images (peak 255, Y rounded to uint8); convert with tensor2img first."
            )
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
            raise ValueError(f"{fn_name}: {what} must be HxW or HxWx3 RGB, got shape {arr.shape}")
    if img.shape != ref.shape:
        raise ValueError(
            f"{fn_name}: img and ref must have the same shape, got {img.shape} and {ref.shape} "
            f"(mod-crop the HR image to a multiple of the scale, and compare grayscale with grayscale)"
        )
    if not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise ValueError(f"{fn_name}: crop_border must be an integer >= 0, got {crop_border!r}")
    h, w = img.shape[:2]
    if h - 2 * crop_border < 1 or w - 2 * crop_border < 1:
        raise ValueError(f"{fn_name}: crop_border={crop_border} leaves nothing of a {h}x{w} image")
    if img.ndim == 3 and test_y_channel:
        img, ref = rgb2y(img), rgb2y(ref)
    if img.ndim == 2:  # grayscale is used as it is (no conversion), as in MATLAB
        img, ref = img[:, :, None], ref[:, :, None]
    b = crop_border
    img = img[b:h - b, b:w - b].astype(np.float64)
    ref = ref[b:h - b, b:w - b].astype(np.float64)
    return [(img[:, :, c], ref[:, :, c]) for c in range(img.shape[2])]


def calculate_psnr(img: np.ndarray, ref: np.ndarray, crop_border: int, test_y_channel: bool = True) -> float:
    """PSNR in dB between two ``uint8`` images, MATLAB protocol.

    Args:
        img: ``uint8`` ``HxW`` or ``HxWx3`` RGB, e.g. the SR result.
        ref: ``uint8`` image of the same shape, the ground truth HR.
        crop_border: pixels shaved from each side before scoring; use ``scale``.
        test_y_channel: score the Y of MATLAB ``rgb2ycbcr`` (see :func:`rgb2y`). With
            False an RGB pair is scored on all three channels at once: one MSE over
            every value, as MATLAB's ``psnr`` on RGB arrays. A single-channel pair is
            always scored as it is.

    Returns:
        ``10 log10(255^2 / MSE)`` computed in float64; ``inf`` when the (cropped)
        images are identical (MSE 0).

    Raises:
        ValueError: non-``uint8`` input, shape mismatch, bad ``crop_border``.
    """
    pairs = _metric_channels(img, ref, crop_border, test_y_channel, "calculate_psnr")
    # one MSE over every pixel of every channel (MATLAB's psnr on an RGB array), not a mean
    # of per-channel PSNRs (which is inf as soon as one channel matches)
    mse = float(np.mean([np.mean((a - b) ** 2) for a, b in pairs]))  # channels have equal size
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """1-D factor of MATLAB ``fspecial('gaussian', size, sigma)`` (normalised to sum 1)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter2_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """MATLAB ``filter2(g' * g, img, 'valid')`` for a separable, symmetric window."""
    k = g.size
    out = np.lib.stride_tricks.sliding_window_view(img, k, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(out, k, axis=1) @ g


def _ssim_single(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. ``ssim_index.m`` (K = [0.01 0.03], L = 255, 11x11 Gaussian 1.5, 'valid')."""
    if min(a.shape) < 11:
        raise ValueError(f"calculate_ssim: the cropped image ({a.shape[0]}x{a.shape[1]}) is smaller "
                         f"than the 11x11 SSIM window")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_window()
    mu1, mu2 = _filter2_valid(a, g), _filter2_valid(b, g)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = _filter2_valid(a * a, g) - mu1_sq
    sigma2_sq = _filter2_valid(b * b, g) - mu2_sq
    sigma12 = _filter2_valid(a * b, g) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(ssim_map.mean())


def calculate_ssim(img: np.ndarray, ref: np.ndarray, crop_border: int, test_y_channel: bool = True) -> float:
    """SSIM between two ``uint8`` images, MATLAB protocol (Wang et al. 2004, ``ssim_index.m``).

    Gaussian window 11x11, sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``,
    statistics by ``filter2(window, x, 'valid')`` (no padding: the SSIM map is
    10 pixels smaller than the cropped image in each dimension), float64, the
    mean of the map. No downsampling (unlike the later ``ssim.m``).

    Args:
        img: ``uint8`` ``HxW`` or ``HxWx3`` RGB, e.g. the SR result.
        ref: ``uint8`` image of the same shape, the ground truth HR.
        crop_border: pixels shaved from each side before scoring; use ``scale``.
        test_y_channel: score the Y of MATLAB ``rgb2ycbcr`` (see :func:`rgb2y`). With
            False an RGB pair is scored per channel and the SSIMs are averaged.
            A single-channel pair is always scored as it is.

    Returns:
        SSIM in [-1, 1]; 1.0 for identical images.

    Raises:
        ValueError: non-``uint8`` input, shape mismatch, bad ``crop_border``, or a
            cropped image smaller than the 11x11 window.
    """
    pairs = _metric_channels(img, ref, crop_border, test_y_channel, "calculate_ssim")
    return float(np.mean([_ssim_single(a, b) for a, b in pairs]))



def _sobel_magnitude(a: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of a float 2-D array ('valid': 2 pixels smaller per side pair)."""
    gx = (a[:-2, 2:] + 2 * a[1:-1, 2:] + a[2:, 2:]) - (a[:-2, :-2] + 2 * a[1:-1, :-2] + a[2:, :-2])
    gy = (a[2:, :-2] + 2 * a[2:, 1:-1] + a[2:, 2:]) - (a[:-2, :-2] + 2 * a[:-2, 1:-1] + a[:-2, 2:])
    return np.hypot(gx, gy)


def calculate_sharpness(img: np.ndarray, ref: np.ndarray, crop_border: int) -> float:
    """Fine detail of ``img`` relative to ``ref``: mean Sobel gradient magnitude, img / ref.

    Computed on the same pixels as PSNR and SSIM (Y channel of :func:`rgb2y`, ``crop_border``
    shaved). 1.0: as much edge contrast and texture as the HR image; below 1: blurrier
    (bicubic, MSE-trained networks); GAN results come closer to 1, or above it with noise.
    It measures the *amount* of detail, not whether it is the right detail (PSNR and SSIM
    do that), and is not part of the MATLAB protocol: it is the kit's own measure, used to
    check that the GAN generator is sharper than the PSNR one.

    Args:
        img: ``uint8`` ``HxW`` or ``HxWx3`` RGB, e.g. the SR result.
        ref: ``uint8`` image of the same shape, the ground truth HR.
        crop_border: pixels shaved from each side before scoring; use ``scale``.

    Returns:
        the ratio (float >= 0); NaN when ``ref`` is flat (no gradient at all).
    """
    pairs = _metric_channels(img, ref, crop_border, True, "calculate_sharpness")
    if min(pairs[0][0].shape) < 3:
        raise ValueError("calculate_sharpness: the cropped image is smaller than the 3x3 Sobel window")
    num = sum(float(_sobel_magnitude(a).mean()) for a, _ in pairs)
    den = sum(float(_sobel_magnitude(b).mean()) for _, b in pairs)
    return float("nan") if den == 0 else num / den


# --------------------------------------------------------------------------- NIQE
# NIQE (Mittal, Soundararajan and Bovik, "Making a 'completely blind' image quality
# analyzer", IEEE Signal Processing Letters 20(3), 2013): a no-reference measure of how far
# an image's local statistics are from those of pristine natural photographs; lower is more
# natural. Written from the paper and the NIQE MATLAB release (computequality.m,
# estimateaggdparam.m, computefeature.m); the steps that decide the last digits are MATLAB's:
#
# * the image is the uint8 Y of rgb2ycbcr (grayscale as it is), made double, cropped to whole
#   96x96 blocks (top-left kept);
# * MSCN coefficients (I - mu) / (sigma + 1), mu and sigma from imfilter with the 7x7 Gaussian
#   window (sigma 7/6) and 'replicate' borders, sigma = sqrt(|E[I^2] - mu^2|), the two
#   filtered moments and sigma in single precision (see _mscn);
# * per block 18 features: an AGGD fit of the MSCN values (alpha, mean of the two betas) and of
#   the products with 4 neighbours (circshift by [0 1; 1 0; 1 1; 1 -1] *inside* the block,
#   wrapping around; BRISQUE's fourth shift is [-1 1], NIQE's is [1 -1]):
#   alpha, (beta_r - beta_l) Gamma(2/alpha) / Gamma(1/alpha), beta_l, beta_r; alpha is the
#   point of the grid 0.2:0.001:10 whose moment ratio is nearest (first one on ties, the
#   first grid point when the ratio is NaN, as MATLAB's min);
# * the second scale is imresize(I, 0.5) of the double image (bicubic, antialiased, not
#   rounded, borders mirrored as R2021a's imresize), with 48x48 blocks: 36 features per block;
# * NIQE = sqrt((mu_p - mu_d) pinv((S_p + S_d) / 2) (mu_p - mu_d)'), mu_d = nanmean over the
#   blocks, S_d = nancov (blocks with a NaN feature left out, normalised by N - 1).
NIQE_BLOCK = 96  # block side at the first scale (the size the pristine model was fitted with)
NIQE_MODEL_FILE = Path(__file__).resolve().parent / "checkpoints" / "niqe_pris_params.npz"


@functools.lru_cache(maxsize=1)
def _niqe_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pristine model ``(mu 36, cov 36x36, window 7x7)``, float64, loaded once.

    ``checkpoints/niqe_pris_params.npz`` holds ``mu_pris_param`` (1x36), ``cov_pris_param``
    (36x36) and ``gaussian_window`` (7x7) as estimated by the NIQE MATLAB release
    (live.ece.utexas.edu, ``modelparameters.mat``), in the copy distributed with BasicSR
    (Apache-2.0).
    """
    if not NIQE_MODEL_FILE.is_file():
        raise FileNotFoundError(f"NIQE model file {NIQE_MODEL_FILE} is missing; restore it from the kit's "
                                f"repository (checkpoints/niqe_pris_params.npz)")
    with np.load(NIQE_MODEL_FILE) as f:
        mu = np.asarray(f["mu_pris_param"], dtype=np.float64).reshape(-1)
        cov = np.asarray(f["cov_pris_param"], dtype=np.float64)
        window = np.asarray(f["gaussian_window"], dtype=np.float64)
    for arr in (mu, cov, window):
        arr.setflags(write=False)
    return mu, cov, window


def _matlab_colon(start: float, step: float, stop: float) -> np.ndarray:
    """MATLAB's ``start:step:stop``: the first half counted up from ``start``, the second down
    from ``stop``, so both ends are exact (``np.arange`` drifts by a few ulps towards the end)."""
    n = int(round((stop - start) / step))
    k = np.arange(n + 1, dtype=np.float64)
    half = n // 2
    return np.where(k <= half, start + k * step, stop - (n - k) * step)


@functools.lru_cache(maxsize=1)
def _aggd_grid() -> tuple[np.ndarray, np.ndarray]:
    """The shape grid 0.2:0.001:10 and its moment ratio ``Gamma(2/g)^2 / (Gamma(1/g) Gamma(3/g))``.

    The ratio increases strictly with ``g`` (0.0 .. 0.75), which lets the nearest grid point be
    found by bisection instead of by scanning all 9,801 points for every block.
    """
    from scipy.special import gamma  # scipy: already needed by imresize

    shapes = _matlab_colon(0.2, 0.001, 10.0)
    ratio = gamma(2 / shapes) ** 2 / (gamma(1 / shapes) * gamma(3 / shapes))
    if not np.all(np.diff(ratio) > 0):  # the bisection below relies on it
        raise RuntimeError("the AGGD moment ratio is not increasing on the grid")
    shapes.setflags(write=False)
    ratio.setflags(write=False)
    return shapes, ratio


def _aggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric generalised Gaussian fit of each row of ``x`` (``B x N`` float64), as
    ``estimateaggdparam.m``: moment matching on the grid of :func:`_aggd_grid`.

    Returns ``(alpha, beta_left, beta_right)``, each of length ``B``. A row without negative
    (or positive) values gets NaN betas and alpha 0.2, as MATLAB.
    """
    shapes, ratio = _aggd_grid()
    sq = x * x
    neg, pos = x < 0, x > 0
    with np.errstate(invalid="ignore", divide="ignore"):  # empty sides give NaN, as in MATLAB
        left_std = np.sqrt((sq * neg).sum(axis=1) / neg.sum(axis=1))
        right_std = np.sqrt((sq * pos).sum(axis=1) / pos.sum(axis=1))
        g = left_std / right_std
        r = np.abs(x).mean(axis=1) ** 2 / sq.mean(axis=1)
        r_norm = r * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    # Nearest grid ratio: the minimum of (ratio - r_norm)^2 lies among the neighbours of the
    # insertion point; taking the first minimum of those few equals MATLAB's min over the grid.
    at = np.searchsorted(ratio, np.nan_to_num(r_norm, nan=-np.inf))
    cand = np.clip(at[:, None] + np.arange(-2, 2), 0, ratio.size - 1)
    best = cand[np.arange(cand.shape[0]), np.argmin((ratio[cand] - r_norm[:, None]) ** 2, axis=1)]
    best[np.isnan(r_norm)] = 0  # MATLAB's min of an all-NaN vector returns index 1
    alpha = shapes[best]
    from scipy.special import gamma

    spread = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left_std * spread, right_std * spread


def _niqe_block_features(mscn: np.ndarray, block: int) -> np.ndarray:
    """The 18 features of every ``block x block`` block of an MSCN map, ``nblocks x 18``.

    Vectorised over the blocks (no Python loop over them); circular shifts wrap inside each
    block, as ``circshift`` on the block in ``computefeature.m``.
    """
    from scipy.special import gamma

    h, w = mscn.shape
    blocks = mscn.reshape(h // block, block, w // block, block).transpose(0, 2, 1, 3).reshape(-1, block, block)
    nb = blocks.shape[0]
    alpha, bl, br = _aggd_fit(blocks.reshape(nb, -1))
    feats = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):  # right, down, down-right, down-left (not BRISQUE's up-right)
        pair = blocks * np.roll(blocks, shift, axis=(1, 2))
        alpha, bl, br = _aggd_fit(pair.reshape(nb, -1))
        feats += [alpha, (br - bl) * gamma(2 / alpha) / gamma(1 / alpha), bl, br]
    return np.stack(feats, axis=1)


def _mscn(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a float64 ``HxW`` image (float64 out).

    ``imfilter(..., 'replicate')`` is a correlation with edge pixels repeated. The local mean
    and second moment are rounded to single precision and sigma is formed in single: that is
    what reproduces MATLAB R2021a (3e-7 on the baboon; float64 throughout lands 3.9e-4 away,
    because ``E[I^2] - mu^2`` cancels in flat areas and the rounding there moves sigma).
    """
    from scipy.ndimage import correlate1d

    g = window.sum(axis=1)  # the Gaussian window is g g' (rank 1): filter rows, then columns

    def imfilter(a: np.ndarray) -> np.ndarray:
        return correlate1d(correlate1d(a, g, axis=0, mode="nearest"), g, axis=1, mode="nearest")

    mu = imfilter(img).astype(np.float32)
    second = imfilter(img * img).astype(np.float32)
    sigma = np.sqrt(np.abs(second - mu * mu)).astype(np.float64)  # float32 arithmetic
    return (img - mu) / (sigma + 1)


def calculate_niqe(img: np.ndarray, crop_border: int = 0) -> float:
    """NIQE of a ``uint8`` image (no reference needed); lower = more natural.

    MATLAB's NIQE (Mittal et al., IEEE SPL 2013; the NIQE MATLAB release, block 96x96, no
    overlap) with its pristine model (``checkpoints/niqe_pris_params.npz``: the release's
    ``modelparameters.mat``, as distributed with BasicSR under Apache-2.0). RGB images are
    scored on the Y channel of MATLAB ``rgb2ycbcr`` (:func:`rgb2y`, rounded to uint8 as MATLAB
    does, the PSNR protocol), grayscale as it is; the second scale is made with the kit's
    MATLAB-exact ``imresize`` by 0.5 (``padding="symmetric"``, R2021a's borders). Matches
    MATLAB R2021a on Set14's baboon (480x492): 5.72957363 vs 5.72957338. Pristine photographs
    score about 3-5 (Set14 HR 4.92), bicubic x4 upscales 7-9.

    Args:
        img: ``uint8`` ``HxWx3`` RGB or ``HxW`` grayscale.
        crop_border: pixels shaved from each side first (use ``scale`` for SR results, as
            for PSNR). What is left is cropped to whole 96x96 blocks from the top-left.

    Returns:
        the NIQE score (float, >= 0).

    Raises:
        ValueError: not a ``uint8`` HxW / HxWx3 array, bad ``crop_border``, or fewer than
            two 96x96 blocks left after the crop (the covariance needs two).
    """
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise ValueError(f"calculate_niqe: expects a uint8 numpy image, got "
                         f"{getattr(img, 'dtype', type(img).__name__)}; convert with tensor2img first")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"calculate_niqe: expects HxW or HxWx3 RGB, got shape {img.shape}")
    if not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise ValueError(f"calculate_niqe: crop_border must be an integer >= 0, got {crop_border!r}")
    y = rgb2y(img) if img.ndim == 3 else img
    b = int(crop_border)
    y = y[b:y.shape[0] - b, b:y.shape[1] - b]
    rows, cols = y.shape[0] // NIQE_BLOCK, y.shape[1] // NIQE_BLOCK
    if rows * cols < 2:
        raise ValueError(f"calculate_niqe: the image is {img.shape[0]}x{img.shape[1]} (crop_border "
                         f"{crop_border}); NIQE needs at least two 96x96 blocks, e.g. 96x192")
    mu_p, cov_p, window = _niqe_model()
    x = y[:rows * NIQE_BLOCK, :cols * NIQE_BLOCK].astype(np.float64)
    feats = [_niqe_block_features(_mscn(x, window), NIQE_BLOCK)]
    # float in, float out (not rounded, as MATLAB on a double image); mirrored borders, as
    # MATLAB R2021a (clamped borders land 0.01 away from its baboon value).
    x = imresize(x, 0.5, padding="symmetric")
    feats.append(_niqe_block_features(_mscn(x, window), NIQE_BLOCK // 2))
    feats = np.concatenate(feats, axis=1)  # nblocks x 36
    complete = feats[~np.isnan(feats).any(axis=1)]
    if complete.shape[0] < 2:
        raise ValueError("calculate_niqe: fewer than two blocks have finite features (a flat image?); "
                         "NIQE is undefined for it")
    mu_d = np.nanmean(feats, axis=0)  # each feature over the blocks that have it, as nanmean
    cov_d = np.cov(complete, rowvar=False)  # normalised by N - 1, as nancov
    cov = (cov_p + cov_d) / 2
    # MATLAB's pinv tolerance: max(size) * norm(A) * eps.
    inv = np.linalg.pinv(cov, rcond=max(cov.shape) * np.finfo(np.float64).eps)
    d = mu_p - mu_d
    return float(np.sqrt(d @ inv @ d))


# --------------------------------------------------------------------------- inference
def _model_scale(model: torch.nn.Module) -> int:
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
        tile: LR tile size in pixels (>= 1), or None to run the whole image at once.
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
    """
    from tqdm.auto import tqdm

    _check_lr(lr, "super_resolve")
    scale = _model_scale(model)
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
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"super_resolve: precision='bf16' runs on 'cpu' or 'cuda', not {device.type!r}; "
                         "use precision='fp32' there")
    # bf16: autocast runs convolutions/matmuls in bfloat16 (weights cast per call, the
    # model itself is untouched). fp32: autocast switched *off*, so that even a caller
    # inside an autocast block (a training loop validating) gets true fp32 scores.
    if device.type in ("cpu", "cuda"):
        autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    else:
        autocast = contextlib.nullcontext()
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise ValueError("super_resolve: this CPU has no native bf16 (AVX512-BF16 or AMX), so precision='bf16' "
                         "would be emulated, many times slower than fp32 and using ~10x the memory; "
                         "use precision='fp32' (or bf16 on a GPU)")
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
            if tile is None or (tile >= h and tile >= w):
                sr = run(rgb)
            else:
                sr = np.empty((scale * h, scale * w, 3), dtype=np.uint8)
                cores = [(y, x) for y in range(0, h, tile) for x in range(0, w, tile)]
                for y0, x0 in tqdm(cores, desc="tiles", leave=False, unit="tile"):
                    y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                    # Context around the core, clipped at the image border (where the
                    # network zero-pads exactly as it does on the whole image).
                    py0, px0 = max(y0 - tile_overlap, 0), max(x0 - tile_overlap, 0)
                    py1, px1 = min(y1 + tile_overlap, h), min(x1 + tile_overlap, w)
                    out = run(rgb[py0:py1, px0:px1])
                    oy, ox = scale * (y0 - py0), scale * (x0 - px0)
                    sr[scale * y0:scale * y1, scale * x0:scale * x1] = \
                        out[oy:oy + scale * (y1 - y0), ox:ox + scale * (x1 - x0)]
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
    import time

    from tqdm.auto import tqdm

    if model is not None and _model_scale(model) != scale:
        raise ValueError(f"evaluate: the model is x{_model_scale(model)} but the dataset is x{scale}")
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


def niqe_or_nan(img: np.ndarray, crop_border: int = 0) -> float:
    """:func:`calculate_niqe`, or NaN when the image is too small for two 96x96 blocks
    (a table row then still has every image; :func:`mean_metrics` leaves NaN out)."""
    h, w = img.shape[:2]
    if (h - 2 * crop_border) // NIQE_BLOCK * ((w - 2 * crop_border) // NIQE_BLOCK) < 2:
        return float("nan")
    return calculate_niqe(img, crop_border=crop_border)


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
    from tqdm.auto import tqdm

    rows = []
    for i in tqdm(range(len(dataset)), desc="evaluate HR", disable=not progress, unit="img"):
        item = dataset[i]
        rows.append({"name": item["name"], "niqe": niqe_or_nan(item["hr"], crop_border=scale)})
    return rows


# --------------------------------------------------------------------------- notebook helpers
# Used by test.ipynb and super_resolution.ipynb: which generators to use, loading them with
# checks, reading the one image to super-resolve, and writing report files. Every file is
# written atomically (temporary file in the same folder, then os.replace), so an error or an
# interrupted kernel never leaves a half-written result behind.

CHECKPOINT_KINDS = ("psnr", "gan")  # stage 1 (pixel loss, SRResNet) and stage 2 (GAN, SRGAN)
_RUN_FILES = {"psnr": "generator_stage1.pth", "gan": "generator_stage2.pth"}
_SHIPPED_FILES = {"psnr": "srresnet_x{scale}.pth", "gan": "srgan_x{scale}.pth"}
MIN_LR_SIDE = 8  # smallest LR side accepted: an x4 HR must survive the border shave and the 11x11 SSIM window


def find_checkpoints(root: PathLike = ".", scale: int = 4) -> dict[str, Path | None]:
    """The generator checkpoints the notebooks use by default.

    For each kind, the shipped file if it exists, else the newest one trained with
    ``train.ipynb`` / ``solver.py``, else None:

    * ``"psnr"`` (PSNR-oriented, stage 1): ``checkpoints/srresnet_x{scale}.pth``, else
      ``runs/<name>/generator_stage1.pth``;
    * ``"gan"`` (stage 2): ``checkpoints/srgan_x{scale}.pth``, else
      ``runs/<name>/generator_stage2.pth``.

    Only run files of ``scale`` count (read from their architecture record); "newest" is by
    modification time. When both come from ``runs/``, the stage-1 file of the
    run that gave the stage-2 one is preferred, so that the pair has the same architecture
    (network interpolation needs that).

    Args:
        root: the kit's folder (the one holding ``checkpoints/`` and ``runs/``).
        scale: upscaling factor of the generators to look for.

    Returns:
        ``{"psnr": Path | None, "gan": Path | None}``; paths are ``root / relative path``
        (so they stay relative when ``root`` is).
    """
    root = Path(root)

    def run_scale(path: Path) -> int | None:
        try:  # the scale the generator was built for, from the file's architecture record
            return int(load_state(path, "generator checkpoint")["arch"]["kwargs"]["scale"])
        except (CheckpointError, KeyError, TypeError, ValueError):
            return None  # not a usable generator file: not a candidate

    def newest(kind: str) -> Path | None:
        files = [p for p in root.glob(f"runs/*/{_RUN_FILES[kind]}") if p.is_file() and run_scale(p) == scale]
        return max(files, key=lambda p: (p.stat().st_mtime, str(p))) if files else None

    found: dict[str, Path | None] = {}
    for kind in ("gan", "psnr"):
        shipped = root / "checkpoints" / _SHIPPED_FILES[kind].format(scale=scale)
        if shipped.is_file():
            found[kind] = shipped
            continue
        paired = None
        if kind == "psnr" and found["gan"] is not None and found["gan"].parent.parent == root / "runs":
            paired = found["gan"].parent / _RUN_FILES["psnr"]
        found[kind] = paired if paired is not None and paired.is_file() else newest(kind)
    return {kind: found[kind] for kind in CHECKPOINT_KINDS}


def model_label(kind: str, model: torch.nn.Module, path: PathLike | None = None) -> str:
    """Display name of a generator found by :func:`find_checkpoints`.

    Args:
        kind: ``"psnr"`` (stage 1, pixel loss) or ``"gan"`` (stage 2).
        model: the loaded network.
        path: its checkpoint; when given and not a shipped file, " (local run)" is added,
            so a short quick-profile run is never shown as if it were the real SRGAN.

    Returns:
        ``"SRResNet"`` / ``"SRGAN"`` for the SRGAN paper's network, ``"RRDB-PSNR"`` /
        ``"ESRGAN"`` for ESRGAN's ``RRDBNet`` (plus `` (local run)`` as above).
    """
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"kind must be one of {CHECKPOINT_KINDS}, got {kind!r}")
    rrdb = type(getattr(model, "module", model)).__name__ == "RRDBNet"
    label = {("psnr", False): "SRResNet", ("gan", False): "SRGAN",
             ("psnr", True): "RRDB-PSNR", ("gan", True): "ESRGAN"}[kind, rrdb]
    if path is not None and not is_shipped_checkpoint(path):
        label += " (local run)"
    return label


def is_shipped_checkpoint(path: PathLike) -> bool:
    """True for a file in a ``checkpoints/`` folder (weights shipped with the kit, identical
    for everyone), False for one trained locally (e.g. ``runs/quick/...``)."""
    return Path(path).parent.name == "checkpoints"


def interpolation_problem(psnr_model: torch.nn.Module, gan_model: torch.nn.Module) -> str | None:
    """Why two generators cannot be interpolated (ESRGAN network interpolation), or None.

    Interpolation mixes the two ``state_dict`` s parameter by parameter, so it needs the same
    parameter names and shapes (same architecture and size); ``SRResNet`` and the SRGAN
    ``Generator`` count as the same network.

    Returns:
        None when they fit, else a sentence saying what differs.
    """
    a, b = psnr_model.state_dict(), gan_model.state_dict()
    if getattr(psnr_model, "scale", None) != getattr(gan_model, "scale", None):
        return (f"the PSNR-oriented model is x{getattr(psnr_model, 'scale', '?')} and the GAN model "
                f"x{getattr(gan_model, 'scale', '?')}")
    if a.keys() != b.keys():
        return (f"the two generators have different architectures ({type(psnr_model).__name__} with "
                f"{len(a)} tensors, {type(gan_model).__name__} with {len(b)} tensors)")
    for key in a:
        if a[key].shape != b[key].shape:
            return (f"the two generators differ in size ({key}: {tuple(a[key].shape)} vs "
                    f"{tuple(b[key].shape)})")
    return None


def load_sr_input(path: PathLike, scale: int, is_hr: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the image to super-resolve and make the ``(lr, hr)`` pair.

    Args:
        path: image file.
        scale: upscaling factor.
        is_hr: True: the file is a high-resolution image; it is mod-cropped to a multiple
            of ``scale`` and its LR is MATLAB ``imresize(hr, 1/scale)`` (bicubic, the way the
            test sets' LR images are made), so the SR result can be scored against it.
            False: the file is a low-resolution image to upscale; there is no ground truth.

    Returns:
        ``lr``: ``uint8`` ``hxwx3`` RGB; ``hr``: ``uint8`` ``(scale*h)x(scale*w)x3`` or None.
        (Grayscale files are replicated to RGB: the networks take 3 channels.)

    Raises:
        FileNotFoundError / ImageReadError: missing or undecodable file (message says what to do).
        ValueError: the LR image would be smaller than ``MIN_LR_SIDE`` pixels.
    """
    path = Path(path)
    try:
        img = read_image(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}. Set the image path in the configuration cell to an existing file.") from err
    except ImageReadError as err:
        raise ImageReadError(f"{err}. Use a PNG/JPEG/BMP/TIFF image (re-save it if it is damaged).") from err
    h, w = img.shape[:2]
    min_side = MIN_LR_SIDE * (scale if is_hr else 1)
    if min(h, w) < min_side:
        what = "HR image" if is_hr else "LR image"
        raise ValueError(
            f"{path} is {h}x{w} pixels: too small as an {what} for x{scale} super-resolution "
            f"(at least {min_side}x{min_side} is needed). Use a larger image.")
    if not is_hr:
        return img, None
    hr = modcrop(img, scale)
    lr = imresize(hr, output_shape=(hr.shape[0] // scale, hr.shape[1] // scale))
    return lr, hr


METRIC_KEYS = ("psnr", "ssim", "niqe", "sharpness", "seconds")  # what mean_metrics averages


def mean_metrics(rows: list[dict]) -> dict[str, float]:
    """Average the per-image rows of :func:`evaluate` (or :func:`evaluate_hr`).

    Args:
        rows: dicts holding some of ``"psnr"``, ``"ssim"``, ``"niqe"``, ``"sharpness"``,
            ``"seconds"``; a key is averaged when every row has it.

    Returns:
        ``{key: mean over images, ..., "images": count}`` in the order of ``METRIC_KEYS``
        (means over images, as papers report them). NIQE is averaged over the images that
        have one (NaN rows, too small for NIQE, are left out; NaN if none has). An empty list
        gives ``{"psnr": nan, "ssim": nan, "seconds": nan, "images": 0}``.
    """
    if not rows:
        return {"psnr": float("nan"), "ssim": float("nan"), "seconds": float("nan"), "images": 0}
    means = {}
    for key in METRIC_KEYS:
        if all(key in r for r in rows):
            values = np.array([r[key] for r in rows], dtype=np.float64)
            if key == "niqe":
                values = values[~np.isnan(values)]
            means[key] = float(values.mean()) if values.size else float("nan")
    return {**means, "images": len(rows)}


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub Markdown table.

    Args:
        header: column titles.
        rows: one list of cells per row (formatted with ``str``; format numbers beforehand
            to choose their decimals). Columns whose cells are all numbers (empty cells
            allowed, e.g. a reference row without PSNR) are right-aligned.

    Returns:
        the table as one string, lines separated by ``\\n``.
    """
    def is_number(value) -> bool:
        try:
            float(value)
            return True
        except (TypeError, ValueError):
            return False

    def align(col: int) -> str:
        cells = [r[col] for r in rows if str(r[col]) != ""]
        return "---:" if cells and all(is_number(c) for c in cells) else "---"

    lines = ["| " + " | ".join(map(str, header)) + " |",
             "| " + " | ".join(align(c) for c in range(len(header))) + " |"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def save_text(text: str, path: PathLike) -> Path:
    """Write a UTF-8 text file (Markdown report, ...) atomically; returns ``path``."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_csv(rows: list[dict], path: PathLike, columns: list[str] | None = None) -> Path:
    """Write dict rows as a CSV file atomically; floats keep full precision.

    Args:
        rows: one dict per line.
        path: destination ``.csv``.
        columns: column order (default: the keys of the first row).
    """
    import csv

    columns = list(columns if columns is not None else (rows[0].keys() if rows else []))

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return atomic_write(path, write)


def save_figure(fig, path: PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure atomically (format from the extension, e.g. ``.png``)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight"))


def detail_crop(img: np.ndarray, size: int) -> tuple[slice, slice]:
    """The ``size x size`` window with the most detail (gradient energy), for zoomed crops.

    Deterministic (depends on the image only), so figures show the same region every run.

    Args:
        img: ``uint8`` ``HxW`` or ``HxWx3``.
        size: side of the window in pixels (clipped to the image).

    Returns:
        ``(rows, cols)`` slices; ``img[rows, cols]`` is the crop.
    """
    gray = img.astype(np.float64) if img.ndim == 2 else img.astype(np.float64).mean(axis=2)
    h, w = gray.shape
    sh, sw = min(size, h), min(size, w)
    energy = np.zeros_like(gray)
    energy[:, 1:] += np.abs(np.diff(gray, axis=1))
    energy[1:, :] += np.abs(np.diff(gray, axis=0))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[sh:, sw:] - integral[:-sh, sw:] - integral[sh:, :-sw] + integral[:-sh, :-sw]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return slice(int(top), int(top) + sh), slice(int(left), int(left) + sw)


def comparison_figure(panels: list[tuple[str, np.ndarray]], crop: tuple[slice, slice] | None = None,
                      full: bool = True, panel_size: float = 3.0):
    """Side-by-side matplotlib figure of same-size images (bicubic, SR, HR, ...), with zoomed crops.

    Pixels are drawn with ``interpolation="nearest"`` so that the crops show the real pixels
    (no smoothing by the viewer).

    Args:
        panels: ``(title, image)`` pairs; images ``uint8`` ``HxWx3`` or ``HxW``, all the same size.
        crop: ``(rows, cols)`` slices (see :func:`detail_crop`): adds a row of crops and draws
            the crop's box on the full images.
        full: show the full images; with ``False`` (and a crop) only the crops are shown.
        panel_size: inches per panel.

    Returns:
        the ``matplotlib`` Figure (show and close it with :func:`show_figure`).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if not panels:
        raise ValueError("comparison_figure: no panels given")
    shapes = {img.shape[:2] for _, img in panels}
    if crop is not None and len(shapes) > 1:
        raise ValueError(f"comparison_figure: a common crop needs images of one size, got {sorted(shapes)}")
    rows = (["full"] if full or crop is None else []) + (["crop"] if crop is not None else [])
    fig, axes = plt.subplots(len(rows), len(panels), squeeze=False,
                             figsize=(panel_size * len(panels), panel_size * len(rows)))
    for col, (title, img) in enumerate(panels):
        for row, kind in enumerate(rows):
            ax = axes[row][col]
            view = img[crop] if kind == "crop" else img
            ax.imshow(view, cmap="gray" if view.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if kind == "full" and crop is not None:
                ax.add_patch(Rectangle((crop[1].start - 0.5, crop[0].start - 0.5), crop[1].stop - crop[1].start,
                                       crop[0].stop - crop[0].start, fill=False, edgecolor="yellow", linewidth=1.5))
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def blend_images(sr_psnr: np.ndarray, sr_gan: np.ndarray, alpha: float) -> np.ndarray:
    """Image interpolation: ``(1 - alpha) * sr_psnr + alpha * sr_gan`` pixel by pixel.

    Args:
        sr_psnr, sr_gan: ``uint8`` images of the same shape (the PSNR and GAN generators' outputs).
        alpha: weight of ``sr_gan``, in ``[0, 1]``.

    Returns:
        ``uint8`` of the same shape, rounded half away from zero (as MATLAB).
    """
    if sr_psnr.shape != sr_gan.shape or sr_psnr.dtype != np.uint8 or sr_gan.dtype != np.uint8:
        raise ValueError(f"blend_images: expects two uint8 images of the same shape, got {sr_psnr.dtype} "
                         f"{sr_psnr.shape} and {sr_gan.dtype} {sr_gan.shape}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"blend_images: alpha must be in [0, 1] (0 = PSNR image, 1 = GAN image), got {alpha}")
    mix = (1 - alpha) * sr_psnr.astype(np.float64) + alpha * sr_gan.astype(np.float64)
    return np.floor(mix + 0.5).astype(np.uint8)  # mix >= 0: half away from zero


def interpolation_curves(network_srs: dict[float, np.ndarray], hr: np.ndarray | None, scale: int) -> list[dict]:
    """Network vs image interpolation (ESRGAN, Fig. 10): PSNR and NIQE for each alpha.

    Args:
        network_srs: ``{alpha: uint8 SR image}`` made by the network interpolation
            (``models.interpolate_networks(psnr, gan, alpha)``, then :func:`super_resolve`);
            it must hold alpha 0 (the PSNR generator) and 1 (the GAN generator), whose outputs
            are blended pixel-wise (:func:`blend_images`) for the image interpolation.
        hr: the ``uint8`` HR image for PSNR, or None (PSNR is then NaN).
        scale: border shaved for PSNR and NIQE (as :func:`evaluate`).

    Returns:
        one dict per alpha, in increasing alpha: ``{"alpha", "psnr_network", "niqe_network",
        "psnr_image", "niqe_image"}`` (dB; NIQE lower = more natural, NaN when too small).
    """
    if 0 not in network_srs or 1 not in network_srs:
        raise ValueError(f"interpolation_curves: network_srs needs alpha 0 and 1 (the two generators' "
                         f"outputs), got alphas {sorted(network_srs)}")

    def scores(img: np.ndarray) -> tuple[float, float]:
        psnr = float("nan") if hr is None else calculate_psnr(img, hr, crop_border=scale)
        return psnr, niqe_or_nan(img, crop_border=scale)

    rows = []
    for alpha in sorted(network_srs):
        psnr_net, niqe_net = scores(network_srs[alpha])
        psnr_img, niqe_img = scores(blend_images(network_srs[0], network_srs[1], alpha))
        rows.append({"alpha": float(alpha), "psnr_network": psnr_net, "niqe_network": niqe_net,
                     "psnr_image": psnr_img, "niqe_image": niqe_img})
    return rows


def interpolation_figure(rows: list[dict]):
    """PSNR vs alpha and NIQE vs alpha, network and image interpolation side by side.

    Args:
        rows: :func:`interpolation_curves`'s output.

    Returns:
        a matplotlib Figure with two panels (show it with :func:`show_figure`).
    """
    import matplotlib.pyplot as plt

    alphas = [r["alpha"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, title in ((axes[0], "psnr", "PSNR (dB), higher = closer to HR"),
                           (axes[1], "niqe", "NIQE, lower = more natural")):
        for kind, style in (("network", "o-"), ("image", "s--")):
            ax.plot(alphas, [r[f"{key}_{kind}"] for r in rows], style, label=f"{kind} interpolation")
        ax.set_xlabel("alpha (0 = PSNR generator, 1 = GAN generator)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def show_figure(fig, path: PathLike | None = None, dpi: int = 100, display_dpi: int | None = None) -> None:
    """Display a matplotlib figure in a notebook as a PNG, save it (atomically) if ``path``, close it.

    Showing the rendered PNG rather than the live figure keeps the cell's text output the same
    on every run (a live figure prints its size and number of axes), which nbval compares.

    Args:
        fig: the figure; it is closed afterwards.
        path: where to save it (``.png``), or None.
        dpi: resolution of the saved file.
        display_dpi: resolution of the copy shown in the notebook (default ``dpi``); a lower
            one keeps the notebook file small.
    """
    import io

    import matplotlib.pyplot as plt
    from IPython.display import Image as IPythonImage
    from IPython.display import display

    def render(resolution: int) -> bytes:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=resolution, bbox_inches="tight")
        return buffer.getvalue()

    try:
        png = render(dpi)
        if path is not None:
            atomic_write(path, lambda tmp: Path(tmp).write_bytes(png))
        if display_dpi is not None and display_dpi != dpi:
            png = render(display_dpi)
    finally:
        plt.close(fig)
    display(IPythonImage(data=png, format="png"))


def sr_filename(image: str, label: str, scale: int) -> str:
    """File name of an SR result: ``sr_filename("baby", "SRGAN", 4)`` -> ``"baby_srgan_x4.png"``.

    The method label is lower-cased and each run of characters other than letters and digits becomes ``-``.
    """
    method = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "model"
    return f"{image}_{method}_x{scale}.png"


def save_sr_set(dataset, models: dict[str, torch.nn.Module | None], out_dir: PathLike, scale: int,
                tile: int | None = None, device: str | torch.device | None = None,
                progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """Super-resolve every LR image of a (small) set with each method; save lossless PNGs.

    Nothing is written until every image has been read and super-resolved by every method, so
    a bad file or model stops the run with its error before any output exists; each PNG is then
    written atomically as ``<out_dir>/<image name>_<label>_x<scale>.png`` (see :func:`sr_filename`,
    e.g. ``baby_srgan_x4.png``).

    Args:
        dataset: sequence of dicts with ``"name"`` and ``"lr"`` (``uint8`` ``HxWx3`` or
            ``HxW``), e.g. ``datasets.EvalDataset``.
        models: ``{label: network or None}``; None is the bicubic baseline (MATLAB imresize).
        out_dir: output folder (created).
        scale: upscaling factor; every network must have this ``scale``.
        tile, device: passed to :func:`super_resolve`.
        progress: show a tqdm bar.

    Returns:
        ``{image name: {label: uint8 SR image}}`` in set order (e.g. for a contact sheet).

    Raises:
        ValueError: a network of another scale, duplicate image names or labels, or
            ``out_dir`` is an existing file. Read errors of the set's files propagate.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output folder {out_dir} is an existing file; choose a folder path")
    names = {label: sr_filename("", label, scale) for label in models}
    if len(set(names.values())) != len(names):
        raise ValueError(f"model labels {list(models)} give the same file names; use distinct labels")
    for label, model in models.items():
        if model is not None and _model_scale(model) != scale:
            raise ValueError(f"{label} is a x{_model_scale(model)} network but the set is processed at "
                             f"x{scale}: load a x{scale} checkpoint")
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for i in tqdm(range(len(dataset)), desc="super-resolve", disable=not progress, unit="img"):
        item = dataset[i]
        if item["name"] in outputs:
            raise ValueError(f"two images are named {item['name']!r}; output files are named after images")
        outputs[item["name"]] = {
            label: bicubic_upscale(item["lr"], scale) if model is None
            else super_resolve(model, item["lr"], tile=tile, device=device)
            for label, model in models.items()
        }
    for name, results in outputs.items():
        for label, sr in results.items():
            save_image(sr, out_dir / sr_filename(name, label, scale))
    return outputs


# ---------------------------------------------------------------------- command line


def _plain_state(obj: object, name: str = "") -> object:
    """``obj`` with what the safe loader refuses turned into plain data (for ``convert_trusted``).

    EasyDict and other dict subclasses -> dict, numpy arrays -> tensors, numpy scalars ->
    Python numbers, modules -> their ``state_dict``, paths -> str. Raises ``TypeError`` for
    anything else, naming where it is.
    """
    if isinstance(obj, torch.nn.Module):
        return _plain_state(obj.state_dict(), name)
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone() if type(obj) is not torch.Tensor else obj
    if isinstance(obj, dict):
        return {k: _plain_state(v, f"{name}/{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain_state(v, f"{name}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if type(obj) in _SCALARS or type(obj) is set:
        return obj
    raise TypeError(f"{name or 'the file'} holds a {type(obj).__module__}.{type(obj).__name__}, which has no "
                    "plain-data form; convert this file by hand")


def convert_trusted(src: PathLike, dst: PathLike) -> Path:
    """Rewrite a ``.pth`` file YOU TRUST as a safe kit file (plain data + digest).

    This is the kit's only call of ``torch.load(weights_only=False)``, which runs whatever
    code the file's pickle names: use it only on a file you made yourself or fully trust.

    Args:
        src: the old file (e.g. with an EasyDict config or numpy arrays, or a pickled module).
        dst: the new file; must not exist yet (nothing is overwritten).

    Returns:
        ``dst``, which ``load_state`` reads.

    Raises:
        FileNotFoundError: no ``src``. FileExistsError: ``dst`` exists.
        TypeError: ``src`` holds an object with no plain-data form.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"no file at {src}")
    if dst.exists():
        raise FileExistsError(f"{dst} exists: choose a new file name (nothing is overwritten)")
    obj = _plain_state(torch.load(src, map_location="cpu", weights_only=False))
    if not isinstance(obj, dict):
        obj = {"state": obj}
    return save_state(dst, obj)


def main(argv: list[str] | None = None) -> int:
    """``python utils.py convert-trusted OLD.pth NEW.pth``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python utils.py", description="Kit file tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert-trusted", help="rewrite a .pth file you trust (it may run code when "
                          "read) as a safe kit file with a digest")
    conv.add_argument("src", help="the trusted old file")
    conv.add_argument("dst", help="the new file (must not exist)")
    args = parser.parse_args(argv)
    try:
        out = convert_trusted(args.src, args.dst)
    except (OSError, TypeError, ValueError, RuntimeError, pickle.UnpicklingError) as err:
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
