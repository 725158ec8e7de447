"""The teachers' whole loop as course/README.md gives it: edition, grading, class rating, leaderboard.

Each command of the README's "whole loop" block is run as written (globs expanded as a shell
does), from a folder standing for the kit's parent; grading runs with ``--no-run`` added (the
``pytest --nbval`` step is covered by tests/test_check_submission.py).
"""
from __future__ import annotations

import csv
import glob
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "course"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import check_submission as cs  # noqa: E402
from test_check_submission import submission  # noqa: E402,F401  (fixture: a complete submission folder)

_spec = importlib.util.spec_from_file_location("course_rating", REPO / "course" / "rating.py")
rating = sys.modules.setdefault("course_rating", importlib.util.module_from_spec(_spec))
if not hasattr(rating, "read_class"):
    _spec.loader.exec_module(rating)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def loop_commands() -> list[str]:
    """The command lines of course/README.md's "## The whole loop for a class" block."""
    text = (REPO / "course" / "README.md").read_text(encoding="utf-8")
    section = text.split("## The whole loop for a class", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "course/README.md: the whole loop has no bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def run(line: str, cwd: Path, extra: list[str] | None = None) -> subprocess.CompletedProcess:
    words = shlex.split(line, comments=True)
    argv = []
    for word in words:
        argv += sorted(glob.glob(str(cwd / word))) and [str(Path(p).relative_to(cwd)) for p in
                                                      sorted(glob.glob(str(cwd / word)))] if "*" in word else [word]
    assert argv[0] == "python", line
    return subprocess.run([sys.executable, *argv[1:], *(extra or [])], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=ENV)


def test_the_readme_loop_runs_from_edition_to_leaderboard(tmp_path, submission):
    commands = loop_commands()
    assert [re.search(r"course/(\w+)\.py(?: (make-class|tally))?", c).group(0) for c in commands] == [
        "course/student_edition.py", "course/check_submission.py", "course/rating.py make-class",
        "course/rating.py tally"]
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "course").symlink_to(REPO / "course")
    hand_in = kit / "hand_in"
    hand_in.mkdir()
    assert cs.pack(submission, hand_in / "ada.zip") == 0
    for name in ("bob", "cy"):
        shutil.copy(hand_in / "ada.zip", hand_in / f"{name}.zip")

    # 1. the students' kit
    proc = run(commands[0], kit)
    assert proc.returncode == 0, proc.stderr
    edition = Path(re.search(r"files in (\S+) \(", proc.stdout).group(1))
    assert edition == (tmp_path / "srgan-course").resolve() and (edition / "REPORT.md").is_file()
    # 2. grading (checks 1-6 here)
    proc = run(commands[1], kit, ["--no-run"])
    assert proc.returncode == 0 and "result: all checks passed" in proc.stdout, proc.stdout + proc.stderr
    # 3. the class rating
    proc = run(commands[2], kit)
    assert proc.returncode == 0, proc.stderr
    record = rating.read_class(kit / "class_rating")
    assert record["students"] == ["ada", "bob", "cy"]
    # the raters rate their pages (here: written as the page exports them)
    (kit / "ratings").mkdir()
    for r, subset in enumerate(record["subsets"], 1):
        with open(kit / "ratings" / f"ratings_rater{r}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(rating.COLUMNS)
            for image, method in subset:
                score = {"HR": 5, "nearest": 1, "bicubic": 2}.get(method, 3 + (r + len(image)) % 2)
                writer.writerow([f"rater{r}", image, method, score, 2.5])
    # 4. MOS and the leaderboard
    proc = run(commands[3], kit)
    assert proc.returncode == 0, proc.stderr
    with open(kit / "class_mos" / "leaderboard.csv", newline="") as f:
        board = list(csv.DictReader(f))
    assert sorted(row["student"] for row in board) == ["ada", "bob", "cy"]
    assert all(row["rank"] and 3 <= float(row["mos"]) <= 4 for row in board)
    assert (kit / "class_mos" / "leaderboard.md").is_file() and (kit / "class_mos" / "mos.md").is_file()
