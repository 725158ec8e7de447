"""course/rating.py tally: names from raters' files cannot inject formulas into CSV or markup into Markdown."""
from __future__ import annotations

import csv
import importlib.util
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("course_rating", REPO / "course" / "rating.py")
rating = sys.modules.setdefault("course_rating", importlib.util.module_from_spec(_spec))
if not hasattr(rating, "tally"):
    _spec.loader.exec_module(rating)
sys.path.insert(0, str(REPO / "course"))

import report  # noqa: E402

EVIL_METHODS = ["=cmd|' /C calc'!A0", "+1+1", "-2", "@x", "\tTAB", "\rCR"]
EVIL_RATERS = ["Eve | 5 | 5 | 5 | 5 | kept |", "Mal\n# Injected heading", "<script>alert(1)</script>",
               "![pixel](https://evil.example/p.png)"]


def write_evil_ratings(folder: Path) -> list[Path]:
    paths = []
    for k, rater in enumerate(EVIL_RATERS):
        path = folder / f"ratings_{k}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(rating.COLUMNS)
            for image in ("img_001", "img_002"):
                writer.writerow([rater, image, "HR", 5, 1.0])
                writer.writerow([rater, image, "nearest", 1, 1.0])
                for j, method in enumerate(EVIL_METHODS):
                    writer.writerow([rater, image, method, 1 + (j + k) % 5, 1.0])
        paths.append(path)
    return paths


def test_tally_csv_cells_never_start_a_formula(tmp_path):
    rating.tally(write_evil_ratings(tmp_path), tmp_path / "mos")
    for name in ("mos.csv", "mos_per_image.csv", "mann_whitney.csv"):
        with open(tmp_path / "mos" / name, newline="", encoding="utf-8") as f:
            cells = [cell for row in csv.reader(f) for cell in row]
        dangerous = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
        assert not dangerous, (name, dangerous[:3])
        assert "'=cmd|' /C calc'!A0" in cells and "'+1+1" in cells and "'-2" in cells and "'@x" in cells, name


def test_tally_markdown_escapes_names(tmp_path):
    rating.tally(write_evil_ratings(tmp_path), tmp_path / "mos")
    text = (tmp_path / "mos" / "mos.md").read_text(encoding="utf-8")
    assert "<script>" not in text and "](https://evil" not in text
    assert [line for line in text.splitlines() if line.startswith("#")] == [
        "# Mean opinion score (MOS)", "## Raters", "## MOS per method", "## Mann-Whitney U, two-sided, every pair",
        "## MOS per image"]
    table = [line for line in text.splitlines() if line.startswith("| ") and "Eve" in line]
    assert len(table) == 1
    # one cell per column: every other '|' is escaped
    assert len(re.findall(r"(?<!\\)\|", table[0])) == 7, table[0]


def test_md_escape_keeps_text_and_defuses_markup():
    assert report.md_escape("stage 2") == "stage 2"
    assert report.md_escape("a|b\nc") == "a\\|b c"
    assert "<" not in report.md_escape("<img src=x onerror=alert(1)>")
    assert report.md_escape("![x](y)") == "\\!\\[x\\]\\(y\\)"


def test_one_rater_is_singular_and_intervals_stay_on_the_scale(tmp_path):
    path = tmp_path / "ratings_solo.csv"
    rows = ["rater,image,method,score,seconds"]
    for k, image in enumerate(["img_001", "img_002", "img_003", "img_004"]):
        rows += [f"Solo,{image},HR,{5 if k else 4},1", f"Solo,{image},nearest,{1 if k else 2},1"]
    path.write_text("\n".join(rows) + "\n")
    result = rating.tally([path], tmp_path / "mos")
    text = (tmp_path / "mos" / "mos.md").read_text()
    assert "8 ratings from 1 rater (" in text and "1 raters" not in text
    rows = {r["method"]: r for r in result["methods"]}
    # scores 4,5,5,5: the t interval reaches past 5 and is clipped; 2,1,1,1 likewise below 1
    low, high = rating.t_interval([4, 5, 5, 5])[1:]
    assert high > 5 and rows["HR"]["ci_high"] == 5.0 and rows["HR"]["ci_low"] == low
    assert rating.t_interval([2, 1, 1, 1])[1] < 1 and rows["nearest"]["ci_low"] == 1.0
