"""Tests for inference.super_resolve / bicubic_upscale / evaluate."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from models import SRResNet
from inference import bicubic_upscale, evaluate, super_resolve
from metrics import calculate_psnr, calculate_sharpness, calculate_ssim
from utils import img2tensor, read_image, tensor2img


def _small_srresnet(n_blocks: int = 0, seed: int = 0) -> SRResNet:
    """A real SRResNet x4 (random init) whose output spans the 0..255 range.

    Random init gives a dark, partly clamped output, which would make "equal within
    one level" easy to pass; a bias of 0.5 and larger tail weights spread it out.
    Its receptive field radius is 8 + 2 * n_blocks LR pixels.
    """
    torch.manual_seed(seed)
    model = SRResNet(scale=4, n_blocks=n_blocks, channels=8)
    with torch.no_grad():
        model.tail.bias.fill_(0.5)
        model.tail.weight.mul_(4)
    return model


def _random_lr(h=60, w=50, seed=0, gray=False):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w) if gray else (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- super_resolve
def test_super_resolve_equals_plain_forward_in_eval_mode():
    model = _small_srresnet(n_blocks=1)
    lr = _random_lr(20, 17)
    model.eval()
    with torch.no_grad():
        expected = tensor2img(model(img2tensor(lr)))
    model.train()
    sr = super_resolve(model, lr)
    assert sr.dtype == np.uint8 and sr.shape == (80, 68, 3)
    assert np.array_equal(sr, expected)
    assert model.training, "super_resolve must restore the previous train/eval mode"
    model.eval()
    super_resolve(model, lr)
    assert not model.training


def test_super_resolve_runs_in_inference_mode():
    model = _small_srresnet()
    seen = []
    model.head.register_forward_hook(lambda m, i, o: seen.append(torch.is_inference_mode_enabled()))
    super_resolve(model, _random_lr(8, 8), device="cpu")
    assert seen == [True]


@pytest.mark.parametrize("n_blocks, overlap, size", [(0, 8, (60, 50)), (2, 12, (40, 35))])
def test_tiled_equals_untiled_when_overlap_covers_receptive_field(n_blocks, overlap, size):
    model = _small_srresnet(n_blocks)
    lr = _random_lr(*size)
    full = super_resolve(model, lr)
    assert full.std() > 20 and ((full == 0) | (full == 255)).mean() < 0.05  # not a trivial image
    tiled = super_resolve(model, lr, tile=16, tile_overlap=overlap)
    assert tiled.shape == full.shape and tiled.dtype == np.uint8
    assert np.abs(tiled.astype(int) - full.astype(int)).max() <= 1


def test_tiled_differs_when_overlap_is_too_small():
    # Control for the test above: without enough context the tile seams show.
    model = _small_srresnet(0)
    lr = _random_lr(40, 35)
    diff = np.abs(super_resolve(model, lr, tile=16, tile_overlap=2).astype(int) - super_resolve(model, lr).astype(int))
    assert diff.max() > 1


def test_tiles_are_bounded_in_size():
    model = _small_srresnet()
    shapes = []
    model.head.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape[2:])))
    super_resolve(model, _random_lr(40, 35), tile=16, tile_overlap=8)
    assert len(shapes) == 3 * 3  # ceil(40/16) x ceil(35/16) tiles, one forward each
    assert all(h <= 16 + 2 * 8 and w <= 16 + 2 * 8 for h, w in shapes)


def test_grayscale_in_grayscale_out():
    model = _small_srresnet()
    gray = _random_lr(12, 9, gray=True)
    sr = super_resolve(model, gray)
    assert sr.shape == (48, 36) and sr.dtype == np.uint8
    rgb_sr = super_resolve(model, np.repeat(gray[:, :, None], 3, axis=2)).astype(np.float64)
    assert np.array_equal(sr, np.floor(rgb_sr.mean(axis=2) + 0.5).astype(np.uint8))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((8, 8, 3), np.float32), "uint8"),
    (np.zeros((8, 8, 4), np.uint8), "HxW"),
    (np.zeros((8,), np.uint8), "HxW"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
    (torch.zeros(3, 8, 8), "numpy"),
])
def test_super_resolve_rejects_bad_images(bad, match):
    with pytest.raises(ValueError, match=match):
        super_resolve(_small_srresnet(), bad)


def test_super_resolve_rejects_bad_arguments():
    model, lr = _small_srresnet(), _random_lr(8, 8)
    with pytest.raises(ValueError, match="tile"):
        super_resolve(model, lr, tile=0)
    with pytest.raises(ValueError, match="tile_overlap"):
        super_resolve(model, lr, tile=4, tile_overlap=-1)
    with pytest.raises(ValueError, match="scale"):
        super_resolve(nn.Conv2d(3, 3, 3, padding=1), lr)
    wrong = nn.Conv2d(3, 3, 3, padding=1)
    wrong.scale = 2  # claims x2 but keeps the size
    with pytest.raises(ValueError, match="expected"):
        super_resolve(wrong, lr)


# ----------------------------------------------------------------------------- bicubic
def test_bicubic_upscale_shapes_and_validation():
    from imresize import imresize

    lr = _random_lr(7, 5)
    sr = bicubic_upscale(lr, 4)
    assert sr.shape == (28, 20, 3) and sr.dtype == np.uint8
    assert np.array_equal(sr, imresize(lr, 4))
    assert bicubic_upscale(lr[:, :, 0], 3).shape == (21, 15)
    with pytest.raises(ValueError):
        bicubic_upscale(lr.astype(np.float64), 4)
    with pytest.raises(ValueError):
        bicubic_upscale(lr, 0)


# ----------------------------------------------------------------------------- evaluate
def _toy_set(scale=4):
    """Two HR images (the second grayscale) with their MATLAB-bicubic LR images."""
    from imresize import imresize

    items = []
    for i, gray in enumerate((False, True)):
        hr = _random_lr(16 * scale, 12 * scale, seed=10 + i, gray=gray)
        items.append({"name": f"img{i}", "lr": imresize(hr, 1 / scale), "hr": hr})
    return items


def test_evaluate_bicubic_and_model_rows():
    data = _toy_set()
    rows = evaluate(None, data, scale=4, progress=False)
    assert [r["name"] for r in rows] == ["img0", "img1"]
    for row, item in zip(rows, data):
        assert set(row) == {"name", "psnr", "ssim", "niqe", "sharpness", "seconds"}
        assert np.isnan(row["niqe"])  # 64x48 HR: too small for two 96x96 NIQE blocks
        sr = bicubic_upscale(item["lr"], 4)
        assert row["psnr"] == calculate_psnr(sr, item["hr"], 4)
        assert row["ssim"] == calculate_ssim(sr, item["hr"], 4)
        assert row["sharpness"] == calculate_sharpness(sr, item["hr"], 4)
        assert row["seconds"] >= 0
    model = _small_srresnet()
    rows = evaluate(model, data, scale=4, progress=False)
    for row, item in zip(rows, data):
        assert row["psnr"] == calculate_psnr(super_resolve(model, item["lr"]), item["hr"], 4)


def test_evaluate_errors_name_the_image():
    data = _toy_set()
    data[1]["hr"] = data[1]["hr"][:-4]
    with pytest.raises(ValueError, match="img1"):
        evaluate(None, data, scale=4, progress=False)
    with pytest.raises(ValueError, match="x4"):
        evaluate(_small_srresnet(), _toy_set(), scale=2, progress=False)


def test_evaluate_bicubic_reproduces_matlab_set5_x4(benchmark_dir, reference_dir):
    with open(reference_dir / "matlab_metrics_Set5_x4.csv", newline="") as f:
        ref = list(csv.DictReader(f))
    data = [{"name": r["hr_image"], "lr": read_image(benchmark_dir / r["lr_image"], keep_gray=True),
             "hr": read_image(benchmark_dir / r["hr_image"], keep_gray=True)} for r in ref]
    rows = evaluate(None, data, scale=4, progress=False)
    assert np.mean([r["psnr"] for r in rows]) == pytest.approx(np.mean([float(r["bicubic_psnr"]) for r in ref]), abs=1e-3)
    assert np.mean([r["ssim"] for r in rows]) == pytest.approx(np.mean([float(r["bicubic_ssim"]) for r in ref]), abs=1e-4)


def test_super_resolve_runs_without_tf32_and_restores_flags():
    """Reported numbers must be true fp32 on GPUs too: TF32 is off during inference only."""
    import torch

    from inference import super_resolve

    seen = []

    class Probe(torch.nn.Module):
        scale = 2

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        super_resolve(Probe(), np.zeros((6, 5, 3), np.uint8))
        assert seen == [(False, False)]
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
