"""PyTorch datasets over the JSON data lists written by ``create_data_lists.py``.

* :class:`TrainDataset`: random HR patches (aligned to the scale grid, flipped/rotated) and
  their LR patches, ``patches_per_image`` per image per epoch. The LR patch is MATLAB-exact
  ``imresize(hr_patch, 1 / scale)`` on ``uint8``, or the aligned crop of the LR file the list
  gives (DIV2K ``X4``).
* :class:`EvalDataset`: whole images for evaluation, HR mod-cropped, LR exactly HR / scale.

All randomness comes from torch's global RNG (``torch.randint``), so ``torch.manual_seed``,
DataLoader worker seeding and ``torch.get_rng_state()``/``set_rng_state`` reproduce the patches
exactly (the solver's resume relies on it).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from create_data_lists import load_data_list, lr_is_current
from imresize import imresize
from utils import img2tensor, modcrop, read_image

__all__ = ["TrainDataset", "EvalDataset", "load_data_list"]


def _header_size(path: str) -> tuple[int, int]:
    """``(height, width)`` from the file header (fast, nothing decoded)."""
    with Image.open(path) as im:
        return im.height, im.width


class TrainDataset(Dataset):
    """Random training patches: ``len = n_images * patches_per_image``.

    Args:
        list_file: a data list (``train.json``) from ``create_data_lists.py``.
        scale: upscaling factor; must equal the list's scale.
        patch_size: HR patch side in pixels (a multiple of ``scale``); LR patches are
            ``patch_size // scale``.
        patches_per_image: patches drawn from each image per epoch; item ``i`` comes from
            image ``i // patches_per_image``.
        augment: random horizontal flip, vertical flip and 90-degree rotation.
        cache_mb: decoded ``uint8`` images are kept in memory, first come first kept, until
            this many MiB are used; later images are decoded on every access. With DataLoader
            workers every worker process has its own cache (budget per worker).

    ``__getitem__(i)`` returns ``(lr, hr)``: ``float32`` tensors ``3 x p/s x p/s`` and
    ``3 x p x p`` with values in ``[0, 1]``.

    Images too small for one patch, unreadable headers, and LR files whose size is not
    HR / scale are dropped at construction with a warning naming each file (so an epoch
    never stops half-way on them); if nothing is left a ``ValueError`` is raised. A file that
    becomes unreadable after construction raises ``ImageReadError`` naming it.
    """

    def __init__(
        self,
        list_file: str,
        scale: int = 4,
        patch_size: int = 96,
        patches_per_image: int = 100,
        augment: bool = True,
        cache_mb: int = 2048,
    ) -> None:
        data = load_data_list(list_file)
        if data["scale"] != scale:
            raise ValueError(
                f"{list_file} was made for scale {data['scale']}, not {scale}; re-create it with "
                f"`python create_data_lists.py --scale {scale}` or pass scale={data['scale']}"
            )
        if patch_size <= 0 or patch_size % scale:
            raise ValueError(f"patch_size must be a positive multiple of scale {scale}, got {patch_size}")
        if patches_per_image < 1:
            raise ValueError(f"patches_per_image must be >= 1, got {patches_per_image}")
        self.scale, self.patch_size = scale, patch_size
        self.patches_per_image, self.augment = patches_per_image, augment
        self.cache_budget = max(0, int(cache_mb)) * 1024 * 1024
        self.cache: dict[str, np.ndarray] = {}
        self.cache_bytes = 0

        self.images: list[dict] = []
        dropped: list[str] = []
        for item in data["images"]:
            try:
                h, w = _header_size(item["hr"])
            except (OSError, SyntaxError, ValueError) as err:
                dropped.append(f"{item['hr']}: cannot read ({err})")
                continue
            h, w = h - h % scale, w - w % scale
            if min(h, w) < patch_size:
                dropped.append(f"{item['hr']}: {w}x{h} (mod-cropped) is smaller than the {patch_size}x{patch_size} patch")
                continue
            if item["lr"] is not None:
                try:
                    lh, lw = _header_size(item["lr"])
                except (OSError, SyntaxError, ValueError) as err:
                    dropped.append(f"{item['lr']}: cannot read LR file ({err})")
                    continue
                if (lh, lw) != (h // scale, w // scale):
                    dropped.append(f"{item['lr']}: LR size {lw}x{lh} != HR size / {scale} ({w // scale}x{h // scale})")
                    continue
            self.images.append(item)
        if dropped:
            warnings.warn(f"{list_file}: dropped {len(dropped)} image(s):\n  " + "\n  ".join(dropped), stacklevel=2)
        if not self.images:
            raise ValueError(f"{list_file}: no usable training image (patch_size {patch_size})")

    def __len__(self) -> int:
        return len(self.images) * self.patches_per_image

    def _load(self, path: str) -> np.ndarray:
        """Decoded ``uint8`` ``HxWx3`` image, from the cache when it is there."""
        img = self.cache.get(path)
        if img is None:
            img = read_image(path)  # RGB always: grayscale is replicated for training
            if self.cache_bytes + img.nbytes <= self.cache_budget:
                self.cache[path] = img
                self.cache_bytes += img.nbytes
        return img

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        item = self.images[index // self.patches_per_image]
        s, p = self.scale, self.patch_size
        lp = p // s
        hr_img = self._load(item["hr"])
        lr_img = self._load(item["lr"]) if item["lr"] is not None else None
        # Draw the top-left corner on the LR grid, so HR and LR crops stay aligned.
        lh, lw = hr_img.shape[0] // s, hr_img.shape[1] // s
        y = int(torch.randint(0, lh - lp + 1, (1,)))
        x = int(torch.randint(0, lw - lp + 1, (1,)))
        hr = hr_img[y * s : y * s + p, x * s : x * s + p]
        lr = None if lr_img is None else lr_img[y : y + lp, x : x + lp]
        if self.augment:
            hflip, vflip, rot = (bool(b) for b in torch.randint(0, 2, (3,)))
            hr = _augment(hr, hflip, vflip, rot)
            lr = None if lr is None else _augment(lr, hflip, vflip, rot)
        if lr is None:
            # After augmentation, so the LR patch is exactly imresize of the returned HR patch.
            lr = imresize(np.ascontiguousarray(hr), output_shape=(lp, lp))
        return img2tensor(np.ascontiguousarray(lr))[0], img2tensor(np.ascontiguousarray(hr))[0]


def _augment(img: np.ndarray, hflip: bool, vflip: bool, rot: bool) -> np.ndarray:
    if hflip:
        img = img[:, ::-1]
    if vflip:
        img = img[::-1]
    if rot:
        img = np.rot90(img)
    return img


class EvalDataset(Dataset):
    """Whole images of a test list, for evaluation.

    Args:
        list_file: a data list (``Set5.json``, ``sample-test.json``, ...).
        scale: upscaling factor; must equal the list's scale.

    ``__getitem__(i)`` returns ``{"name": str, "lr": uint8 array, "hr": uint8 array}``: the HR
    image mod-cropped to ``scale`` and the LR exactly ``HR / scale`` in size (``HxWx3`` RGB,
    or ``HxW`` for a grayscale image: the MATLAB protocol scores it as it is; inference code
    replicates it to RGB for the networks). An entry without an LR file gets
    ``imresize(hr, 1 / scale)``. When one of HR/LR is grayscale and the other RGB, an RGB
    image whose three channels are equal is reduced to gray; otherwise the gray one is
    replicated to RGB.

    An LR file the kit made (it carries the content key of ``create_data_lists.lr_cache_key``) is
    used only while it was made from the HR pixels read now; otherwise the LR is made from the HR
    with ``imresize`` as the list would have, with a warning naming both files.

    Raises (on access): ``ValueError`` naming the files when the LR size is not HR / scale;
    ``ImageReadError``/``FileNotFoundError`` naming an unreadable file.
    """

    def __init__(self, list_file: str, scale: int = 4) -> None:
        data = load_data_list(list_file)
        if data["scale"] != scale:
            raise ValueError(
                f"{list_file} was made for scale {data['scale']}, not {scale}; re-create it with "
                f"`python create_data_lists.py --scale {scale}` or pass scale={data['scale']}"
            )
        if not data["images"]:
            raise ValueError(f"{list_file}: the list has no images")
        self.name = data["name"]
        self.scale = scale
        self.images = data["images"]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        item = self.images[index]
        raw = read_image(item["hr"], keep_gray=True)
        hr = modcrop(raw, self.scale)
        lr = None if item["lr"] is None else read_image(item["lr"], keep_gray=True)
        if lr is not None and not lr_is_current(item["hr"], item["lr"], self.scale, hr=raw):
            # an LR the kit made from other HR pixels (the HR was replaced since, e.g. by cp -p)
            warnings.warn(f"{item['lr']} was made from an earlier version of {item['hr']}: using imresize of "
                          "the current HR instead; make the list again with create_data_lists.py", stacklevel=2)
            lr = None
        if lr is None:
            lr = imresize(hr, output_shape=(hr.shape[0] // self.scale, hr.shape[1] // self.scale))
        else:
            hr, lr = _match_channels(hr, lr)
            if lr.shape[:2] != (hr.shape[0] // self.scale, hr.shape[1] // self.scale):
                raise ValueError(
                    f"LR {item['lr']} is {lr.shape[1]}x{lr.shape[0]} but HR {item['hr']} (mod-cropped "
                    f"{hr.shape[1]}x{hr.shape[0]}) / {self.scale} is {hr.shape[1] // self.scale}x"
                    f"{hr.shape[0] // self.scale}; re-create the list with create_data_lists.py"
                )
        return {"name": item["name"], "lr": lr, "hr": hr}


def _match_channels(hr: np.ndarray, lr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give HR and LR the same layout when one is ``HxW`` gray and the other ``HxWx3``."""
    if hr.ndim == lr.ndim:
        return hr, lr
    gray_first = hr.ndim == 2
    colour = lr if gray_first else hr
    if (colour[..., 0] == colour[..., 1]).all() and (colour[..., 0] == colour[..., 2]).all():
        colour = np.ascontiguousarray(colour[..., 0])
        return (hr, colour) if gray_first else (colour, lr)
    if gray_first:
        return np.repeat(hr[:, :, None], 3, axis=2), lr
    return hr, np.repeat(lr[:, :, None], 3, axis=2)
