"""course/report.py: test.ipynb's AUTO blocks in REPORT.md, and what counts as a filled report."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import checkpoints
import models
import notebook_helpers

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


def _generator_file(path: Path, scale: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoints.save_generator(path, models.SRResNet(scale=scale, n_blocks=1, channels=8))
    return path


def test_find_generators_lists_every_run_folder_and_stage(tmp_path):
    """One test.ipynb run scores the basic mode, both stages and any label: all runs, not one per kind."""
    basic = _generator_file(tmp_path / "runs" / "notebook-basic-quick" / "generator_stage2.pth")
    s1 = _generator_file(tmp_path / "runs" / "my run" / "generator_stage1.pth")
    s2 = _generator_file(tmp_path / "runs" / "my run" / "generator_stage2.pth")
    _generator_file(tmp_path / "runs" / "x2" / "generator_stage2.pth", scale=2)
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "generator_stage2.pth").write_text("not a checkpoint")
    found = report.find_generators(tmp_path)
    assert found == {"my run stage 1": s1, "my run stage 2": s2, "notebook-basic-quick stage 2": basic}
    shipped = _generator_file(tmp_path / "checkpoints" / "srgan_x4.pth")
    assert list(report.find_generators(tmp_path))[0] == "SRGAN" and report.find_generators(tmp_path)["SRGAN"] == shipped
    assert list(report.find_generators(tmp_path, scale=2)) == ["x2 stage 2"]


def test_a_second_run_keeps_the_rows_of_methods_scored_before(tmp_path):
    rows = [{"set": "Set5", "method": m, "image": f"img_00{k}", "psnr": 20.0 + k, "ssim": 0.5, "niqe": 7.0,
             "sharpness": 1.0, "seconds": 0.1} for m in ("Bicubic", "basic stage 2", "old run stage 2") for k in (1, 2)]
    rows += [{"set": "Set5", "method": "HR", "image": "img_001", "niqe": 5.0},
             {"set": "Set14", "method": "gone stage 1", "image": "a", "psnr": 1.0, "ssim": 0.1, "niqe": 1.0,
              "sharpness": 1.0, "seconds": 1.0}]
    csv_path = notebook_helpers.save_csv(rows, tmp_path / "per_image_x4.csv",
                              ["set", "method", "image", "psnr", "ssim", "niqe", "sharpness", "seconds"])
    now = {"Set5": {"Bicubic": [{"name": "img_001", "psnr": 1.0}, {"name": "img_002", "psnr": 2.0}],
                    "basic stage 2": [{"name": "img_001", "psnr": 3.0}, {"name": "img_002", "psnr": 4.0}]}}
    added = report.merge_earlier(now, csv_path)
    assert added == [("Set5", "old run stage 2")]  # Set14 not scored now; HR rows never taken
    assert [r["psnr"] for r in now["Set5"]["old run stage 2"]] == [21.0, 22.0]
    assert now["Set5"]["basic stage 2"][0]["psnr"] == 3.0  # scored again: this run's rows
    other_images = {"Set5": {"Bicubic": [{"name": "img_009", "psnr": 1.0}]}}
    assert report.merge_earlier(other_images, csv_path) == []  # other images: nothing to compare with
    assert report.merge_earlier(now, tmp_path / "missing.csv") == []
