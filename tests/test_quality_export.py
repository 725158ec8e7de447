"""Tests of benchmarks/quality.py's export: what a shipped generator file holds."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoints
import models
import utils
from create_data_lists import write_data_list
from datasets import EvalDataset

REPO = Path(__file__).resolve().parents[1]


def _quality_module():
    spec = importlib.util.spec_from_file_location("quality", REPO / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.SRResNet(scale=4, n_blocks=1, channels=8).eval()


@pytest.fixture()
def run(tmp_path):
    """A fake two-stage run: training checkpoint (last epoch 3), a kept epoch 2, a PSNR net, Set5."""
    final, kept, psnr = _net(0), _net(1), _net(2)
    log = [{"stage": 1, "epoch": 1, "seconds": 10.0}, {"stage": 2, "epoch": 1, "seconds": 20.0},
           {"stage": 2, "epoch": 2, "seconds": 30.0}, {"stage": 2, "epoch": 3, "seconds": 40.0}]
    checkpoints.save_state(tmp_path / "checkpoint.pth", {"arch": models.generator_arch(final), "generator": final.state_dict(),
                                                          "stage": 2, "epoch": 3, "global_step": 30, "config": {"seed": 0},
                                                          "log": log})
    checkpoints.save_generator(tmp_path / "stage2_epoch0002.pth", kept, stage=2, epoch=2, global_step=20)
    checkpoints.save_generator(tmp_path / "psnr.pth", psnr)
    hr = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    utils.save_image(hr, tmp_path / "hr.png")
    write_data_list(tmp_path / "Set5.json", "Set5", 4, [{"name": "img", "hr": str(tmp_path / "hr.png"), "lr": None}])
    sets = {"Set5": EvalDataset(str(tmp_path / "Set5.json"), 4)}
    return {"dir": tmp_path, "sets": sets, "final": final, "kept": kept, "psnr": psnr}


def test_export_of_the_last_epoch(run):
    quality, d = _quality_module(), run["dir"]
    quality.export(d / "checkpoint.pth", d / "out.pth", run["sets"], "cpu", "toy data")
    saved = torch.load(d / "out.pth", map_location="cpu", weights_only=True)
    assert all(torch.equal(v, run["final"].state_dict()[k]) for k, v in saved["generator"].items())
    assert saved["training"]["epochs_completed"] == 3 and saved["training"]["train_seconds"] == 100.0
    assert "network_interpolation" not in saved["training"]
    expected = quality.score(run["final"], run["sets"])["Set5"]
    assert saved["metrics_x4"]["Set5"]["psnr"] == pytest.approx(expected["psnr"], abs=1e-4)


def test_export_of_a_kept_epoch_blended_with_the_psnr_network(run):
    quality, d = _quality_module(), run["dir"]
    quality.export(d / "checkpoint.pth", d / "out.pth", run["sets"], "cpu", "toy data",
                   generator=d / "stage2_epoch0002.pth", interpolate_with=d / "psnr.pth", alpha=0.25)
    saved = torch.load(d / "out.pth", map_location="cpu", weights_only=True)
    psnr, kept = run["psnr"].state_dict(), run["kept"].state_dict()
    for key, value in saved["generator"].items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.75 * psnr[key] + 0.25 * kept[key], atol=1e-7), key
    training = saved["training"]
    assert (training["stage"], training["epochs_completed"], training["global_step"]) == (2, 2, 20)
    assert training["network_interpolation"] == {"alpha": 0.25, "psnr_network": "psnr.pth"}
    # the log and the time stop at the shipped epoch
    assert [(r["stage"], r["epoch"]) for r in saved["log"]] == [(1, 1), (2, 1), (2, 2)]
    assert training["train_seconds"] == 60.0
    net = checkpoints.load_generator(d / "out.pth")
    expected = quality.score(net, run["sets"])["Set5"]
    assert saved["metrics_x4"]["Set5"]["psnr"] == pytest.approx(expected["psnr"], abs=1e-4)


def test_export_refuses_a_generator_of_another_architecture(run):
    quality, d = _quality_module(), run["dir"]
    checkpoints.save_generator(d / "other.pth", models.SRResNet(scale=4, n_blocks=2, channels=8), stage=2, epoch=1,
                          global_step=10)
    with pytest.raises(SystemExit, match="other architecture"):
        quality.export(d / "checkpoint.pth", d / "out.pth", run["sets"], "cpu", "toy data",
                       generator=d / "other.pth")
