"""The SRGAN lab's recipe (preset ``srgan-lab``): its losses by hand, the VGG16 perception
network and its weights (path, torch hub cache, download, error), and short training runs."""
from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import math
import socket
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

import checkpoints
import losses
import models
import solver
import vgg_weights
from test_solver import write_tiny_lists

# torchvision vgg16().features: conv indices (each followed by its ReLU); max-pools at 4, 9, 16, 23, 30
VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def _sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


# ------------------------------------------------------------------------------ losses
def test_squared_tv_loss_by_hand():
    x = torch.tensor([[1.0, 3.0], [4.0, 0.0]]).view(1, 1, 2, 2)
    # vertical: (4-1)^2 + (0-3)^2 = 18 over C*(H-1)*W = 2 -> 9; horizontal: 2^2 + 4^2 = 20 over 2 -> 10
    assert losses.tv_loss(x, "squared").item() == pytest.approx(2 * (9 + 10) / 1)
    assert losses.tv_loss(x).item() == pytest.approx(6.0)  # the kit's L1 default is unchanged

    # a batch, loop by loop as the lab defines it: sums over everything, counts per image
    torch.manual_seed(0)
    x = torch.rand(2, 3, 4, 5)
    n, c, h, w = x.shape
    h_tv = sum(float((x[b, k, i + 1, j] - x[b, k, i, j]) ** 2)
               for b in range(n) for k in range(c) for i in range(h - 1) for j in range(w))
    w_tv = sum(float((x[b, k, i, j + 1] - x[b, k, i, j]) ** 2)
               for b in range(n) for k in range(c) for i in range(h) for j in range(w - 1))
    expected = 2 * (h_tv / (c * (h - 1) * w) + w_tv / (c * h * (w - 1))) / n
    assert losses.tv_loss(x, "squared").item() == pytest.approx(expected, rel=1e-5)
    assert losses.tv_loss(torch.ones(2, 3, 5, 4), "squared").item() == 0.0
    with pytest.raises(ValueError, match="unknown TV loss"):
        losses.tv_loss(x, "l2")


def test_lab_gan_losses_by_hand():
    real = torch.tensor([2.0, -1.0])
    fake = torch.tensor([0.5, -3.0], requires_grad=True)
    d_real = (_sigmoid(2.0) + _sigmoid(-1.0)) / 2
    d_fake = (_sigmoid(0.5) + _sigmoid(-3.0)) / 2
    assert losses.gan_d_loss(real, fake, "lab").item() == pytest.approx(1 - d_real + d_fake, rel=1e-6)
    loss_g = losses.gan_g_loss(fake, None, "lab")
    assert loss_g.item() == pytest.approx(1 - d_fake, rel=1e-6)
    # the logged probabilities are the same D outputs
    logged = losses.d_probabilities(real, fake, "lab")
    assert (logged[0].item(), logged[1].item()) == pytest.approx((d_real, d_fake), rel=1e-6)
    # d/dC of mean(1 - sigmoid(C)) = -sigmoid'(C) / N: no log, so it fades where D is sure
    loss_g.backward()
    expected = [-_sigmoid(v) * (1 - _sigmoid(v)) / 2 for v in (0.5, -3.0)]
    assert fake.grad.tolist() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="'lab'"):
        losses.gan_g_loss(fake, None, "hinge")


def test_vgg16_lab_content_loss_is_mse_of_unnormalised_features():
    torch.manual_seed(0)
    loss = losses.ContentLoss("vgg16_lab", vgg_feature_scale=1.0, vgg_random_init=True)
    vgg = loss.vgg.vgg
    assert isinstance(vgg, models.TruncatedVGG16) and len(vgg.features) == 31
    sr, hr = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        f_sr, f_hr = vgg.features(sr), vgg.features(hr)  # the raw image goes in, as in the lab
    assert f_sr.shape == (2, 512, 2, 2)
    assert loss(sr, hr).item() == pytest.approx(torch.mean((f_sr - f_hr) ** 2).item(), rel=1e-5)
    assert loss(hr, hr).item() == 0.0


# ------------------------------------------------------------------------------ VGG16 network
def test_vgg16_layout_matches_torchvision():
    vgg = models.TruncatedVGG16(random_init=True)
    assert len(vgg.features) == models.VGG16_N_LAYERS == 31 and not vgg.normalize
    assert isinstance(vgg.features[-1], nn.MaxPool2d)
    pools = [k for k, m in enumerate(vgg.features) if isinstance(m, nn.MaxPool2d)]
    assert pools == [4, 9, 16, 23, 30]
    assert {int(k.split(".")[1]) for k in vgg.state_dict()} == set(VGG16_CONVS)
    assert sum(p.numel() for p in vgg.parameters()) == 14_714_688  # torchvision vgg16().features
    assert all(not p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    with pytest.raises(ValueError, match="n_layers must be 1..31"):
        models.TruncatedVGG16(n_layers=32, random_init=True)
    normalised = models.TruncatedVGG16(n_layers=4, normalize=True, random_init=True)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(normalised(x), normalised.features((x - normalised.mean) / normalised.std))


def _fake_vgg16_state() -> dict:
    """A small torchvision-like VGG16 state_dict: the first two convs, a classifier, a deeper key."""
    torch.manual_seed(4)
    state = {"features.0.weight": torch.randn(64, 3, 3, 3), "features.0.bias": torch.randn(64),
             "features.2.weight": torch.randn(64, 64, 3, 3), "features.2.bias": torch.randn(64),
             "features.5.weight": torch.randn(1),          # not needed for 4 layers: ignored
             "classifier.0.weight": torch.randn(2, 2)}     # ignored
    return state


def _assert_has_weights(vgg, state):
    for k, v in vgg.state_dict().items():
        torch.testing.assert_close(v, state[k])


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """A temporary TORCH_HOME (so the hub cache is TORCH_HOME/hub/checkpoints), restored after."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() follows TORCH_HOME again
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


@pytest.fixture
def offline(monkeypatch):
    """Point VGG16_URL (and VGG19_URL) at a closed local port: any download fails fast."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(vgg_weights, "VGG16_URL", f"http://127.0.0.1:{port}/vgg16-397923af.pth")
    monkeypatch.setattr(vgg_weights, "VGG19_URL", f"http://127.0.0.1:{port}/vgg19-dcbb9e9d.pth")


def test_vgg16_loads_explicit_path(tmp_path, torch_home, offline):
    state = _fake_vgg16_state()
    torch.save(state, tmp_path / "my_vgg16.pth")
    _assert_has_weights(models.TruncatedVGG16(n_layers=4, weights=tmp_path / "my_vgg16.pth"), state)
    with pytest.raises(FileNotFoundError, match="VGG16 weights file not found.*nope.pth"):
        models.TruncatedVGG16(weights=tmp_path / "nope.pth")


def test_vgg16_loads_from_the_hub_cache_under_torch_home(torch_home, offline):
    state = _fake_vgg16_state()
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "vgg16-397923af.pth")
    _assert_has_weights(models.TruncatedVGG16(n_layers=4), state)
    # a VGG19 file in the cache is not taken for the VGG16 one
    (cache / "vgg16-397923af.pth").rename(cache / "vgg19-dcbb9e9d.pth")
    with pytest.raises(RuntimeError, match="VGG16"):
        models.TruncatedVGG16(n_layers=4)


def test_vgg16_downloads_from_url_and_caches_it(tmp_path, torch_home, monkeypatch):
    state = _fake_vgg16_state()
    served = tmp_path / "served"
    served.mkdir()
    torch.save(state, served / "tmp.pth")
    # named like torchvision's files (sha256 prefix), so the download's hash check runs for real
    sha = hashlib.sha256((served / "tmp.pth").read_bytes()).hexdigest()
    name = f"vgg16-{sha[:8]}.pth"
    (served / "tmp.pth").rename(served / name)

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(vgg_weights, "VGG16_URL", f"http://127.0.0.1:{server.server_address[1]}/{name}")
        vgg = models.TruncatedVGG16(n_layers=4)
        # a file whose content does not match its name's hash is refused, not used
        bad = f"vgg16-{'0' * 8}.pth"
        (served / bad).write_bytes((served / name).read_bytes())
        monkeypatch.setattr(vgg_weights, "VGG16_URL", f"http://127.0.0.1:{server.server_address[1]}/{bad}")
        with pytest.raises(RuntimeError, match="download from .* failed"):
            models.TruncatedVGG16(n_layers=4)
    finally:
        server.shutdown()
        server.server_close()
    _assert_has_weights(vgg, state)
    assert (torch_home / "hub" / "checkpoints" / name).is_file()  # cached for next time


def test_vgg16_error_when_no_weights_anywhere_is_one_line(torch_home, offline):
    with pytest.raises(RuntimeError) as info:
        models.TruncatedVGG16()
    msg = str(info.value)
    assert "\n" not in msg
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in msg
    assert str(torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth") in msg
    assert "vgg.weights" in msg and "download from http://127.0.0.1" in msg


def test_vgg19_weights_are_refused_as_vgg16(tmp_path, torch_home, offline):
    vgg19 = {f"features.{k}": v for k, v in models._vgg19_features(36).state_dict().items()}
    torch.save(vgg19, tmp_path / "vgg19.pth")
    # same keys up to conv 7, different layers after: shapes differ at index 10 (VGG16 conv 256 <- 128 vs pool)
    with pytest.raises(ValueError, match="VGG16"):
        models.TruncatedVGG16(weights=tmp_path / "vgg19.pth")


# ------------------------------------------------------------------------------ the preset
def test_srgan_lab_preset_is_the_labs_recipe():
    cfg = solver.make_config("srgan-lab")
    s2 = cfg.stage2
    assert cfg.data.patch_size == 240
    assert cfg.model.generator.kwargs.n_blocks == 5
    assert cfg.stage1.epochs == 0  # no pre-training: stage 2 from random init, as the lab
    assert (s2.pixel_loss, s2.pixel_weight, s2.adversarial_weight, s2.gan_type) == ("mse", 1.0, 1e-3, "lab")
    assert (s2.content_loss, s2.content_weight, s2.vgg_feature_scale) == ("vgg16_lab", 6e-3, 1.0)
    assert (s2.tv_weight, s2.tv_type) == (2e-8, "squared")
    assert solver.make_config("srgan-lab", "quick").stage1.epochs == 0
    assert solver.make_config("srgan-vgg54").stage2.tv_type == "l1"  # the other presets keep theirs
    solver.check_config(cfg)
    with pytest.raises(ValueError, match="stage2.tv_type"):
        solver.check_config(solver.make_config("srgan-lab", stage2={"tv_type": "l2"}))


@pytest.fixture(scope="module")
def lab_lists(tmp_path_factory) -> dict:
    """Two 64x64 training images and one 32x32 validation image, with their JSON lists."""
    return write_tiny_lists(tmp_path_factory.mktemp("data"), 2, 64)


def _lab_config(lists: dict, out: Path, **overrides):
    """srgan-lab on tiny nets: 2 steps (2 images x 2 patches / batch 2), 32x32 HR patches
    (the VGG16's five max-pools need at least 32 pixels)."""
    return solver.make_config(
        "srgan-lab", "quick", out=str(out), seed=0, device="cpu", log_every=1,
        data={"train_list": lists["train"], "val_list": lists["val"], "patch_size": 32,
              "patches_per_image": 2, "batch_size": 2, "workers": 0, "cache_mb": 16,
              "val_max_images": 1, "n_samples": 0},
        model={"generator": {"name": "SRResNet", "kwargs": {"scale": 4, "n_blocks": 1, "channels": 8}},
               "discriminator": {"name": "Discriminator", "kwargs": {"channels": 8, "fc_size": 16}}},
        stage2={"epochs": 1}, speed={"threads": 1}, **overrides)


def _rows(out: Path) -> list[dict]:
    with open(out / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("how", ["random_init", "weights_file"])
def test_srgan_lab_trains_a_few_steps_with_explicit_random_vgg16(lab_lists, tmp_path, torch_home, offline, how):
    if how == "random_init":
        vgg = {"random_init": True}  # tests only: exercises the code path, not a perceptual loss
    else:
        torch.manual_seed(7)
        state = models.TruncatedVGG16(random_init=True).state_dict()  # torchvision's keys, features.N.*
        torch.save(state, tmp_path / "random_vgg16.pth")
        vgg = {"weights": str(tmp_path / "random_vgg16.pth")}
    out = tmp_path / "lab"
    result = solver.train(_lab_config(lab_lists, out, vgg=vgg))
    rows = _rows(out)
    assert [(r["stage"], r["step"]) for r in rows] == [("2", "2")]  # no stage 1: stage 2 from random init
    row = {k: float(v) for k, v in rows[0].items() if v not in ("", None)}
    assert row["loss_pixel"] > 0 and row["loss_content"] > 0 and row["loss_tv"] > 0
    assert 0 < row["loss_adv"] < 1 and 0 <= row["loss_d"] <= 2  # 1 - D forms on probabilities
    # the generator loss is the lab's weighted sum (the per-epoch means are linear in it)
    expected = row["loss_pixel"] + 1e-3 * row["loss_adv"] + 6e-3 * row["loss_content"] + 2e-8 * row["loss_tv"]
    assert row["loss_g"] == pytest.approx(expected, rel=1e-5)
    assert not (out / "generator_stage1.pth").exists()
    assert checkpoints.load_generator(result["generator"]).scale == 4


def test_srgan_lab_refuses_to_start_without_vgg16_weights(lab_lists, tmp_path, torch_home, offline):
    out = tmp_path / "lab"
    with pytest.raises(RuntimeError) as info:
        solver.train(_lab_config(lab_lists, out))
    msg = str(info.value)
    assert "\n" not in msg and "VGG16" in msg and "vgg16-397923af.pth" in msg
    assert not (out / "checkpoint.pth").exists() and not (out / "log.csv").exists()
