"""Human rating of super-resolved images: a mean opinion score (MOS) test as in the SRGAN paper.

Ledig et al. (CVPR 2017) had people give every version of every test image an integral score
from 1 (bad) to 5 (excellent), in random order, after calibrating them on nearest-neighbour
upscaled images (score 1) and the original HR images (score 5); the mean is the MOS, and
differences between methods were tested with the Mann-Whitney U test. ITU-T P.910's absolute
category rating (ACR) uses the same five labels. Two commands::

    # a rating session from the notebook's outputs (files <image>_<method>_x4.png)
    python course/rating.py make results/sr_set5 --hr data/lists/Set5.json --out results/rating_session

    # students' submissions, one folder per method: LABEL=FOLDER
    python course/rating.py make alice=hand_in/alice bob=hand_in/bob --hr benchmarks/data/Set5 --out session

    # the raters' exports -> MOS table, confidence intervals, significance, figure
    python course/rating.py tally ratings_*.csv --out results/mos

``make`` writes ``OUT/index.html`` and ``OUT/images/<opaque id>.png``: a static page that opens
from disk (file://) in any current browser, offline, without a server or Python. It asks for
the rater's name, shows the calibration images, then every image of every method (plus the
nearest-neighbour and HR anchors, rated like the others) one at a time in an order drawn from
the rater's name, at full resolution with a zoom; keys 1-5 or clicks score it. Every answer is
kept in the browser's localStorage at once, so a reload or a closed tab loses nothing. At the
end the rater downloads a CSV ``rater,image,method,score,seconds`` (``seconds``: from the image
appearing to its score; it restarts when the page is reloaded).

Blind: image files have random names, the order is shuffled (in the page and per rater) and the
page text names no method. The mapping from the opaque ids to image and method names must be in
the page for the export to name them; it is XOR-obfuscated and base64-encoded there, which keeps
it out of sight but not secret: a rater who reads the page source with the browser's developer
tools can decode it.

``tally`` flags raters whose mean HR score is below their mean nearest-neighbour score (they did
not follow the calibration, or swapped the scale), leaves them out and names them in the report.
"""
from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import math
import os
import re
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python course/rating.py`: the kit's modules are one folder up
    sys.path.insert(0, str(REPO))

import utils  # noqa: E402
from create_data_lists import load_data_list, scan_folder  # noqa: E402  (same image names as the notebooks)
from imresize import imresize  # noqa: E402

HR_METHOD = "HR"             # anchor method names in the exported CSV
NEAREST_METHOD = "nearest"
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
    """The methods in a folder written by ``utils.save_sr_set``.

    Files are named ``<image>_<method>_x<scale>.<ext>`` (``utils.sr_filename``); other files
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
        inputs: ``FOLDER`` (a ``utils.save_sr_set`` folder: every method in it) or
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
            pattern = f"<image>_<method>_x{scale}.png (utils.save_sr_set)"
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


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to replace a non-empty folder unless asked, and never one that is not a session."""
    if out_dir.exists() and not out_dir.is_dir():
        raise RatingError(f"output {out_dir} is an existing file; choose a folder path")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise RatingError(f"output folder {out_dir} is not empty; choose a new folder or pass --overwrite "
                              f"(raters part-way through the old session would lose their place)")
        if not (out_dir / "index.html").is_file():
            raise RatingError(f"{out_dir} does not look like a rating session (no index.html); not replacing it")


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
        utils.save_text(page, tmp / "index.html")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir / "index.html"


def make_main(args: argparse.Namespace) -> None:
    images = load_set(args.hr, args.scale)
    names = [image.name for image in images]
    only = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    methods = find_methods(args.inputs, names, args.scale, only)
    pool = load_set(args.calibration_hr, args.scale) if args.calibration_hr else images
    if not 0 <= args.calibration <= len(pool):
        raise RatingError(f"--calibration {args.calibration}: choose 0 to {len(pool)} (the calibration images)")
    calibration = secrets.SystemRandom().sample(pool, args.calibration)
    page = make_session(methods, images, args.out, args.scale, calibration, args.overwrite)
    versions = [*methods, HR_METHOD, NEAREST_METHOD]
    print(f"rating session: {len(images)} images x {len(versions)} versions ({', '.join(versions)}) = "
          f"{len(images) * len(versions)} ratings per rater, after {2 * len(calibration)} calibration images")
    print(f"open {page.as_posix()} in a browser (copy the whole folder {Path(args.out).as_posix()}/ "
          f"to each rater); collect their CSV files and run: python course/rating.py tally ratings_*.csv --out DIR")


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


def mos_rows(scores: dict[str, list[int]], order: list[str]) -> list[dict]:
    """``[{"method", "ratings", "mos", "ci_low", "ci_high"}]`` in ``order`` (95% t intervals)."""
    rows = []
    for method in order:
        mos, low, high = t_interval(scores[method])
        rows.append({"method": method, "ratings": len(scores[method]), "mos": mos, "ci_low": low, "ci_high": high})
    return rows


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
    fig = Figure(figsize=(1.2 * len(order) + 2.5, 4.2))
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
    ax.set_title(f"Scores per method ({raters} raters); red: MOS with its 95% CI")
    fig.colorbar(shown, ax=ax, label="share of ratings")
    return fig


def _fmt(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def mos_table(rows: list[dict]) -> str:
    """Markdown table of :func:`mos_rows`: method, ratings, MOS, 95% CI."""
    return utils.markdown_table(
        ["method", "ratings", "MOS", "95% CI"],
        [[r["method"], r["ratings"], _fmt(r["mos"]), f"{_fmt(r['ci_low'])} - {_fmt(r['ci_high'])}"] for r in rows])


def tally(paths: list[utils.PathLike], out_dir: utils.PathLike) -> dict:
    """Tally the raters' exports; writes ``mos.csv``, ``mos_per_image.csv``, ``mann_whitney.csv``,
    ``mos.md`` and ``mos.png`` in ``out_dir``.

    Returns:
        ``{"methods": mos rows, "images": per-image rows, "pairs": Mann-Whitney rows,
        "raters": check_raters(...), "flagged": [rater]}``.

    Raises:
        RatingError: bad ratings files (see :func:`read_ratings`) or every rater flagged.
    """
    out_dir = Path(out_dir)
    ratings = read_ratings(paths)
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
    utils.save_csv(methods, out_dir / "mos.csv", ["method", "ratings", "mos", "ci_low", "ci_high"])
    utils.save_csv(image_rows, out_dir / "mos_per_image.csv",
                   ["image", "method", "ratings", "mos", "ci_low", "ci_high"])
    utils.save_csv(pairs, out_dir / "mann_whitney.csv", ["method_a", "method_b", "u", "p"])
    utils.save_figure(distribution_figure(scores, methods, n_raters), out_dir / "mos.png", dpi=120)
    utils.save_text(report_markdown(paths, raters, flagged, methods, pairs, image_rows, order), out_dir / "mos.md")
    return {"methods": methods, "images": image_rows, "pairs": pairs, "raters": raters, "flagged": flagged}


def report_markdown(paths: list[utils.PathLike], raters: dict[str, dict], flagged: list[str], methods: list[dict],
                    pairs: list[dict], image_rows: list[dict], order: list[str]) -> str:
    """The Markdown report ``mos.md`` (see :func:`tally` for the rows)."""
    status_text = {"kept": "kept", "flagged": "**left out**: HR below nearest",
                   "unchecked": "kept (no HR or nearest ratings to check)"}
    lines = [
        "# Mean opinion score (MOS)", "",
        f"{sum(r['ratings'] for r in methods)} ratings from {len(raters) - len(flagged)} raters "
        f"({', '.join(Path(p).name for p in paths)}). Scores: 1 bad, 2 poor, 3 fair, 4 good, 5 excellent "
        f"(ITU-T P.910 absolute category rating), after calibration on nearest-neighbour (1) and HR (5) "
        f"images, as in the SRGAN paper. MOS = mean score; 95% CI = t interval over the method's ratings.", "",
        "## Raters", "",
        utils.markdown_table(["rater", "ratings", "mean HR", "mean nearest", "median seconds", "status"],
                             [[name, info["ratings"], _fmt(info["hr"]), _fmt(info["nearest"]),
                               _fmt(info["seconds"], 1), status_text[info["status"]]]
                              for name, info in raters.items()]),
        "",
        (f"Left out (mean HR score below mean nearest score): {', '.join(flagged)}." if flagged
         else "No rater scored HR below nearest."), "",
        "## MOS per method", "",
        mos_table(methods),
        "", "![distribution of scores](mos.png)", "",
        "## Mann-Whitney U, two-sided, every pair", "",
        f"All ratings of one method against all of another, as in the SRGAN paper. The p-values are not "
        f"corrected for the {len(pairs)} comparisons (Bonferroni: compare them with 0.05 / {len(pairs)}).", "",
        utils.markdown_table(["method A", "method B", "U", "p", "p < 0.05"],
                             [[r["method_a"], r["method_b"], f"{r['u']:.1f}", f"{r['p']:.3g}",
                               "yes" if r["p"] < 0.05 else "no"] for r in pairs]),
        "", "## MOS per image", "",
    ]
    images = sorted({r["image"] for r in image_rows})
    cell = {(r["image"], r["method"]): f"{r['mos']:.2f} ({r['ratings']})" for r in image_rows}
    lines.append(utils.markdown_table(["image"] + [f"{m} MOS (n)" for m in order],
                                      [[image] + [cell.get((image, m), "-") for m in order] for image in images]))
    return "\n".join(lines) + "\n"


def tally_main(args: argparse.Namespace) -> None:
    result = tally(args.ratings, args.out)
    for name in result["flagged"]:
        info = result["raters"][name]
        print(f"left out rater {name!r}: mean HR {info['hr']:.2f} < mean nearest {info['nearest']:.2f}")
    print(mos_table(result["methods"]))
    print(f"wrote {Path(args.out).as_posix()}/mos.csv, mos_per_image.csv, mann_whitney.csv, mos.md, mos.png")


# =========================================================================== command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    make = sub.add_parser("make", help="build a blind rating session (static HTML page + images)")
    make.add_argument("inputs", nargs="+", metavar="FOLDER | LABEL=FOLDER",
                      help="a utils.save_sr_set folder (<image>_<method>_x<scale>.png, every method in it), "
                           "or LABEL=FOLDER: one method, one file per image (<image>.png or <image>_*.png)")
    make.add_argument("--hr", required=True, help="the HR images: a data list (data/lists/Set5.json) or a folder "
                                                  "(benchmarks/data/Set5)")
    make.add_argument("--out", required=True, help="session folder to write (index.html + images/)")
    make.add_argument("--scale", type=int, default=4, help="upscaling factor (default 4)")
    make.add_argument("--methods", help="comma-separated methods to rate (default: all found)")
    make.add_argument("--calibration", type=int, default=2,
                      help="calibration images, each shown as nearest (1) then HR (5) (default 2)")
    make.add_argument("--calibration-hr", help="take the calibration images from this list or folder "
                                               "(default: the rated set; the SRGAN paper used other images)")
    make.add_argument("--overwrite", action="store_true", help="replace an existing session in --out")
    make.set_defaults(run=make_main)

    tally_parser = sub.add_parser("tally", help="MOS, confidence intervals and significance from the exports")
    tally_parser.add_argument("ratings", nargs="+", help="the raters' CSV files (rater,image,method,score,seconds)")
    tally_parser.add_argument("--out", required=True, help="folder for mos.csv, mos.md, mos.png, ...")
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
