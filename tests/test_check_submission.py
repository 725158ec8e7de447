"""course/check_submission.py: a submission made from the reference passes; broken ones name the problem."""
from __future__ import annotations

import os
import pickle
import shutil
import struct
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
    shutil.copytree(REPO / "benchmarks" / "data" / "Set5", root / "benchmarks" / "data" / "Set5")
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
    assert code[1] != 1  # markdown cells come first: the index among all cells is not what a person counts
    nb.cells[code[1]].execution_count = None
    nbformat.write(nb, submission / "test.ipynb")
    assert _failed(submission) == {"notebooks executed": "test.ipynb: code cell(s) 2 not executed "
                                                         "(run them all and save them)"}


def test_an_error_output_is_named(submission):
    nb = nbformat.read(submission / "train.ipynb", as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    nb.cells[code[2]].execution_count = 7
    nb.cells[code[2]].outputs.append(nbformat.v4.new_output("error", ename="NotImplementedError",
                                                            evalue="SRResNet.forward", traceback=[]))
    nbformat.write(nb, submission / "train.ipynb")
    assert _failed(submission) == {
        "no errors in notebooks": "train.ipynb code cell 3 (In [7]): NotImplementedError: SRResNet.forward"}


def test_missing_or_wrong_set5_images_are_named(submission):
    (submission / cs.SR_DIR / "img_003_srgan-local-run_x4.png").unlink()
    _png(submission / cs.SR_DIR / "img_005_bicubic_x4.png", (344, 228))  # width and height swapped
    reason = _failed(submission)["Set5 images"]
    assert "srgan-local-run: 4 of 5 images (missing img_003)" in reason
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
    # the bundled test images the notebooks read stay: only the top-level data/ is left out
    assert "benchmarks/data/Set5/image_SRF_4/img_001_SRF_4_HR.png" in names
    assert cs.main([str(out), "--no-run"]) == 0


def test_the_graders_copy_keeps_benchmarks_data_and_drops_the_runs(submission, tmp_path):
    (submission / "runs" / "basic").mkdir(parents=True)
    (submission / "runs" / "basic" / "log.csv").write_text("epoch\n")
    _png(submission / "data" / "sample" / "x.png", (8, 8))
    _png(submission / "results" / "data" / "kept.png", (8, 8))  # a folder named data below the top
    dest = tmp_path / "copy"
    assert cs.copy_submission(submission, dest) == []
    assert (dest / "benchmarks" / "data" / "Set5" / "image_SRF_4" / "img_001_SRF_4_HR.png").is_file()
    assert (dest / "results" / "data" / "kept.png").is_file()
    assert not (dest / "runs").exists() and not (dest / "data").exists()


def _write_notebook(path: Path, sources: list[str], outputs: dict[int, str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("# a title cell, not counted"))
    for k, source in enumerate(sources):
        cell = nbformat.v4.new_code_cell(source)
        cell.execution_count = k + 1
        if k in outputs:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=outputs[k])]
        nb.cells.append(cell)
    nbformat.write(nb, path)


def test_a_failing_nbval_run_names_each_failing_cell_and_test(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "pytest.ini").write_text("[pytest]\ntestpaths = tests nb.ipynb\n")
    (tmp_path / "tests" / "test_it.py").write_text("def test_sum():\n    assert 1 + 1 == 3, 'sum is off\\nmore'\n")
    _write_notebook(tmp_path / "nb.ipynb", ["print(1)", "open('benchmarks/data/missing.png')", "print(3)"],
                    {0: "1\n", 2: "4\n"})
    check = cs.check_pytest(tmp_path, timeout=300)
    assert check.ok is False and "3 failed" in check.reason
    assert check.details == [
        "tests/test_it.py::test_sum: AssertionError: sum is off",
        "nb.ipynb code cell 2 (In [2]): FileNotFoundError: [Errno 2] No such file or directory: "
        "'benchmarks/data/missing.png'",
        "nb.ipynb code cell 3 (In [3]): Cell outputs differ: mismatch 'stdout'",
    ], check.details


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


# ------------------------------------------------------------------------------ bad input, attacks


def test_a_zip_bomb_is_refused_in_one_line_before_extracting(tmp_path, capsys, monkeypatch):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("REPORT.md", "# report\n")
        zf.writestr("results/zeros.bin", b"\0" * (8 * 2**20))  # 8 MB of zeros: ~1000:1
    extracted = []
    monkeypatch.setattr(zipfile.ZipFile, "extractall", lambda *a, **k: extracted.append(a))
    assert cs.main([str(bomb), "--no-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "results/zeros.bin is compressed" in err, err
    assert "refused before extracting" in err and not extracted
    monkeypatch.setattr(cs, "ZIP_MAX_TOTAL_MB", 4)  # the total declared size alone, with a plain ratio
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w") as zf:
        for k in range(3):
            zf.writestr(f"f{k}.bin", os.urandom(2 * 2**20))
    assert cs.main([str(big), "--no-run"]) == 2
    assert "expands to 6 MB (limit 4 MB)" in capsys.readouterr().err


def test_a_zip_member_larger_than_it_declares_is_stopped(tmp_path, capsys):
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.txt", b"x" * 1000)
    data = bytearray(path.read_bytes())
    # declare 10 bytes in the central directory (what zipfile reads) for a stored 1000-byte member
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = struct.pack("<I", 10)
    path.write_bytes(bytes(data))
    assert cs.main([str(path), "--no-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path} is not a usable zip: ") and err.count("\n") == 1, err


def test_pack_never_follows_a_symlink_out_of_the_folder(submission, tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")
    os.symlink(secret, submission / "notes.txt")
    os.symlink(submission / "results" / "set5_comparison.png", submission / "results" / "inside.png")
    out = tmp_path / "out.zip"
    assert cs.pack(submission, out) == 0
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        assert "notes.txt" not in names and not any(b"root:x" in zf.read(n) for n in names)
    assert "results/inside.png" in names  # a link to a file inside the folder is its content
    assert f"left out the symbolic link notes.txt -> {secret}" in capsys.readouterr().out


def test_a_symlink_loop_in_a_graded_folder_is_named_not_followed(submission, tmp_path, capsys, monkeypatch):
    os.symlink(".", submission / "loop")
    os.symlink("results", submission / "results" / "again")
    monkeypatch.setattr(cs, "check_pytest", lambda root, timeout: cs.Check("pytest --nbval", True, "stub"))
    assert cs.main([str(submission)]) == 0
    out = capsys.readouterr().out
    assert "left out the symbolic link loop -> ." in out and "results/again -> results" in out


@pytest.mark.parametrize("where", ["inside file", "existing folder", "existing file"])
def test_pack_output_inside_the_folder_or_onto_a_file_is_refused(submission, tmp_path, capsys, where):
    keep = (submission / "models.py").read_bytes()
    output = {"inside file": submission / "models.py", "existing folder": submission / "results",
              "existing file": tmp_path / "mine.zip"}[where]
    if where == "existing file":
        output.write_bytes(b"my own file")
    before = sorted(p.name for p in output.parent.iterdir())
    assert cs.main(["--pack", str(submission), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert (submission / "models.py").read_bytes() == keep
    assert sorted(p.name for p in output.parent.iterdir()) == before  # no .tmp left behind
    if where == "existing file":
        assert output.read_bytes() == b"my own file"
        assert cs.main(["--pack", str(submission), "--output", str(output), "--overwrite"]) == 0
        assert zipfile.is_zipfile(output)
        # the default submission.zip in the folder is never packed, and a new --pack replaces it
        assert cs.main(["--pack", str(submission)]) == 0 and cs.main(["--pack", str(submission)]) == 0
        with zipfile.ZipFile(submission / cs.PACK_NAME) as zf:
            assert cs.PACK_NAME not in zf.namelist()


def test_report_images_outside_the_submission_do_not_count(submission, tmp_path):
    outside = tmp_path / "outside.png"
    _png(outside, (4, 4))
    text = (submission / "REPORT.md").read_text()
    for target in (str(outside), "../outside.png", "results/../../outside.png"):
        (submission / "REPORT.md").write_text(text + f"\n![x]({target})\n")
        assert _failed(submission) == {"report": f"image {target} not in the submission"}
    os.symlink(outside, submission / "results" / "linked.png")
    (submission / "REPORT.md").write_text(text + "\n![x](results/linked.png)\n")
    assert _failed(submission) == {"report": "image results/linked.png not in the submission"}


def _weights() -> dict:
    import torch

    return {"w": torch.zeros(200, 100)}


@pytest.mark.parametrize("name, kind", [
    ("weights.bin", "torch"), ("results/generator.png", "torch"), ("model.PTH.txt", "torch"),
    ("w.npz", "npz"), ("w.npy", "npy"), ("notes.pkl.txt", "pickle"), ("w.dat", "safetensors"),
    ("keras.h5x", "hdf5"),
])
def test_model_files_are_found_by_content_whatever_the_name(submission, name, kind):
    import torch

    path = submission / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "torch":
        torch.save(_weights(), path)
    elif kind in ("npz", "npy"):
        with open(path, "wb") as f:
            (np.savez if kind == "npz" else np.save)(f, *([np.zeros((200, 100), np.float32)] if kind == "npy" else []),
                                                     **({"w": np.zeros((200, 100), np.float32)} if kind == "npz" else {}))
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"w": [0.0] * 10}, protocol=4))
    elif kind == "safetensors":
        header = b'{"w": {"dtype": "F32", "shape": [200, 100], "data_offsets": [0, 80000]}}'
        path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 80000)
    else:
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 80000)
    reason = _failed(submission)["no model files"]
    assert reason.startswith(f"remove {name} (model file: "), reason


def test_small_arrays_and_ordinary_zips_are_not_model_files(submission):
    with open(submission / "results" / "curve.npz", "wb") as f:
        np.savez(f, loss=np.zeros(100, np.float32), steps=np.arange(10_000))  # few floats, many ints
    with zipfile.ZipFile(submission / "results" / "extra.zip", "w") as zf:
        zf.writestr("readme.txt", "not a model")
    assert "no model files" not in _failed(submission)
