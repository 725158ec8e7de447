"""solver.py as a user meets it when something is missing or wrong: no VGG16 weights, a VGG weights
file that is not one, Ctrl-C before the first checkpoint, a list naming a missing image, a list
that does not exist. One true line each, before any training step."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import checkpoints
import models
import solver
from create_data_lists import write_data_list
from test_solver import tiny_config, tiny_lists  # noqa: F401  (fixture)
from test_srgan_lab import lab_lists, offline, torch_home  # noqa: F401  (fixtures)


def _args(lists: dict, out: Path, preset: str = "mse", epochs: int = 1, val: str | None = None) -> list[str]:
    return ["--preset", preset, "--out", str(out), "--epochs", str(epochs), "--train-list", lists["train"],
            "--val-list", val or lists["val"], "--batch-size", "4", "--patch-size", "16",
            "--patches-per-image", "4", "--workers", "0", "--device", "cpu", "--threads", "1", "--compile", "off",
            "--set", "model.generator.kwargs.n_blocks=1", "model.generator.kwargs.channels=8",
            "model.discriminator.kwargs.channels=8", "model.discriminator.kwargs.fc_size=16"]


def _stderr_lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    text = captured.err.replace("\r", "\n").replace("\x1b[A", "")
    return [line for line in text.splitlines() if line.strip() and "|" not in line]  # progress bars aside


def _one_error_line(capsys) -> str:
    lines = _stderr_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(solver, "pretrain_step", lambda *a, **k: pytest.fail("a training step ran"))


# ---------------------------------------------------------------------- item 14: srgan-lab without VGG16
def test_srgan_lab_without_vgg16_weights_is_one_line(lab_lists, tmp_path, torch_home, offline, capsys):
    out = tmp_path / "lab"
    argv = ["--preset", "srgan-lab", "--profile", "quick", "--out", str(out), "--train-list", lab_lists["train"],
            "--val-list", lab_lists["val"], "--batch-size", "2", "--patch-size", "32", "--patches-per-image", "2",
            "--workers", "0", "--device", "cpu", "--threads", "1", "--compile", "off",
            "--set", "model.generator.kwargs.n_blocks=1", "model.generator.kwargs.channels=8"]
    capsys.readouterr()
    assert solver.main(argv) == 2
    line = _one_error_line(capsys)
    assert "VGG16" in line and "vgg16-397923af.pth" in line and "--vgg-weights" in line
    assert not (out / "checkpoint.pth").exists()


# ---------------------------------------------------------------------- item 16: --vgg-weights FILE
class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _bad_vgg_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"vgg_{kind}.pth"
    if kind == "payload":
        torch.save({"features.0.weight": _System(tmp_path / "payload-ran")}, path)
    elif kind == "text":
        path.write_text("this is not a weights file\n")
    elif kind == "truncated":
        torch.save(models.TruncatedVGG19(i=2, j=2, random_init=True).state_dict(), tmp_path / "full.pth")
        data = (tmp_path / "full.pth").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize("kind", ["payload", "text", "truncated", "empty"])
def test_a_bad_vgg_weights_file_is_one_line(tiny_lists, tmp_path, capsys, torch_home, offline, kind):
    path = _bad_vgg_file(tmp_path, kind)
    with pytest.raises((ValueError, OSError)) as info:
        models.TruncatedVGG19(i=2, j=2, weights=path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)

    out = tmp_path / "run"
    argv = _args(tiny_lists, out, preset="srgan-vgg22") + ["--vgg-weights", str(path), "--stage2-epochs", "1"]
    capsys.readouterr()
    assert solver.main(argv) == 2
    line = _one_error_line(capsys)
    assert str(path) in line and "VGG19" in line
    assert not (tmp_path / "payload-ran").exists()


# ---------------------------------------------------------------------- item 19: Ctrl-C in epoch 1
def test_ctrl_c_before_the_first_checkpoint_does_not_point_to_one(tiny_lists, tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(solver, "pretrain_step", interrupt)
    out = tmp_path / "run"
    capsys.readouterr()
    assert solver.main(_args(tiny_lists, out, epochs=2)) == 130
    message = " ".join(_stderr_lines(capsys))
    assert not (out / "checkpoint.pth").exists()
    assert "checkpoint.pth" not in message and "--resume" not in message, message
    assert "nothing was saved" in message and "run the same command again" in message

    # after a complete epoch the checkpoint is there, and the message says so
    monkeypatch.undo()
    calls = []
    real = solver.pretrain_step

    def interrupt_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:  # 3 steps per epoch
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(solver, "pretrain_step", interrupt_in_epoch_2)
    assert solver.main(_args(tiny_lists, out, epochs=2)) == 130
    message = " ".join(_stderr_lines(capsys))
    assert (out / "checkpoint.pth").is_file() and str(out / "checkpoint.pth") in message and "--resume" in message


# ---------------------------------------------------------------------- item 20: a list naming a missing image
@pytest.mark.parametrize("role", ["validation", "training"])
def test_a_list_naming_a_missing_image_is_refused_before_training(tiny_lists, tmp_path, capsys, no_training, role):
    bad = tmp_path / f"{role}.json"
    missing = tmp_path / "nonexistent" / "a.png"
    images = [{"name": "a", "hr": str(missing), "lr": None}]
    if role == "training":
        images += json.loads(Path(tiny_lists["train"]).read_text())["images"]  # usable ones too
    write_data_list(bad, role, 4, images)
    lists = dict(tiny_lists, **({"val": str(bad)} if role == "validation" else {"train": str(bad)}))
    out = tmp_path / "run"
    capsys.readouterr()
    assert solver.main(_args(lists, out)) == 2
    line = _one_error_line(capsys)
    assert str(bad) in line and str(missing) in line and role in line
    assert not out.exists()


# ---------------------------------------------------------------------- item 23: a missing list says how to make it
def test_a_missing_list_names_the_command_that_makes_it(tiny_lists, tmp_path, capsys, monkeypatch, no_training):
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    argv = _args({"train": "data/lists-291/train.json", "val": "data/lists/sample-test.json"}, tmp_path / "run")
    assert solver.main(argv) == 2
    line = _one_error_line(capsys)
    assert "training data list not found: data/lists-291/train.json" in line
    assert "`python create_data_lists.py --train FOLDER [FOLDER ...] --output data/lists-291`" in line
    assert "--download div2k" not in line and "--sample" not in line

    argv = _args({"train": tiny_lists["train"], "val": "data/lists/sample-test.json"}, tmp_path / "run")
    assert solver.main(argv) == 2
    line = _one_error_line(capsys)
    assert "validation data list not found" in line and "`python create_data_lists.py --sample`" in line


def test_resume_with_a_missing_list_names_the_command_that_makes_it(tiny_lists, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    solver.train(tiny_config(tiny_lists, out, preset="mse", stage1={"epochs": 1}))
    ckpt = checkpoints.load_state(out / "checkpoint.pth")
    ckpt["config"]["data"]["train_list"] = "data/lists-291/train.json"  # as in the shipped resume state
    checkpoints.save_state(out / "checkpoint.pth", ckpt)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert solver.main(["--out", str(out), "--resume", "--epochs", "2"]) == 2
    line = _one_error_line(capsys)
    assert "`python create_data_lists.py --train FOLDER [FOLDER ...] --output data/lists-291`" in line, line
