"""Check a student's submission of the SRGAN case, or pack one for submitting.

    python course/check_submission.py PATH [--no-run]      # graders: a folder or a .zip
    python course/check_submission.py --pack [--output submission.zip]   # students

The checks, one line each on the summary screen (PASS / FAIL and why):

1. **files**: the code, the three notebooks and ``REPORT.md`` are there.
2. **notebooks executed**: every code cell of every notebook has an execution count, and
   each notebook has outputs.
3. **no errors in notebooks**: no cell output is an error.
4. **no model files**: no ``.pth``, ``.pt``, ``.ckpt``, ``.safetensors`` file and no file over
   5 MB anywhere (weights are not submitted; the graders retrain from the code).
5. **Set5 images**: ``results/sr_set5/`` (written by ``super_resolution.ipynb``) holds, for
   bicubic and at least one trained generator, the five Set5 images super-resolved x4, as
   lossless PNGs of the HR sizes (baby 512x512, bird 288x288, butterfly 256x256, head 280x280,
   woman 228x344, width x height).
6. **report**: ``REPORT.md`` keeps the case's sections, holds no ``TODO(student)``, its AUTO
   blocks were written by ``test.ipynb``, and the images it shows are in the submission.
7. **pytest --nbval**: the submission's tests and notebooks re-run (skipped with ``--no-run``).

``--pack`` (students) writes a zip of the kit's folder without what is generated again
(``data/``, ``runs/``, caches, virtual environments), after checks 1-6; it refuses (and writes
nothing) when one fails. Exit status: 0 all checks passed, 1 some failed, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "course") not in sys.path:
    sys.path.insert(0, str(REPO / "course"))

import report as report_tools  # noqa: E402  (course/report.py)

REQUIRED_FILES = ("models.py", "solver.py", "utils.py", "datasets.py", "imresize.py", "create_data_lists.py",
                  "train.ipynb", "test.ipynb", "super_resolution.ipynb", "REPORT.md")
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
# Folders never packed: made again by the kit (data lists, training runs) or by tools.
PACK_SKIP_DIRS = {"data", "runs", ".git", ".venv", ".ci-venv", "__pycache__", ".ipynb_checkpoints",
                  ".pytest_cache"}
PACK_NAME = "submission.zip"


@dataclass
class Check:
    """One line of the summary: the check's name, PASS (True) / FAIL (False) / SKIP (None), why."""

    name: str
    ok: bool | None  # None: skipped
    reason: str


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


def submission_files(root: Path) -> list[Path]:
    """Every file under ``root`` except the packing skip list (relative paths, sorted)."""
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in PACK_SKIP_DIRS for part in rel.parts[:-1]) or not path.is_file():
            continue
        if rel.as_posix() == PACK_NAME:
            continue
        files.append(rel)
    return files


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
    cells = [(i, c) for i, c in enumerate(nb.get("cells", [])) if c.get("cell_type") == "code"]
    return [(i, c) for i, c in cells if "".join(c.get("source", "")).strip()]


def check_executed(root: Path) -> Check:
    """Check 2: every non-empty code cell has an execution count; each notebook saved outputs."""
    problems = []
    for name in NOTEBOOKS:
        nb = _read_notebook(root / name)
        if nb is None:
            problems.append(f"{name} missing or not a notebook")
            continue
        cells = _code_cells(nb)
        unrun = [i for i, c in cells if c.get("execution_count") is None]
        if unrun:
            problems.append(f"{name}: cell(s) {', '.join(map(str, unrun[:5]))}{' ...' if len(unrun) > 5 else ''} "
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
        for i, cell in _code_cells(nb or {}):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    problems.append(f"{name} cell {i}: {out.get('ename', 'Error')}: {out.get('evalue', '')}"[:160])
    if problems:
        return Check("no errors in notebooks", False, "; ".join(problems[:3]) + (" ..." if len(problems) > 3 else ""))
    return Check("no errors in notebooks", True, "no error output")


def check_no_models(root: Path, files: list[Path]) -> Check:
    """Check 4: no model file (by suffix) and no file over ``MAX_FILE_MB`` among ``files``."""
    bad = []
    for rel in files:
        size_mb = (root / rel).stat().st_size / 2**20
        if rel.suffix.lower() in MODEL_SUFFIXES:
            bad.append(f"{rel.as_posix()} (model file)")
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
            problems.append(f"{method}: {len(images)} of 5 images")
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
    for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", text):
        if not re.match(r"^[a-z]+://", target) and not (root / target).is_file():
            problems.append(f"image {target} not in the submission")
    if problems:
        return Check("report", False, "; ".join(problems))
    return Check("report", True, "sections filled, tables and figure present")


def check_pytest(root: Path, timeout: int) -> Check:
    """Check 7: ``pytest --nbval`` in ``root`` (the submission's tests and notebooks) passes."""
    cmd = [sys.executable, "-m", "pytest", "--nbval", "-q", "-p", "no:cacheprovider"]
    try:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Check("pytest --nbval", False, f"did not finish within {timeout} s")
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    last = lines[-1].strip("= ") if lines else "no output"
    return Check("pytest --nbval", proc.returncode == 0, last)


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
    """The summary screen: one line per check (PASS / FAIL / SKIP, name, reason), then the result."""
    width = max(len(c.name) for c in checks)
    print(title)
    for c in checks:
        print(f"  {'SKIP' if c.ok is None else 'PASS' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.reason}")
    failed = [c for c in checks if c.ok is False]
    print(f"result: {'all checks passed' if not failed else f'{len(failed)} of {len(checks)} checks failed'}")


def _extract(zip_path: Path, into: Path) -> Path:
    """Extract a submission zip safely; return its root (the single top folder if there is one)."""
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            name = Path(info.filename)
            if name.is_absolute() or ".." in name.parts:
                raise ValueError(f"{zip_path} holds an unsafe path {info.filename!r}")
        zf.extractall(into)
    entries = [p for p in into.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir() and not (into / "REPORT.md").exists():
        return entries[0]
    return into


def pack(root: Path, output: Path) -> int:
    """Check ``root`` (without re-running it) and zip it to ``output``; 0 on success, 1 refused."""
    checks = run_checks(root, run_tests=False)[:-1]
    print_summary(f"packing {root}", checks)
    if not all(c.ok for c in checks):
        print(f"error: not packed: fix the failed checks above, then run --pack again", file=sys.stderr)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in submission_files(root):
            if (root / rel).resolve() != output.resolve():
                zf.write(root / rel, rel.as_posix())
    tmp.replace(output)
    print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MB): submit this file")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("path", nargs="?", type=Path, help="submission folder or .zip (default with --pack: this kit)")
    parser.add_argument("--pack", action="store_true", help="check this kit's folder and zip it for submitting")
    parser.add_argument("--output", type=Path, default=None, help=f"zip to write with --pack (default <kit>/{PACK_NAME})")
    parser.add_argument("--no-run", action="store_true", help="skip re-running the tests and notebooks (pytest --nbval)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed for pytest --nbval (default 3600)")
    args = parser.parse_args(argv)
    if args.pack:
        root = (args.path or REPO).resolve()
        if not root.is_dir():
            print(f"error: {root} is not a folder; --pack zips the kit's folder", file=sys.stderr)
            return 2
        return pack(root, (args.output or root / PACK_NAME).resolve())
    if args.path is None:
        parser.error("give the submission folder or zip to check (or --pack to make one)")
    path = args.path.resolve()
    if not path.exists():
        print(f"error: {path} does not exist; give a submission folder or .zip", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="submission-") as tmp:
        if path.is_file():
            try:
                root = _extract(path, Path(tmp))
            except (zipfile.BadZipFile, ValueError) as err:
                print(f"error: {path} is not a usable zip: {err}", file=sys.stderr)
                return 2
        else:
            root = path
            if not args.no_run:  # nbval writes into the folder (data/, runs/, results/): run on a copy
                root = Path(tmp) / path.name
                shutil.copytree(path, root, ignore=shutil.ignore_patterns(*PACK_SKIP_DIRS))
        checks = run_checks(root, run_tests=not args.no_run, timeout=args.timeout)
        print_summary(f"submission {path}", checks)
    return 0 if all(c.ok is not False for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
