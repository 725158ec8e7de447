"""Stage-2 options against GAN artifacts: an EMA of the generator (``stage2.ema_decay``),
spectral normalisation of the discriminator (``model.discriminator.spectral_norm``), and
NIQE in the validation row (what the options are judged by).

Tiny runs as in test_solver.py (seconds each).
"""
from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import checkpoints
import inference
import metrics
import models
import solver
import training
import utils
from create_data_lists import write_data_list
from datasets import EvalDataset
from test_solver import _read_csv, _run_until_killed, _state, tiny_config, write_tiny_lists

SN_D = {"name": "Discriminator", "kwargs": {"channels": 8, "fc_size": 16}, "spectral_norm": True}
TINY_G = {"name": "SRResNet", "kwargs": {"scale": 4, "n_blocks": 1, "channels": 8}}


@pytest.fixture(scope="module")
def tiny_lists(tmp_path_factory) -> dict:
    return write_tiny_lists(tmp_path_factory.mktemp("data"), 3, 48)


def stabilized_config(lists: dict, out: Path, **stage2):
    """The tiny srgan-mse run of test_solver with an EMA (decay 0.5, so 3 steps move it) and an SN D."""
    return tiny_config(lists, out, model={"generator": TINY_G, "discriminator": SN_D},
                       stage2={"epochs": 2, "ema_decay": 0.5, **stage2})


# ------------------------------------------------------------------------------ EMA


def test_ema_update_averages_weights_and_batchnorm_statistics_and_copies_counters():
    torch.manual_seed(0)
    ema, net = models.SRResNet(scale=2, n_blocks=1, channels=8), models.SRResNet(scale=2, n_blocks=1, channels=8)
    net.train()
    net(torch.rand(2, 3, 8, 8))  # moves BN running statistics and counters away from ema's
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    training.ema_update(ema, net, 0.75)
    after, live = ema.state_dict(), net.state_dict()
    checked = {"float": 0, "int": 0}
    for k, v in after.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.75 * before[k] + 0.25 * live[k], rtol=1e-6, atol=1e-7)
            checked["float"] += 1
        else:  # num_batches_tracked
            assert torch.equal(v, live[k]), k
            checked["int"] += 1
    assert checked["float"] > 10 and checked["int"] >= 1
    assert any("running_mean" in k for k in after)


def test_ema_decay_is_checked(tiny_lists, tmp_path):
    for bad in (1.0, -0.1, True, "0.9"):
        with pytest.raises(ValueError, match="ema_decay"):
            solver.check_config(tiny_config(tiny_lists, tmp_path, stage2={"epochs": 1, "ema_decay": bad}))


def test_an_ema_run_validates_and_exports_the_ema_not_the_trained_weights(tiny_lists, tmp_path):
    out = tmp_path / "run"
    solver.train(stabilized_config(tiny_lists, out))
    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    trained, ema = ckpt["generator"], ckpt["generator_ema"]
    assert trained.keys() == ema.keys()
    assert any(not torch.equal(trained[k], ema[k]) for k in trained)  # the average lags the weights
    exported = _state(out / "generator_stage2.pth")
    assert all(torch.equal(exported[k], ema[k]) for k in ema)
    # the last log row's PSNR is the EMA's, recomputed here from the exported file
    rows = _read_csv(out / "log.csv")
    ema_g = checkpoints.load_generator(out / "generator_stage2.pth")
    eval_set = EvalDataset(tiny_lists["val"], scale=4)
    assert float(rows[-1]["psnr"]) == pytest.approx(training.validate(ema_g, eval_set, 4)["psnr"], abs=1e-9)


def test_an_ema_run_resumed_after_sigkill_equals_an_uninterrupted_one(tiny_lists, tmp_path):
    solver.train(stabilized_config(tiny_lists, tmp_path / "ref"))
    run = stabilized_config(tiny_lists, tmp_path / "run")
    proc = _run_until_killed(run, (2, 1), tmp_path)  # killed after stage 2's first epoch
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run.resume = True
    solver.train(run)
    for key in ("generator", "generator_ema", "discriminator"):
        a, b = _state(tmp_path / "ref" / "checkpoint.pth", key), _state(tmp_path / "run" / "checkpoint.pth", key)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), f"{key} {k}"


def test_a_d_translate_run_resumed_after_sigkill_is_bit_identical(tiny_lists, tmp_path):
    """d_translate draws its shifts from the global torch RNG: only a resume that restores the
    RNG states continues with the same shifts (the shipped SRGAN's setting, d_translate=2)."""
    run_cfg = {"epochs": 2, "d_translate": 2, "lr_milestones": []}
    solver.train(tiny_config(tiny_lists, tmp_path / "ref", stage2=run_cfg))
    run = tiny_config(tiny_lists, tmp_path / "run", stage2=run_cfg)
    proc = _run_until_killed(run, (2, 1), tmp_path)  # killed right after stage 2's first checkpoint
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    torch.manual_seed(999)  # whatever the resuming process's RNG holds, the checkpoint's state is used
    run.resume = True
    solver.train(run)
    ref, resumed = torch.load(tmp_path / "ref" / "checkpoint.pth", weights_only=True), \
        torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)
    assert (resumed["stage"], resumed["epoch"], resumed["global_step"]) == (2, 2, ref["global_step"])
    for key in ("generator", "discriminator"):
        assert ref[key].keys() == resumed[key].keys()
        for k in ref[key]:
            assert torch.equal(ref[key][k], resumed[key][k]), f"{key} {k} differs after the resume"


def test_ema_turned_on_at_resume_starts_from_the_restored_generator(tiny_lists, tmp_path):
    out = tmp_path / "run"
    plain = tiny_config(tiny_lists, out, stage2={"epochs": 1})
    solver.train(plain)
    saved = _state(out / "checkpoint.pth")
    resumed = solver.config_from_checkpoint(out / "checkpoint.pth", resume=True)
    resumed.stage2.epochs, resumed.stage2.ema_decay = 2, 0.999999  # the EMA barely moves in 3 steps
    solver.train(resumed)
    ema = _state(out / "checkpoint.pth", "generator_ema")
    for k, v in saved.items():
        if v.is_floating_point():
            assert torch.allclose(ema[k], v, atol=1e-4), k


# ------------------------------------------------------------------------------ spectral norm


def test_spectral_normalize_bounds_every_layer_and_removes_batch_norm():
    torch.manual_seed(0)
    for d in (models.Discriminator(channels=8, fc_size=16), models.VGGStyleDiscriminator(channels=8)):
        d = models.spectral_normalize(d)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
        d.train()
        x = torch.rand(2, 3, 64, 64)
        for _ in range(100):  # one power iteration per training forward
            d(x)
        layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(layers) >= 10
        for m in layers:
            sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
            assert sigma.item() == pytest.approx(1.0, abs=0.05), m
        # a plain D's weights are far from norm 1: the test would notice a missing wrapper
        plain = models.Discriminator(channels=8, fc_size=16)
        assert max(abs(torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() - 1)
                   for m in plain.modules() if isinstance(m, nn.Conv2d)) > 0.1


def test_a_run_with_a_spectrally_normalised_d_trains_and_its_checkpoint_says_so(tiny_lists, tmp_path):
    out = tmp_path / "run"
    solver.train(stabilized_config(tiny_lists, out, ema_decay=0.0))
    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert ckpt["discriminator_arch"]["spectral_norm"] is True and ckpt["generator_ema"] is None
    assert any("parametrizations.weight.original" in k for k in ckpt["discriminator"])
    rows = _read_csv(out / "log.csv")
    assert all(0 < float(r["d_real"]) < 1 for r in rows[2:])


def test_resuming_with_another_discriminator_setting_is_one_clear_error(tiny_lists, tmp_path):
    out = tmp_path / "run"
    solver.train(stabilized_config(tiny_lists, out, epochs=1))
    resumed = solver.config_from_checkpoint(out / "checkpoint.pth", resume=True)
    resumed.stage2.epochs, resumed.model.discriminator.spectral_norm = 2, False
    with pytest.raises(solver.SolverError, match="discriminator .*resume with the same model settings"):
        solver.train(resumed)


# ------------------------------------------------------------------------------ NIQE in validation


def test_validation_reports_the_mean_niqe_of_the_super_resolved_images(tmp_path):
    rng = np.random.default_rng(1)
    hr = np.clip(rng.normal(128, 40, (64, 64, 3)), 0, 255).astype(np.uint8)
    hr = np.kron(hr, np.ones((4, 4, 1), dtype=np.uint8))  # 256x256: four 96x96 NIQE blocks inside the border
    utils.save_image(hr, tmp_path / "big.png")
    write_data_list(tmp_path / "val.json", "val", 4, [{"name": "big", "hr": str(tmp_path / "big.png"), "lr": None}])
    eval_set = EvalDataset(str(tmp_path / "val.json"), scale=4)
    torch.manual_seed(0)
    g = models.SRResNet(scale=4, n_blocks=1, channels=8)
    scores = training.validate(g, eval_set, 4)
    sr = inference.super_resolve(g, eval_set[0]["lr"])
    assert np.isfinite(scores["niqe"])
    assert scores["niqe"] == pytest.approx(metrics.calculate_niqe(sr, crop_border=4), abs=1e-9)


def test_a_training_checkpoint_with_an_ema_loads_as_the_ema_everywhere(tiny_lists, tmp_path):
    out = tmp_path / "run"
    solver.train(stabilized_config(tiny_lists, out))
    ema = _state(out / "checkpoint.pth", "generator_ema")
    for net in (checkpoints.load_generator(out / "checkpoint.pth"), checkpoints.generator_from_srresnet(out / "checkpoint.pth")):
        assert all(torch.equal(v, ema[k]) for k, v in net.state_dict().items())
