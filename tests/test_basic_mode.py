"""The course case's basic mode (``--preset basic``): no pre-training, G and D from random
weights, updated alternately from the first step, with SRGAN-MSE's losses and weights."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import checkpoints
import solver
import utils
from create_data_lists import write_data_list


@pytest.fixture(scope="module")
def tiny_lists(tmp_path_factory) -> dict:
    """Three 48x48 training images and one 32x32 validation image (smooth noise), with their lists."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    lists = {}
    for split, n, size in (("train", 3, 48), ("val", 1, 32)):
        images = []
        for k in range(n):
            small = rng.integers(0, 256, (size // 8, size // 8, 3)).astype(np.float64)
            img = np.clip(np.kron(small, np.ones((8, 8, 1))) + rng.normal(0, 8, (size, size, 3)), 0, 255)
            path = root / f"{split}_{k}.png"
            utils.save_image(img.astype(np.uint8), path)
            images.append({"name": f"{split}_{k}", "hr": str(path), "lr": None})
        write_data_list(root / f"{split}.json", split, 4, images)
        lists[split] = str(root / f"{split}.json")
    return lists


def test_basic_preset_is_stage_2_only_with_srgan_mse_losses():
    for profile in solver.PROFILES:
        cfg = solver.make_config("basic", profile)
        assert cfg.stage1.epochs == 0 and cfg.pretrained is None
        assert cfg.stage2.epochs != 0 and cfg.stage2.iterations > 0
        srgan = solver.make_config("srgan-mse", profile)
        assert cfg.stage2 == srgan.stage2  # the paper's weights: 4 x MSE (on [0, 1]) + 1e-3 x adversarial
        assert (cfg.stage2.content_loss, cfg.stage2.content_weight, cfg.stage2.adversarial_weight) == ("mse", 4.0, 1e-3)


def test_basic_mode_trains_g_and_d_from_random_weights(tiny_lists, tmp_path, monkeypatch):
    def no_file(*args, **kwargs):
        raise AssertionError("basic mode must not load a pretrained generator")

    monkeypatch.setattr(checkpoints, "load_generator", no_file)
    out = tmp_path / "basic"
    cfg = solver.make_config(
        "basic", "quick", out=str(out), seed=0, device="cpu", log_every=1,
        data={"train_list": tiny_lists["train"], "val_list": tiny_lists["val"], "patch_size": 16,
              "patches_per_image": 4, "batch_size": 4, "workers": 0, "cache_mb": 16,
              "val_max_images": 1, "n_samples": 1},
        model={"generator": {"name": "SRResNet", "kwargs": {"scale": 4, "n_blocks": 1, "channels": 8}},
               "discriminator": {"name": "Discriminator", "kwargs": {"channels": 8, "fc_size": 16}}},
        stage2={"epochs": 2}, speed={"threads": 1})
    result = solver.train(cfg)
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["stage"], r["epoch"]) for r in rows] == [("2", "1"), ("2", "2")]
    assert all(r["loss_d"] and r["d_real"] for r in rows)  # D trained in every epoch
    assert not (out / "generator_stage1.pth").exists()
    assert result["generator"] == str(out / "generator_stage2.pth")
    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert ckpt["discriminator"] is not None and ckpt["config"]["stage1"]["epochs"] == 0
    assert rows[0]["step"] == "3"  # the first epoch's 3 steps were all adversarial (no stage-1 steps before)

