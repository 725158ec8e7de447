"""Human rating of super-resolved images: a mean opinion score (MOS) test as in the SRGAN paper.

Ledig et al. (CVPR 2017) had people give every version of every test image an integral score
from 1 (bad) to 5 (excellent), in random order, after calibrating them on nearest-neighbour
upscaled images (score 1) and the original HR images (score 5); the mean is the MOS, and
differences between methods were tested with the Mann-Whitney U test. ITU-T P.910's absolute
category rating (ACR) uses the same five labels. The commands::

    # a rating session from the notebook's outputs (files <image>_<method>_x4.png); calibration
    # images come from the bundled Set14 (never an image that is also rated)
    python course/rating.py make results/sr_set5 --hr benchmarks/data/Set5 --out results/rating_set5

    # students' result folders, one folder per method: LABEL=FOLDER
    python course/rating.py make alice=hand_in/alice bob=hand_in/bob --hr benchmarks/data/Set5 --out session

    # a whole class: the submissions (folders or the zips check_submission.py --pack makes)
    python course/rating.py make-class hand_in/*.zip --out class_rating --raters 12

    # the raters' exports -> MOS table, confidence intervals, significance, figure
    python course/rating.py tally ratings_*.csv --out results/mos
    # ... of a class rating: also the leaderboard (MOS and the kit's PSNR / SSIM / NIQE per student)
    python course/rating.py tally ratings_*.csv --session class_rating --out class_mos

``make`` writes ``OUT/index.html`` and ``OUT/images/<opaque id>.png``: a static page that opens
from disk (file://) in any current browser, offline, without a server or Python. It asks for
the rater's name, shows the calibration images, then every image of every method (plus the
nearest-neighbour and HR anchors, rated like the others) one at a time in an order drawn from
the rater's name, each at the largest whole-number zoom that fits the window (nearest-neighbour
enlargement; + and - change it); keys 1-5 or clicks score it. Every answer is
kept in the browser's localStorage at once, so a reload or a closed tab loses nothing. At the
end the rater downloads a CSV ``rater,image,method,score,seconds`` (``seconds``: from the image
appearing to its score; it restarts when the page is reloaded).

``make-class`` rates every student's Set5 images (``results/sr_set5/`` of each submission, as
``super_resolution.ipynb`` writes and ``--pack`` zips them; each student is a method, named by
the submission's folder or zip name) with the anchors ``HR``, ``nearest`` and ``bicubic``, and
calibration images from the bundled Set14. Only the PNGs are read from a submission (a zip is
never extracted; its members are size-checked first); a submission without all five images of
one method, of the HR sizes, as 8-bit RGB PNGs, is named in one line and left out. As one
rater cannot score a whole class, each rater gets a page of their own (``OUT/rater_01.html``,
...) with a balanced random subset of about ``--per-rater`` images (default 120, about 15
minutes), so that every (student, image) and every anchor image is rated by about the same
number of raters, and each rater sees every anchor kind. ``OUT/class.json`` records the session
for ``tally --session``, which adds ``leaderboard.csv`` and ``leaderboard.md``: one row per
student, ``student,ratings,mos,ci_low,ci_high,rank,psnr,ssim,niqe``, the metrics recomputed by
the kit from the student's PNGs against the bundled HR images (MATLAB protocol: Y channel,
4 border pixels shaved).

Blind: image files have random names, the order is shuffled (in the page and per rater) and the
page text names no method. The mapping from the opaque ids to image and method names must be in
the page for the export to name them; it is XOR-obfuscated and base64-encoded there (and in
``class.json``), which keeps it out of sight but not secret: a rater who reads the page source
with the browser's developer tools can decode it.

``tally`` flags raters whose mean HR score is below their mean nearest-neighbour score (they did
not follow the calibration, or swapped the scale), leaves them out and names them in the report.
MOS intervals are clipped to the 1-5 scale. Names (of raters, methods, students) are escaped in
every file it writes: in the CSV files a cell starting with ``= + - @``, a tab or a carriage
return gets a leading ``'`` (spreadsheets would run it as a formula), in the Markdown files
table and HTML characters are escaped.
"""
from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import struct
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _folder in (REPO, REPO / "course"):  # run as `python course/rating.py` or loaded from a file
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import inference  # noqa: E402
import metrics  # noqa: E402
import notebook_helpers  # noqa: E402
import utils  # noqa: E402
from create_data_lists import load_data_list, scan_folder  # noqa: E402  (same image names as the notebooks)
from imresize import imresize  # noqa: E402
from report import md_escape  # noqa: E402  (course/report.py)

HR_METHOD = "HR"             # anchor method names in the exported CSV
NEAREST_METHOD = "nearest"
BICUBIC_METHOD = "bicubic"   # the third anchor of a class rating (MATLAB bicubic of the LR image)
ANCHORS = (HR_METHOD, NEAREST_METHOD, BICUBIC_METHOD)
BUNDLED = REPO / "benchmarks" / "data"   # Set5 and Set14 at x4, HR and MATLAB-made LR
CALIBRATION_SETS = ("Set14", "Set5")     # default calibration pool, the first with unrated images
CLASS_SCALE = 4
CLASS_SR_DIR = "results/sr_set5"         # where super_resolution.ipynb writes (and --pack zips) them
DEFAULT_PER_RATER = 120                  # images per rater in a class rating: about 15 minutes
SET5_EDSR_NAMES = ("baby", "bird", "butterfly", "head", "woman")  # the EDSR archive's names of img_001..5
MAX_PNG_MB = 32                          # a submission's PNG (zipped or not) larger than this is refused
ACR_LABELS = {1: "bad", 2: "poor", 3: "fair", 4: "good", 5: "excellent"}
COLUMNS = ("rater", "image", "method", "score", "seconds")
PAGE_TEMPLATE = Path(__file__).with_name("rating_page.html")


class RatingError(ValueError):
    """Bad input from the user (missing folder, incomplete method, malformed ratings); one line."""


# =========================================================================== make: the session
@dataclass
class SetImage:
    """One image of the rated set: ``hr`` mod-cropped to ``scale``, ``lr`` exactly ``hr / scale``
    (both ``uint8`` ``HxWx3`` RGB or ``HxW`` gray)."""

    name: str
    hr: np.ndarray
    lr: np.ndarray


def load_set(source: utils.PathLike, scale: int) -> list[SetImage]:
    """Read the HR images (and their LR inputs) of the rated set.

    Args:
        source: a data list (``data/lists/Set5.json``, as the notebooks use) or an image folder in
            a layout ``create_data_lists.scan_folder`` knows (e.g. the bundled
            ``benchmarks/data/Set5``; its ``image_SRF_4`` subfolder is accepted too). Image names
            are those the notebooks give their outputs (``img_001`` for ``img_001_SRF_4_HR.png``).
        scale: upscaling factor.

    Returns:
        the images in list/folder order; an image without an LR file gets MATLAB's bicubic
        ``imresize(hr, 1 / scale)``, as the kit's test sets do.

    Raises:
        RatingError: the source is missing, empty, made for another scale, or an LR file has the
            wrong size. ``utils.ImageReadError`` for an unreadable image.
    """
    source = Path(source)
    if source.suffix.lower() == ".json":
        if not source.is_file():
            raise RatingError(f"data list not found: {source}")
        data = load_data_list(source)
        if data["scale"] != scale:
            raise RatingError(f"data list {source} is for x{data['scale']}, not x{scale}; pass --scale {data['scale']}")
        entries = [(item["name"], item["hr"], item.get("lr")) for item in data["images"]]
    elif source.is_dir():
        folder = source.parent if re.fullmatch(r"image_SRF_\d+", source.name) else source
        entries = [(c.name, c.hr, c.lr) for c in scan_folder(folder, scale).candidates]
    else:
        raise RatingError(f"HR images not found: {source} is neither a folder nor a data list (.json)")
    if not entries:
        raise RatingError(f"no images in {source}")
    images = []
    for name, hr_path, lr_path in entries:
        hr = utils.modcrop(utils.read_image(hr_path, keep_gray=True), scale)
        size = (hr.shape[0] // scale, hr.shape[1] // scale)
        lr = imresize(hr, output_shape=size) if lr_path is None else utils.read_image(lr_path, keep_gray=True)
        if lr.shape[:2] != size:
            raise RatingError(f"LR image {lr_path} is {lr.shape[1]}x{lr.shape[0]}, expected "
                              f"{size[1]}x{size[0]} (HR {hr_path} / {scale})")
        images.append(SetImage(name, hr, lr))
    return images


def nearest_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling, the low anchor: each LR pixel becomes a ``scale x scale`` block.

    ``uint8`` ``hxw[x3]`` in, ``uint8`` ``(scale*h)x(scale*w)[x3]`` out; for an integer scale this
    is exactly MATLAB's ``imresize(lr, scale, 'nearest')``.
    """
    return np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)


def _image_files(folder: Path) -> list[Path]:
    """Visible image files directly in ``folder``, sorted."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in utils.IMAGE_EXTENSIONS)


def _image_of(stem: str, names: list[str]) -> str | None:
    """The image name a file stem starts with (``name`` or ``name_...``); the longest wins."""
    for name in sorted(names, key=len, reverse=True):
        if stem == name or stem.startswith(name + "_"):
            return name
    return None


def sr_set_methods(folder: Path, names: list[str], scale: int) -> dict[str, dict[str, Path]]:
    """The methods in a folder written by ``notebook_helpers.save_sr_set``.

    Files are named ``<image>_<method>_x<scale>.<ext>`` (``notebook_helpers.sr_filename``); other files
    (a contact sheet, other images or scales) are ignored.

    Returns:
        ``{method: {image name: file}}``, method as in the file names (``srgan``, ``bicubic``).
    """
    found: dict[str, dict[str, Path]] = {}
    suffix = f"_x{scale}"
    for path in _image_files(folder):
        name = _image_of(path.stem, names)
        if name is None or not path.stem.endswith(suffix):
            continue
        method = path.stem[len(name) + 1: -len(suffix)]
        if not method:
            continue
        if name in found.get(method, {}):
            raise RatingError(f"{folder} has two files for image {name} and method {method}: "
                              f"{found[method][name].name} and {path.name}; keep one")
        found.setdefault(method, {})[name] = path
    return found


def submission_files(folder: Path, names: list[str]) -> dict[str, Path]:
    """One method's folder (e.g. a student's submission): one file per image, named
    ``<image>.<ext>`` or ``<image>_<anything>.<ext>``. Returns ``{image name: file}``."""
    found: dict[str, Path] = {}
    for path in _image_files(folder):
        name = _image_of(path.stem, names)
        if name is None:
            continue
        if name in found:
            raise RatingError(f"{folder} has two files for image {name} ({found[name].name}, {path.name}); "
                              f"a LABEL=FOLDER input holds one method: one file per image")
        found[name] = path
    return found


def find_methods(inputs: list[str], names: list[str], scale: int,
                 only: list[str] | None = None) -> dict[str, dict[str, Path]]:
    """Collect the rated methods from the command line's inputs.

    Args:
        inputs: ``FOLDER`` (a ``notebook_helpers.save_sr_set`` folder: every method in it) or
            ``LABEL=FOLDER`` (one method named LABEL, one file per image).
        names: image names of the rated set.
        scale: upscaling factor (in ``save_sr_set`` file names).
        only: keep just these methods (names as found), or None for all.

    Returns:
        ``{method: {image name: file}}``, every method complete (a file for every image).

    Raises:
        RatingError: a missing folder, a folder without results for these images, a method
            lacking images, a method found twice, a reserved or unknown method name.
    """
    methods: dict[str, dict[str, Path]] = {}
    where: dict[str, str] = {}
    for arg in inputs:
        label, sep, folder_text = arg.partition("=")
        if not sep or Path(arg).exists():
            label, folder_text = "", arg
        folder = Path(folder_text)
        if not folder.is_dir():
            raise RatingError(f"SR folder not found: {folder}")
        if label:
            found = {label: submission_files(folder, names)}
            pattern = "<image>.png or <image>_<anything>.png"
        else:
            found = sr_set_methods(folder, names, scale)
            pattern = f"<image>_<method>_x{scale}.png (notebook_helpers.save_sr_set)"
        if not found or not any(found.values()):
            raise RatingError(f"no SR images of {', '.join(names)} in {folder}: expected files named {pattern}")
        for method, files in found.items():
            if only is not None and method not in only:
                continue
            if method.lower() in (HR_METHOD.lower(), NEAREST_METHOD.lower()):
                raise RatingError(f"method name {method!r} ({folder}) is reserved for the anchors; rename it")
            if method in methods:
                raise RatingError(f"method {method!r} is in both {where[method]} and {folder}; "
                                  f"name them apart with LABEL=FOLDER")
            missing = [name for name in names if name not in files]
            if missing:
                raise RatingError(f"method {method!r} in {folder} lacks image(s) {', '.join(missing)} "
                                  f"(files named {pattern}); add them or leave the method out with --methods")
            methods[method] = files
            where[method] = str(folder)
    if only is not None:
        unknown = [m for m in only if m not in methods]
        if unknown:
            raise RatingError(f"--methods: {', '.join(unknown)} not found in the inputs")
    if not methods:
        raise RatingError("no methods to rate")
    return methods


def obfuscate(obj, key: bytes) -> str:
    """JSON of ``obj`` XORed with ``key`` (repeated), base64: hidden from view, not secret."""
    data = json.dumps(obj).encode("utf-8")
    return base64.b64encode(bytes(b ^ key[i % len(key)] for i, b in enumerate(data))).decode("ascii")


def deobfuscate(text: str, key: bytes):
    """Inverse of :func:`obfuscate` (what the page's export does in JavaScript)."""
    data = base64.b64decode(text)
    return json.loads(bytes(b ^ key[i % len(key)] for i, b in enumerate(data)).decode("utf-8"))


def session_json(session: dict) -> str:
    """The session as JSON safe inside a ``<script>`` element."""
    return json.dumps(session).replace("</", "<\\/")


def _prepare_out_dir(out_dir: Path, overwrite: bool, page: str = "index.html") -> None:
    """Refuse to replace a non-empty folder unless asked, and never one that is not a session
    (one without ``page``: ``index.html``, or ``class.json`` for a class rating)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise RatingError(f"output {out_dir} is an existing file; choose a folder path")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise RatingError(f"output folder {out_dir} is not empty; choose a new folder or pass --overwrite "
                              f"(raters part-way through the old session would lose their place)")
        if not (out_dir / page).is_file():
            raise RatingError(f"{out_dir} does not look like a rating session (no {page}); not replacing it")


def _publish(tmp: Path, out_dir: Path) -> None:
    """Put the finished folder ``tmp`` in place of ``out_dir`` (a page is never half written)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def make_session(methods: dict[str, dict[str, Path]], images: list[SetImage], out_dir: utils.PathLike,
                 scale: int, calibration: list[SetImage], overwrite: bool = False) -> Path:
    """Write a blind rating session: ``out_dir/index.html`` and ``out_dir/images/<id>.png``.

    Args:
        methods: ``{method: {image name: SR file}}`` (see :func:`find_methods`); every SR image
            must have its HR image's size.
        images: the rated set (HR images and LR inputs); each gets an ``HR`` and a ``nearest``
            version, rated like the methods.
        out_dir: the session folder; built beside it and moved into place when complete.
        scale: upscaling factor (for the nearest-neighbour anchor).
        calibration: images shown first, each as nearest (score 1) then HR (score 5).
        overwrite: replace an existing session in ``out_dir``.

    Returns:
        the path of ``index.html``.

    Raises:
        RatingError: an SR image of the wrong size, or ``out_dir`` not usable.
    """
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{secrets.token_hex(4)}"
    rng = secrets.SystemRandom()
    meta: dict[str, list[str]] = {}   # opaque id -> [image, method]: only the export reads it
    try:
        def add(img: np.ndarray) -> str:
            token = secrets.token_hex(8)
            utils.save_image(img, tmp / "images" / f"{token}.png")  # re-encoded: no metadata carried over
            return token

        for image in images:
            for method, files in methods.items():
                sr = utils.read_image(files[image.name], keep_gray=True)
                if sr.shape[:2] != image.hr.shape[:2]:
                    raise RatingError(f"{files[image.name]} is {sr.shape[1]}x{sr.shape[0]} but the HR image "
                                      f"{image.name} is {image.hr.shape[1]}x{image.hr.shape[0]}; "
                                      f"rate x{scale} results of the same set")
                meta[add(sr)] = [image.name, method]
            meta[add(image.hr)] = [image.name, HR_METHOD]
            meta[add(nearest_upscale(image.lr, scale))] = [image.name, NEAREST_METHOD]
        pairs = [[add(nearest_upscale(c.lr, scale)), add(c.hr)] for c in calibration]
        items = list(meta)
        rng.shuffle(items)  # the page's own order says nothing either; each rater gets a fresh shuffle
        key = secrets.token_bytes(16)
        session = {"id": secrets.token_hex(6), "items": items, "calibration": pairs,
                   "key": key.hex(), "meta": obfuscate(meta, key)}
        page = PAGE_TEMPLATE.read_text(encoding="utf-8").replace("__SESSION__", session_json(session))
        notebook_helpers.save_text(page, tmp / "index.html")
        _publish(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir / "index.html"


def _pixels_key(img: np.ndarray) -> str:
    return hashlib.sha256(img.tobytes() + str(img.shape).encode()).hexdigest()


def calibration_images(rated: list[SetImage], count: int, scale: int, source: utils.PathLike | None = None,
                       rng: np.random.Generator | None = None) -> list[SetImage]:
    """``count`` calibration images that are not rated (no HR image with the same pixels).

    Args:
        rated: the rated set.
        count: how many (each is shown as nearest, score 1, then HR, score 5).
        scale: upscaling factor.
        source: a data list or folder to take them from; None: the bundled Set14 (then Set5 when
            the rated set is Set14), x4 only.
        rng: random generator for the choice (None: a fresh one).

    Raises:
        RatingError: fewer than ``count`` images left once the rated ones are removed.
    """
    rng = rng if rng is not None else np.random.default_rng()
    if count <= 0:
        return []
    taken = {_pixels_key(image.hr) for image in rated}
    if source is not None:
        pools = [(str(source), load_set(source, scale))]
    elif scale != CLASS_SCALE:
        raise RatingError(f"calibration images ship at x{CLASS_SCALE} only (benchmarks/data/Set14); at x{scale} pass "
                          f"--calibration-hr with other images of that scale, or --calibration 0")
    else:
        pools = [(f"benchmarks/data/{name}", load_set(BUNDLED / name, scale)) for name in CALIBRATION_SETS
                 if (BUNDLED / name).is_dir()]
    for where, pool in pools:
        free = [image for image in pool if _pixels_key(image.hr) not in taken]
        if len(free) >= count:
            return [free[i] for i in sorted(rng.choice(len(free), size=count, replace=False))]
    raise RatingError(f"--calibration {count}: only {max((len([i for i in p if _pixels_key(i.hr) not in taken]) for _, p in pools), default=0)} "
                      f"images in {', '.join(w for w, _ in pools) or 'no calibration set'} are not also rated; "
                      f"pass --calibration-hr with other images or a smaller --calibration")


def make_main(args: argparse.Namespace) -> None:
    images = load_set(args.hr, args.scale)
    names = [image.name for image in images]
    only = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    methods = find_methods(args.inputs, names, args.scale, only)
    if args.calibration < 0:
        raise RatingError(f"--calibration {args.calibration}: give 0 or more calibration images")
    calibration = calibration_images(images, args.calibration, args.scale, args.calibration_hr)
    page = make_session(methods, images, args.out, args.scale, calibration, args.overwrite)
    versions = [*methods, HR_METHOD, NEAREST_METHOD]
    print(f"rating session: {len(images)} images x {len(versions)} versions ({', '.join(versions)}) = "
          f"{len(images) * len(versions)} ratings per rater, after {2 * len(calibration)} calibration images")
    print(f"open {page.as_posix()} in a browser (copy the whole folder {Path(args.out).as_posix()}/ "
          f"to each rater); collect their CSV files and run: python course/rating.py tally ratings_*.csv --out DIR")


# =========================================================================== make-class: a whole class
@dataclass
class Student:
    """One submission of a class rating: its name, where it came from, its method and its five
    Set5 SR images (``{image name: uint8 HxWx3}``), or why it is left out."""

    name: str
    source: str
    method: str = ""
    images: dict[str, np.ndarray] = field(default_factory=dict)
    problem: str = ""


def csv_safe(value: object) -> object:
    """A CSV cell that no spreadsheet runs as a formula: text starting with ``= + - @``, a tab or
    a carriage return gets a leading ``'`` (numbers are left as they are)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _safe_rows(rows: list[dict]) -> list[dict]:
    return [{k: csv_safe(v) for k, v in row.items()} for row in rows]


def png_problem(data: bytes, where: str, size: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """Decode an SR image of a submission: ``(HxWx3 uint8, "")`` or ``(None, why not)``.

    Only 8-bit RGB PNGs (colour type 2, bit depth 8) of ``size`` (height, width) are accepted;
    the header is checked before the pixels are decoded.
    """
    from PIL import Image

    if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR" or len(data) < 33:
        return None, f"{where} is not a PNG file"
    width, height, depth, colour = *struct.unpack(">II", data[16:24]), data[24], data[25]
    if (depth, colour) != (8, 2):
        kind = {0: "gray", 2: "RGB", 3: "palette", 4: "gray+alpha", 6: "RGBA"}.get(colour, f"colour type {colour}")
        return None, f"{where} is a {depth}-bit {kind} PNG, not 8-bit RGB"
    if (height, width) != size:
        return None, f"{where} is {width}x{height}, the HR image is {size[1]}x{size[0]}"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        return None, f"{where} cannot be decoded ({err})"
    return arr, ""


def _zip_pngs(path: Path) -> dict[str, bytes]:
    """``{file name: bytes}`` of the PNGs directly in ``results/sr_set5/`` of a submission zip
    (at its top or under one top folder), read without extracting; sizes checked first."""
    found: dict[str, bytes] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            parts = info.filename.split("/")
            if info.is_dir() or not parts[-1].lower().endswith(".png") or ".." in parts:
                continue
            prefix = "/".join(parts[-3:-1])
            if prefix != CLASS_SR_DIR or len(parts) > 4:
                continue
            if info.file_size > MAX_PNG_MB * 2**20 or info.file_size > 200 * max(info.compress_size, 1) + 2**20:
                raise RatingError(f"{info.filename} declares {info.file_size / 2**20:.0f} MB "
                                  f"(from {info.compress_size / 2**20:.1f} MB); refused")
            with zf.open(info) as member:
                data = member.read(MAX_PNG_MB * 2**20 + 1)
            if len(data) > MAX_PNG_MB * 2**20:
                raise RatingError(f"{info.filename} is larger than {MAX_PNG_MB} MB; refused")
            found[parts[-1]] = data
    return found


def _folder_pngs(folder: Path) -> dict[str, bytes]:
    """``{file name: bytes}`` of the regular PNG files (no links) in ``folder/results/sr_set5``."""
    sr = folder / CLASS_SR_DIR
    found: dict[str, bytes] = {}
    if not sr.is_dir() or sr.is_symlink():
        return found
    for path in sorted(sr.iterdir()):
        if path.name.lower().endswith(".png") and path.is_file() and not path.is_symlink():
            if path.stat().st_size > MAX_PNG_MB * 2**20:
                raise RatingError(f"{path} is larger than {MAX_PNG_MB} MB; refused")
            found[path.name] = path.read_bytes()
    return found


def read_student(source: str, images: list[SetImage], method: str | None, scale: int = CLASS_SCALE) -> Student:
    """One submission (folder or zip) of a class rating; ``Student.problem`` says why it is left out.

    The method is ``method`` or, when None, the one method in ``results/sr_set5/`` that is not
    ``bicubic`` or ``nearest``. Set5 image names of both archives are accepted (``img_001`` or
    ``baby`` ...). Nothing but the PNGs is read.
    """
    path = Path(source)
    name = path.stem if path.suffix.lower() == ".zip" else path.name
    student = Student(name=name, source=str(path))
    try:
        if path.is_file() and zipfile.is_zipfile(path):
            files = _zip_pngs(path)
        elif path.is_dir():
            files = _folder_pngs(path)
        else:
            student.problem = "not a submission folder or zip"
            return student
    except (RatingError, zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as err:
        student.problem = f"unreadable: {err}"
        return student
    names = [image.name for image in images]
    aliases = {alias: names[k] for k, alias in enumerate(SET5_EDSR_NAMES) if k < len(names)} if len(names) == 5 else {}
    by_method: dict[str, dict[str, bytes]] = {}
    for file_name, data in files.items():
        stem = file_name[:-4]
        if not stem.endswith(f"_x{scale}"):
            continue
        image = _image_of(stem, names + list(aliases))
        if image is None:
            continue
        found = stem[len(image) + 1: -len(f"_x{scale}")]
        if found:
            by_method.setdefault(found, {})[aliases.get(image, image)] = data
    if not by_method:
        student.problem = f"no Set5 images in {CLASS_SR_DIR}/ (run super_resolution.ipynb, then --pack)"
        return student
    if method is None:
        candidates = sorted(m for m in by_method if m not in (BICUBIC_METHOD, NEAREST_METHOD))
        if len(candidates) != 1:
            student.problem = (f"{len(candidates)} methods besides bicubic in {CLASS_SR_DIR}/ "
                               f"({', '.join(sorted(by_method)) or 'none'}): choose one with --method")
            return student
        method = candidates[0]
    if method not in by_method:
        student.problem = f"no images of method {method!r} in {CLASS_SR_DIR}/ (it has {', '.join(sorted(by_method))})"
        return student
    student.method = method
    found_images = by_method[method]
    missing = [n for n in names if n not in found_images]
    if missing:
        student.problem = f"{method}: {len(found_images)} of {len(names)} images (missing {', '.join(missing)})"
        return student
    for image in images:
        arr, problem = png_problem(found_images[image.name], f"{image.name}_{method}_x{scale}.png", image.hr.shape[:2])
        if arr is None:
            student.problem = problem
            return student
        student.images[image.name] = arr
    return student


def assign_items(items: list[tuple[str, str]], raters: int, per_rater: int, rng: np.random.Generator,
                 must_see: tuple[str, ...] = ANCHORS) -> list[list[tuple[str, str]]]:
    """Balanced random subsets: ``raters`` lists of ``min(per_rater, len(items))`` distinct items.

    Each rater first gets one item of each method in ``must_see`` (the least rated so far), then
    the least rated items overall, ties broken at random; so every item is rated
    ``floor(raters * per_rater / len(items))`` times or more, and at most one time more than
    the least rated one (the anchors aside, when ``must_see`` asks for more of them).

    Args:
        items: ``[(image, method)]``, the students' images and the anchors.
        raters, per_rater: how many raters, how many images each.
        rng: random generator (seeded for a reproducible assignment).

    Returns:
        one list per rater, in random order.
    """
    m = min(per_rater, len(items))
    counts = np.zeros(len(items), dtype=np.int64)
    subsets = []
    for _ in range(raters):
        noise = rng.random(len(items))
        chosen: list[int] = []
        taken = np.zeros(len(items), dtype=bool)
        for method in must_see:
            options = [i for i, (_, mth) in enumerate(items) if mth == method]
            if options and len(chosen) < m:
                best = min(options, key=lambda i: (counts[i], noise[i]))
                chosen.append(best)
                taken[best] = True
        rest = [i for i in np.lexsort((noise, counts)) if not taken[i]]
        chosen += rest[: m - len(chosen)]
        counts[chosen] += 1
        order = rng.permutation(len(chosen))
        subsets.append([items[chosen[k]] for k in order])
    return subsets


def make_class(sources: list[str], out_dir: utils.PathLike, method: str | None = None, raters: int | None = None,
               per_rater: int = DEFAULT_PER_RATER, seed: int | None = None, calibration: int = 2,
               overwrite: bool = False) -> dict:
    """Write a class rating: ``out_dir/rater_NN.html`` (one page per rater), ``out_dir/images/``
    and ``out_dir/class.json`` (for ``tally --session``).

    Args:
        sources: submission folders or zips (see :func:`read_student`).
        out_dir: the session folder; built beside it and moved into place when complete.
        method: the students' method name in their ``results/sr_set5/`` (None: each one's only one).
        raters: number of rater pages (None: enough for 3 ratings of every image).
        per_rater: images per rater (calibration aside).
        seed: seed of the calibration choice and the assignment (None: random).
        calibration: calibration pairs per rater, from the bundled Set14.
        overwrite: replace an existing session in ``out_dir``.

    Returns:
        ``{"students": [Student], "left_out": [Student], "raters": R, "per_rater": M, "items": n,
        "pages": [Path]}``.

    Raises:
        RatingError: no usable submission, two submissions with one name, bad numbers, or
            ``out_dir`` not usable.
    """
    if per_rater < 1 or (raters is not None and raters < 1) or calibration < 0:
        raise RatingError("--raters and --per-rater must be 1 or more, --calibration 0 or more")
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite, page="class.json")
    rng = np.random.default_rng(seed)
    images = load_set(BUNDLED / "Set5", CLASS_SCALE)
    students, left_out, seen = [], [], {}
    for source in sources:
        student = read_student(source, images, method)
        if not student.problem and student.name.lower() in (a.lower() for a in ANCHORS):
            student.problem = f"the name {student.name!r} is an anchor's; rename the submission"
        if not student.problem and student.name in seen:
            student.problem = f"another submission ({seen[student.name]}) has the same name; rename one"
        if student.problem:
            left_out.append(student)
            continue
        seen[student.name] = student.source
        students.append(student)
    if not students:
        raise RatingError(f"no usable submission among {len(sources)} (" +
                          "; ".join(f"{s.name}: {s.problem}" for s in left_out[:3]) + ")")
    items = [(image.name, s.name) for s in students for image in images]
    items += [(image.name, anchor) for image in images for anchor in ANCHORS]
    m = min(per_rater, len(items))
    if raters is None:
        raters = max(1, math.ceil(3 * len(items) / m))
    cal = calibration_images(images, calibration, CLASS_SCALE, rng=rng)
    subsets = assign_items(items, raters, m, rng)

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{secrets.token_hex(4)}"
    key = secrets.token_bytes(16)
    meta: dict[str, list[str]] = {}
    token_of: dict[tuple[str, str], str] = {}
    pages = []
    try:
        def add(img: np.ndarray) -> str:
            token = secrets.token_hex(8)
            utils.save_image(img, tmp / "images" / f"{token}.png")  # re-encoded: only the pixels go in
            return token

        for image in images:
            versions = {HR_METHOD: image.hr, NEAREST_METHOD: nearest_upscale(image.lr, CLASS_SCALE),
                        BICUBIC_METHOD: inference.bicubic_upscale(image.lr, CLASS_SCALE)}
            versions.update({s.name: s.images[image.name] for s in students})
            for name, img in versions.items():
                token = add(img)
                meta[token] = [image.name, name]
                token_of[image.name, name] = token
        pairs = [[add(nearest_upscale(c.lr, CLASS_SCALE)), add(c.hr)] for c in cal]
        session_id = secrets.token_hex(6)
        template = PAGE_TEMPLATE.read_text(encoding="utf-8")
        for r, subset in enumerate(subsets, 1):
            tokens = [token_of[item] for item in subset]
            page = {"id": f"{session_id}-r{r:02d}", "items": tokens, "calibration": pairs, "key": key.hex(),
                    "meta": obfuscate({t: meta[t] for t in tokens}, key)}
            path = tmp / f"rater_{r:02d}.html"
            notebook_helpers.save_text(template.replace("__SESSION__", session_json(page)), path)
            pages.append(out_dir / path.name)
        record = {"kind": "class-rating", "id": session_id, "scale": CLASS_SCALE, "hr": "benchmarks/data/Set5",
                  "raters": raters, "per_rater": m, "key": key.hex(),
                  "data": obfuscate({"students": [s.name for s in students],
                                     "sources": {s.name: s.source for s in students},
                                     "methods": {s.name: s.method for s in students},
                                     "images": [image.name for image in images],
                                     "tokens": meta, "subsets": [[list(i) for i in sub] for sub in subsets],
                                     "left_out": {s.name: s.problem for s in left_out}}, key)}
        notebook_helpers.save_text(json.dumps(record, indent=1) + "\n", tmp / "class.json")
        _publish(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {"students": students, "left_out": left_out, "raters": raters, "per_rater": m, "items": len(items),
            "pages": pages, "subsets": subsets}


def read_class(session: utils.PathLike) -> dict:
    """The record ``make-class`` wrote in ``session/class.json`` (decoded), with ``"folder"``."""
    path = Path(session) / "class.json"
    if not path.is_file():
        raise RatingError(f"{path} not found: --session takes the folder make-class wrote")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        data = deobfuscate(record["data"], bytes.fromhex(record["key"]))
    except (ValueError, KeyError, TypeError) as err:
        raise RatingError(f"{path} is not a class rating record ({err}); run make-class again") from None
    return {**record, **data, "folder": Path(session)}


def make_class_main(args: argparse.Namespace) -> None:
    result = make_class(args.submissions, args.out, args.method, args.raters, args.per_rater, args.seed,
                        args.calibration, args.overwrite)
    for student in result["left_out"]:
        print(f"left out {student.source}: {student.problem}")
    n = len(result["students"])
    low = result["raters"] * result["per_rater"] // result["items"]
    print(f"class rating: {n} student{'s' if n != 1 else ''} x 5 Set5 images + {3 * 5} anchor images "
          f"(HR, nearest, bicubic) = {result['items']} images; {result['raters']} rater pages of "
          f"{result['per_rater']} images each (every image rated {low} time{'s' if low != 1 else ''} or more)")
    print(f"give each rater one page of {Path(args.out).as_posix()}/ (rater_01.html ...) with the images/ folder; "
          f"collect their CSV files and run: python course/rating.py tally ratings_*.csv "
          f"--session {Path(args.out).as_posix()} --out DIR")


# =========================================================================== tally: the MOS
@dataclass(frozen=True)
class Rating:
    """One row of a rater's export."""

    rater: str
    image: str
    method: str
    score: int       # 1 (bad) .. 5 (excellent)
    seconds: float   # time the image was shown before the score


def read_ratings(paths: list[utils.PathLike]) -> list[Rating]:
    """Read and check the raters' CSV exports (columns ``rater,image,method,score,seconds``).

    Raises:
        RatingError: a missing file, a missing column, an empty field, a score that is not an
            integer 1-5, a bad ``seconds`` value, the same rater/image/method twice (e.g. one
            export passed twice), or no ratings at all. Messages name the file and line.
    """
    ratings: list[Rating] = []
    seen: dict[tuple[str, str, str], str] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise RatingError(f"ratings file not found: {path}")
        try:
            reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline=""))
            rows = [(reader.line_num, row) for row in reader]
        except (UnicodeDecodeError, csv.Error) as err:
            raise RatingError(f"{path} is not a CSV text file ({err}); pass the rating page's exports") from err
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise RatingError(f"{path}: missing column(s) {', '.join(missing)}; a ratings file has the "
                              f"columns {','.join(COLUMNS)} (the rating page's export)")
        for line, row in rows:
            where = f"{path}, line {line}"
            values = {c: (row.get(c) or "").strip() for c in COLUMNS}
            empty = [c for c in ("rater", "image", "method") if not values[c]]
            if empty:
                raise RatingError(f"{where}: empty {', '.join(empty)}")
            if not re.fullmatch(r"[1-5]", values["score"]):
                raise RatingError(f"{where}: score {values['score']!r} is not an integer from 1 to 5")
            try:
                seconds = float(values["seconds"])
            except ValueError:
                seconds = float("nan")
            if not seconds >= 0:
                raise RatingError(f"{where}: seconds {values['seconds']!r} is not a number >= 0")
            rating = Rating(values["rater"], values["image"], values["method"], int(values["score"]), seconds)
            key = (rating.rater, rating.image, rating.method)
            if key in seen:
                raise RatingError(f"{where}: rater {rating.rater!r} rated image {rating.image} / "
                                  f"{rating.method} before ({seen[key]}); pass each rater's export once")
            seen[key] = where
            ratings.append(rating)
    if not ratings:
        raise RatingError(f"no ratings in {', '.join(map(str, paths))}")
    return ratings


def check_raters(ratings: list[Rating]) -> dict[str, dict]:
    """Per rater: number of ratings, mean HR and nearest scores, median seconds, and the verdict.

    Returns:
        ``{rater: {"ratings", "hr", "nearest", "seconds", "status"}}`` where status is ``"kept"``,
        ``"flagged"`` (mean HR score below mean nearest score: left out of the tally) or
        ``"unchecked"`` (no HR or no nearest ratings: kept).
    """
    report = {}
    for rater in sorted({r.rater for r in ratings}):
        mine = [r for r in ratings if r.rater == rater]
        hr = [r.score for r in mine if r.method == HR_METHOD]
        nearest = [r.score for r in mine if r.method == NEAREST_METHOD]
        hr_mean = float(np.mean(hr)) if hr else float("nan")
        nearest_mean = float(np.mean(nearest)) if nearest else float("nan")
        status = "unchecked" if not (hr and nearest) else "flagged" if hr_mean < nearest_mean else "kept"
        report[rater] = {"ratings": len(mine), "hr": hr_mean, "nearest": nearest_mean,
                         "seconds": float(np.median([r.seconds for r in mine])), "status": status}
    return report


def t_interval(scores: list[int], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and the two-sided ``confidence`` t interval of the mean: ``(mean, low, high)``.

    ``mean +- t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation;
    the bounds are NaN for fewer than two scores.
    """
    from scipy import stats

    values = np.asarray(scores, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf((1 + confidence) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def method_order(scores: dict[str, list[int]]) -> list[str]:
    """Methods for tables and the figure: nearest first, HR last, the others by rising MOS."""
    middle = sorted((m for m in scores if m not in (NEAREST_METHOD, HR_METHOD)),
                    key=lambda m: (np.mean(scores[m]), m))
    return ([NEAREST_METHOD] if NEAREST_METHOD in scores else []) + middle + \
        ([HR_METHOD] if HR_METHOD in scores else [])


def clipped_interval(scores: list[int]) -> tuple[float, float, float]:
    """:func:`t_interval` with its bounds clipped to the 1-5 scale (a score cannot leave it)."""
    mos, low, high = t_interval(scores)
    return mos, (max(1.0, low) if not math.isnan(low) else low), (min(5.0, high) if not math.isnan(high) else high)


def mos_rows(scores: dict[str, list[int]], order: list[str]) -> list[dict]:
    """``[{"method", "ratings", "mos", "ci_low", "ci_high"}]`` in ``order`` (95% t intervals,
    clipped to the 1-5 scale)."""
    rows = []
    for method in order:
        mos, low, high = clipped_interval(scores[method])
        rows.append({"method": method, "ratings": len(scores[method]), "mos": mos, "ci_low": low, "ci_high": high})
    return rows


def raters_text(n: int) -> str:
    """``"1 rater"`` / ``"3 raters"``."""
    return f"{n} rater{'' if n == 1 else 's'}"


def mann_whitney(scores: dict[str, list[int]], order: list[str]) -> list[dict]:
    """Two-sided Mann-Whitney U test of every pair of methods (all their ratings, as the paper).

    Returns:
        ``[{"method_a", "method_b", "u", "p"}]``; ``u`` is the statistic of ``method_a``
        (scipy's ``mannwhitneyu``: exact for small samples without ties, else the normal
        approximation with tie and continuity corrections).
    """
    from scipy import stats

    rows = []
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            result = stats.mannwhitneyu(scores[a], scores[b], alternative="two-sided")
            rows.append({"method_a": a, "method_b": b, "u": float(result.statistic), "p": float(result.pvalue)})
    return rows


def distribution_figure(scores: dict[str, list[int]], rows: list[dict], raters: int):
    """The SRGAN paper's MOS figure: per method, the share of each score 1-5 (colour) and the MOS
    with its 95% interval (red). Returns a matplotlib ``Figure`` (no pyplot state)."""
    from matplotlib.figure import Figure

    order = [row["method"] for row in rows]
    share = np.array([[scores[m].count(s) / len(scores[m]) for m in order] for s in ACR_LABELS])  # 5 x M
    fig = Figure(figsize=(min(1.2 * len(order) + 2.5, 40), 4.2))
    ax = fig.add_subplot()
    shown = ax.imshow(share, origin="lower", cmap="Blues", vmin=0, vmax=1, aspect="auto",
                      extent=(-0.5, len(order) - 0.5, 0.5, 5.5))
    for col in range(len(order)):
        for s in ACR_LABELS:
            value = share[s - 1, col]
            if value > 0:
                ax.text(col + 0.45, s - 0.4, f"{100 * value:.0f}%", ha="right", va="bottom", fontsize=8,
                        color="white" if value > 0.6 else "black")
    mos = np.array([row["mos"] for row in rows])
    err = np.array([[row["mos"] - row["ci_low"] for row in rows], [row["ci_high"] - row["mos"] for row in rows]])
    ax.errorbar(range(len(order)), mos, yerr=np.nan_to_num(err), fmt="o", color="red", capsize=4)
    ax.set_xticks(range(len(order)), [f"{m}\n(n={len(scores[m])})" for m in order])
    ax.set_yticks(list(ACR_LABELS), [f"{s} {label}" for s, label in ACR_LABELS.items()])
    ax.set_ylabel("score")
    ax.set_title(f"Scores per method ({raters_text(raters)}); red: MOS with its 95% CI")
    fig.colorbar(shown, ax=ax, label="share of ratings")
    return fig


def _fmt(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def mos_table(rows: list[dict]) -> str:
    """Markdown table of :func:`mos_rows`: method, ratings, MOS, 95% CI."""
    return notebook_helpers.markdown_table(
        ["method", "ratings", "MOS", "95% CI"],
        [[md_escape(r["method"]), r["ratings"], _fmt(r["mos"]), f"{_fmt(r['ci_low'])} - {_fmt(r['ci_high'])}"]
         for r in rows])


def leaderboard_rows(record: dict, scores: dict[str, list[int]]) -> list[dict]:
    """One row per student of a class rating: ``student, ratings, mos, ci_low, ci_high, rank,
    psnr, ssim, niqe``, best MOS first (rank 1; equal MOS share a rank; no ratings: no rank).

    PSNR / SSIM / NIQE are the kit's (MATLAB protocol: Y channel, ``scale`` border pixels
    shaved), computed from the student's images as stored in the session (their exact pixels)
    against the bundled HR images, averaged over the images.
    """
    images = load_set(BUNDLED / "Set5", record["scale"])
    hr = {image.name: image.hr for image in images}
    token_of = {(image, method): token for token, (image, method) in record["tokens"].items()}
    rows = []
    for student in record["students"]:
        psnr, ssim, niqe = [], [], []
        for name in record["images"]:
            sr = utils.read_image(record["folder"] / "images" / f"{token_of[name, student]}.png")
            psnr.append(metrics.calculate_psnr(sr, hr[name], record["scale"]))
            ssim.append(metrics.calculate_ssim(sr, hr[name], record["scale"]))
            try:
                niqe.append(metrics.niqe_or_nan(sr, record["scale"]))
            except ValueError:  # NIQE is undefined for a flat image: no value, not an error
                niqe.append(math.nan)
        given = scores.get(student, [])
        mos, low, high = clipped_interval(given) if given else (math.nan, math.nan, math.nan)
        finite_niqe = [v for v in niqe if not math.isnan(v)]
        rows.append({"student": student, "ratings": len(given), "mos": mos, "ci_low": low, "ci_high": high,
                     "psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)),
                     "niqe": float(np.mean(finite_niqe)) if finite_niqe else math.nan})
    rows.sort(key=lambda r: (math.isnan(r["mos"]), -r["mos"] if not math.isnan(r["mos"]) else 0, r["student"]))
    for row in rows:
        better = [r for r in rows if not math.isnan(r["mos"]) and r["mos"] > row["mos"]]
        row["rank"] = "" if math.isnan(row["mos"]) else len(better) + 1
    return [{k: row[k] for k in LEADERBOARD_COLUMNS} for row in rows]


LEADERBOARD_COLUMNS = ["student", "ratings", "mos", "ci_low", "ci_high", "rank", "psnr", "ssim", "niqe"]


def leaderboard_markdown(rows: list[dict], anchors: list[dict], n_raters: int, flagged: list[str],
                         record: dict) -> str:
    """``leaderboard.md``: the class's MOS ranking with the kit's metrics, and the anchors' MOS."""
    lines = [
        "# Class leaderboard: mean opinion score of the Set5 images", "",
        f"{sum(r['ratings'] for r in rows)} ratings of {len(rows)} students' images from {raters_text(n_raters)} "
        f"(1 bad ... 5 excellent, after calibration on nearest-neighbour and HR images; each rater rated a "
        f"balanced subset). MOS with its 95% t interval, clipped to 1-5. PSNR / SSIM / NIQE: the kit's MATLAB "
        f"protocol (Y channel, {record['scale']} border pixels shaved) on the student's PNGs against the bundled "
        f"HR images, mean over the {len(record['images'])} images.", "",
        notebook_helpers.markdown_table(["rank", "student", "ratings", "MOS", "95% CI", "PSNR (dB)", "SSIM", "NIQE"],
                             [[r["rank"] if r["rank"] != "" else "-", md_escape(r["student"]), r["ratings"],
                               _fmt(r["mos"]), f"{_fmt(r['ci_low'])} - {_fmt(r['ci_high'])}", _fmt(r["psnr"]),
                               _fmt(r["ssim"], 4), _fmt(r["niqe"])] for r in rows]),
        "", "Anchors (rated like the students' images):", "",
        mos_table(anchors), "",
        (f"Left out (mean HR score below mean nearest score): {', '.join(md_escape(f) for f in flagged)}."
         if flagged else "No rater scored HR below nearest."),
    ]
    left = record.get("left_out") or {}
    if left:
        lines += ["", "Submissions left out when the rating was made: " +
                  "; ".join(f"{md_escape(name)} ({md_escape(why)})" for name, why in left.items()) + "."]
    return "\n".join(lines) + "\n"


def tally(paths: list[utils.PathLike], out_dir: utils.PathLike, session: utils.PathLike | None = None) -> dict:
    """Tally the raters' exports; writes ``mos.csv``, ``mos_per_image.csv``, ``mann_whitney.csv``,
    ``mos.md`` and ``mos.png`` in ``out_dir``, and with ``session`` (a ``make-class`` folder)
    ``leaderboard.csv`` and ``leaderboard.md``.

    Returns:
        ``{"methods": mos rows, "images": per-image rows, "pairs": Mann-Whitney rows,
        "raters": check_raters(...), "flagged": [rater], "leaderboard": rows or None}``.

    Raises:
        RatingError: bad ratings files (see :func:`read_ratings`), ratings that are not of the
            session, or every rater flagged.
    """
    out_dir = Path(out_dir)
    record = read_class(session) if session is not None else None
    ratings = read_ratings(paths)
    if record is not None:
        known = {tuple(v) for v in record["tokens"].values()}
        stray = sorted({(r.image, r.method) for r in ratings} - known)
        if stray:
            raise RatingError(f"{len(stray)} rated image(s) are not of the class rating in {session} "
                              f"(e.g. {stray[0][0]} / {stray[0][1]}); pass the exports of its pages")
    raters = check_raters(ratings)
    flagged = [name for name, info in raters.items() if info["status"] == "flagged"]
    kept = [r for r in ratings if r.rater not in flagged]
    if not kept:
        raise RatingError(f"every rater ({', '.join(flagged)}) scored HR below nearest: nothing to tally")

    scores: dict[str, list[int]] = {}
    for r in kept:
        scores.setdefault(r.method, []).append(r.score)
    order = method_order(scores)
    methods = mos_rows(scores, order)
    pairs = mann_whitney(scores, order)
    image_rows = []
    for image in sorted({r.image for r in kept}):
        by_method: dict[str, list[int]] = {}
        for r in kept:
            if r.image == image:
                by_method.setdefault(r.method, []).append(r.score)
        image_rows += [{"image": image, **row} for row in mos_rows(by_method, [m for m in order if m in by_method])]

    n_raters = len(raters) - len(flagged)
    notebook_helpers.save_csv(_safe_rows(methods), out_dir / "mos.csv", ["method", "ratings", "mos", "ci_low", "ci_high"])
    notebook_helpers.save_csv(_safe_rows(image_rows), out_dir / "mos_per_image.csv",
                   ["image", "method", "ratings", "mos", "ci_low", "ci_high"])
    notebook_helpers.save_csv(_safe_rows(pairs), out_dir / "mann_whitney.csv", ["method_a", "method_b", "u", "p"])
    notebook_helpers.save_figure(distribution_figure(scores, methods, n_raters), out_dir / "mos.png", dpi=120)
    notebook_helpers.save_text(report_markdown(paths, raters, flagged, methods, pairs, image_rows, order), out_dir / "mos.md")
    board = None
    if record is not None:
        board = leaderboard_rows(record, scores)
        anchors = [row for row in methods if row["method"] in ANCHORS]
        notebook_helpers.save_csv(_safe_rows(board), out_dir / "leaderboard.csv", LEADERBOARD_COLUMNS)
        notebook_helpers.save_text(leaderboard_markdown(board, anchors, n_raters, flagged, record), out_dir / "leaderboard.md")
    return {"methods": methods, "images": image_rows, "pairs": pairs, "raters": raters, "flagged": flagged,
            "leaderboard": board}


def report_markdown(paths: list[utils.PathLike], raters: dict[str, dict], flagged: list[str], methods: list[dict],
                    pairs: list[dict], image_rows: list[dict], order: list[str]) -> str:
    """The Markdown report ``mos.md`` (see :func:`tally` for the rows); every name is escaped."""
    status_text = {"kept": "kept", "flagged": "**left out**: HR below nearest",
                   "unchecked": "kept (no HR or nearest ratings to check)"}
    many = len(order) > 12
    lines = [
        "# Mean opinion score (MOS)", "",
        f"{sum(r['ratings'] for r in methods)} ratings from {raters_text(len(raters) - len(flagged))} "
        f"({', '.join(md_escape(Path(p).name) for p in paths)}). Scores: 1 bad, 2 poor, 3 fair, 4 good, 5 excellent "
        f"(ITU-T P.910 absolute category rating), after calibration on nearest-neighbour (1) and HR (5) "
        f"images, as in the SRGAN paper. MOS = mean score; 95% CI = t interval over the method's ratings, "
        f"clipped to the 1-5 scale.", "",
        "## Raters", "",
        notebook_helpers.markdown_table(["rater", "ratings", "mean HR", "mean nearest", "median seconds", "status"],
                             [[md_escape(name), info["ratings"], _fmt(info["hr"]), _fmt(info["nearest"]),
                               _fmt(info["seconds"], 1), status_text[info["status"]]]
                              for name, info in raters.items()]),
        "",
        (f"Left out (mean HR score below mean nearest score): {', '.join(md_escape(f) for f in flagged)}." if flagged
         else "No rater scored HR below nearest."), "",
        "## MOS per method", "",
        mos_table(methods),
        "", "![distribution of scores](mos.png)", "",
        "## Mann-Whitney U, two-sided, every pair", "",
        f"All ratings of one method against all of another, as in the SRGAN paper. The p-values are not "
        f"corrected for the {len(pairs)} comparisons (Bonferroni: compare them with 0.05 / {len(pairs)}).", "",
    ]
    if many:
        lines.append(f"{len(order)} methods: the {len(pairs)} pairs are in `mann_whitney.csv`.")
    else:
        lines.append(notebook_helpers.markdown_table(["method A", "method B", "U", "p", "p < 0.05"],
                                          [[md_escape(r["method_a"]), md_escape(r["method_b"]), f"{r['u']:.1f}",
                                            f"{r['p']:.3g}", "yes" if r["p"] < 0.05 else "no"] for r in pairs]))
    lines += ["", "## MOS per image", ""]
    images = sorted({r["image"] for r in image_rows})
    cell = {(r["image"], r["method"]): f"{r['mos']:.2f} ({r['ratings']})" for r in image_rows}
    if many:
        lines.append(f"{len(order)} methods: see `mos_per_image.csv`.")
    else:
        lines.append(notebook_helpers.markdown_table(["image"] + [f"{md_escape(m)} MOS (n)" for m in order],
                                          [[md_escape(image)] + [cell.get((image, m), "-") for m in order]
                                           for image in images]))
    return "\n".join(lines) + "\n"


def tally_main(args: argparse.Namespace) -> None:
    result = tally(args.ratings, args.out, args.session)
    for name in result["flagged"]:
        info = result["raters"][name]
        print(f"left out rater {name!r}: mean HR {info['hr']:.2f} < mean nearest {info['nearest']:.2f}")
    print(mos_table(result["methods"]))
    extra = ", leaderboard.csv, leaderboard.md" if result["leaderboard"] is not None else ""
    print(f"wrote {Path(args.out).as_posix()}/mos.csv, mos_per_image.csv, mann_whitney.csv, mos.md, mos.png{extra}")


# =========================================================================== command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    make = sub.add_parser("make", help="build a blind rating session (static HTML page + images)")
    make.add_argument("inputs", nargs="+", metavar="FOLDER | LABEL=FOLDER",
                      help="a notebook_helpers.save_sr_set folder (<image>_<method>_x<scale>.png, every method in it), "
                           "or LABEL=FOLDER: one method, one file per image (<image>.png or <image>_*.png)")
    make.add_argument("--hr", required=True, help="the HR images: a data list (data/lists/Set5.json) or a folder "
                                                  "(benchmarks/data/Set5)")
    make.add_argument("--out", required=True, help="session folder to write (index.html + images/)")
    make.add_argument("--scale", type=int, default=4, help="upscaling factor (default 4)")
    make.add_argument("--methods", help="comma-separated methods to rate (default: all found)")
    make.add_argument("--calibration", type=int, default=2,
                      help="calibration images, each shown as nearest (1) then HR (5) (default 2)")
    make.add_argument("--calibration-hr", help="take the calibration images from this list or folder (default: "
                                               "the bundled Set14, never an image that is also rated)")
    make.add_argument("--overwrite", action="store_true", help="replace an existing session in --out")
    make.set_defaults(run=make_main)

    klass = sub.add_parser("make-class", help="one blind rating of a whole class's Set5 images, a page per rater")
    klass.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                       help="submission folders or the zips check_submission.py --pack makes (results/sr_set5/)")
    klass.add_argument("--out", required=True, help="folder to write (rater_NN.html, images/, class.json)")
    klass.add_argument("--method", help="the students' method in results/sr_set5 (default: the one that is not "
                                        "bicubic or nearest)")
    klass.add_argument("--raters", type=int, help="rater pages (default: enough for 3 ratings of every image)")
    klass.add_argument("--per-rater", type=int, default=DEFAULT_PER_RATER,
                       help=f"images per rater (default {DEFAULT_PER_RATER}, about 15 minutes)")
    klass.add_argument("--seed", type=int, help="seed of the assignment and the calibration choice (default: random)")
    klass.add_argument("--calibration", type=int, default=2, help="calibration images from Set14 (default 2)")
    klass.add_argument("--overwrite", action="store_true", help="replace an existing class rating in --out")
    klass.set_defaults(run=make_class_main)

    tally_parser = sub.add_parser("tally", help="MOS, confidence intervals and significance from the exports")
    tally_parser.add_argument("ratings", nargs="+", help="the raters' CSV files (rater,image,method,score,seconds)")
    tally_parser.add_argument("--out", required=True, help="folder for mos.csv, mos.md, mos.png, ...")
    tally_parser.add_argument("--session", help="the make-class folder: also leaderboard.csv and leaderboard.md")
    tally_parser.set_defaults(run=tally_main)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 with ``error: ...`` on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError) as err:  # RatingError, utils.ImageReadError, bad data lists
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
