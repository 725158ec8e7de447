"""course/report.py: test.ipynb's AUTO blocks in REPORT.md, and what counts as a filled report."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "course"))

import report  # noqa: E402


def test_fill_report_starts_from_the_template_and_rewrites_only_its_blocks(tmp_path):
    path = tmp_path / "REPORT.md"
    report.fill_report({"results_tables": "| a | 1 |", "set5_figure": "![x](x.png)"}, path)
    text = path.read_text()
    assert report.auto_block(text, "results_tables") == "| a | 1 |"
    assert report.auto_block(text, "set5_figure") == "![x](x.png)"
    # the student writes; a second run of test.ipynb replaces the tables and keeps the text
    path.write_text(text.replace("TODO(student): what the tables show", "My reading of the tables"))
    report.fill_report({"results_tables": "| b | 2 |\n| c | 3 |"}, path)
    text = path.read_text()
    assert report.auto_block(text, "results_tables") == "| b | 2 |\n| c | 3 |"
    assert report.auto_block(text, "set5_figure") == "![x](x.png)"
    assert "My reading of the tables" in text and "| a | 1 |" not in text


def test_fill_report_refuses_unknown_blocks_and_lost_markers(tmp_path):
    path = tmp_path / "REPORT.md"
    with pytest.raises(ValueError, match="unknown report blocks"):
        report.fill_report({"tables": "x"}, path)
    path.write_text("# my report\n")
    with pytest.raises(ValueError, match=r"<!-- AUTO:results_tables --> once"):
        report.fill_report({"results_tables": "x"}, path)


def test_the_template_is_not_a_filled_report_and_a_filled_one_is():
    template = report.TEMPLATE.read_text()
    problems = report.report_problems(template)
    assert any("TODO(student)" in p for p in problems)
    assert "block set5_figure not filled: run test.ipynb" in problems
    filled = "\n".join("text" if report.TODO_MARK in line else line for line in template.splitlines())
    for name in report.AUTO_BLOCKS:
        filled = report.fill_block(filled, name, "content")
    assert report.report_problems(filled) == []
    without_section = filled.replace("## 5. Own attempts and improvements", "## 5. Other")
    assert report.report_problems(without_section) == ["section(s) missing: Own attempts and improvements"]
