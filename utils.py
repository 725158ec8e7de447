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

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

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
        RGBA/LA are composited on black after dropping alpha, palette images are
        expanded, 16-bit images are rescaled to 8 bit (``round(v / 257)``), CMYK is
        converted to RGB by PIL.

    Raises:
        FileNotFoundError: the path does not exist.
        ImageReadError: the file is not a decodable image (truncated, corrupt, not an image).
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
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im).astype(np.float64)
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


def save_image(img: np.ndarray, path: PathLike) -> None:
    """Write a ``uint8`` ``HxWx3``/``HxW`` image atomically (temp file + rename).

    The format follows the extension; use ``.png`` for lossless output. A crash
    mid-write never leaves a partial file at ``path``.
    """
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"save_image expects uint8 HxW or HxWx3, got {img.dtype} {img.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        Image.fromarray(img).save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
