"""The bundled Set5/Set14 x4 (benchmarks/data): complete, consistent, tracked by git, and the
same files as the team's copy they were taken from."""
from __future__ import annotations

from pathlib import Path

import filecmp
import shutil
import subprocess

import pytest
from PIL import Image

# not `from conftest import ...`: tests/tasks has a conftest.py too, and which one the
# name `conftest` means depends on the order pytest collects them
REPO = Path(__file__).resolve().parents[1]
BENCHMARK = REPO.parent / "shared" / "data" / "benchmark"
BUNDLED = REPO / "benchmarks" / "data"

SETS = {"Set5": 5, "Set14": 14}


def _pairs(name: str) -> list[tuple]:
    folder = BUNDLED / name / "image_SRF_4"
    return [(hr, hr.with_name(hr.name.replace("_HR", "_LR"))) for hr in sorted(folder.glob("*_HR.png"))]


@pytest.mark.parametrize("name", SETS)
def test_bundled_set_is_complete(name):
    pairs = _pairs(name)
    assert [hr.name for hr, _ in pairs] == [f"img_{k:03d}_SRF_4_HR.png" for k in range(1, SETS[name] + 1)]
    for hr_path, lr_path in pairs:
        assert lr_path.is_file(), f"{lr_path} missing"
        with Image.open(hr_path) as hr, Image.open(lr_path) as lr:
            assert hr.width % 4 == 0 and hr.height % 4 == 0, hr_path.name
            assert lr.size == (hr.width // 4, hr.height // 4), lr_path.name
            assert lr.mode == hr.mode and hr.mode in ("RGB", "L"), hr_path.name
    # nothing else in the folder (a stray file would end up in the lists or the repo)
    assert sorted(p.name for p in (BUNDLED / name / "image_SRF_4").iterdir()) == sorted(
        p.name for pair in pairs for p in pair)


def test_bundled_files_equal_the_shared_copy():
    if not BENCHMARK.is_dir():
        pytest.skip(f"shared benchmark data not found at {BENCHMARK} (team CI extra)")
    for name in SETS:
        ours, theirs = BUNDLED / name / "image_SRF_4", BENCHMARK / name / "image_SRF_4"
        files = sorted(p.name for p in theirs.iterdir())
        match, mismatch, errors = filecmp.cmpfiles(ours, theirs, files, shallow=False)
        assert not mismatch and not errors, f"{name}: differ {mismatch}, missing {errors}"


def test_bundled_files_are_not_git_ignored():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    files = [str(p.relative_to(REPO)) for p in BUNDLED.rglob("*") if p.is_file()]
    assert len(files) == 2 * sum(SETS.values()) + 1  # the PNG pairs and README.md
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *files], cwd=REPO,
                             capture_output=True, text=True).stdout.split()
    assert ignored == [], f".gitignore hides bundled files: {ignored}"
