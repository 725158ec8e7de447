"""Build the JSON data lists the rest of the kit reads (and fetch or make the images).

A *data list* is one JSON file per image set, the single contract between the data and
the training/evaluation code::

    {"name": "Set5", "scale": 4,
     "images": [{"name": "baby", "hr": "/abs/path/baby.png", "lr": "/abs/path/babyx4.png"}, ...]}

* Paths are absolute. ``hr`` may be any size (the readers mod-crop it to ``scale``).
* Training lists (``train.json``) have ``"lr": null`` unless the data set ships LR files
  (DIV2K ``X4``); the training set then makes LR patches with MATLAB-exact ``imresize``.
* Test lists (``Set5.json``, ``Set14.json``, ``B100.json``, ``Urban100.json``,
  ``DIV2K-val.json``, ``sample-test.json``) always have an ``lr``: the LR file the data set
  ships, or one made here with ``imresize(modcrop(hr, scale), 1 / scale)`` and cached under
  ``<output_folder>/lr_cache/<set>/x<scale>/<name>.png`` (reused only while the HR pixels, the
  method and the scale are the same: the PNG records a SHA-256 of the HR pixels).

Folder layouts recognised (``scan_folder``):

* DIV2K: ``DIV2K_train_HR/0001.png`` with ``DIV2K_train_LR_bicubic/X4/0001x4.png`` beside it
  (any folder named ``*_HR`` with a sibling ``*_LR_bicubic/X<scale>``).
* EDSR benchmark: ``Set5/HR/baby.png`` with ``Set5/LR_bicubic/X4/babyx4.png``.
* SelfExSR: ``Set5/image_SRF_4/img_001_SRF_4_HR.png`` with ``..._LR.png``.
* Anything else: every image file under the folder (recursive) is an HR image.

Every file is decoded once; files that cannot be used are skipped and reported with the
reason (corrupt, not an image, too small, LR size != HR size / scale, ...).

Set5 and Set14 at x4 ship with the kit in ``benchmarks/data`` (SelfExSR layout, MATLAB-made LR
files, see the README there): they are listed whenever ``data/benchmark`` lacks them, by
:func:`main` and by :func:`prepare_test_lists` (the test lists the notebooks use).

Command line::

    python create_data_lists.py --sample                 # embedded photographs, offline, seconds
    python create_data_lists.py --download div2k benchmark   # DIV2K, Set5, Set14, B100, Urban100
    python create_data_lists.py                          # lists for what is under data/
    python create_data_lists.py --train my/hr/folder --test MySet=my/test/folder
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import http.client
import io
import json
import os
import re
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin
from tqdm import tqdm

from imresize import imresize
from utils import IMAGE_EXTENSIONS, ImageReadError, PathLike, atomic_write, modcrop, read_image, save_image

# Default locations (relative to the working directory, normally the repository root).
DATA_ROOT = "data"
DEFAULT_OUTPUT = "data/lists"
DEFAULT_TRAIN = ["DIV2K/DIV2K_train_HR"]
DEFAULT_TEST = {
    "DIV2K-val": "DIV2K/DIV2K_valid_HR",
    "Set5": "benchmark/Set5",
    "Set14": "benchmark/Set14",
    "B100": "benchmark/B100",
    "Urban100": "benchmark/Urban100",
}
SAMPLE_TEST_NAME = "sample-test"
# Set5 and Set14 at x4 ship with the kit (SelfExSR layout, MATLAB-made LR files; see the README
# there). Found relative to this file, so that it does not matter where the kit is run from.
BUNDLED_BENCHMARK = Path(__file__).resolve().parent / "benchmarks" / "data"
BUNDLED_SETS = ("Set5", "Set14")


# --------------------------------------------------------------------------- list files
def how_to_make_list(path: PathLike, quick: bool = False) -> str:
    """The command that writes the data list ``path``, for the message when it is missing.

    Args:
        path: the list file a run or a notebook looked for, as the user gave it
            (e.g. ``data/lists-291/train.json``).
        quick: the run uses the quick profile (the sample set's ``data/lists/train.json`` is enough).

    Returns:
        e.g. ``"make it with `python create_data_lists.py --train FOLDER [FOLDER ...] --output
        data/lists-291` (FOLDER: your training images)"``.
    """
    path = Path(path)
    out, name = path.parent, path.stem
    default = os.path.normpath(out) == os.path.normpath(DEFAULT_OUTPUT)
    output = "" if default else f" --output {out}"
    if name == SAMPLE_TEST_NAME or (quick and default and name == "train"):
        return f"make it with `python create_data_lists.py --sample{output}` (the embedded sample images)"
    if name == "train":
        own = f"`python create_data_lists.py --train FOLDER [FOLDER ...]{output}` (FOLDER: your training images)"
        if default:
            return (f"make it with `python create_data_lists.py --download div2k` (the paper's data) or {own}; "
                    f"for a few-minute run: `python create_data_lists.py --sample` and --profile quick")
        return f"make it with {own}"
    if default and name in DEFAULT_TEST:
        if name in BUNDLED_SETS:
            return "make it with `python create_data_lists.py` (the kit bundles Set5 and Set14)"
        source = "div2k" if name.startswith("DIV2K") else "benchmark"
        return f"make it with `python create_data_lists.py --download {source}`"
    folder = _display(BUNDLED_BENCHMARK / name) if name in BUNDLED_SETS else "FOLDER"
    return (f"make it with `python create_data_lists.py --test {name}={folder}{output}`"
            + ("" if name in BUNDLED_SETS else f" (FOLDER: the {name} images)"))


def load_data_list(path: PathLike) -> dict:
    """Read and check a data list written by :func:`create_data_lists`.

    Args:
        path: a ``.json`` list file.

    Returns:
        ``{"name": str, "scale": int, "images": [{"name": str, "hr": str, "lr": str | None}]}``
        with absolute paths (relative ones are resolved against the list's folder).

    Raises:
        FileNotFoundError: the list does not exist (the message says how to make one).
        ValueError: the file is not valid JSON or lacks the expected keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data list not found: {path}: {how_to_make_list(path)}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"data list {path} is not valid JSON ({err}); re-create it with create_data_lists.py") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or "scale" not in data:
        raise ValueError(
            f"data list {path} must be a JSON object with keys 'name', 'scale' and 'images' "
            f"(a list); re-create it with create_data_lists.py"
        )
    if not isinstance(data["scale"], int) or data["scale"] < 1:
        raise ValueError(f"data list {path}: 'scale' must be a positive integer, got {data['scale']!r}")
    data.setdefault("name", path.stem)
    for k, item in enumerate(data["images"]):
        if not isinstance(item, dict) or not isinstance(item.get("hr"), str) or not isinstance(item.get("name"), str):
            raise ValueError(f"data list {path}: entry {k} must have string 'name' and 'hr' keys, got {item!r}")
        lr = item.get("lr")
        if lr is not None and not isinstance(lr, str):
            raise ValueError(f"data list {path}: entry {k} ({item['name']}): 'lr' must be a path or null")
        item["hr"] = str((path.parent / item["hr"]).resolve()) if not os.path.isabs(item["hr"]) else item["hr"]
        if lr is not None and not os.path.isabs(lr):
            lr = str((path.parent / lr).resolve())
        item["lr"] = lr
    return data


def check_list_name(name: str) -> str:
    """Return ``name`` when it can name a list file and its LR cache folder inside the list folder.

    Args:
        name: a set name such as ``Set5`` or ``val20`` (``--test NAME=FOLDER``).

    Raises:
        ValueError: the name is empty, ``.``/``..``, starts with a dot, or holds a path separator
            or a control character (``../x`` would write outside the list folder).
    """
    if (not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name
            or any(ord(c) < 32 for c in name) or len(name) > 200):
        raise ValueError(f"list name {name!r} cannot name a file in the list folder: use letters, digits, "
                         f"'-' or '_' (e.g. --test MySet=FOLDER)")
    return name


def write_data_list(path: PathLike, name: str, scale: int, images: list[dict]) -> None:
    """Write a list (see :func:`load_data_list`) atomically; ``images`` are dicts name/hr/lr."""
    text = json.dumps({"name": name, "scale": scale, "images": images}, indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


# --------------------------------------------------------------------------- scanning folders
@dataclass
class Candidate:
    """One HR image found in a folder, with the LR file the data set ships (if any)."""

    name: str
    hr: Path
    lr: Path | None = None


@dataclass
class ScanResult:
    """What :func:`scan_folder` found: the layout, the usable candidates, the skipped files."""

    layout: str
    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _is_image_file(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def _link_problem(p: Path) -> str | None:
    """Why the symbolic link ``p`` cannot be read (a loop, or its target is gone), else None."""
    if not p.is_symlink():
        return None
    try:
        os.stat(p)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"symbolic link loop ({os.readlink(p)!r}): not followed"
        return f"broken symbolic link (to {os.readlink(p)!r})"
    return None


def _visible_files(folder: Path, recursive: bool) -> list[Path]:
    """Files under ``folder`` (sorted), ignoring hidden files/folders (``.DS_Store``, ``.git``)."""
    found = []
    if recursive:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [Path(root) / f for f in files if not f.startswith(".")]
    else:
        found = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return sorted(found)


def _find_lr(lr_dir: Path, stem: str, scale: int) -> Path | None:
    """LR file named ``<stem>x<scale>.<ext>`` (DIV2K/EDSR convention) in ``lr_dir``, if present."""
    for ext in (".png",) + tuple(e for e in IMAGE_EXTENSIONS if e != ".png"):
        p = lr_dir / f"{stem}x{scale}{ext}"
        if p.is_file():
            return p
    return None


def scan_folder(folder: PathLike, scale: int = 4) -> ScanResult:
    """Find the HR images (and shipped LR files) in ``folder``; nothing is decoded here.

    Args:
        folder: a data-set folder in one of the layouts listed in the module docstring.
        scale: the upscaling factor whose LR files are looked for.

    Returns:
        a :class:`ScanResult`; ``skipped`` holds files that are not images (by extension).

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a folder.
        ValueError: the folder holds no image files, or a SelfExSR folder lacks ``image_SRF_<scale>``.
    """
    folder = Path(folder)
    if folder.is_file():
        raise ValueError(f"{folder} is a file, not a folder of images: --train and --test take folders")
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder not found: {folder}; check the path (or make the data first, "
                                f"e.g. --download benchmark)")
    result = ScanResult(layout="plain")

    srf_dirs = sorted(p.name for p in folder.glob("image_SRF_*") if p.is_dir())
    if srf_dirs:  # SelfExSR: image_SRF_4/img_001_SRF_4_HR.png + _LR.png
        result.layout = "SelfExSR"
        sub = folder / f"image_SRF_{scale}"
        if not sub.is_dir():
            raise ValueError(f"{folder} has {', '.join(srf_dirs)} but no image_SRF_{scale} for scale {scale}")
        suffix = f"_SRF_{scale}_HR"
        for p in _visible_files(sub, recursive=False):
            if not _is_image_file(p):
                result.skipped.append((p, "not an image file (extension)"))
            elif p.stem.endswith(suffix):
                lr = p.with_name(p.stem[: -len("HR")] + "LR" + p.suffix)
                result.candidates.append(Candidate(p.stem[: -len(suffix)], p, lr if lr.is_file() else None))
            elif not p.stem.endswith(f"_SRF_{scale}_LR"):
                result.skipped.append((p, "name is neither *_HR nor *_LR in a SelfExSR folder"))
    elif (folder / "HR").is_dir():  # EDSR benchmark: HR/baby.png + LR_bicubic/X4/babyx4.png
        result.layout = "EDSR"
        lr_dir = folder / "LR_bicubic" / f"X{scale}"
        for p in _visible_files(folder / "HR", recursive=False):
            if not _is_image_file(p):
                result.skipped.append((p, "not an image file (extension)"))
            else:
                result.candidates.append(Candidate(p.stem, p, _find_lr(lr_dir, p.stem, scale)))
    elif folder.name.endswith("_HR"):  # DIV2K: DIV2K_train_HR/0001.png + DIV2K_train_LR_bicubic/X4/0001x4.png
        result.layout = "DIV2K"
        lr_dir = folder.parent / f"{folder.name[:-3]}_LR_bicubic" / f"X{scale}"
        for p in _visible_files(folder, recursive=False):
            if not _is_image_file(p):
                result.skipped.append((p, "not an image file (extension)"))
            else:
                result.candidates.append(Candidate(p.stem, p, _find_lr(lr_dir, p.stem, scale)))
    else:  # plain folder of HR images, recursive; nested names joined with "_"
        for p in _visible_files(folder, recursive=True):
            if not _is_image_file(p):
                result.skipped.append((p, "not an image file (extension)"))
            else:
                rel = p.relative_to(folder).with_suffix("")
                result.candidates.append(Candidate("_".join(rel.parts), p))

    # a link that loops or points nowhere is reported by its name, never followed
    result.skipped = [(p, _link_problem(p) or why) for p, why in result.skipped]
    result.skipped += [(c.hr, _link_problem(c.hr)) for c in result.candidates if _link_problem(c.hr)]
    result.candidates = [c for c in result.candidates if not _link_problem(c.hr)]
    if not result.candidates:
        raise ValueError(
            f"no images found in {folder} (layout {result.layout}; looked for {', '.join(IMAGE_EXTENSIONS)}): "
            f"put the images there or name another folder"
        )
    return result


def _try_read(path: Path, keep_gray: bool = True) -> tuple[np.ndarray | None, str | None]:
    """Decode ``path`` fully (catches truncation); returns (image, None) or (None, reason)."""
    try:
        return read_image(path, keep_gray=keep_gray), None
    except (ImageReadError, FileNotFoundError) as err:
        return None, f"cannot decode ({str(err).split(': ', 1)[-1]})"
    except (MemoryError, Image.DecompressionBombError) as err:
        return None, f"cannot decode ({type(err).__name__}: {err})"


# What a cached LR file was made from, stored in the PNG itself (a text chunk), so the cache is
# keyed on content: a new HR image with the same size and an older mtime (``cp -p``,
# ``rsync -a``, ``tar x``) still gets a new LR. Bump LR_CACHE_METHOD when imresize changes.
LR_CACHE_METHOD = "imresize-bicubic-matlab-v1"
LR_CACHE_KEY = "srgan-kit-lr-source"


def lr_cache_key(hr: np.ndarray, scale: int) -> str:
    """The cache key of the LR made from ``hr``: SHA-256 of the decoded pixels, method and scale.

    Args:
        hr: the HR image as read (``uint8`` ``HxW`` or ``HxWx3``, before mod-cropping).
        scale: upscaling factor.

    Returns:
        e.g. ``"sha256=<64 hex> shape=512x512x3 method=imresize-bicubic-matlab-v1 scale=4"``.
    """
    pixels = np.ascontiguousarray(hr)
    digest = hashlib.sha256(memoryview(pixels).cast("B")).hexdigest()
    return f"sha256={digest} shape={'x'.join(map(str, hr.shape))} method={LR_CACHE_METHOD} scale={scale}"


def _lr_cache_valid(path: Path, key: str, shape: tuple[int, int]) -> bool:
    """A cached LR is reused when it was made from the same HR pixels the same way (same
    ``key``), is decodable and has the right size."""
    if not path.is_file():
        return False
    try:
        with Image.open(path) as im:
            if im.format != "PNG" or im.text.get(LR_CACHE_KEY) != key:
                return False
            im.load()
            return (im.height, im.width) == shape
    except Exception:  # any decode problem: just make it again
        return False


def _save_lr_cache(lr: np.ndarray, path: Path, key: str) -> None:
    """Write a cached LR as PNG (atomically) with its ``key`` in a text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text(LR_CACHE_KEY, key)
    atomic_write(path, lambda tmp: Image.fromarray(lr).save(tmp, format="PNG", pnginfo=info))


def build_list(
    folders: list[PathLike],
    name: str,
    scale: int,
    training: bool,
    output_folder: PathLike,
    min_size: int = 96,
    show_progress: bool = True,
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Scan ``folders``, decode every file once, and return the list entries and skipped files.

    Args:
        folders: data-set folders (any recognised layout); their images are concatenated.
        name: the list name (``train``, ``Set5``, ...); names the LR cache folder.
        scale: upscaling factor.
        training: True for a training list (HR smaller than ``min_size`` is skipped, LR
            stays ``None`` unless shipped); False for a test list (a missing LR is made
            with MATLAB-exact ``imresize`` and cached).
        output_folder: folder of the lists (holds ``lr_cache``).
        min_size: smallest usable HR side for training (the HR crop size).
        show_progress: show a tqdm bar.

    Returns:
        ``(images, skipped)``: entries ``{"name", "hr", "lr"}`` with absolute paths, and
        ``(path, reason)`` for every file that was left out.
    """
    images: list[dict] = []
    skipped: list[tuple[Path, str]] = []
    candidates: list[Candidate] = []
    for folder in folders:
        found = scan_folder(folder, scale)
        candidates += found.candidates
        skipped += found.skipped

    seen: set[str] = set()
    cache_dir = Path(output_folder).resolve() / "lr_cache" / check_list_name(name) / f"x{scale}"
    for cand in tqdm(candidates, desc=f"checking {name}", unit="img", disable=not show_progress, leave=False):
        if not training and cand.name in seen:  # test results are saved by name: names must be unique
            skipped.append((cand.hr, f"duplicate image name {cand.name!r} in {name}"))
            continue
        hr, reason = _try_read(cand.hr)
        if hr is None:
            skipped.append((cand.hr, reason))
            continue
        h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
        if training and min(h, w) < min_size:
            skipped.append((cand.hr, f"too small for training: {hr.shape[1]}x{hr.shape[0]} < {min_size}x{min_size} HR crop"))
            continue
        if min(h, w) < scale:
            skipped.append((cand.hr, f"too small: {hr.shape[1]}x{hr.shape[0]} is less than the scale {scale}"))
            continue
        lr_path = None
        if cand.lr is not None:
            lr, reason = _try_read(cand.lr)
            if lr is None:
                skipped.append((cand.lr, f"LR file {reason}"))
                continue
            if lr.shape[:2] != (h // scale, w // scale):
                skipped.append((
                    cand.lr,
                    f"LR size {lr.shape[1]}x{lr.shape[0]} != HR size / {scale} "
                    f"({w // scale}x{h // scale}, HR {cand.hr.name} is {hr.shape[1]}x{hr.shape[0]})",
                ))
                continue
            lr_path = cand.lr.resolve()
        elif not training:
            lr_path = cache_dir / f"{cand.name}.png"
            key = lr_cache_key(hr, scale)
            if not _lr_cache_valid(lr_path, key, (h // scale, w // scale)):
                # output_shape rather than scale=1/scale: ceil(in * (1/3)) can overshoot by one in floating point
                _save_lr_cache(imresize(modcrop(hr, scale), output_shape=(h // scale, w // scale)), lr_path, key)
        seen.add(cand.name)
        images.append({"name": cand.name, "hr": str(cand.hr.resolve()), "lr": None if lr_path is None else str(lr_path)})
    return images, skipped


def _display(path: Path) -> str:
    """Path relative to the working directory when it is below it (short, stable output).

    Symbolic links are not followed (a link loop is reported by its own name)."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _check_writable(folder: Path) -> None:
    """Create ``folder`` and write (then remove) a small file in it; raises ``OSError`` if that fails."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test.", suffix=".tmp"):
        pass


def create_data_lists(
    train_folders: list[str],
    test_folders: dict[str, str],
    output_folder: str = DEFAULT_OUTPUT,
    scale: int = 4,
    min_size: int = 96,
    show_progress: bool = True,
) -> dict[str, int]:
    """Write ``train.json`` and one ``<set>.json`` per test set into ``output_folder``.

    Args:
        train_folders: folders of training images (merged into ``train.json``); may be empty.
        test_folders: ``{set name: folder}``, e.g. ``{"Set5": "data/benchmark/Set5"}``.
        output_folder: where the lists (and the ``lr_cache`` of made LR images) go.
        scale: upscaling factor (LR = HR / scale).
        min_size: training images with a side below this (the HR crop size) are skipped.
        show_progress: tqdm bars while decoding.

    Returns:
        ``{list name: number of images}`` for every list written.

    Raises:
        FileNotFoundError / ValueError: a folder is missing, empty, or yields no usable image
        (the message names it); skipped files are printed with their reasons.
        OSError: ``output_folder`` cannot be written (checked before any image is decoded), or a
        write failed (e.g. the disk is full).
    """
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if not train_folders and not test_folders:
        raise ValueError("no folders given: pass training and/or test folders (or use --sample)")
    for name in test_folders:
        check_list_name(name)
    out = Path(output_folder)
    counts: dict[str, int] = {}
    jobs = [("train", list(train_folders), True)] if train_folders else []
    jobs += [(name, [folder], False) for name, folder in test_folders.items()]
    # Fail fast, before minutes of decoding: every input folder first (a typo must not leave an
    # empty output folder behind), then whether the output folder can be written.
    for _, folders, _ in jobs:
        for folder in folders:
            scan_folder(folder, scale)
    _check_writable(out)
    for name, folders, training in jobs:
        images, skipped = build_list(folders, name, scale, training, out, min_size, show_progress)
        if skipped:
            print(f"{name}: skipped {len(skipped)} file(s):")
            for path, reason in skipped:
                print(f"  {_display(path)}: {reason}")
        if not images:
            raise ValueError(f"{name}: no usable image in {', '.join(map(str, folders))} (all skipped, see above)")
        write_data_list(out / f"{name}.json", name, scale, images)
        counts[name] = len(images)
        n_given = sum(1 for im in images if im["lr"] is not None and "lr_cache" not in Path(im["lr"]).parts)
        if training:
            lr_note = f"LR files given for {n_given}" if n_given else "LR made on the fly"
        else:
            lr_note = ("LR files given" if n_given == len(images) else "LR made with imresize" if n_given == 0
                       else f"LR files given for {n_given}, others made with imresize")
        print(f"{name}: {len(images)} images ({lr_note})")
    return counts


def benchmark_sets(folder: PathLike | None, scale: int = 4) -> dict[str, str]:
    """Set5/Set14 in a SelfExSR benchmark folder that hold files for ``scale``.

    Args:
        folder: e.g. :data:`BUNDLED_BENCHMARK` (x4 only) or the team's ``../shared/data/benchmark``
            (x2, x3, x4), laid out as ``<folder>/Set5/image_SRF_<scale>/img_001_SRF_<scale>_HR.png``;
            None or a missing folder gives nothing.
        scale: upscaling factor.

    Returns:
        ``{"Set5": folder, "Set14": folder}``, or fewer.
    """
    if folder is None:
        return {}
    folder = Path(folder)
    return {name: str(folder / name) for name in BUNDLED_SETS if (folder / name / f"image_SRF_{scale}").is_dir()}


def default_folders(root: PathLike = DATA_ROOT, scale: int = 4,
                    bundled: PathLike | None = BUNDLED_BENCHMARK) -> tuple[list[str], dict[str, str], list[str]]:
    """The standard data sets: ``(train folders, {test name: folder}, missing)``.

    Args:
        root: the data folder (DIV2K and the EDSR benchmark archive extracted under it).
        scale: upscaling factor; a bundled set counts only when it has files for it.
        bundled: folder of the bundled Set5/Set14 (used for a set that is not under ``root``),
            or None for ``root`` alone.

    Returns:
        the training folders found, ``{test set name: folder}`` in :data:`DEFAULT_TEST` order,
        and the standard folders under ``root`` that are missing and not replaced by a bundled set.
    """
    root = Path(root)
    fallback = benchmark_sets(bundled, scale)
    train = [str(root / f) for f in DEFAULT_TRAIN if (root / f).is_dir()]
    test = {name: str(root / f) if (root / f).is_dir() else fallback[name]
            for name, f in DEFAULT_TEST.items() if (root / f).is_dir() or name in fallback}
    missing = [str(root / f) for f in DEFAULT_TRAIN if not (root / f).is_dir()]
    missing += [str(root / f) for name, f in DEFAULT_TEST.items() if name not in test]
    return train, test, missing


# --------------------------------------------------------------------------- embedded sample
# Colour photographs bundled in scikit-image's wheel (no network; some other skimage.data images
# need a download and are avoided). The two motorcycle views are the same scene, so both stay in
# the training half; the test half is three classic photographs.
SAMPLE_TRAIN = ("rocket", "hubble_deep_field", "immunohistochemistry", "motorcycle_left", "motorcycle_right")
SAMPLE_TEST = ("astronaut", "chelsea", "coffee")


def _sample_image(name: str) -> np.ndarray:
    import skimage.data  # imported here: only --sample needs scikit-image

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if name == "motorcycle_left" else right
    return getattr(skimage.data, name)()


SAMPLE_MANIFEST = ".sample-files.json"  # in the sample root: the files make_sample_data wrote, with their SHA-256


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_sample_data(root: str = "data/sample", scale: int = 4) -> tuple[str, str]:
    """Write the embedded sample photographs as PNG under ``root/{train,test}`` (mod-cropped).

    Offline and deterministic: the images come from scikit-image's wheel. Files already there
    with the same pixels are left untouched (so cached LR images stay valid). What it writes is
    recorded in ``root/.sample-files.json`` (name and SHA-256): a file recorded there and still
    unchanged may be replaced or removed (e.g. one from an older kit version), so that the lists
    always hold exactly the sample set; any other image file in the two folders is never touched,
    and the call is refused instead.

    Args:
        root: output folder.
        scale: the images are cropped to a multiple of this.

    Returns:
        ``(train_dir, test_dir)`` as strings.

    Raises:
        ValueError: an image file in ``root/train`` or ``root/test`` was not written by this
            function (or was changed since); the message names it. Nothing is written then.
    """
    root_p = Path(root)
    manifest_path = root_p / SAMPLE_MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        manifest = {str(k): str(v) for k, v in manifest.items()} if isinstance(manifest, dict) else {}
    except (OSError, ValueError):
        manifest = {}

    def ours(path: Path) -> bool:  # written here and unchanged since
        return manifest.get(path.relative_to(root_p).as_posix()) == _file_digest(path)

    # plan everything first: refuse before anything is removed or written
    remove, write, keep = [], [], []
    for split, names in (("train", SAMPLE_TRAIN), ("test", SAMPLE_TEST)):
        folder = root_p / split
        if folder.is_dir():
            for stray in sorted(folder.iterdir()):
                if _is_image_file(stray) and stray.stem not in names and (stray.is_file() or stray.is_symlink()):
                    if stray.is_symlink() or not stray.is_file() or not ours(stray):
                        raise ValueError(
                            f"{stray} is not one of the sample images and was not written by the kit: move it "
                            f"out of {folder} (the sample lists take every image there) or use another --root")
                    remove.append(stray)
        for name in names:
            img = modcrop(np.ascontiguousarray(_sample_image(name)[..., :3]), scale)
            path = folder / f"{name}.png"
            if path.is_symlink() or path.exists():
                same = False
                if path.is_file() and not path.is_symlink():
                    try:
                        same = np.array_equal(read_image(path, keep_gray=True), img)
                    except ImageReadError:
                        pass
                if same:
                    keep.append(path)
                    continue
                if path.is_symlink() or not path.is_file() or not ours(path):
                    raise ValueError(f"{path} differs from the sample image of that name and was not written "
                                     f"by the kit: move it away or use another --root")
            write.append((path, img))
    for path in remove:
        path.unlink()
        manifest.pop(path.relative_to(root_p).as_posix(), None)
    for path, img in write:
        save_image(img, path)
        keep.append(path)
    for path in keep:
        manifest[path.relative_to(root_p).as_posix()] = _file_digest(path)
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    if not manifest_path.is_file() or manifest_path.read_text() != text:
        atomic_write(manifest_path, lambda tmp: Path(tmp).write_text(text))
    return str(root_p / "train"), str(root_p / "test")


# --------------------------------------------------------------------------- downloads
# md5 sums as published by torchSR (Coloquinte/torchSR, datasets/div2k.py and benchmarks.py).
# Sizes are taken from the server's Content-Length.
DOWNLOADS: dict[str, list[dict]] = {
    "div2k": [
        {"url": "http://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip",
         "md5": "bdc2d9338d4e574fe81bf7d158758658", "extract_to": "DIV2K"},
        {"url": "http://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip",
         "md5": "9fcdda83005c5e5997799b69f955ff88", "extract_to": "DIV2K"},
        {"url": "http://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_LR_bicubic_X4.zip",
         "md5": "76c43ec4155851901ebbe8339846d93d", "extract_to": "DIV2K"},
        {"url": "http://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_LR_bicubic_X4.zip",
         "md5": "21962de700c8d368c6ff83314480eff0", "extract_to": "DIV2K"},
    ],
    # EDSR's benchmark archive: benchmark/{Set5,Set14,B100,Urban100}/{HR,LR_bicubic/X2..X4}
    "benchmark": [
        {"url": "https://cv.snu.ac.kr/research/EDSR/benchmark.tar",
         "md5": "4ace41d33c2384b97e6b320cd0afd6ba", "extract_to": "."},
    ],
}


class DownloadError(RuntimeError):
    """A download failed or its size/checksum did not match (the partial file was removed)."""


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download_file(url: str, dest: PathLike, md5: str | None = None, size: int | None = None,
                  timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download, and verify it.

    The data go to ``dest + ".part"``; an interrupted run continues from its size with an
    HTTP ``Range`` request (a server that ignores Range restarts from zero). When complete,
    the size (``size`` or the server's Content-Length) and ``md5`` (if given) are checked and
    the file is renamed to ``dest``. A ``dest`` that already exists is returned as it is.

    Raises:
        DownloadError: network/HTTP failure (the ``.part`` is kept for resuming), or a size or
            checksum mismatch (the ``.part`` is deleted: it cannot be resumed).
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "srgan-course-kit"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to fetch: the .part is already complete
            response = None
        else:
            raise DownloadError(f"downloading {url} failed: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise DownloadError(f"downloading {url} failed: {err}. Check the connection and run again "
                            f"(a partial download resumes).") from err

    total = size
    if response is not None:
        with response:
            length = response.headers.get("Content-Length")
            if response.status == 206:
                m = re.match(r"bytes (\d+)-\d+/(\d+)", response.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != offset:
                    raise DownloadError(f"downloading {url}: unexpected Content-Range "
                                        f"{response.headers.get('Content-Range')!r} for a resume at byte {offset}")
                total = total or int(m.group(2))
                mode = "ab"
            else:  # 200: the server sent the whole file
                offset, mode = 0, "wb"
                total = total or (int(length) if length else None)
            try:
                with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                                  unit_divisor=1024, desc=dest.name) as bar:
                    while block := response.read(1 << 20):
                        f.write(block)
                        bar.update(len(block))
            except (OSError, urllib.error.URLError, http.client.HTTPException) as err:
                raise DownloadError(f"downloading {url} was interrupted ({err}); run again to resume") from err

    got = part.stat().st_size if part.is_file() else 0
    if total is not None and got != total:
        if got < total:
            raise DownloadError(f"downloading {url} stopped at {got} of {total} bytes; run again to resume")
        part.unlink()
        raise DownloadError(f"{url}: got {got} bytes, expected {total}; the partial file was deleted, run again")
    if md5 is not None:
        digest = _md5(part)
        if digest != md5:
            part.unlink()
            raise DownloadError(f"{url}: md5 {digest} does not match the expected {md5}; the file was "
                                f"deleted (corrupt or changed upstream), run again")
    os.replace(part, dest)
    return dest


def _safe_target(root: Path, member: str) -> Path:
    target = (root / member).resolve()
    if root != target and root not in target.parents:
        raise DownloadError(f"archive member {member!r} would be written outside {root}; refusing to extract")
    return target


def extract_archive(archive: PathLike, dest: PathLike) -> None:
    """Extract a ``.zip`` or ``.tar[.gz]`` into ``dest``, refusing members that escape it."""
    archive, dest = Path(archive), Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in tqdm(zf.infolist(), desc=f"extracting {archive.name}", unit="file", leave=False):
                _safe_target(dest, member.filename)
                zf.extract(member, dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                _safe_target(dest, member.name)
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            for member in tqdm(members, desc=f"extracting {archive.name}", unit="file", leave=False):
                tf.extract(member, dest, **kwargs)
    else:
        raise DownloadError(f"{archive} is neither a zip nor a tar archive")


def download_dataset(name: str, root: PathLike = DATA_ROOT, keep_archives: bool = False) -> list[Path]:
    """Download and extract one entry of :data:`DOWNLOADS` (``"div2k"`` or ``"benchmark"``) into ``root``.

    Idempotent: an archive whose extraction finished before (marker file
    ``.<archive>.extracted`` in its target folder) is skipped. Archives are deleted after
    extraction unless ``keep_archives``.

    Returns:
        the folders the archives were extracted into.
    """
    if name not in DOWNLOADS:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DOWNLOADS)}")
    root = Path(root)
    done = []
    for item in DOWNLOADS[name]:
        filename = item["url"].rsplit("/", 1)[-1]
        target = root / item.get("extract_to", ".")
        marker = target / f".{filename}.extracted"
        if marker.is_file():
            print(f"{filename}: already extracted in {target}")
            done.append(target)
            continue
        archive = download_file(item["url"], root / "downloads" / filename, item.get("md5"), item.get("size"))
        extract_archive(archive, target)
        marker.write_text(item["url"] + "\n")
        if not keep_archives:
            archive.unlink()
        print(f"{filename}: extracted into {target}")
        done.append(target)
    return done


# --------------------------------------------------------------------------- lists for the notebooks
def lr_is_current(hr_path: PathLike, lr_path: PathLike, scale: int,
                  hr: np.ndarray | None = None) -> bool:
    """Whether an LR file may be used with the HR file ``hr_path``, by the cache's content key.

    An LR the kit made (it carries the key of :func:`lr_cache_key` in a PNG text chunk, or
    lies in an ``lr_cache`` folder) is current only while it was made from the same HR pixels,
    method and scale; an LR a data set ships (no key) is taken as it is.

    Args:
        hr_path, lr_path: the two files of a list entry.
        scale: upscaling factor of the list.
        hr: the HR image already decoded with ``read_image(hr_path, keep_gray=True)`` (before
            mod-cropping), to save decoding it again; None reads it.

    Returns:
        False when the LR is the kit's and stale (or unreadable), else True.
    """
    made_here = "lr_cache" in Path(lr_path).parts
    try:
        with Image.open(lr_path) as im:
            key = getattr(im, "text", {}).get(LR_CACHE_KEY) if im.format == "PNG" else None
    except Exception:  # unreadable: not usable
        return False
    if key is None:
        return not made_here
    if hr is None:
        hr, _ = _try_read(Path(hr_path))
        if hr is None:
            return False
    h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
    return _lr_cache_valid(Path(lr_path), lr_cache_key(hr, scale), (h // scale, w // scale))


def _list_usable(path: Path, scale: int) -> bool:
    """A list that loads, is for ``scale``, whose files all exist (a moved checkout breaks
    the absolute paths in it) and whose LR files made by the kit are still those of their HR
    files (the same content key as :func:`build_list`: a replaced HR image gets a new LR)."""
    try:
        data = load_data_list(path)
    except (OSError, ValueError):
        return False
    return data["scale"] == scale and all(
        os.path.isfile(p) for item in data["images"] for p in (item["hr"], item["lr"]) if p is not None) and all(
        lr_is_current(item["hr"], item["lr"], scale) for item in data["images"] if item["lr"] is not None)


def prepare_test_lists(lists_dir: PathLike = DEFAULT_OUTPUT, scale: int = 4, data_root: PathLike = DATA_ROOT,
                       shared_benchmark: PathLike | None = None,
                       bundled: PathLike | None = BUNDLED_BENCHMARK) -> dict[str, Path]:
    """Make the test lists the notebooks evaluate, quietly, and return those available.

    Made when missing (or unusable: unreadable, another scale, files gone):

    * ``sample-test``: the embedded sample photographs (offline, seconds), so that there is
      always something to evaluate, and their ``train`` list when there is no ``train.json``
      (one that is there, e.g. DIV2K's, is left alone);
    * every standard set found under ``data_root`` (DIV2K-val, Set5, Set14, B100, Urban100,
      see :data:`DEFAULT_TEST`);
    * Set5 and Set14 that are not under ``data_root``: from ``shared_benchmark`` when it has
      files for ``scale`` (the team's ``../shared/data/benchmark`` has x2, x3, x4), else from
      ``bundled`` (the kit's own x4 copy, :data:`BUNDLED_BENCHMARK`).

    A usable list is never rewritten.

    Args:
        lists_dir: the list folder.
        scale: upscaling factor; lists made for another scale are left out of the result.
        data_root: the data folder of :func:`main` (``--root``).
        shared_benchmark: optional SelfExSR folder with ``Set5/`` and ``Set14/``, or None.
        bundled: the bundled SelfExSR folder, or None to leave it out.

    Returns:
        ``{set name: list path}`` of every test list in ``lists_dir`` for ``scale`` (not
        ``train``): the standard sets in the order DIV2K-val, Set5, Set14, B100, Urban100, then
        other lists by name, ``sample-test`` last.

    Raises:
        RuntimeError: the sample set could not be made (the message has the reason).
    """
    lists_dir = Path(lists_dir)
    log = io.StringIO()  # create_data_lists reports on stdout; the notebooks print their own summary
    problems = []
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        if not _list_usable(lists_dir / f"{SAMPLE_TEST_NAME}.json", scale):
            try:
                train_dir, test_dir = make_sample_data(str(Path(data_root) / "sample"), scale)
                # a train.json already there may be the user's DIV2K list: never replace it here
                train = [] if (lists_dir / "train.json").exists() else [train_dir]
                create_data_lists(train, {SAMPLE_TEST_NAME: test_dir}, str(lists_dir), scale, show_progress=False)
            except (OSError, ValueError) as err:
                raise RuntimeError(f"could not make the sample data set: {err}\n{log.getvalue()}") from err
        _, found, _ = default_folders(data_root, scale, bundled=None)
        for extra in (shared_benchmark, bundled):
            for name, folder in benchmark_sets(extra, scale).items():
                found.setdefault(name, folder)
        for name, folder in found.items():
            if _list_usable(lists_dir / f"{name}.json", scale):
                continue
            try:
                create_data_lists([], {name: folder}, str(lists_dir), scale, show_progress=False)
            except (OSError, ValueError) as err:
                problems.append(f"no list for {name}: {err}")
    for problem in problems:  # outside the redirection, so that they are seen
        warnings.warn(problem, stacklevel=2)

    order = list(DEFAULT_TEST)
    lists = {}
    for path in sorted(lists_dir.glob("*.json")):
        if path.stem == "train":
            continue
        try:
            if json.loads(path.read_text()).get("scale") != scale:
                continue
        except (OSError, ValueError, AttributeError):
            continue
        lists[path.stem] = path
    key = {name: (0, order.index(name), name) if name in order else
           (2, 0, name) if name == SAMPLE_TEST_NAME else (1, 0, name) for name in lists}
    return {name: lists[name] for name in sorted(lists, key=key.get)}


# --------------------------------------------------------------------------- command line
def _parse_test(items: list[str]) -> dict[str, str]:
    tests = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep:  # a bare folder: name the set after it (`--test ..` names it after the real folder)
            name, folder = Path(os.path.abspath(item)).name, item
        tests[name] = folder
    return tests


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (``python create_data_lists.py --help``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", action="store_true",
                        help="build the embedded sample data set (scikit-image photographs) and its lists")
    parser.add_argument("--download", choices=sorted(DOWNLOADS), nargs="+", action="extend", metavar="NAME",
                        help=f"download and extract data sets ({', '.join(sorted(DOWNLOADS))}) into --root, "
                             f"then make the lists, e.g. --download div2k benchmark")
    parser.add_argument("--root", default=DATA_ROOT, help="data folder (default: %(default)s)")
    parser.add_argument("--train", nargs="*", default=None, metavar="FOLDER", help="training image folders")
    parser.add_argument("--test", nargs="*", default=None, metavar="NAME=FOLDER", help="test sets")
    parser.add_argument("--output", default=None, help="list folder (default: <root>/lists)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--min-size", type=int, default=96, help="smallest HR side for training (the crop size)")
    parser.add_argument("--keep-archives", action="store_true", help="keep downloaded archives after extraction")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    output = args.output or str(Path(args.root) / "lists")

    try:
        if args.sample:
            train_dir, test_dir = make_sample_data(str(Path(args.root) / "sample"), args.scale)
            counts = create_data_lists([train_dir], {SAMPLE_TEST_NAME: test_dir}, output, args.scale,
                                       args.min_size, show_progress=False)
            print(f"sample data set: {counts['train']} train / {counts[SAMPLE_TEST_NAME]} test images, lists in {output}")
            return 0
        for name in dict.fromkeys(args.download or []):  # each once, in the order given
            download_dataset(name, args.root, args.keep_archives)
        if args.train is not None or args.test is not None:
            train, test = args.train or [], _parse_test(args.test or [])
        else:
            train, test, missing = default_folders(args.root, args.scale, bundled=BUNDLED_BENCHMARK)
            for m in missing:
                print(f"not found (skipped): {m}")
            bundled = [name for name, folder in test.items() if Path(folder).parent == BUNDLED_BENCHMARK]
            if bundled:
                print(f"{' and '.join(bundled)}: the kit's bundled copy ({_display(BUNDLED_BENCHMARK)})")
            if not train and not test:
                print(f"no data set under {args.root}/. Use --sample for the embedded images, or "
                      f"--download div2k benchmark, or pass --train/--test folders.")
                return 1
            if not train:
                print(f"no training set under {args.root}/ (test lists only): --download div2k, or --train FOLDER")
        counts = create_data_lists(train, test, output, args.scale, args.min_size)
        print(f"lists in {output}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return 0
    except (FileNotFoundError, ValueError, DownloadError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full, read-only or unwritable folder, a file where a folder should be
        print(f"error: {os_error_message(err, output)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again (finished files are kept, "
              "a partial download resumes)", file=sys.stderr)
        return 130


def _one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (what the CLI prints after ``error:``)."""
    return " ".join(str(err).split())


def os_error_message(err: OSError, output: PathLike) -> str:
    """One line saying what went wrong with a file operation and what to do.

    Args:
        err: the error (its ``errno`` and ``filename`` are used when set).
        output: the list folder of the run, named in the advice.
    """
    where = f" ({err.filename})" if err.filename else ""
    if err.errno == errno.ENOSPC:
        return (f"no space left on the disk{where}: free some space (the lists and their LR cache need "
                f"a few MB, DIV2K about 4 GB) and run the same command again")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write{where}: permission denied or a read-only folder; choose a folder you can write "
                f"with --output (now {output}) or --root, or fix its permissions")
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"a file stands where a folder is needed{where}: remove it or choose another --output/--root"
    return f"{err.strerror or _one_line(err)}{where}"


if __name__ == "__main__":
    sys.exit(main())
