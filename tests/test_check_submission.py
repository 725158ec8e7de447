"""course/check_submission.py: a submission made from the reference passes; broken ones name the problem."""
from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "course"))

import check_submission as cs  # noqa: E402
import report  # noqa: E402

# The case's Set5 x4 HR sizes (width, height): baby, bird, butterfly, head, woman.
SET5 = {"img_001": (512, 512), "img_002": (288, 288), "img_003": (256, 256), "img_004": (280, 280),
        "img_005": (228, 344)}


def _executed_notebook(src: Path, dst: Path) -> None:
    """The reference notebook as if run: execution counts and an output in every code cell."""
    nb = nbformat.read(src, as_version=4)
    count = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"cell {count} ran\n")]
    nbformat.write(nb, dst)


def _png(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path)


@pytest.fixture
def submission(tmp_path) -> Path:
    """A complete submission built from the reference files."""
    root = tmp_path / "submission"
    root.mkdir()
    for name in cs.REQUIRED_FILES:
        if name.endswith(".py"):
            shutil.copy(REPO / name, root / name)
        elif name.endswith(".ipynb"):
            _executed_notebook(REPO / name, root / name)
    for image, size in SET5.items():
        for method in ("bicubic", "srgan-local-run"):
            _png(root / cs.SR_DIR / f"{image}_{method}_x4.png", size)
    _png(root / "results" / "set5_comparison.png", (64, 32))
    text = report.TEMPLATE.read_text(encoding="utf-8")
    text = "\n".join("We trained G first, then G and D." if report.TODO_MARK in line else line
                     for line in text.splitlines())
    text = report.fill_block(text, "results_tables", "| method | Set5 |\n| --- | --- |\n| bicubic | 28.42 / 0.8101 |")
    text = report.fill_block(text, "set5_figure", "![Set5](results/set5_comparison.png)")
    (root / "REPORT.md").write_text(text, encoding="utf-8")
    return root


def _by_name(checks: list[cs.Check]) -> dict[str, cs.Check]:
    return {c.name: c for c in checks}


def _failed(root: Path) -> dict[str, str]:
    return {c.name: c.reason for c in cs.run_checks(root, run_tests=False) if c.ok is False}


def test_a_submission_made_from_the_reference_passes(submission, capsys):
    assert _failed(submission) == {}
    assert cs.main([str(submission), "--no-run"]) == 0
    screen = capsys.readouterr().out
    assert screen.count("PASS") == 6 and "SKIP  pytest --nbval" in screen and "result: all checks passed" in screen


def test_model_files_and_big_files_are_named(submission):
    _png(submission / "checkpoints" / "dummy.png", (8, 8))
    (submission / "checkpoints" / "srgan_x4.pth").write_bytes(b"\0" * 100)
    (submission / "results" / "huge.bin").write_bytes(b"\0" * (6 * 2**20))
    reason = _failed(submission)["no model files"]
    assert "checkpoints/srgan_x4.pth (model file)" in reason and "results/huge.bin (6.0 MB > 5 MB)" in reason


def test_an_unexecuted_notebook_is_named(submission):
    nb = nbformat.read(submission / "test.ipynb", as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    nb.cells[code[1]].execution_count = None
    nbformat.write(nb, submission / "test.ipynb")
    assert _failed(submission) == {"notebooks executed": f"test.ipynb: cell(s) {code[1]} not executed "
                                                         "(run them all and save them)"}


def test_an_error_output_is_named(submission):
    nb = nbformat.read(submission / "train.ipynb", as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells[i].outputs.append(nbformat.v4.new_output("error", ename="NotImplementedError", evalue="SRResNet.forward",
                                                      traceback=[]))
    nbformat.write(nb, submission / "train.ipynb")
    assert _failed(submission) == {"no errors in notebooks": f"train.ipynb cell {i}: NotImplementedError: SRResNet.forward"}


def test_missing_or_wrong_set5_images_are_named(submission):
    (submission / cs.SR_DIR / "img_003_srgan-local-run_x4.png").unlink()
    _png(submission / cs.SR_DIR / "img_005_bicubic_x4.png", (344, 228))  # width and height swapped
    reason = _failed(submission)["Set5 images"]
    assert "srgan-local-run: 4 of 5 images" in reason
    assert "img_005_bicubic_x4.png is 344x228, Set5 x4 needs 228x344" in reason


def test_set5_images_must_be_png_and_include_a_generator(submission):
    for path in (submission / cs.SR_DIR).glob("*_srgan-local-run_x4.png"):
        path.unlink()
    Image.open(submission / cs.SR_DIR / "img_001_bicubic_x4.png").convert("RGB").save(
        submission / cs.SR_DIR / "img_001_bicubic_x4.png", format="JPEG")
    reason = _failed(submission)["Set5 images"]
    assert "img_001_bicubic_x4.png is a JPEG file, not a PNG" in reason and "no images of a trained generator" in reason
    shutil.rmtree(submission / cs.SR_DIR)
    assert "no Set5 SR images" in _failed(submission)["Set5 images"]


def test_an_unfilled_report_is_refused(submission):
    (submission / "REPORT.md").write_text(report.TEMPLATE.read_text(encoding="utf-8"), encoding="utf-8")
    reason = _failed(submission)["report"]
    assert "TODO(student) place(s) left" in reason
    assert "block results_tables not filled: run test.ipynb" in reason
    text = (submission / "REPORT.md").read_text().replace("TODO(student)", "done")
    text = report.fill_block(text, "results_tables", "| a |")
    text = report.fill_block(text, "set5_figure", "![Set5](results/missing.png)")
    (submission / "REPORT.md").write_text(text)
    assert _failed(submission) == {"report": "image results/missing.png not in the submission"}


def test_missing_files_are_named(submission):
    (submission / "models.py").unlink()
    assert _failed(submission)["files"] == "missing: models.py"


def test_pack_zips_without_runs_and_data_and_the_zip_passes(submission, tmp_path, capsys):
    _png(submission / "data" / "sample" / "x.png", (8, 8))
    (submission / "runs" / "basic").mkdir(parents=True)
    (submission / "runs" / "basic" / "generator_stage2.pth").write_bytes(b"weights")
    out = tmp_path / "out" / "submission.zip"
    assert cs.pack(submission, out) == 0
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
    assert "REPORT.md" in names and "results/sr_set5/img_001_bicubic_x4.png" in names
    assert not [n for n in names if n.startswith(("runs/", "data/"))]
    assert cs.main([str(out), "--no-run"]) == 0


def test_pack_refuses_weights_and_writes_nothing(submission, tmp_path, capsys):
    (submission / "my_best.pt").write_bytes(b"weights")
    out = tmp_path / "submission.zip"
    assert cs.pack(submission, out) == 1
    assert not out.exists()
    assert "FAIL  no model files" in capsys.readouterr().out


def test_unsafe_zip_paths_are_refused(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../evil.py", "x = 1")
    assert cs.main([str(bad), "--no-run"]) == 2


@pytest.mark.parametrize("body, ok", [("assert 1 + 1 == 2", True), ("assert 1 + 1 == 3", False)])
def test_the_pytest_check_reports_the_run(tmp_path, body, ok):
    (tmp_path / "tests").mkdir()
    (tmp_path / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")
    (tmp_path / "tests" / "test_it.py").write_text(f"def test_it():\n    {body}\n")
    check = cs.check_pytest(tmp_path, timeout=120)
    assert check.ok is ok and ("1 passed" if ok else "1 failed") in check.reason
