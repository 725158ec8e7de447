"""The experiment report of the course edition: ``REPORT.md``, made from ``report_template.md``.

The template has two kinds of marked places:

* lines holding ``TODO(student)``: the student replaces them with their own text;
* ``AUTO`` blocks, from a line ``<!-- AUTO:<name> -->`` to a line ``<!-- /AUTO:<name> -->``,
  that ``test.ipynb`` rewrites on every run with :func:`fill_report` (``results_tables``: the
  PSNR / SSIM / NIQE tables of the test sets; ``set5_figure``: the Set5 comparison figure).
  Everything between the two marker lines is replaced; the marker lines stay, so running the
  notebook again updates the block.

``check_submission.py`` uses :func:`report_problems` to refuse a report that is not filled.
``test.ipynb`` scores every generator :func:`find_generators` finds (the files in
``checkpoints/`` and both stages of every run folder under ``runs/``) and keeps, with
:func:`merge_earlier`, the rows of methods scored by an earlier run of the notebook, so a second
run never drops a row from the report's tables. Names in the tables go through :func:`md_escape`.
"""
from __future__ import annotations

import csv
import html
import math
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script or imported from a notebook in the kit's root
    sys.path.insert(0, str(REPO))

from checkpoints import CheckpointError, load_state  # noqa: E402
from utils import atomic_write  # noqa: E402

TEMPLATE = REPO / "course" / "report_template.md"
AUTO_BLOCKS = ("results_tables", "set5_figure")
TODO_MARK = "TODO(student)"
# Headings of the case's sections, in order; the report must keep them.
SECTIONS = ("Training scheme of the generator and the discriminator",
            "Best hyperparameters and their test results",
            "Results on the five test sets",
            "Set5 results",
            "Own attempts and improvements")


RUN_FILES = {1: "generator_stage1.pth", 2: "generator_stage2.pth"}
SHIPPED_FILES = {"SRResNet": "srresnet_x{scale}.pth", "SRGAN": "srgan_x{scale}.pth"}


def md_escape(text: object) -> str:
    """``text`` as plain text inside Markdown (a table cell, a list item) or HTML: ``|``, ``\\``,
    emphasis, link and image brackets, backticks and HTML (``<script>``, ``&``) are escaped and
    line breaks become spaces, so a name can neither forge a row or heading nor run code."""
    value = " ".join(str(text).splitlines()).replace("\t", " ")
    value = html.escape(value, quote=True)
    return re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", value)


def _run_scale(path: Path) -> int | None:
    """The scale a generator file was built for (its architecture record), or None if unusable."""
    try:
        return int(load_state(path, "generator checkpoint")["arch"]["kwargs"]["scale"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None


def find_generators(root: str | Path = ".", scale: int = 4) -> dict[str, Path]:
    """Every generator ``test.ipynb`` scores by default: ``{label: path}``.

    In this order: the files in ``checkpoints/`` (``srresnet_x{scale}.pth`` labelled
    ``SRResNet``, ``srgan_x{scale}.pth`` labelled ``SRGAN``, when there), then for each run
    folder ``runs/<name>/`` (sorted by name; the basic mode, the two-stage runs, any name) its
    ``generator_stage1.pth`` labelled ``<name> stage 1`` and ``generator_stage2.pth`` labelled
    ``<name> stage 2``. Only generators of ``scale`` count (read from their architecture record).
    Paths are ``root / relative path``.
    """
    root = Path(root)
    found: dict[str, Path] = {}
    for label, pattern in SHIPPED_FILES.items():
        path = root / "checkpoints" / pattern.format(scale=scale)
        if path.is_file() and _run_scale(path) == scale:
            found[label] = path
    for run in sorted(p for p in (root / "runs").glob("*") if p.is_dir()):
        for stage, name in RUN_FILES.items():
            path = run / name
            if path.is_file() and _run_scale(path) == scale:
                found[f"{run.name} stage {stage}"] = path
    return found


def merge_earlier(results: dict[str, dict[str, list[dict]]], csv_path: str | Path) -> list[tuple[str, str]]:
    """Add to ``results`` the methods an earlier run of ``test.ipynb`` scored and this one did not.

    Args:
        results: ``{set: {method: [per-image row]}}`` of this run (rows with ``name``, ``psnr``,
            ``ssim``, ``niqe``, ``sharpness``, ``seconds``); changed in place.
        csv_path: the per-image CSV the earlier run wrote (``set,method,image,psnr,...``); a
            missing or unreadable file adds nothing.

    Returns:
        the ``(set, method)`` pairs taken from the earlier run, for sets scored in this run on
        the same images (the ``HR`` rows are never taken: this run has its own).
    """
    path = Path(csv_path)
    if not path.is_file():
        return []
    earlier: dict[tuple[str, str], list[dict]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row.get("method") in (None, "", "HR") or row.get("set") not in results:
                    continue
                values = {}
                for key in ("psnr", "ssim", "niqe", "sharpness", "seconds"):
                    try:
                        values[key] = float(row.get(key) or "nan")
                    except ValueError:
                        values[key] = math.nan
                earlier.setdefault((row["set"], row["method"]), []).append({"name": row.get("image", ""), **values})
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    added = []
    for (set_name, method), rows in earlier.items():
        now = results[set_name]
        images = [r["name"] for r in next(iter(now.values()), [])]
        if method not in now and [r["name"] for r in rows] == images:
            now[method] = rows
            added.append((set_name, method))
    return added


def begin_marker(name: str) -> str:
    """``<!-- AUTO:name -->``: the line that opens an AUTO block."""
    return f"<!-- AUTO:{name} -->"


def end_marker(name: str) -> str:
    """``<!-- /AUTO:name -->``: the line that closes an AUTO block."""
    return f"<!-- /AUTO:{name} -->"


def _block_span(lines: list[str], name: str) -> tuple[int, int]:
    """Line indices of the begin and end marker of block ``name``; ValueError if not one pair."""
    begins = [i for i, line in enumerate(lines) if line.strip() == begin_marker(name)]
    ends = [i for i, line in enumerate(lines) if line.strip() == end_marker(name)]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise ValueError(f"the report must hold the line {begin_marker(name)} once, followed later by "
                         f"{end_marker(name)} (found {len(begins)} and {len(ends)}); copy them back "
                         f"from {TEMPLATE.relative_to(REPO).as_posix()}")
    return begins[0], ends[0]


def auto_block(text: str, name: str) -> str:
    """The text between the markers of AUTO block ``name`` (stripped)."""
    lines = text.splitlines()
    begin, end = _block_span(lines, name)
    return "\n".join(lines[begin + 1:end]).strip()


def fill_block(text: str, name: str, content: str) -> str:
    """``text`` with the AUTO block ``name`` holding ``content`` (Markdown) between its markers."""
    lines = text.splitlines()
    begin, end = _block_span(lines, name)
    new = lines[:begin + 1] + content.strip("\n").splitlines() + lines[end:]
    return "\n".join(new) + "\n"


def fill_report(blocks: dict[str, str], report: str | Path = "REPORT.md",
                template: str | Path = TEMPLATE) -> Path:
    """Write the AUTO blocks of the report; the student's text stays as it is.

    Args:
        blocks: ``{block name: Markdown}``, e.g. ``{"results_tables": tables,
            "set5_figure": "![Set5](results/set5_comparison.png)"}``; names from ``AUTO_BLOCKS``.
        report: the report file; made from ``template`` when it does not exist yet.
        template: the report template.

    Returns:
        the report's path. The file is replaced atomically.

    Raises:
        ValueError: an unknown block name, or the report lacks a block's markers.
    """
    unknown = sorted(set(blocks) - set(AUTO_BLOCKS))
    if unknown:
        raise ValueError(f"unknown report blocks {unknown}; the report has {list(AUTO_BLOCKS)}")
    report = Path(report)
    text = (report if report.is_file() else Path(template)).read_text(encoding="utf-8")
    for name, content in blocks.items():
        text = fill_block(text, name, content)
    return atomic_write(report, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def report_problems(text: str, placeholders: dict[str, str] | None = None) -> list[str]:
    """What keeps ``text`` (a report) from counting as filled in; empty when it is complete.

    Checks: every section heading of ``SECTIONS`` is there; no line holds ``TODO(student)``;
    every AUTO block holds something other than the template's placeholder (``placeholders``:
    ``{block name: placeholder text}``, read from the template by default).
    """
    if placeholders is None:
        template = TEMPLATE.read_text(encoding="utf-8")
        placeholders = {name: auto_block(template, name) for name in AUTO_BLOCKS}
    problems = []
    headings = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
    missing = [s for s in SECTIONS if not any(s.lower() in h.lower() for h in headings)]
    if missing:
        problems.append(f"section(s) missing: {', '.join(missing)}")
    todo = [n for n, line in enumerate(text.splitlines(), 1) if TODO_MARK in line]
    if todo:
        problems.append(f"{len(todo)} {TODO_MARK} place(s) left (line {', '.join(map(str, todo[:6]))}"
                        f"{', ...' if len(todo) > 6 else ''})")
    for name in AUTO_BLOCKS:
        try:
            content = auto_block(text, name)
        except ValueError as err:
            problems.append(str(err))
            continue
        if not content or content == placeholders.get(name):
            problems.append(f"block {name} not filled: run test.ipynb")
    return problems
