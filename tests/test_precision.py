"""Tests for super_resolve's precision option (bf16 for users' own images, fp32 for scores).

super_resolve refuses bf16 on a CPU without native bf16 (there it is emulated: slow and
memory-hungry). To test the bf16 path on any CPU, the ``bf16_cpu`` fixture declares the CPU
native: the computation is the same bf16 (emulated or not), only slower.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoints
import inference
import metrics
import models
from imresize import imresize
from inference import evaluate, super_resolve

SHIPPED_SRRESNET = Path(__file__).resolve().parents[1] / "checkpoints" / "srresnet_x4.pth"


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Let super_resolve run bf16 on this CPU, native or not (the refusal is tested below)."""
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)


def _bf16(model, lr, **kwargs) -> np.ndarray:
    return super_resolve(model, lr, precision="bf16", **kwargs)


def _tiny_model(seed: int = 0) -> models.SRResNet:
    torch.manual_seed(seed)
    model = models.SRResNet(scale=4, n_blocks=1, channels=8)
    with torch.no_grad():
        model.tail.bias.fill_(0.5)  # an output spread over 0..255, not a dark clamped one
    return model


def _conv_dtypes(model) -> list[torch.dtype]:
    """Records the output dtype of the model's first convolution at every call."""
    seen: list[torch.dtype] = []
    model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    return seen


def test_bf16_is_close_to_fp32_on_a_real_image(bf16_cpu):
    if not SHIPPED_SRRESNET.is_file():
        pytest.skip(f"shipped SRResNet not found at {SHIPPED_SRRESNET}")
    from skimage import data as skdata  # a photograph shipped with scikit-image (no download)

    model = checkpoints.load_generator(SHIPPED_SRRESNET)
    hr = skdata.astronaut()[96:256, 160:320]  # 160x160 HR: face and helmet, real texture
    lr = imresize(hr, 0.25)                   # 40x40 LR, MATLAB bicubic
    fp32 = super_resolve(model, lr)
    bf16 = _bf16(model, lr)
    assert bf16.shape == fp32.shape == (160, 160, 3) and bf16.dtype == np.uint8
    diff = np.abs(bf16.astype(int) - fp32.astype(int))
    assert diff.mean() < 1.0          # within a level on average: the same image
    assert diff.max() > 0             # and really computed in bf16 (not fp32 again)
    assert metrics.calculate_psnr(bf16, fp32, crop_border=4) > 40


def test_bf16_runs_convolutions_in_bf16_and_fp32_stays_fp32_inside_autocast(bf16_cpu):
    model, lr = _tiny_model(), np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    seen = _conv_dtypes(model)
    _bf16(model, lr)
    super_resolve(model, lr)
    # a caller inside an autocast block (a training loop validating) still gets fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        super_resolve(model, lr)
    assert seen == [torch.bfloat16, torch.float32, torch.float32]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the model is untouched


def test_bf16_tiled_matches_bf16_untiled_layout(bf16_cpu):
    # channels_last input inside, uint8 HxWx3 out: tiling and grayscale work as in fp32
    model = _tiny_model()
    lr = np.random.default_rng(1).integers(0, 256, (30, 26), dtype=np.uint8)
    whole = _bf16(model, lr)
    tiled = _bf16(model, lr, tile=12, tile_overlap=12)
    assert whole.shape == tiled.shape == (120, 104) and whole.dtype == np.uint8
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_evaluate_scores_in_fp32_even_inside_autocast():
    model = _tiny_model()
    rng = np.random.default_rng(2)
    hr = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    dataset = [{"name": "x", "lr": imresize(hr, 0.25), "hr": hr}]
    plain = evaluate(model, dataset, scale=4, progress=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = evaluate(model, dataset, scale=4, progress=False)
    assert inside[0]["psnr"] == plain[0]["psnr"] and inside[0]["ssim"] == plain[0]["ssim"]


@pytest.mark.parametrize("precision", ["fp16", "BF16", "bfloat16", None])
def test_invalid_precision_is_a_one_line_value_error(precision):
    with pytest.raises(ValueError, match="precision must be one of") as info:
        super_resolve(_tiny_model(), np.zeros((8, 8, 3), np.uint8), precision=precision)
    assert "\n" not in str(info.value) and "'fp32'" in str(info.value)


def test_bf16_is_refused_on_a_cpu_without_native_bf16(monkeypatch):
    model, lr = _tiny_model(), np.zeros((8, 8, 3), np.uint8)
    seen = _conv_dtypes(model)
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="no native bf16") as info:
        super_resolve(model, lr, precision="bf16")
    assert "\n" not in str(info.value) and "precision='fp32'" in str(info.value)
    assert seen == []  # refused before running anything
    assert super_resolve(model, lr).shape == (32, 32, 3)  # fp32 runs on any CPU
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    super_resolve(model, lr, precision="bf16")
    assert seen == [torch.float32, torch.bfloat16]


def test_cpu_has_native_bf16_follows_torchs_capability_checks(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert inference.cpu_has_native_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert inference.cpu_has_native_bf16() is True
