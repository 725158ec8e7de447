"""create_data_lists.py: what users get wrong ends in one line `error: ...` and a non-zero exit,
never a traceback (missing or empty folder, a file for a folder, an unwritable or read-only
output folder, a full disk, a missing data list)."""
from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import create_data_lists as cdl
REPO = Path(__file__).resolve().parents[1]  # not from conftest: tests/tasks has a conftest.py too


def one_line_error(argv: list[str], capsys, progress: bool = True) -> str:
    """Run the CLI in-process; it must return non-zero and print one `error:` line on stderr
    (``progress=False``: and no progress bar before it, i.e. it failed before decoding)."""
    code = cdl.main(argv)
    captured = capsys.readouterr()
    # progress bars (tqdm, on stderr) aside
    lines = [line for line in re.split(r"[\r\n]", captured.err) if line.strip() and not re.search(r"\d+/\d+ \[", line)]
    assert code != 0, f"{argv}: exit 0\n{captured.out}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{argv}: stderr is\n{captured.err}"
    assert "Traceback" not in captured.err + captured.out
    assert progress or captured.err.strip() == lines[0], f"{argv}: work was done before the error:\n{captured.err}"
    return lines[0]


def save_png(path: Path, h: int = 40, w: int = 44) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_missing_folder(tmp_path, capsys):
    line = one_line_error(["--test", f"Mine={tmp_path / 'nothere'}", "--output", str(tmp_path / "l")], capsys)
    assert "data folder not found" in line and "nothere" in line and "check the path" in line
    line = one_line_error(["--train", str(tmp_path / "nothere"), "--output", str(tmp_path / "l")], capsys)
    assert "nothere" in line


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    line = one_line_error(["--test", f"Mine={tmp_path / 'empty'}", "--output", str(tmp_path / "l")], capsys)
    assert "no images found in" in line and "empty" in line


def test_a_file_where_a_folder_is_expected(tmp_path, capsys):
    (tmp_path / "train.json").write_text("{}")  # e.g. a data list given instead of its images
    line = one_line_error(["--train", str(tmp_path / "train.json"), "--output", str(tmp_path / "l")], capsys)
    assert "is a file, not a folder" in line
    save_png(tmp_path / "set" / "a.png")
    (tmp_path / "out").write_text("a file")
    line = one_line_error(["--test", f"Mine={tmp_path / 'set'}", "--output", str(tmp_path / "out" / "lists")], capsys,
                          progress=False)  # the output is checked before any image is decoded
    assert "a file stands where a folder is needed" in line


def test_unwritable_output_folder(tmp_path, capsys, monkeypatch):
    save_png(tmp_path / "set" / "a.png")
    if os.geteuid() != 0:  # a read-only folder stops everyone but root
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o500)
        output = tmp_path / "ro" / "lists"
    else:  # root writes anywhere: /sys refuses even root
        output = Path("/sys/srgan-kit-lists")
        try:
            output.mkdir()
        except PermissionError:
            pass
        else:
            output.rmdir()
            pytest.skip("no folder that refuses root on this machine")
    line = one_line_error(["--test", f"Mine={tmp_path / 'set'}", "--output", str(output)], capsys, progress=False)
    assert "cannot write" in line and "--output" in line


def test_full_disk(tmp_path, capsys, monkeypatch):
    """ENOSPC while writing the LR cache (PIL) or a list (text): one line, no partial files."""
    save_png(tmp_path / "set" / "a.png")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(Image.Image, "save", no_space)
        line = one_line_error(["--test", f"Mine={tmp_path / 'set'}", "--output", str(tmp_path / "l")], capsys)
    assert "no space left on the disk" in line and "run the same command again" in line
    with monkeypatch.context() as m:
        m.setattr(Path, "write_text", no_space)
        line = one_line_error(["--sample", "--root", str(tmp_path / "data")], capsys)
    assert "no space left on the disk" in line
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]  # the atomic writer cleaned up


def test_missing_data_list_is_one_line(tmp_path, monkeypatch):
    """What the notebooks and solver.py read: a missing list says how to make it, on one line."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        cdl.load_data_list("data/lists/sample-test.json")
    assert "\n" not in str(info.value) and "`python create_data_lists.py --sample`" in str(info.value)
    with pytest.raises(FileNotFoundError) as info:
        cdl.load_data_list("data/lists/nothing.json")
    assert "\n" not in str(info.value) and "`python create_data_lists.py --test nothing=FOLDER`" in str(info.value)


def test_the_real_command_line_prints_no_traceback(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(REPO / "create_data_lists.py"), "--test", f"X={tmp_path / 'nothere'}",
                           "--output", str(tmp_path / "l")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: data folder not found: {tmp_path / 'nothere'}; check the path (or make the data first, "
        f"e.g. --download benchmark)"]
    assert not (tmp_path / "l").exists()  # nothing made before the inputs were checked
