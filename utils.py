"""Shared conventions, image I/O, atomic writes and the networks' ``state_dict`` helpers.

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

import os
import re
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from PIL import Image, ImageFile, UnidentifiedImageError

# No kit module below this one is needed (tests/test_imports.py lists the order of the modules).

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


# ---------------------------------------------------------------------- networks' state dicts
# DistributedDataParallel / DataParallel keep the network in ``.module`` and torch.compile in
# ``._orig_mod``; their state_dict keys carry those prefixes. Files and comparisons use the
# plain network's keys.

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def clean_state_dict(state: dict) -> dict:
    """Remove ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) key prefixes.

    Args:
        state: a ``state_dict`` (str -> tensor).

    Returns:
        a new dict with the same tensors; a prefix is stripped only when every key has it.
    """
    state = dict(state)
    changed = True
    while changed and state:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def unwrap(model: nn.Module) -> nn.Module:
    """The plain network inside a DDP / DataParallel / torch.compile wrapper."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def load_weights(model: nn.Module, state: dict, what: str) -> None:
    """``model.load_state_dict(clean_state_dict(state))`` (strict), with an error that says what to check.

    Args:
        model: the plain network. state: its ``state_dict`` (wrapper prefixes allowed).
        what: names the weights in the message, e.g. ``"weights in runs/x/generator_stage1.pth"``.

    Raises:
        RuntimeError: the weights do not fit the network (another architecture or size).
    """
    try:
        model.load_state_dict(clean_state_dict(state))
    except RuntimeError as err:
        raise RuntimeError(
            f"{what} do not fit {type(model).__name__}({getattr(model, 'arch_kwargs', '')}): "
            f"the checkpoint was saved from a different architecture or size.\n{err}") from err
