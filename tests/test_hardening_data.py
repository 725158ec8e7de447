"""create_data_lists.py against hostile or unlucky input: list names that climb out of the
output folder, a user's photo in the sample folder, an HR image replaced under a made LR,
symbolic-link loops, and what a missing list's message tells the user to run."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import create_data_lists as cdl
from create_data_lists import load_data_list
from imresize import imresize
from utils import read_image


def save_png(arr: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cdl.main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip() and not re.search(r"\d+/\d+ \[", line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ---------------------------------------------------------------- a list name must stay in --output
@pytest.mark.parametrize("name", ["../../name", "../escaped", "a/b", "..", ".hidden"])
def test_test_list_name_cannot_leave_the_output_folder(tmp_path, capsys, name):
    save_png(noise(40, 40, 0), tmp_path / "work" / "set" / "a.png")
    out = tmp_path / "work" / "o1" / "o2"
    before = sorted(p for p in tmp_path.rglob("*"))
    code, _, err = run_cli(["--test", f"{name}={tmp_path / 'work' / 'set'}", "--output", str(out)], capsys)
    assert code == 1
    line = error_line(err)
    assert repr(name) in line and "list name" in line
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere
    with pytest.raises(ValueError, match="list name"):
        cdl.build_list([tmp_path / "work" / "set"], "../x", 4, False, out)


def test_bare_test_folder_is_named_after_the_real_folder(tmp_path, capsys, monkeypatch):
    save_png(noise(40, 40, 0), tmp_path / "MySet" / "a.png")
    monkeypatch.chdir(tmp_path / "MySet")
    code, out, _ = run_cli(["--test", ".", "--output", str(tmp_path / "lists")], capsys)
    assert code == 0 and (tmp_path / "lists" / "MySet.json").is_file(), out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MySet", "lists"]


# ---------------------------------------------------------------- --sample never deletes a user's file
def test_sample_keeps_a_file_it_did_not_write(tmp_path, capsys):
    root = tmp_path / "R"
    photo = save_png(noise(64, 64, 1), root / "sample" / "train" / "my_vacation_photo.png")
    data = photo.read_bytes()
    code, _, err = run_cli(["--sample", "--root", str(root)], capsys)
    assert code == 1 and photo.read_bytes() == data
    line = error_line(err)
    assert "my_vacation_photo.png" in line and "not written by the kit" in line
    assert not (root / "lists").exists() and not (root / "sample" / "test").exists()  # refused before writing

    photo.rename(tmp_path / "kept.png")  # moved away as told: the sample set is made
    code, out, _ = run_cli(["--sample", "--root", str(root)], capsys)
    assert code == 0, out
    manifest = json.loads((root / "sample" / cdl.SAMPLE_MANIFEST).read_text())
    assert sorted(manifest) == sorted([f"train/{n}.png" for n in cdl.SAMPLE_TRAIN]
                                      + [f"test/{n}.png" for n in cdl.SAMPLE_TEST])

    # a file the kit wrote (listed, unchanged) that is no longer part of the sample set is removed
    old = root / "sample" / "test" / "retired.png"
    save_png(noise(32, 32, 2), old)
    manifest["test/retired.png"] = cdl._file_digest(old)
    (root / "sample" / cdl.SAMPLE_MANIFEST).write_text(json.dumps(manifest))
    assert run_cli(["--sample", "--root", str(root)], capsys)[0] == 0
    assert not old.exists()
    # ... but not once the user has changed it
    save_png(noise(32, 32, 3), old)
    manifest["test/retired.png"] = "0" * 64
    (root / "sample" / cdl.SAMPLE_MANIFEST).write_text(json.dumps(manifest))
    code, _, err = run_cli(["--sample", "--root", str(root)], capsys)
    assert code == 1 and old.is_file() and "retired.png" in error_line(err)
    # nor a user's image under a sample image's name
    old.unlink()
    astronaut = root / "sample" / "test" / "astronaut.png"
    save_png(noise(32, 32, 4), astronaut)
    data = astronaut.read_bytes()
    code, _, err = run_cli(["--sample", "--root", str(root)], capsys)
    assert code == 1 and astronaut.read_bytes() == data and "astronaut.png" in error_line(err)


# ---------------------------------------------------------------- prepare_test_lists: the content key
def test_prepare_test_lists_remakes_lr_of_a_replaced_hr(tmp_path):
    """``cp -p other.png data/benchmark/Set5/HR/x.png``: same size, old mtime, new pixels."""
    data_root, lists = tmp_path / "data", tmp_path / "data" / "lists"
    # a usable sample-test list already there, so that no sample images need making
    small = save_png(noise(32, 32, 0), tmp_path / "s" / "s.png")
    cdl.write_data_list(lists / "sample-test.json", "sample-test", 4, [{"name": "s", "hr": str(small), "lr": None}])
    yy, xx = np.mgrid[0:64, 0:64]
    first = np.dstack([(xx * 4) % 256, (yy * 4) % 256, (xx + yy) * 2 % 256]).astype(np.uint8)
    second = np.ascontiguousarray(first[::-1, ::-1])
    hr_path = save_png(first, data_root / "benchmark" / "Set5" / "HR" / "x.png")
    found = cdl.prepare_test_lists(lists, 4, data_root=data_root, bundled=None)
    assert list(found) == ["Set5", "sample-test"]
    lr_path = Path(load_data_list(found["Set5"])["images"][0]["lr"])
    np.testing.assert_array_equal(read_image(lr_path), imresize(first, output_shape=(16, 16)))

    stamp = hr_path.stat()
    save_png(second, hr_path)  # cp -p: same size, same (old) mtime
    os.utime(hr_path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert hr_path.stat().st_mtime_ns < lr_path.stat().st_mtime_ns
    assert not cdl.lr_is_current(hr_path, lr_path, 4)
    found = cdl.prepare_test_lists(lists, 4, data_root=data_root, bundled=None)
    lr = read_image(load_data_list(found["Set5"])["images"][0]["lr"])
    np.testing.assert_array_equal(lr, imresize(second, output_shape=(16, 16)))
    assert cdl.lr_is_current(hr_path, lr_path, 4)
    # an unchanged set is not rewritten (the list file keeps its inode and bytes)
    stat = found["Set5"].stat()
    cdl.prepare_test_lists(lists, 4, data_root=data_root, bundled=None)
    assert (found["Set5"].stat().st_ino, found["Set5"].stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)


# ---------------------------------------------------------------- symbolic-link loops
def test_symlink_loops_are_skipped_with_a_reason(tmp_path, capsys):
    d = tmp_path / "d"
    for k in range(2):
        save_png(noise(100, 100, k), d / f"{k}.png")
    os.symlink("selfd", d / "selfd")
    os.symlink("selfp.png", d / "selfp.png")
    os.symlink("gone.png", d / "dangling.png")
    os.symlink(".", d / "loopdir")
    code, out, _ = run_cli(["--train", str(d), "--output", str(tmp_path / "lists")], capsys)
    assert code == 0, out
    assert re.search(r"selfd: symbolic link loop", out) and re.search(r"selfp\.png: symbolic link loop", out)
    assert "dangling.png: broken symbolic link" in out
    assert len(load_data_list(tmp_path / "lists" / "train.json")["images"]) == 2


# ---------------------------------------------------------------- a missing list says how to make it
@pytest.mark.parametrize("path, expected", [
    ("data/lists-291/train.json", "`python create_data_lists.py --train FOLDER [FOLDER ...] --output data/lists-291`"),
    ("data/lists-291/Set5.json", "`python create_data_lists.py --test Set5={bundled}/Set5 --output data/lists-291`"),
    ("data/lists-split291/val20.json", "`python create_data_lists.py --test val20=FOLDER --output data/lists-split291`"),
    ("data/lists/sample-test.json", "`python create_data_lists.py --sample`"),
    ("data/lists/train.json", "`python create_data_lists.py --download div2k`"),
    ("data/lists/Set14.json", "`python create_data_lists.py`"),
])
def test_missing_list_names_the_command_that_makes_it(tmp_path, monkeypatch, path, expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        load_data_list(path)
    message = str(info.value)
    expected = expected.format(bundled=cdl.BUNDLED_BENCHMARK)
    assert "\n" not in message and path in message and expected in message, message
    # run from the repository root (the README's commands), the bundled folder is named relative to it
    monkeypatch.chdir(cdl.BUNDLED_BENCHMARK.parents[1])
    assert "Set5=benchmarks/data/Set5 " in cdl.how_to_make_list("data/lists-291/Set5.json")
    # a quick run needs only the sample set's lists, where the sample set puts them
    assert "`python create_data_lists.py --sample`" in cdl.how_to_make_list("data/lists/train.json", quick=True)
    assert "--train FOLDER" in cdl.how_to_make_list("data/lists-291/train.json", quick=True)


def test_eval_dataset_does_not_serve_an_lr_made_from_a_replaced_hr(tmp_path):
    """A list made earlier and read later (solver validation): the HR replaced since (cp -p)."""
    from datasets import EvalDataset

    yy, xx = np.mgrid[0:64, 0:64]
    first = np.dstack([(xx * 4) % 256, (yy * 4) % 256, (xx + yy) * 2 % 256]).astype(np.uint8)
    second = np.ascontiguousarray(first[::-1, ::-1])
    hr_path = save_png(first, tmp_path / "set" / "x.png")
    cdl.create_data_lists([], {"MySet": str(tmp_path / "set")}, str(tmp_path / "lists"), show_progress=False)
    data = EvalDataset(str(tmp_path / "lists" / "MySet.json"), 4)
    np.testing.assert_array_equal(data[0]["lr"], imresize(first, output_shape=(16, 16)))

    stamp = hr_path.stat()
    save_png(second, hr_path)
    os.utime(hr_path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    with pytest.warns(UserWarning, match="earlier version of .*x.png"):
        item = data[0]
    np.testing.assert_array_equal(item["hr"], second)
    np.testing.assert_array_equal(item["lr"], imresize(second, output_shape=(16, 16)))
