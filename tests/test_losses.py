"""Losses of solver.py against hand-computed values, and where their gradients go."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import losses
import models
import solver
import training


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def _log_one_minus_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(x))


def test_pixel_losses_by_hand():
    sr = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(1, 1, 2, 2)
    hr = torch.tensor([0.5, 0.5, 0.0, 0.0]).view(1, 1, 2, 2)
    assert losses.pixel_loss(sr, hr, "mse").item() == pytest.approx((0.25 + 0 + 1 + 0.0625) / 4)
    assert losses.pixel_loss(sr, hr, "l1").item() == pytest.approx((0.5 + 0 + 1 + 0.25) / 4)
    with pytest.raises(ValueError, match="unknown pixel loss"):
        losses.pixel_loss(sr, hr, "l2")


def test_tv_loss_by_hand():
    x = torch.tensor([[1.0, 3.0], [4.0, 0.0]]).view(1, 1, 2, 2)
    # vertical differences: |4-1|, |0-3| -> mean 3; horizontal: |3-1|, |0-4| -> mean 3
    assert losses.tv_loss(x).item() == pytest.approx(6.0)
    assert losses.tv_loss(torch.ones(2, 3, 5, 4)).item() == 0.0


def test_standard_gan_losses_by_hand():
    real = torch.tensor([2.0, -1.0])
    fake = torch.tensor([0.5, -3.0])
    expected_d = (-(_log_sigmoid(2.0) + _log_sigmoid(-1.0)) / 2
                  - (_log_one_minus_sigmoid(0.5) + _log_one_minus_sigmoid(-3.0)) / 2)
    assert losses.gan_d_loss(real, fake, "standard").item() == pytest.approx(expected_d, rel=1e-6)
    # generator: -E[log D(G(z))] (non-saturating), real logits unused
    expected_g = -(_log_sigmoid(0.5) + _log_sigmoid(-3.0)) / 2
    assert losses.gan_g_loss(fake, None, "standard").item() == pytest.approx(expected_g, rel=1e-6)
    assert losses.gan_g_loss(fake, real, "standard").item() == pytest.approx(expected_g, rel=1e-6)


def test_ragan_losses_by_hand():
    real = torch.tensor([1.0, 2.0])   # E[C(x_r)] = 1.5
    fake = torch.tensor([0.0, -1.0])  # E[C(x_f)] = -0.5
    # D_Ra(x_r, x_f) = sigmoid(C(x_r) - E[C(x_f)]): arguments 1.5 and 2.5
    # D_Ra(x_f, x_r) = sigmoid(C(x_f) - E[C(x_r)]): arguments -1.5 and -2.5
    expected_d = (-(_log_sigmoid(1.5) + _log_sigmoid(2.5)) / 2
                  - (_log_one_minus_sigmoid(-1.5) + _log_one_minus_sigmoid(-2.5)) / 2)
    expected_g = (-(_log_one_minus_sigmoid(1.5) + _log_one_minus_sigmoid(2.5)) / 2
                  - (_log_sigmoid(-1.5) + _log_sigmoid(-2.5)) / 2)
    assert losses.gan_d_loss(real, fake, "ragan").item() == pytest.approx(expected_d, rel=1e-6)
    assert losses.gan_g_loss(fake, real, "ragan").item() == pytest.approx(expected_g, rel=1e-6)
    d_real, d_fake = losses.d_probabilities(real, fake, "ragan")
    s = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert d_real.item() == pytest.approx((s(1.5) + s(2.5)) / 2, rel=1e-6)
    assert d_fake.item() == pytest.approx((s(-1.5) + s(-2.5)) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="real_logits"):
        losses.gan_g_loss(fake, None, "ragan")
    with pytest.raises(ValueError, match="unknown GAN type"):
        losses.gan_d_loss(real, fake, "wgan")


def test_ragan_generator_loss_does_not_reach_discriminator_through_real_logits():
    real = torch.tensor([1.0, 2.0], requires_grad=True)
    fake = torch.tensor([0.0, -1.0], requires_grad=True)
    losses.gan_g_loss(fake, real, "ragan").backward()
    assert real.grad is None
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_vgg_content_loss_is_rescaled_feature_mse():
    torch.manual_seed(0)
    loss = losses.VGGContentLoss("vgg22", random_init=True)
    sr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    vgg = loss.vgg
    expected = torch.mean((vgg(sr) - vgg(hr)) ** 2) / 12.75 ** 2
    assert loss(sr, hr).item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss(hr, hr).item() == 0.0


def test_vgg_content_loss_esrgan_variant_is_l1_of_preactivation_features():
    torch.manual_seed(0)
    loss = losses.VGGContentLoss("vgg54", before_activation=True, criterion="l1", feature_scale=1.0,
                                 random_init=True)
    assert loss.vgg.before_activation
    sr, hr = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    f_sr, f_hr = loss.vgg(sr), loss.vgg(hr)
    assert (f_sr < 0).any(), "pre-activation features should contain negative values"
    assert loss(sr, hr).item() == pytest.approx((f_sr - f_hr).abs().mean().item(), rel=1e-5)


def test_vgg_content_loss_gradients_reach_sr_only():
    torch.manual_seed(0)
    loss = losses.VGGContentLoss("vgg22", random_init=True)
    sr = torch.rand(1, 3, 16, 16, requires_grad=True)
    hr = torch.rand(1, 3, 16, 16, requires_grad=True)
    loss(sr, hr).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert hr.grad is None
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.vgg.training, "the VGG must stay in eval mode"


def test_vgg_loss_without_weights_raises_instead_of_switching(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(models, "VGG19_URL", "file:///nonexistent/vgg19.pth", raising=False)

    def no_download(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with pytest.raises(RuntimeError):
        losses.ContentLoss("vgg54")
    assert losses.ContentLoss("mse").vgg is None  # pixel losses need no weights


def _tiny_nets():
    torch.manual_seed(0)
    g = models.SRResNet(scale=4, n_blocks=1, channels=8)
    d = models.Discriminator(channels=8, fc_size=16)
    return g, d


class _SpyAdam(torch.optim.Adam):
    """Adam that calls ``before_step()`` just before each step (for checking gradients)."""

    def __init__(self, params, before_step, **kw):
        super().__init__(params, **kw)
        self.before_step = before_step

    def step(self, closure=None):
        self.before_step()
        return super().step(closure)


@pytest.mark.parametrize("gan_type", ["standard", "ragan"])
def test_stage2_step_updates_each_network_only_from_its_own_loss(gan_type):
    g, d = _tiny_nets()
    batches = [(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 16, 16)) for _ in range(2)]
    record: dict = {"d_steps": 0, "g_steps": 0}

    def before_d_step():
        if record["d_steps"] == 0:  # first batch: nothing has touched G yet
            assert all(p.grad is None for p in g.parameters()), "the D loss reached G"
        record["d_grads"] = [None if p.grad is None else p.grad.clone() for p in d.parameters()]
        record["d_steps"] += 1

    def before_g_step():
        # The G loss must not have added gradients to D (it is frozen during the G step).
        for p, saved in zip(d.parameters(), record["d_grads"]):
            assert (p.grad is None and saved is None) or torch.equal(p.grad, saved), "the G loss reached D"
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())
        record["d_after_step"] = [p.detach().clone() for p in d.parameters()]
        record["g_steps"] += 1

    opt_d = _SpyAdam(d.parameters(), before_d_step, lr=1e-3)
    opt_g = _SpyAdam(g.parameters(), before_g_step, lr=1e-3)
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, [100])
    sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, [100])
    ctx = training.TrainContext(device=torch.device("cpu"), amp_dtype=None, channels_last=False, progress=False,
                                log_every=1, check_every=1, global_step=0)
    cfg2 = solver.make_config("srgan-mse").stage2
    cfg2.gan_type = gan_type
    weights = solver.loss_weights(cfg2)
    frozen = training.DiscriminatorInput(d, frozen=True)  # what the run passes to the G step
    g_before = [p.detach().clone() for p in g.parameters()]
    metrics = training.train_epoch(batches, ctx, 2, 1, lambda lr, hr: solver.gan_step(
        g, d, lr, hr, opt_g, opt_d, losses.ContentLoss("mse"), weights, frozen), [sched_g, sched_d], [g, d])
    assert record == {**record, "d_steps": 2, "g_steps": 2}
    assert metrics["steps"] == 2 and ctx.global_step == 2
    assert 0 < metrics["d_real"] < 1 and 0 < metrics["d_fake"] < 1
    assert (cfg2.content_weight, cfg2.adversarial_weight) == (4.0, 1e-3)  # SRGAN-MSE (see solver.PRESETS)
    assert metrics["loss_g"] == pytest.approx(4.0 * metrics["loss_content"] + 1e-3 * metrics["loss_adv"], rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(g_before, g.parameters()))
    assert all(p.requires_grad for p in d.parameters()), "D must be trainable again after the epoch"


def test_generator_loss_is_weighted_sum():
    g, d = _tiny_nets()
    batches = [(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 16, 16))]
    cfg2 = solver.make_config("esrgan").stage2
    cfg2.content_loss = "l1"
    cfg2.tv_weight = 0.5
    ctx = training.TrainContext(device=torch.device("cpu"), amp_dtype=None, channels_last=False, progress=False,
                                log_every=1, check_every=1, global_step=0)
    opt_g, opt_d = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
    weights = solver.loss_weights(cfg2)
    m = training.train_epoch(batches, ctx, 2, 1, lambda lr, hr: solver.gan_step(
        g, d, lr, hr, opt_g, opt_d, losses.ContentLoss("l1"), weights), [], [g, d])
    expected = m["loss_content"] + 5e-3 * m["loss_adv"] + 1e-2 * m["loss_pixel"] + 0.5 * m["loss_tv"]
    assert m["loss_g"] == pytest.approx(expected, rel=1e-5)
    assert m["loss_pixel"] == pytest.approx(m["loss_content"], rel=1e-6)  # both L1 of the same sr


def test_discriminator_gradients_do_not_reach_generator_through_detached_sr():
    g, d = _tiny_nets()
    sr = g(torch.rand(2, 3, 4, 4))
    loss = losses.gan_d_loss(d(torch.rand(2, 3, 16, 16)), d(sr.detach()), "standard")
    loss.backward()
    assert all(p.grad is None for p in g.parameters())
    assert all(p.grad is not None for p in d.parameters())
