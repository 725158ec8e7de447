"""Check a student's submission of the SRGAN case, or pack one for submitting.

    python course/check_submission.py PATH [--no-run]      # graders: a folder or a .zip
    python course/check_submission.py --pack [--output submission.zip]   # students

The checks, one line each on the summary screen (PASS / FAIL and why):

1. **files**: the code, the three notebooks and ``REPORT.md`` are there.
2. **notebooks executed**: every code cell of every notebook has an execution count, and
   each notebook has outputs.
3. **no errors in notebooks**: no cell output is an error.
4. **no model files**: no ``.pth``, ``.pt``, ``.ckpt``, ``.safetensors`` file, no file whose
   content is a model whatever its name (a torch archive, a pickle, an ``.npy`` / ``.npz`` /
   safetensors file holding large float arrays, an HDF5 file) and no file over 5 MB anywhere
   (weights are not submitted; the graders retrain from the code).
5. **Set5 images**: ``results/sr_set5/`` (written by ``super_resolution.ipynb``) holds, for
   bicubic and at least one trained generator, the five Set5 images super-resolved x4, as
   lossless PNGs of the HR sizes (baby 512x512, bird 288x288, butterfly 256x256, head 280x280,
   woman 228x344, width x height).
6. **report**: ``REPORT.md`` keeps the case's sections, holds no ``TODO(student)``, its AUTO
   blocks were written by ``test.ipynb``, and the images it shows are files inside the submission.
7. **pytest --nbval**: the submission's tests and notebooks re-run (skipped with ``--no-run``),
   on a copy of the folder without its top-level ``data/`` and ``runs/`` (made again by the
   run); each failing notebook cell (its position among the code cells and its ``In [n]``) or
   test is named with the first line of its error.

``--pack`` (students) writes a zip of the kit's folder without what is generated again (the
top-level ``data/`` and ``runs/``, caches, virtual environments) after checks 1-6, then checks
the zip it wrote the same way; it refuses (and writes nothing) when one fails. It never follows
a symbolic link out of the folder (such links are named and left out), and refuses an
``--output`` inside the packed folder (other than the default ``submission.zip``, which a new
``--pack`` replaces) or onto an existing file without ``--overwrite``. A zip given to the grader is checked for its declared and
actual sizes before anything is extracted. Exit status: 0 all checks passed, 1 some failed,
2 bad arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "course") not in sys.path:
    sys.path.insert(0, str(REPO / "course"))

import report as report_tools  # noqa: E402  (course/report.py)

REQUIRED_FILES = ("models.py", "solver.py", "utils.py", "datasets.py", "imresize.py", "create_data_lists.py",
                  "checkpoints.py", "inference.py", "losses.py", "metrics.py", "notebook_helpers.py", "training.py",
                  "vgg_weights.py", "train.ipynb", "test.ipynb", "super_resolution.ipynb", "REPORT.md")
NOTEBOOKS = ("train.ipynb", "test.ipynb", "super_resolution.ipynb")
MODEL_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
MAX_FILE_MB = 5
SR_DIR = "results/sr_set5"
SCALE = 4
# Set5 x4 HR sizes (width, height), used when benchmarks/data/Set5 is not bundled. The SelfExSR
# archive names the images img_001 ... img_005, the EDSR archive baby ... woman.
SET5_NAMES = ("baby", "bird", "butterfly", "head", "woman")
SET5_SIZES = {"baby": (512, 512), "bird": (288, 288), "butterfly": (256, 256), "head": (280, 280),
              "woman": (228, 344)}
BUNDLED_SET5 = REPO / "benchmarks" / "data" / "Set5" / f"image_SRF_{SCALE}"
# Folders never packed: at the top level, what a run makes again (data lists, training runs;
# never benchmarks/data, which the notebooks need); anywhere, tools' caches and environments.
PACK_SKIP_TOP = {"data", "runs"}
PACK_SKIP_ANYWHERE = {".git", ".venv", ".ci-venv", "__pycache__", ".ipynb_checkpoints", ".pytest_cache"}
PACK_NAME = "submission.zip"
# A submission zip is refused before extraction beyond these (declared and actual sizes).
ZIP_MAX_TOTAL_MB = 1024
ZIP_MAX_MEMBER_MB = 256
ZIP_MAX_RATIO = 200       # uncompressed / compressed size of one member (over 1 MB)
ZIP_MAX_MEMBERS = 50_000
# Content-based model detection: float arrays of at least this many values count as weights.
MODEL_MIN_FLOATS = 10_000


@dataclass
class Check:
    """One line of the summary: the check's name, PASS (True) / FAIL (False) / SKIP (None), why,
    and optional detail lines printed under it (e.g. each failing notebook cell)."""

    name: str
    ok: bool | None  # None: skipped
    reason: str
    details: list[str] = field(default_factory=list)


class SubmissionError(ValueError):
    """Bad input (an unusable zip or output path); the message is one line."""


def set5_sizes() -> dict[str, tuple[int, int]]:
    """``{image name: (width, height)}`` of Set5's x4 HR images, both naming schemes."""
    sizes = dict(SET5_SIZES)
    bundled = sorted(BUNDLED_SET5.glob(f"img_*_SRF_{SCALE}_HR.png")) if BUNDLED_SET5.is_dir() else []
    if len(bundled) == 5:
        from PIL import Image

        for name, path in zip(SET5_NAMES, bundled):
            with Image.open(path) as im:
                sizes[name] = im.size
    for k, name in enumerate(SET5_NAMES, 1):
        sizes[f"img_{k:03d}"] = sizes[name]
    return sizes


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (resolved) lies inside ``root`` (resolved)."""
    return path == root or root in path.parents


def walk_submission(root: Path) -> tuple[list[Path], list[str]]:
    """The files of a submission folder, without following links out of it.

    Returns:
        ``(files, skipped)``: ``files`` are relative paths (sorted) of regular files, and of
        symbolic links to a regular file inside ``root``, except the packing skip lists
        (``PACK_SKIP_TOP`` at the top level, ``PACK_SKIP_ANYWHERE`` anywhere) and a top-level
        ``submission.zip``; ``skipped`` names each other symbolic link (to a folder, out of the
        folder, broken or a loop) as ``"path -> target"``. Linked folders are never entered.
    """
    root_real = root.resolve()
    files: list[Path] = []
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        rel_dir = here.relative_to(root)
        keep = []
        for name in sorted(dirnames):
            path = here / name
            if name in PACK_SKIP_ANYWHERE or (rel_dir == Path(".") and name in PACK_SKIP_TOP):
                continue
            if path.is_symlink():
                skipped.append(f"{(rel_dir / name).as_posix()} -> {os.readlink(path)}")
                continue
            keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            path, rel = here / name, rel_dir / name
            if rel.as_posix() == PACK_NAME:
                continue
            if path.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    target = None
                if target is None or not _inside(target, root_real) or not target.is_file():
                    skipped.append(f"{rel.as_posix()} -> {os.readlink(path)}")
                    continue
            elif not path.is_file():
                continue
            files.append(rel)
    return sorted(files), sorted(skipped)


def submission_files(root: Path) -> list[Path]:
    """Every file under ``root`` that is packed and graded (see :func:`walk_submission`)."""
    return walk_submission(root)[0]


def check_files(root: Path) -> Check:
    """Check 1: the code files, the three notebooks and ``REPORT.md`` exist under ``root``."""
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if missing:
        return Check("files", False, f"missing: {', '.join(missing)}")
    return Check("files", True, f"{len(REQUIRED_FILES)} required files present")


def _read_notebook(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _code_cells(nb: dict) -> list[tuple[int, dict]]:
    """``[(position among the notebook's code cells, from 1, cell)]`` of the non-empty code cells:
    the numbering a person counts in Jupyter (markdown cells are not counted)."""
    cells = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    return [(k, c) for k, c in enumerate(cells, 1) if "".join(c.get("source", "")).strip()]


def cell_name(position: int, cell: dict | None) -> str:
    """``"code cell 3 (In [7])"``: a code cell as a person finds it (``In [ ]`` when not run)."""
    count = (cell or {}).get("execution_count")
    return f"code cell {position} (In [{count if count is not None else ' '}])"


def check_executed(root: Path) -> Check:
    """Check 2: every non-empty code cell has an execution count; each notebook saved outputs."""
    problems = []
    for name in NOTEBOOKS:
        nb = _read_notebook(root / name)
        if nb is None:
            problems.append(f"{name} missing or not a notebook")
            continue
        cells = _code_cells(nb)
        unrun = [k for k, c in cells if c.get("execution_count") is None]
        if unrun:
            problems.append(f"{name}: code cell(s) {', '.join(map(str, unrun[:5]))}{' ...' if len(unrun) > 5 else ''} "
                            "not executed")
        elif cells and not any(c.get("outputs") for _, c in cells):
            problems.append(f"{name}: no outputs saved")
    if problems:
        return Check("notebooks executed", False, "; ".join(problems) + " (run them all and save them)")
    return Check("notebooks executed", True, "every code cell has run, outputs saved")


def check_errors(root: Path) -> Check:
    """Check 3: no cell output of type ``error`` (names the notebook, cell and exception)."""
    problems = []
    for name in NOTEBOOKS:
        nb = _read_notebook(root / name)
        for k, cell in _code_cells(nb or {}):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    problems.append(f"{name} {cell_name(k, cell)}: {out.get('ename', 'Error')}: "
                                    f"{str(out.get('evalue', '')).splitlines()[0] if out.get('evalue') else ''}"[:200])
    if problems:
        return Check("no errors in notebooks", False, "; ".join(problems[:3]) + (" ..." if len(problems) > 3 else ""))
    return Check("no errors in notebooks", True, "no error output")


def _npy_floats(header_source) -> int:
    """Number of float values of the ``.npy`` array whose file object starts at its magic."""
    import numpy as np

    version = np.lib.format.read_magic(header_source)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(header_source)
    if dtype.kind not in "fc":
        return 0
    n = 1
    for d in shape:
        n *= int(d)
    return n


def model_content(path: Path) -> str | None:
    """What makes ``path`` a model file by its content, whatever its name, or None.

    Recognised (without unpickling or executing anything): torch archives (a zip holding
    ``data.pkl``), pickles (torch's legacy format, joblib, ...), ``.npy`` and ``.npz`` files,
    and safetensors files, with at least ``MODEL_MIN_FLOATS`` float values, and HDF5 files
    (Keras weights) of that size.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            size = path.stat().st_size
            if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
                try:
                    with zipfile.ZipFile(path) as zf:
                        names = zf.namelist()
                        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
                            return "a torch model archive"
                        floats = 0
                        for n in names:
                            if n.endswith(".npy"):
                                with zf.open(n) as member:
                                    try:
                                        floats += _npy_floats(member)
                                    except (ValueError, OSError):
                                        continue
                        if floats >= MODEL_MIN_FLOATS:
                            return f"an .npz archive of {floats:,} float values"
                except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError):
                    return None
                return None
            if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
                return "a pickle (model files are pickles: never load it)"
            if head.startswith(b"\x93NUMPY"):
                f.seek(0)
                try:
                    floats = _npy_floats(f)
                except (ValueError, OSError):
                    return None
                return f"an .npy array of {floats:,} float values" if floats >= MODEL_MIN_FLOATS else None
            if head.startswith(b"\x89HDF\r\n\x1a\n"):
                return "an HDF5 file (weights)" if size >= 4 * MODEL_MIN_FLOATS else None
            if len(head) >= 9 and head[8:9] == b"{":
                (n,) = struct.unpack("<Q", head[:8])
                if 2 <= n <= min(size - 8, 100 * 2**20):
                    f.seek(8)
                    try:
                        header = json.loads(f.read(n).decode("utf-8"))
                    except (UnicodeDecodeError, ValueError):
                        return None
                    floats = 0
                    if isinstance(header, dict):
                        for entry in header.values():
                            if isinstance(entry, dict) and str(entry.get("dtype", "")).startswith(("F", "BF")):
                                count = 1
                                for d in entry.get("shape", []):
                                    count *= int(d) if isinstance(d, int) else 0
                                floats += count
                    if floats >= MODEL_MIN_FLOATS:
                        return f"a safetensors file of {floats:,} float values"
    except OSError:
        return None
    return None


def check_no_models(root: Path, files: list[Path]) -> Check:
    """Check 4: no model file (by suffix or by content) and no file over ``MAX_FILE_MB`` among ``files``."""
    bad = []
    for rel in files:
        size_mb = (root / rel).stat().st_size / 2**20
        what = None if rel.suffix.lower() in MODEL_SUFFIXES else model_content(root / rel)
        if rel.suffix.lower() in MODEL_SUFFIXES:
            bad.append(f"{rel.as_posix()} (model file)")
        elif what:
            bad.append(f"{rel.as_posix()} (model file: {what})")
        elif size_mb > MAX_FILE_MB:
            bad.append(f"{rel.as_posix()} ({size_mb:.1f} MB > {MAX_FILE_MB} MB)")
    if bad:
        return Check("no model files", False, "remove " + ", ".join(bad[:4]) + (" ..." if len(bad) > 4 else ""))
    return Check("no model files", True, f"no weights, no file over {MAX_FILE_MB} MB")


def check_set5_images(root: Path) -> Check:
    """Check 5: ``results/sr_set5`` holds 5 Set5 PNGs of the HR sizes per method, bicubic and a generator."""
    from PIL import Image

    folder = root / SR_DIR
    sizes = set5_sizes()
    pattern = re.compile(rf"^(?P<image>{'|'.join(sorted(sizes, key=len, reverse=True))})_(?P<method>.+)_x{SCALE}\.png$")
    by_method: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.glob("*.png")) if folder.is_dir() else []:
        match = pattern.match(path.name)
        if match:
            by_method.setdefault(match["method"], {})[match["image"]] = path
    if not by_method:
        return Check("Set5 images", False, f"no Set5 SR images in {SR_DIR}/ (run super_resolution.ipynb with Set5)")
    problems = []
    for method, images in sorted(by_method.items()):
        names = {n if n in SET5_NAMES else SET5_NAMES[int(n[4:]) - 1] for n in images}
        if len(images) != 5 or len(names) != 5:
            numbered = all(n.startswith("img_") for n in images)
            absent = [f"img_{k:03d}" if numbered else n for k, n in enumerate(SET5_NAMES, 1) if n not in names]
            problems.append(f"{method}: {len(images)} of 5 images"
                            + (f" (missing {', '.join(absent)})" if absent else " (one image twice)"))
            continue
        for image, path in images.items():
            try:
                with Image.open(path) as im:
                    fmt, size = im.format, im.size
            except OSError:
                problems.append(f"{path.name} is not a readable image")
                continue
            if fmt != "PNG":
                problems.append(f"{path.name} is a {fmt} file, not a PNG")
            elif size != sizes[image]:
                problems.append(f"{path.name} is {size[0]}x{size[1]}, Set5 x{SCALE} needs "
                                f"{sizes[image][0]}x{sizes[image][1]}")
    if "bicubic" not in by_method:
        problems.append("no bicubic images")
    if not set(by_method) - {"bicubic"}:
        problems.append("no images of a trained generator")
    if problems:
        return Check("Set5 images", False, "; ".join(problems[:4]) + (" ..." if len(problems) > 4 else ""))
    return Check("Set5 images", True, f"5 PNGs of the right sizes for {', '.join(sorted(by_method))}")


def check_report(root: Path) -> Check:
    """Check 6: ``REPORT.md`` filled (``report.report_problems``) and the images it shows present."""
    path = root / "REPORT.md"
    if not path.is_file():
        return Check("report", False, "REPORT.md missing")
    text = path.read_text(encoding="utf-8")
    problems = report_tools.report_problems(text)
    root_real = root.resolve()
    for target in re.findall(r"!\[[^\]]*\]\(<?([^)\s>]+)", text):
        if re.match(r"^(https?|ftp)://", target, re.IGNORECASE):
            continue
        local = root / target
        try:
            inside = (not Path(target).is_absolute() and not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE)
                      and _inside(local.resolve(), root_real) and local.is_file())
        except (OSError, RuntimeError):
            inside = False
        if not inside:
            problems.append(f"image {target} not in the submission")
    if problems:
        return Check("report", False, "; ".join(problems))
    return Check("report", True, "sections filled, tables and figure present")


_ANSI = re.compile(r"(?:\x1b|#x1B)\[[0-9;]*m")
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Failed|Failure)\b.*)$")


def _first_error_line(text: str) -> str:
    """The first line of the error in a failure text of pytest's JUnit XML (nbval or a test)."""
    lines = [line.rstrip() for line in _ANSI.sub("", text or "").splitlines()]
    if lines and lines[0].startswith("Notebook cell execution failed"):
        header = next((line for line in lines if re.match(r"^Cell \d+: ", line)), "")
        what = header.split(": ", 1)[1] if ": " in header else "cell failed"
        if what.startswith("Cell outputs differ"):
            detail = next((line.strip() for line in lines if line.strip().startswith("mismatch")), "")
            return f"{what}{': ' + detail if detail else ''}"
        errors = [line.strip() for line in lines if _EXCEPTION_LINE.match(line.strip()) and ":" in line
                  and "Traceback" not in line]
        return errors[-1] if errors else what
    return next((line.strip() for line in lines if line.strip()), "failed")


def pytest_failures(junit_xml: Path, root: Path) -> list[str]:
    """One line per failing test or notebook cell of a pytest JUnit XML report.

    Notebook cells (nbval names them ``Cell <k>``, counting code cells from 0) are named as a
    person sees them: ``test.ipynb code cell 6 (In [6]): <first line of the error>``.
    """
    try:
        tree = ET.parse(junit_xml)
    except (OSError, ET.ParseError):
        return []
    notebooks: dict[str, list[dict]] = {}
    lines = []
    for case in tree.iter("testcase"):
        problem = next((child for child in case if child.tag in ("failure", "error")), None)
        if problem is None:
            continue
        text = (problem.attrib.get("message") or "") + "\n" + (problem.text or "")
        if problem.attrib.get("message") and not problem.attrib["message"].lstrip(
                "\x1b#x1B[0-9;m").startswith("Notebook cell"):
            text = problem.attrib["message"]
        classname, name = case.attrib.get("classname", ""), case.attrib.get("name", "")
        cell = re.fullmatch(r"Cell (\d+)", name)
        if cell and classname.endswith(".ipynb"):
            if classname not in notebooks:
                nb = _read_notebook(root / classname) or {}
                notebooks[classname] = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
            index = int(cell[1])
            cells = notebooks[classname]
            where = f"{classname} {cell_name(index + 1, cells[index] if index < len(cells) else None)}"
        else:
            module = classname.replace(".", "/")
            where = f"{module}.py::{name}" if module else name
        lines.append(f"{where}: {_first_error_line(text)}"[:300])
    return lines


def check_pytest(root: Path, timeout: int) -> Check:
    """Check 7: ``pytest --nbval`` in ``root`` (the submission's tests and notebooks) passes.

    A failure names each failing notebook cell or test with the first line of its error
    (``Check.details``)."""
    with tempfile.TemporaryDirectory(prefix="nbval-report-") as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "--nbval", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
        try:
            proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Check("pytest --nbval", False, f"did not finish within {timeout} s")
        failures = pytest_failures(junit, root) if proc.returncode else []
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    last = _ANSI.sub("", lines[-1]).strip("= ") if lines else "no output"
    return Check("pytest --nbval", proc.returncode == 0, last, failures)


def run_checks(root: Path, run_tests: bool = True, timeout: int = 3600) -> list[Check]:
    """All checks of a submission folder, in the order of the module docstring."""
    files = submission_files(root)
    checks = [check_files(root), check_executed(root), check_errors(root), check_no_models(root, files),
              check_set5_images(root), check_report(root)]
    if run_tests:
        checks.append(check_pytest(root, timeout))
    else:
        checks.append(Check("pytest --nbval", None, "skipped (--no-run)"))
    return checks


def print_summary(title: str, checks: list[Check]) -> None:
    """The summary screen: one line per check (PASS / FAIL / SKIP, name, reason), its detail
    lines indented below it, then the result."""
    width = max(len(c.name) for c in checks)
    print(title)
    for c in checks:
        print(f"  {'SKIP' if c.ok is None else 'PASS' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.reason}")
        for line in c.details:
            print(f"        {line}")
    failed = [c for c in checks if c.ok is False]
    print(f"result: {'all checks passed' if not failed else f'{len(failed)} of {len(checks)} checks failed'}")


def _is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def check_zip_sizes(zf: zipfile.ZipFile, zip_path: Path, into: Path) -> None:
    """Refuse a zip (``SubmissionError``) whose declared sizes are too large: in total, per member,
    by compression ratio, by member count, or beyond the free space of ``into``."""
    infos = zf.infolist()
    if len(infos) > ZIP_MAX_MEMBERS:
        raise SubmissionError(f"{zip_path} holds {len(infos):,} files (more than {ZIP_MAX_MEMBERS:,}); "
                              "not a submission: refused before extracting")
    total = 0
    for info in infos:
        name = Path(info.filename)
        if name.is_absolute() or ".." in name.parts or info.filename.startswith(("/", "\\")):
            raise SubmissionError(f"{zip_path} holds an unsafe path {info.filename!r}")
        total += info.file_size
        if info.file_size > ZIP_MAX_MEMBER_MB * 2**20:
            raise SubmissionError(f"{zip_path}: {info.filename} expands to {info.file_size / 2**20:,.0f} MB "
                                  f"(limit {ZIP_MAX_MEMBER_MB} MB per file); refused before extracting")
        if info.file_size > 2**20 and info.file_size > ZIP_MAX_RATIO * max(info.compress_size, 1):
            raise SubmissionError(f"{zip_path}: {info.filename} is compressed {info.file_size / max(info.compress_size, 1):,.0f}:1 "
                                  f"(limit {ZIP_MAX_RATIO}:1, a zip bomb?); refused before extracting")
    if total > ZIP_MAX_TOTAL_MB * 2**20:
        raise SubmissionError(f"{zip_path} expands to {total / 2**20:,.0f} MB (limit {ZIP_MAX_TOTAL_MB} MB); "
                              "refused before extracting")
    free = shutil.disk_usage(into).free
    if total > free:
        raise SubmissionError(f"{zip_path} expands to {total / 2**20:,.0f} MB but {into} has {free / 2**20:,.0f} MB "
                              "free; set TMPDIR to a larger disk")


def _extract(zip_path: Path, into: Path) -> Path:
    """Extract a submission zip safely; return its root (the single top folder if there is one).

    Sizes are checked before anything is written (:func:`check_zip_sizes`), and each member is
    copied with a byte count that stops at its declared size; links are not made.

    Raises:
        SubmissionError: an unsafe path or size, or a member larger than it declares.
        zipfile.BadZipFile: not a zip.
    """
    with zipfile.ZipFile(zip_path) as zf:
        check_zip_sizes(zf, zip_path, into)
        for info in zf.infolist():
            target = into / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if _is_link(info):
                continue  # a symbolic link: never made
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with zf.open(info) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > info.file_size:
                        raise SubmissionError(f"{zip_path}: {info.filename} holds more than the "
                                              f"{info.file_size:,} bytes it declares; refused")
                    dst.write(chunk)
    entries = [p for p in into.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir() and not (into / "REPORT.md").exists():
        return entries[0]
    return into


def copy_submission(root: Path, dest: Path) -> list[str]:
    """Copy what is graded of ``root`` to ``dest`` (see :func:`walk_submission`: no top-level
    ``data/`` or ``runs/``, no caches, no link followed out of the folder or into a loop).
    Returns the skipped links (``"path -> target"``)."""
    files, skipped = walk_submission(root)
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, dest / rel)
    return skipped


def pack_output_problem(root: Path, output: Path, default: Path, overwrite: bool) -> str | None:
    """Why ``output`` cannot take the zip of ``root`` (resolved paths), or None."""
    if output.is_dir():
        return f"--output {output} is an existing folder; give a file name ending in .zip"
    if output != default and _inside(output, root):
        return (f"--output {output} is inside the folder being packed ({root}); write the zip outside it "
                f"(or leave --output out: {default.name} in the folder, which is never packed)")
    if output.exists() and not overwrite and not (output == default and zipfile.is_zipfile(output)):
        return f"{output} exists; pass --overwrite to replace it, or choose another --output"
    return None


def pack(root: Path, output: Path, overwrite: bool = True, default: Path | None = None) -> int:
    """Check ``root`` (without re-running it), zip it to ``output`` and check the zip; 0 on
    success, 1 refused (nothing written), 2 a bad ``output``."""
    root = root.resolve()
    output = output.resolve()
    problem = pack_output_problem(root, output, (default or root / PACK_NAME).resolve(), overwrite)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    files, skipped = walk_submission(root)
    checks = run_checks(root, run_tests=False)[:-1]
    print_summary(f"packing {root}", checks)
    for link in skipped:
        print(f"left out the symbolic link {link} (links are not packed; copy the file in if it is needed)")
    if not all(c.ok for c in checks):
        print("error: not packed: fix the failed checks above, then run --pack again", file=sys.stderr)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for rel in files:
                if (root / rel).resolve() not in (output, tmp):
                    zf.write(root / rel, rel.as_posix())
        with tempfile.TemporaryDirectory(prefix="packed-") as unpacked:
            packed = run_checks(_extract(tmp, Path(unpacked)), run_tests=False)[:-1]
        failed = [c for c in packed if not c.ok]
        if failed:
            print_summary("the zip, checked again", packed)
            print("error: not packed: the zip does not pass the checks the folder passed", file=sys.stderr)
            return 1
        tmp.replace(output)
    finally:
        if tmp.exists():
            tmp.unlink()
    print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MB), checked again from the zip: submit this file. "
          f"The graders also re-run your notebooks and tests (pytest --nbval); to do the same now: "
          f"python course/check_submission.py {output.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("path", nargs="?", type=Path, help="submission folder or .zip (default with --pack: this kit)")
    parser.add_argument("--pack", action="store_true", help="check this kit's folder and zip it for submitting")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"zip to write with --pack, outside the folder (default <kit>/{PACK_NAME})")
    parser.add_argument("--overwrite", action="store_true", help="with --pack: replace an existing --output file")
    parser.add_argument("--no-run", action="store_true", help="skip re-running the tests and notebooks (pytest --nbval)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed for pytest --nbval (default 3600)")
    args = parser.parse_args(argv)
    if args.pack:
        root = (args.path or REPO).resolve()
        if not root.is_dir():
            print(f"error: {root} is not a folder; --pack zips the kit's folder", file=sys.stderr)
            return 2
        default = root / PACK_NAME
        return pack(root, (args.output or default), overwrite=args.overwrite, default=default)
    if args.path is None:
        parser.error("give the submission folder or zip to check (or --pack to make one)")
    path = args.path.resolve()
    if not path.exists():
        print(f"error: {path} does not exist; give a submission folder or .zip", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="submission-") as tmp:
            skipped: list[str] = []
            if path.is_file():
                try:
                    root = _extract(path, Path(tmp))
                except zipfile.BadZipFile as err:
                    print(f"error: {path} is not a usable zip: {err}", file=sys.stderr)
                    return 2
                except SubmissionError as err:
                    print(f"error: {err}", file=sys.stderr)
                    return 2
            else:
                root = path
                if not args.no_run:  # nbval writes into the folder (data/, runs/, results/): run on a copy
                    root = Path(tmp) / path.name
                    skipped = copy_submission(path, root)
            checks = run_checks(root, run_tests=not args.no_run, timeout=args.timeout)
            print_summary(f"submission {path}", checks)
            for link in skipped:
                print(f"left out the symbolic link {link} (not followed)")
    except OSError as err:
        print(f"error: cannot check {path}: {err.strerror or err} ({err.filename or 'temporary folder'}); "
              "free some disk space or set TMPDIR", file=sys.stderr)
        return 2
    return 0 if all(c.ok is not False for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
