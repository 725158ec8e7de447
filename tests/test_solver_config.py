"""The one configuration: BASE_CONFIG < profile < preset < overrides, --show-config, config.json."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import models
import solver
from test_solver import tiny_lists  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ precedence


def test_the_preset_recipe_beats_the_profile():
    lab = solver.make_config("srgan-lab", "quick")
    assert lab.data.patch_size == 240  # the lab's crop, not quick's 48
    assert dict(lab.model.generator.kwargs) == {"scale": 4, "n_blocks": 5, "channels": 64}
    esr = solver.make_config("esrgan", "quick")
    assert esr.model.generator.name == "RRDBNet" and esr.model.generator.kwargs.n_blocks == 23
    assert esr.stage1.lr == 2e-4 and esr.data.patch_size == 128  # the preset's, not quick's 5e-4 / 48
    assert solver.make_config("mse", "quick").stage2.epochs == 0  # a single-stage preset stays one
    assert solver.make_config("basic", "quick").stage1.epochs == 0
    assert lab.profile_forced == {} and esr.profile_forced == {}


def test_the_profile_sets_what_the_preset_leaves_open():
    quick, full = solver.make_config("srgan-mse", "quick"), solver.make_config("srgan-mse", "full")
    assert (quick.stage1.epochs, quick.stage2.epochs, quick.data.batch_size, quick.data.patch_size) == (10, 5, 8, 48)
    assert dict(quick.model.generator.kwargs) == {"scale": 4, "n_blocks": 4, "channels": 32}
    assert dict(quick.model.discriminator.kwargs) == {"channels": 32, "fc_size": 256}
    assert quick.stage1.lr == 5e-4  # srgan-mse leaves the stage-1 lr open
    # the recipe itself is the preset's in both profiles
    for key in ("content_loss", "content_weight", "adversarial_weight", "gan_type"):
        assert quick.stage2[key] == full.stage2[key]
    assert (full.stage1.epochs, full.data.patch_size, full.model.generator.kwargs.n_blocks) == (None, 96, 16)


def test_overrides_beat_preset_and_profile():
    cfg = solver.make_config("srgan-lab", "quick", **{"data.patch_size": 32, "stage1.lr": 1e-3},
                             model={"generator": {"name": "SRResNet", "kwargs": {"n_blocks": 1, "channels": 8}}})
    assert cfg.data.patch_size == 32 and cfg.stage1.lr == 1e-3
    assert dict(cfg.model.generator.kwargs) == {"n_blocks": 1, "channels": 8, "scale": 4}


def test_a_forced_profile_value_is_applied_and_reported(monkeypatch):
    monkeypatch.setitem(solver.PROFILES, "tiny", {**solver.PROFILES["quick"],
                                                  "force": {"data": {"patch_size": 48}, "stage2": {"epochs": 5}}})
    cfg = solver.make_config("srgan-lab", "tiny")
    assert cfg.data.patch_size == 48
    # only what differed from the recipe is reported; srgan-lab sets no stage-2 epochs of its own
    assert cfg.profile_forced == {"data.patch_size": {"preset": 240, "profile": 48}}
    shown = json.loads(solver.config_json(cfg))
    assert shown["profile_forced"] == {"data.patch_size": {"preset": 240, "profile": 48}}
    assert solver.make_config("srgan-mse", "tiny").profile_forced == {}  # 48 is already the value there


# ------------------------------------------------------------------------------ one place


def test_a_new_architecture_is_one_registry_entry(monkeypatch):
    class TinyNet(nn.Module):
        def __init__(self, scale: int = 4, width: int = 4):
            super().__init__()
            self.scale, self.arch_kwargs = scale, {"scale": scale, "width": width}
            self.body = nn.Sequential(nn.Conv2d(3, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

        def forward(self, x):
            return self.body(x)

    cfg = solver.make_config("srgan-mse", "quick", model={"generator": {"name": "TinyNet", "kwargs": {"width": 2}}})
    with pytest.raises(ValueError, match="model.generator.name = 'TinyNet' is not one of"):
        solver.check_config(cfg)
    monkeypatch.setitem(models.GENERATORS, "TinyNet", TinyNet)
    solver.check_config(cfg)  # nothing else to edit: the config and the checks read the registry
    net = models.build_generator(cfg.model.generator)
    assert isinstance(net, TinyNet) and net(torch.zeros(1, 3, 4, 4)).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="model.discriminator.name"):
        solver.check_config(solver.make_config("srgan-mse", model={"discriminator": {"name": "PatchGAN"}}))


def test_train_notebook_builds_its_config_with_make_config_only():
    cells = json.loads((REPO / "train.ipynb").read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "solver.make_config(PRESET, PROFILE" in code
    for copy in ('"preset":', "profiles", "patch_size\":", "EasyDict("):  # no second table of settings
        assert copy not in code, copy


# ------------------------------------------------------------------------------ --show-config and config.json


def _show(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "solver.py"), *args, "--show-config"], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_show_config_prints_the_resolved_json_and_creates_nothing(tmp_path):
    proc = _show(["--preset", "srgan-lab", "--profile", "quick", "--out", "runs/x"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown == json.loads(solver.config_json(solver.make_config("srgan-lab", "quick", out="runs/x")))
    assert shown["data"]["patch_size"] == 240 and shown["profile_forced"] == {}
    assert list(tmp_path.iterdir()) == []  # no run folder, no lists, nothing
    bad = _show(["--preset", "mse", "--set", "stage2.gan_type=\"wgan\""], tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: config stage2.gan_type")
    assert list(tmp_path.iterdir()) == []


def test_a_run_saves_the_json_that_show_config_prints(tiny_lists, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    args = ["--preset", "mse", "--out", str(out), "--epochs", "1", "--train-list", tiny_lists["train"],
            "--val-list", tiny_lists["val"], "--batch-size", "4", "--patch-size", "16", "--patches-per-image",
            "4", "--workers", "0", "--device", "cpu", "--threads", "1", "--compile", "off",
            "--set", "model.generator.kwargs.n_blocks=1", "model.generator.kwargs.channels=8"]
    capsys.readouterr()
    assert solver.main(args + ["--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert not out.exists()
    assert solver.main(args) == 0
    saved = json.loads((out / "config.json").read_text())
    runtime = saved.pop("runtime")
    assert saved == shown
    assert runtime["steps_per_epoch"] == 3 and runtime["pretrained_sha256"] is None
