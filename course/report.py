"""The experiment report of the course edition: ``REPORT.md``, made from ``report_template.md``.

The template has two kinds of marked places:

* lines holding ``TODO(student)``: the student replaces them with their own text;
* ``AUTO`` blocks, from a line ``<!-- AUTO:<name> -->`` to a line ``<!-- /AUTO:<name> -->``,
  that ``test.ipynb`` rewrites on every run with :func:`fill_report` (``results_tables``: the
  PSNR / SSIM / NIQE tables of the test sets; ``set5_figure``: the Set5 comparison figure).
  Everything between the two marker lines is replaced; the marker lines stay, so running the
  notebook again updates the block.

``check_submission.py`` uses :func:`report_problems` to refuse a report that is not filled.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script or imported from a notebook in the kit's root
    sys.path.insert(0, str(REPO))

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
