"""solver.py: configuration, training runs, checkpoints, exact resume, NaN and Ctrl-C handling.

Every run here is tiny (SRResNet with 1 block of 8 channels, 16x16 HR patches, 3 steps per
epoch, CPU, no DataLoader workers) so that the whole file takes seconds, not minutes.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoints
import losses
import models
import solver
import training
import utils
from create_data_lists import write_data_list

REPO = Path(__file__).resolve().parents[1]


def _smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random but smooth RGB image (so super-resolution has something to learn)."""
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.float64)
    big = np.kron(small, np.ones((8, 8, 1)))[:h, :w]
    return np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)


def write_tiny_lists(root: Path, n_train: int, side: int) -> dict:
    """``n_train`` smooth ``side``x``side`` training images and one 32x32 validation image in
    ``root``, with their x4 JSON lists: ``{"train": path, "val": path}``."""
    rng = np.random.default_rng(0)
    train = []
    for k in range(n_train):
        path = root / f"train_{k}.png"
        utils.save_image(_smooth_image(rng, side, side), path)
        train.append({"name": f"train_{k}", "hr": str(path), "lr": None})
    val_path = root / "val_0.png"
    utils.save_image(_smooth_image(rng, 32, 32), val_path)
    write_data_list(root / "train.json", "train", 4, train)
    write_data_list(root / "val.json", "val", 4, [{"name": "val_0", "hr": str(val_path), "lr": None}])
    return {"train": str(root / "train.json"), "val": str(root / "val.json")}


@pytest.fixture(scope="module")
def tiny_lists(tmp_path_factory) -> dict:
    """Three 48x48 training images and one 32x32 validation image, with their JSON lists."""
    return write_tiny_lists(tmp_path_factory.mktemp("data"), 3, 48)


def tiny_config(lists: dict, out: Path, preset: str = "srgan-mse", **overrides):
    """A run of 2 + 2 epochs of 3 steps each (3 images x 4 patches / batch 4)."""
    settings = dict(
        out=str(out), seed=0, device="cpu", log_every=1,
        data={"train_list": lists["train"], "val_list": lists["val"], "patch_size": 16,
              "patches_per_image": 4, "batch_size": 4, "workers": 0, "cache_mb": 16,
              "val_max_images": 1, "n_samples": 1},
        model={"generator": {"name": "SRResNet", "kwargs": {"scale": 4, "n_blocks": 1, "channels": 8}},
               "discriminator": {"name": "Discriminator", "kwargs": {"channels": 8, "fc_size": 16}}},
        stage1={"epochs": 2}, speed={"threads": 1},  # 1 thread: fastest for tiny nets on a busy CPU
    )
    if preset != "mse":
        settings["stage2"] = {"epochs": 2}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = value
    return solver.make_config(preset, "quick", **settings)


def _state(path: Path, key: str = "generator") -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)[key]


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------ config


def test_every_preset_builds_a_config_with_the_papers_schedule():
    for preset in solver.PRESETS:
        for profile in solver.PROFILES:
            cfg = solver.make_config(preset, profile)
            assert cfg.preset == preset and cfg.profile == profile and cfg.out
    full = solver.make_config("srgan-vgg54", "full")
    assert (full.data.batch_size, full.data.patch_size, full.stage1.lr, full.stage1.betas[0]) == (16, 96, 1e-4, 0.9)
    assert full.stage1.iterations == 1_000_000
    # stage 2: 1e5 iterations at 1e-4 then 1e5 at 1e-5
    assert full.stage2.iterations == 200_000 and full.stage2.lr_milestones == [0.5]
    assert full.stage2.lr_g * full.stage2.lr_gamma == pytest.approx(1e-5)
    assert (full.stage2.content_loss, full.stage2.adversarial_weight, full.stage2.gan_type) == ("vgg54", 1e-3, "standard")
    es = solver.make_config("esrgan")
    assert es.model.generator.name == "RRDBNet" and es.model.discriminator.name == "VGGStyleDiscriminator"
    assert es.data.patch_size == 128 and es.stage1.pixel_loss == "l1"
    assert (es.stage2.gan_type, es.stage2.vgg_before_activation, es.stage2.pixel_weight,
            es.stage2.adversarial_weight, es.stage2.content_weight) == ("ragan", True, 1e-2, 5e-3, 1.0)
    assert solver.make_config("vgg54").stage2.adversarial_weight == 0  # no GAN
    assert solver.make_config("mse").stage2.epochs == 0  # stage 1 only


def test_make_config_overrides_and_typos():
    cfg = solver.make_config("mse", "quick", seed=3, stage1={"epochs": 5}, **{"data.batch_size": 2})
    assert (cfg.seed, cfg.stage1.epochs, cfg.data.batch_size) == (3, 5, 2)
    assert cfg.stage1.lr == solver.make_config("mse", "quick").stage1.lr  # untouched siblings keep theirs
    with pytest.raises(KeyError, match="stage1.epoch"):
        solver.make_config("mse", stage1={"epoch": 5})
    with pytest.raises(ValueError, match="unknown preset"):
        solver.make_config("srgan-vgg99")
    with pytest.raises(ValueError, match="unknown profile"):
        solver.make_config("mse", "fast")
    bad = solver.make_config("srgan-mse", stage2={"gan_type": "wgan"})
    with pytest.raises(ValueError, match="stage2.gan_type"):
        solver.check_config(bad)


def test_epochs_from_iterations():
    cfg = solver.make_config("srgan-vgg54")
    # e.g. 800 DIV2K images x 100 patches / batch 16 = 5000 iterations per epoch
    assert training._stage_epochs(cfg.stage1, 5000) == 200
    assert training._stage_epochs(cfg.stage2, 5000) == 40
    assert training._milestones([0.5], 40 * 5000) == [100_000]


def test_seeded_sampler_is_a_deterministic_partition():
    full = training.SeededSampler(10, seed=1)
    full.set_epoch(training.epoch_key(1, 1))
    a = list(full)
    assert a == list(full) and sorted(i for i, _ in a) == list(range(10))
    full.set_epoch(training.epoch_key(1, 2))
    assert list(full) != a
    ranks = [training.SeededSampler(10, seed=1, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(training.epoch_key(1, 1))
    parts = [list(r) for r in ranks]
    assert len(parts[0]) == len(parts[1]) == 5
    assert sorted(parts[0] + parts[1]) == sorted(a)


# ------------------------------------------------------------------------------ runs


def test_two_stage_run_writes_every_output(tiny_lists, tmp_path):
    cfg = tiny_config(tiny_lists, tmp_path / "run")
    result = solver.train(cfg)
    out = tmp_path / "run"
    for name in ("checkpoint.pth", "generator_stage1.pth", "generator_stage2.pth", "log.csv",
                 "curves.png", "config.json"):
        assert (out / name).is_file(), name
    assert result["generator"] == str(out / "generator_stage2.pth")
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        f"stage{s}_epoch000{e}_val_0.png" for s in (1, 2) for e in (1, 2)]
    assert utils.read_image(out / "samples" / "stage2_epoch0002_val_0.png").shape == (32, 32, 3)

    rows = _read_csv(out / "log.csv")
    assert [(r["stage"], r["epoch"], r["step"]) for r in rows] == [
        ("1", "1", "3"), ("1", "2", "6"), ("2", "1", "9"), ("2", "2", "12")]
    assert set(training.LOG_COLUMNS) == set(rows[0])
    for r in rows:
        assert float(r["loss_g"]) > 0 and 0 < float(r["ssim"]) <= 1 and float(r["psnr"]) > 0
    assert rows[0]["loss_d"] == "" and rows[0]["d_real"] == ""
    for r in rows[2:]:
        assert 0 < float(r["d_real"]) < 1 and 0 < float(r["d_fake"]) < 1 and float(r["loss_d"]) > 0
    # stage 2: lr 1e-4, dropped to 1e-5 for the second half (MultiStepLR)
    lr1 = cfg.stage1.lr
    assert [float(r["lr"]) for r in rows] == pytest.approx([lr1, lr1, 1e-4, 1e-5])

    # The checkpoint is safe to load (weights_only) and checkpoints.load_generator reads it.
    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert (ckpt["format_version"], ckpt["stage"], ckpt["epoch"], ckpt["global_step"]) == (1, 2, 2, 12)
    for key in ("optimizer_g", "optimizer_d", "scheduler_g", "scheduler_d", "discriminator", "rng",
                "config", "log"):
        assert ckpt[key] is not None, key
    assert ckpt["config"]["runtime"]["steps_per_epoch"] == 3 and ckpt["config"]["seed"] == 0
    g = checkpoints.load_generator(out / "checkpoint.pth")
    final = checkpoints.load_generator(out / "generator_stage2.pth")
    for a, b in zip(g.state_dict().values(), final.state_dict().values()):
        assert torch.equal(a, b)
    # stage 1 and stage 2 generators differ: stage 2 really trained the stage-1 weights further
    s1 = _state(out / "generator_stage1.pth")
    assert any(not torch.equal(s1[k], v) for k, v in final.state_dict().items())
    saved_cfg = json.loads((out / "config.json").read_text())
    assert saved_cfg["data"]["train_list"] == tiny_lists["train"]


def test_curves_figure_draws_niqe_beside_psnr_with_gaps_where_a_row_has_none():
    rows = [{"stage": 1, "loss_g": 0.01, "psnr": 25.0, "ssim": 0.7, "niqe": None},
            {"stage": 1, "loss_g": 0.009, "psnr": 25.5, "ssim": 0.72, "niqe": 7.5},
            {"stage": 2, "loss_g": 0.02, "d_real": 0.8, "d_fake": 0.2, "psnr": 25.1, "ssim": 0.7, "niqe": 5.25}]
    fig = training.curves_figure(rows)
    niqe_ax = [ax for ax in fig.axes if ax.get_title().startswith("validation NIQE")]
    assert len(niqe_ax) == 1, [ax.get_title() for ax in fig.axes]
    (line,) = niqe_ax[0].get_lines()[:1]
    np.testing.assert_array_equal(line.get_ydata(), [np.nan, 7.5, 5.25])
    # the stage boundary is marked in the NIQE panel too
    assert any(list(l.get_xdata()) == [2.5, 2.5] for l in niqe_ax[0].get_lines())

    no_niqe = training.curves_figure([{k: v for k, v in r.items() if k != "niqe"} for r in rows])
    ax = [a for a in no_niqe.axes if a.get_title().startswith("validation NIQE")][0]
    assert not [l for l in ax.get_lines() if l.get_label() == "NIQE"]
    assert "no NIQE" in ax.texts[0].get_text()


def test_keep_generators_saves_every_epochs_generator(tiny_lists, tmp_path):
    out = tmp_path / "run"
    solver.train(tiny_config(tiny_lists, tmp_path / "plain"))
    assert not (tmp_path / "plain" / "generators").exists()  # off by default
    solver.train(tiny_config(tiny_lists, out, keep_generators=True))
    names = sorted(p.name for p in (out / "generators").iterdir())
    assert names == [f"stage{s}_epoch000{e}.pth" for s in (1, 2) for e in (1, 2)]
    rows = _read_csv(out / "log.csv")
    for name, row in zip(names, rows):
        kept = torch.load(out / "generators" / name, map_location="cpu", weights_only=True)
        assert kept["global_step"] == int(row["step"])
        assert kept["metrics"]["psnr"] == pytest.approx(float(row["psnr"]))
    # the last epoch of each stage is the stage's generator
    for stage in (1, 2):
        kept = checkpoints.load_generator(out / "generators" / f"stage{stage}_epoch0002.pth").state_dict()
        final = _state(out / f"generator_stage{stage}.pth")
        assert all(torch.equal(v, final[k]) for k, v in kept.items())
    first = _state(out / "generators" / "stage2_epoch0001.pth")
    assert any(not torch.equal(v, final[k]) for k, v in first.items())


def test_random_translate_moves_the_batch_by_a_random_offset_within_the_range():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8).requires_grad_(True)
    assert losses.random_translate(x, 0) is x
    torch.manual_seed(0)
    seen = set()
    for _ in range(200):
        y = losses.random_translate(x, 2)
        assert y.shape == x.shape
        padded = torch.nn.functional.pad(x.detach(), (2, 2, 2, 2), mode="replicate")
        matches = [(dy, dx) for dy in range(4) for dx in range(4)
                   if torch.equal(y.detach(), padded[:, :, dy:dy + 8, dx:dx + 8])]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {(dy, dx) for dy in range(4) for dx in range(4)}  # shifts -2..1, each phase mod 4
    losses.random_translate(x, 2).sum().backward()
    assert x.grad is not None and x.grad.sum() == x.numel()  # every pixel reaches D (edges repeat)


def test_d_translate_is_checked_and_a_run_with_it_trains(tiny_lists, tmp_path):
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="d_translate"):
            solver.check_config(tiny_config(tiny_lists, tmp_path / "bad", stage2={"epochs": 2, "d_translate": bad}))
    plain = tmp_path / "plain"
    solver.train(tiny_config(tiny_lists, plain))
    shifted = tmp_path / "shifted"
    solver.train(tiny_config(tiny_lists, shifted, stage2={"epochs": 2, "d_translate": 2}))
    rows = _read_csv(shifted / "log.csv")
    assert all(0 < float(r["d_real"]) < 1 for r in rows[2:])
    # same seed: the stage-1 generators agree, stage 2 differs because D saw shifted patches
    s1_shifted = _state(shifted / "generator_stage1.pth")
    assert all(torch.equal(v, s1_shifted[k]) for k, v in _state(plain / "generator_stage1.pth").items())
    s2_plain, s2_shifted = _state(plain / "generator_stage2.pth"), _state(shifted / "generator_stage2.pth")
    assert any(not torch.equal(v, s2_shifted[k]) for k, v in s2_plain.items())


def test_existing_run_is_not_overwritten_without_resume(tiny_lists, tmp_path):
    cfg = tiny_config(tiny_lists, tmp_path / "run", preset="mse", stage1={"epochs": 1})
    solver.train(cfg)
    with pytest.raises(FileExistsError, match="resume"):
        solver.train(cfg)
    assert not (tmp_path / "run" / "train.lock").exists()


def test_two_runs_cannot_share_a_folder(tiny_lists, tmp_path):
    pytest.importorskip("fcntl")
    cfg = tiny_config(tiny_lists, tmp_path / "run", preset="mse", stage1={"epochs": 1})
    holder = checkpoints.lock_run_folder(tmp_path / "run")  # as if another process were training there
    try:
        with pytest.raises(RuntimeError, match="another training run"):
            solver.train(cfg)
    finally:
        holder.close()
    solver.train(cfg)  # free again


def test_same_seed_same_weights_and_workers_do_not_change_the_data(tiny_lists, tmp_path):
    a = tiny_config(tiny_lists, tmp_path / "a", preset="mse", stage1={"epochs": 1})
    b = tiny_config(tiny_lists, tmp_path / "b", preset="mse", stage1={"epochs": 1},
                    data={"workers": 2, "persistent_workers": True})
    solver.train(a)
    solver.train(b)
    sa, sb = _state(tmp_path / "a" / "checkpoint.pth"), _state(tmp_path / "b" / "checkpoint.pth")
    for k in sa:
        assert torch.allclose(sa[k], sb[k], atol=1e-6), k


def test_pretrained_generator_skips_stage1(tiny_lists, tmp_path, monkeypatch):
    solver.train(tiny_config(tiny_lists, tmp_path / "pre", preset="mse", stage1={"epochs": 1}))
    pretrained = _state(tmp_path / "pre" / "generator_stage1.pth")
    seen = {}
    real_step = solver.gan_step

    def spy(generator, *args, **kwargs):  # the weights stage 2 starts from
        seen.setdefault("start", {k: v.clone() for k, v in utils.unwrap(generator).state_dict().items()})
        return real_step(generator, *args, **kwargs)

    monkeypatch.setattr(solver, "gan_step", spy)
    cfg = tiny_config(tiny_lists, tmp_path / "gan", pretrained=str(tmp_path / "pre" / "generator_stage1.pth"),
                      stage2={"epochs": 1})
    solver.train(cfg)
    assert all(torch.equal(pretrained[k], seen["start"][k]) for k in pretrained)
    rows = _read_csv(tmp_path / "gan" / "log.csv")
    assert [r["stage"] for r in rows] == ["2"]
    assert not (tmp_path / "gan" / "generator_stage1.pth").exists()


_KILL_SCRIPT = """
import json, os, signal, sys
sys.path.insert(0, {repo!r})
import checkpoints
import solver
from easydict import EasyDict

config = EasyDict(json.load(open(sys.argv[1])))
kill_at = tuple(json.loads(sys.argv[2]))
save = checkpoints.save_state

def save_then_die(path, state):
    save(path, state)
    if os.path.basename(path) == "checkpoint.pth" and (state["stage"], state["epoch"]) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

checkpoints.save_state = save_then_die
solver.train(config)
"""


def _run_until_killed(config, kill_at, tmp_path) -> subprocess.CompletedProcess:
    script = tmp_path / "kill_run.py"
    script.write_text(_KILL_SCRIPT.format(repo=str(REPO)))
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(json.dumps(checkpoints.to_plain(config)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), str(cfg_file), json.dumps(kill_at)],
                          capture_output=True, text=True, timeout=300, env=env)


def test_resume_after_sigkill_equals_uninterrupted_run(tiny_lists, tmp_path):
    torch.manual_seed(123)  # the runs must not depend on the global RNG state of the caller
    ref = tiny_config(tiny_lists, tmp_path / "ref")
    solver.train(ref)

    run = tiny_config(tiny_lists, tmp_path / "run")
    # Killed right after the first epoch's checkpoint, then again in stage 2.
    for kill_at, expect in (((1, 1), (1, 1)), ((2, 1), (2, 1))):
        if kill_at != (1, 1):
            run.resume = True
        proc = _run_until_killed(run, kill_at, tmp_path)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        ckpt = torch.load(tmp_path / "run" / "checkpoint.pth", map_location="cpu", weights_only=True)
        assert (ckpt["stage"], ckpt["epoch"]) == expect
    assert not (tmp_path / "run" / "generator_stage2.pth").exists()

    torch.manual_seed(999)
    run.resume = True
    solver.train(run)

    for name, key in (("generator_stage1.pth", "generator"), ("generator_stage2.pth", "generator"),
                      ("checkpoint.pth", "discriminator")):
        a, b = _state(tmp_path / "ref" / name, key), _state(tmp_path / "run" / name, key)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), f"{name} {key} {k}"
    ref_rows, run_rows = _read_csv(tmp_path / "ref" / "log.csv"), _read_csv(tmp_path / "run" / "log.csv")
    assert len(ref_rows) == len(run_rows) == 4
    for r1, r2 in zip(ref_rows, run_rows):
        for col in ("stage", "epoch", "step", "lr", "loss_g", "loss_d", "d_real", "psnr"):
            if r1[col]:
                assert float(r1[col]) == pytest.approx(float(r2[col]), rel=1e-5, abs=1e-7), col


def test_resume_of_a_finished_run_changes_nothing(tiny_lists, tmp_path):
    cfg = tiny_config(tiny_lists, tmp_path / "run", preset="mse", stage1={"epochs": 1})
    solver.train(cfg)
    before = _state(tmp_path / "run" / "checkpoint.pth")
    cfg.resume = True
    solver.train(cfg)
    after = _state(tmp_path / "run" / "checkpoint.pth")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(_read_csv(tmp_path / "run" / "log.csv")) == 1


def _count_calls(monkeypatch, fail_on_call: int, exc):
    """Make losses.pixel_loss return/raise ``exc`` on its ``fail_on_call``-th call."""
    real = losses.pixel_loss
    calls = {"n": 0}

    def patched(sr, hr, kind="mse"):
        calls["n"] += 1
        if calls["n"] == fail_on_call:
            if isinstance(exc, BaseException) or (isinstance(exc, type) and issubclass(exc, BaseException)):
                raise exc
            return real(sr, hr, kind) * exc
        return real(sr, hr, kind)

    monkeypatch.setattr(solver, "pixel_loss", patched)
    return calls


def _watch_checkpoints(monkeypatch) -> list[str]:
    """Record the sha256 of checkpoint.pth after every save."""
    hashes: list[str] = []
    real = checkpoints.save_state

    def recording(path, state):
        real(path, state)
        if Path(path).name == "checkpoint.pth":
            hashes.append(_sha(path))

    monkeypatch.setattr(checkpoints, "save_state", recording)
    return hashes


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tiny_lists, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_lists, tmp_path / "run", preset="mse", stage1={"epochs": 3})
    hashes = _watch_checkpoints(monkeypatch)
    _count_calls(monkeypatch, fail_on_call=5, exc=float("nan"))  # epoch 2, its 2nd step (global 5)
    with pytest.raises(solver.NonFiniteLossError) as err:
        solver.train(cfg)
    msg = str(err.value)
    assert "content loss" in msg and "nan" in msg and "stage 1" in msg and "epoch 2" in msg and "step 5" in msg
    out = tmp_path / "run"
    assert len(hashes) == 1 and _sha(out / "checkpoint.pth") == hashes[0]
    assert torch.load(out / "checkpoint.pth", weights_only=True)["epoch"] == 1
    assert len(_read_csv(out / "log.csv")) == 1
    assert not list(out.glob(".*")), "temporary files left behind"


def test_exploding_learning_rate_is_caught(tiny_lists, tmp_path):
    cfg = tiny_config(tiny_lists, tmp_path / "run", preset="srgan-mse",
                      stage1={"epochs": 0}, stage2={"epochs": 1, "lr_g": 1e30})
    with pytest.raises(solver.NonFiniteLossError, match=r"stage 2, epoch 1, step [23]"):
        solver.train(cfg)
    assert not (tmp_path / "run" / "checkpoint.pth").exists()


def test_ctrl_c_keeps_the_last_checkpoint_and_leaves_no_partial_files(tiny_lists, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_lists, tmp_path / "run", preset="mse", stage1={"epochs": 3})
    hashes = _watch_checkpoints(monkeypatch)
    _count_calls(monkeypatch, fail_on_call=4, exc=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        solver.train(cfg)
    out = tmp_path / "run"
    assert len(hashes) == 1 and _sha(out / "checkpoint.pth") == hashes[0]
    assert not (out / "generator_stage1.pth").exists()
    assert not list(out.glob(".*")), "temporary files left behind"
    monkeypatch.undo()
    cfg.resume = True
    solver.train(cfg)  # and the run can be continued
    assert [r["epoch"] for r in _read_csv(out / "log.csv")] == ["1", "2", "3"]


def test_interrupted_checkpoint_write_keeps_the_previous_one(tiny_lists, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_lists, tmp_path / "run", preset="mse", stage1={"epochs": 2})
    hashes = _watch_checkpoints(monkeypatch)
    real_save = torch.save
    calls = {"n": 0}

    def dying_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            Path(f).write_bytes(b"partial")
            raise KeyboardInterrupt  # interrupted in the middle of writing
        calls["n"] += 1
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        solver.train(cfg)
    out = tmp_path / "run"
    assert _sha(out / "checkpoint.pth") == hashes[0]
    assert torch.load(out / "checkpoint.pth", weights_only=True)["epoch"] == 1
    assert not list(out.glob(".*.tmp"))


def test_vgg_preset_without_weights_fails_before_training(tiny_lists, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    cfg = tiny_config(tiny_lists, tmp_path / "run", preset="srgan-vgg54")
    with pytest.raises(RuntimeError, match="VGG19"):
        solver.train(cfg)
    assert not (tmp_path / "run" / "checkpoint.pth").exists()


def test_vgg_and_esrgan_presets_train_with_a_random_vgg(tiny_lists, tmp_path):
    # random_init=True is for tests only: it exercises the code path, not a perceptual loss.
    cfg = tiny_config(tiny_lists, tmp_path / "esr", preset="esrgan", vgg={"random_init": True},
                      stage1={"epochs": 1}, stage2={"epochs": 1}, data={"patch_size": 32},
                      model={"generator": {"name": "RRDBNet", "kwargs": {"scale": 4, "n_blocks": 1,
                                                                          "channels": 8, "growth": 4}},
                             "discriminator": {"name": "VGGStyleDiscriminator", "kwargs": {"channels": 4}}})
    solver.train(cfg)
    esr = tmp_path / "esr"
    rows = _read_csv(esr / "log.csv")
    assert [r["stage"] for r in rows] == ["1", "2"]
    # stage 2 optimised ESRGAN's sum: VGG54 (L1) + 5e-3 RaGAN + 1e-2 L1 pixel, each term present
    row = {k: float(v) for k, v in rows[1].items() if v}
    assert row["loss_g"] == pytest.approx(row["loss_content"] + 5e-3 * row["loss_adv"] + 1e-2 * row["loss_pixel"],
                                          rel=1e-5)
    assert row["loss_content"] != pytest.approx(row["loss_pixel"])  # the content term is the VGG's, not L1
    # both networks were trained: G moved from its seeded start in stage 1 and again in stage 2, D from its own
    torch.manual_seed(cfg.seed)
    g0 = models.build_generator(cfg.model.generator).state_dict()
    torch.manual_seed(cfg.seed + 1)
    d0 = models.build_discriminator(cfg.model.discriminator).state_dict()
    g1, g2 = _state(esr / "generator_stage1.pth"), _state(esr / "generator_stage2.pth")
    d2 = _state(esr / "checkpoint.pth", "discriminator")
    for before, after in ((g0, g1), (g1, g2), (d0, d2)):
        assert before.keys() == after.keys()
        assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())

    cfg = tiny_config(tiny_lists, tmp_path / "vgg22", preset="vgg22", vgg={"random_init": True},
                      stage1={"epochs": 1}, stage2={"epochs": 1})
    solver.train(cfg)
    rows = _read_csv(tmp_path / "vgg22" / "log.csv")
    assert rows[1]["loss_d"] == "" and rows[1]["loss_adv"] == ""  # no discriminator, no adversarial term
    assert float(rows[1]["loss_g"]) == pytest.approx(float(rows[1]["loss_content"]), rel=1e-6)  # VGG22 alone
    assert _state(tmp_path / "vgg22" / "checkpoint.pth", "discriminator") is None
    g1, g2 = _state(tmp_path / "vgg22" / "generator_stage1.pth"), _state(tmp_path / "vgg22" / "generator_stage2.pth")
    assert any(not torch.equal(g1[k], g2[k]) for k in g1 if g1[k].is_floating_point())  # the VGG loss trained G


def test_cli_runs_and_extends_a_run_with_resume(tiny_lists, tmp_path, capsys):
    out = tmp_path / "cli"
    common = ["--train-list", tiny_lists["train"], "--val-list", tiny_lists["val"], "--batch-size", "4",
              "--patch-size", "16", "--patches-per-image", "4", "--workers", "0", "--device", "cpu", "--threads", "1", "--compile", "off",
              "--set", "model.generator.kwargs.n_blocks=1", "model.generator.kwargs.channels=8"]
    assert solver.main(["--preset", "mse", "--out", str(out), "--epochs", "1", *common]) == 0
    # continue the same run for one more epoch: only --out, --resume and the new length
    assert solver.main(["--out", str(out), "--resume", "--epochs", "2"]) == 0
    assert "done" in capsys.readouterr().out
    # identical to a run of 2 epochs in one go
    assert solver.main(["--preset", "mse", "--out", str(tmp_path / "once"), "--epochs", "2", *common]) == 0
    a, b = _state(out / "generator_stage1.pth"), _state(tmp_path / "once" / "generator_stage1.pth")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["preset"] == "mse" and cfg["profile"] == "full" and cfg["stage1"]["epochs"] == 2
    assert cfg["stage1"]["lr"] == 1e-4 and cfg["data"]["patch_size"] == 16


def test_lr_given_on_resume_replaces_the_saved_rate(tiny_lists, tmp_path, capsys):
    # stage 1, through the command line: 1 epoch at the preset's lr, then --resume --lr
    out = tmp_path / "cli"
    common = ["--train-list", tiny_lists["train"], "--val-list", tiny_lists["val"], "--batch-size", "4",
              "--patch-size", "16", "--patches-per-image", "4", "--workers", "0", "--device", "cpu",
              "--threads", "1", "--compile", "off",
              "--set", "model.generator.kwargs.n_blocks=1", "model.generator.kwargs.channels=8"]
    assert solver.main(["--preset", "mse", "--out", str(out), "--epochs", "1", *common]) == 0
    assert solver.main(["--out", str(out), "--resume", "--epochs", "3", "--lr", "2e-5"]) == 0
    assert "stage 1 lr 0.0001 -> 2e-05" in capsys.readouterr().out
    rows = _read_csv(out / "log.csv")
    assert [float(r["lr"]) for r in rows] == [1e-4, 2e-5, 2e-5]
    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert ckpt["optimizer_g"]["param_groups"][0]["lr"] == 2e-5
    assert ckpt["config"]["stage1"]["lr"] == 2e-5
    # resuming again with the same rate changes nothing and says nothing
    assert solver.main(["--out", str(out), "--resume", "--epochs", "4"]) == 0
    assert "->" not in capsys.readouterr().out
    assert float(_read_csv(out / "log.csv")[-1]["lr"]) == 2e-5

    # stage 2: generator and discriminator rates each follow their own setting
    cfg = tiny_config(tiny_lists, tmp_path / "gan", stage2={"epochs": 1})
    solver.train(cfg)
    cfg = tiny_config(tiny_lists, tmp_path / "gan", stage2={"epochs": 2, "lr_g": 3e-5, "lr_d": 7e-5})
    cfg.resume = True
    solver.train(cfg)
    ckpt = torch.load(tmp_path / "gan" / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert ckpt["optimizer_g"]["param_groups"][0]["lr"] == pytest.approx(3e-5)
    assert ckpt["optimizer_d"]["param_groups"][0]["lr"] == pytest.approx(7e-5)
    assert float(_read_csv(tmp_path / "gan" / "log.csv")[-1]["lr"]) == pytest.approx(3e-5)


def test_srgan_mse_content_term_is_the_papers_mse_on_minus_one_to_one():
    # Ledig et al. compute the SRGAN-MSE content loss on HR images in [-1, 1]; the kit works
    # in [0, 1], so the preset's weight must make up for it or the 1e-3 GAN term is 4x too strong.
    cfg = solver.make_config("srgan-mse")
    torch.manual_seed(0)
    sr, hr = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    kit = cfg.stage2.content_weight * losses.pixel_loss(sr, hr, "mse")
    paper = torch.nn.functional.mse_loss(2 * sr - 1, 2 * hr - 1)
    assert kit.item() == pytest.approx(paper.item(), rel=1e-6)
    assert cfg.stage2.adversarial_weight == 1e-3
