"""solver.py as users meet it: the steps students write, what a run refuses, one-line errors,
temp files, the scale option and bf16 on the CPU.

Runs are as tiny as in test_solver.py (SRResNet 1 block x 8 channels, 3 steps per epoch).
"""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoints
import datasets
import losses
import models
import solver
import training
import utils
from create_data_lists import write_data_list
from test_solver import _read_csv, _smooth_image, tiny_config, tiny_lists  # noqa: F401,F811  (fixture)

REPO = Path(__file__).resolve().parents[1]


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _cli_args(lists: dict, out: Path, preset: str = "mse", epochs: int = 1) -> list[str]:
    return ["--preset", preset, "--out", str(out), "--epochs", str(epochs), "--train-list", lists["train"],
            "--val-list", lists["val"], "--batch-size", "4", "--patch-size", "16", "--patches-per-image", "4",
            "--workers", "0", "--device", "cpu", "--threads", "1", "--compile", "off",
            "--set", "model.generator.kwargs.n_blocks=1", "model.generator.kwargs.channels=8"]


def _one_error_line(capsys) -> str:
    """stderr must hold exactly one line ``error: ...`` (no traceback); returns it."""
    captured = capsys.readouterr()
    # progress bars (stderr too) of the epochs done before the error do not count
    text = captured.err.replace("\r", "\n").replace("\x1b[A", "")
    lines = [line for line in text.splitlines() if line.strip() and "|" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


# ------------------------------------------------------------------------------ the steps


def test_pretrain_step_lowers_the_pixel_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    g = models.SRResNet(scale=4, n_blocks=1, channels=8)
    hr = torch.rand(4, 3, 16, 16)
    lr = torch.nn.functional.avg_pool2d(hr, 4)
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in g.parameters()]
    losses = [solver.pretrain_step(g, lr, hr, opt, "mse") for _ in range(30)]
    assert all(set(d) == {"loss_pixel"} and d["loss_pixel"].ndim == 0 and not d["loss_pixel"].requires_grad
               for d in losses)
    assert losses[-1]["loss_pixel"] < 0.5 * losses[0]["loss_pixel"]
    assert any(not torch.equal(a, b) for a, b in zip(before, g.parameters()))
    # L1, through a (disabled) GradScaler: the returned loss is the batch's before the update
    with torch.no_grad():
        expected = (g(lr) - hr).abs().mean().item()
    training.attach_grad_scaler(opt, torch.amp.GradScaler("cpu", enabled=False))
    out = solver.pretrain_step(g, lr, hr, opt, "l1")
    assert out["loss_pixel"].item() == pytest.approx(expected, rel=1e-6)


def test_pretrain_step_marks_the_students_region():
    source = Path(solver.__file__).read_text().splitlines()
    start = next(i for i, line in enumerate(source) if line.startswith("def pretrain_step("))
    end = next(i for i in range(start + 1, len(source)) if source[i].startswith("def "))
    body = [line.strip() for line in source[start:end]]
    assert body.count("### BEGIN SOLUTION") == 1 and body.count("### END SOLUTION") == 1
    inside = body[body.index("### BEGIN SOLUTION") + 1: body.index("### END SOLUTION")]
    assert any("backward" in line for line in inside) and inside[-1].startswith("return")


def test_stage1_runs_pretrain_step_once_per_batch_and_basic_mode_never(tiny_lists, tmp_path, monkeypatch):
    calls = []
    real = solver.pretrain_step

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(solver, "pretrain_step", counting)
    solver.train(tiny_config(tiny_lists, tmp_path / "two", stage1={"epochs": 2}, stage2={"epochs": 1}))
    assert len(calls) == 2 * 3  # 2 epochs of 3 steps

    def forbidden(*args, **kwargs):
        raise AssertionError("the basic mode must not pre-train the generator")

    monkeypatch.setattr(solver, "pretrain_step", forbidden)
    solver.train(tiny_config(tiny_lists, tmp_path / "basic", stage1={"epochs": 0}, stage2={"epochs": 2}))
    rows = _read_csv(tmp_path / "basic" / "log.csv")
    assert [r["stage"] for r in rows] == ["2", "2"] and all(float(r["loss_d"]) > 0 for r in rows)
    assert not (tmp_path / "basic" / "generator_stage1.pth").exists()


def test_d_step_and_g_step_update_their_own_network_and_return_loss_dicts():
    torch.manual_seed(0)
    g = models.SRResNet(scale=4, n_blocks=1, channels=8)
    d = models.Discriminator(channels=8, fc_size=16)
    lr, hr = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 16, 16)
    opt_g, opt_d = torch.optim.Adam(g.parameters(), 1e-3), torch.optim.Adam(d.parameters(), 1e-3)
    cfg2 = solver.make_config("srgan-mse").stage2
    g_before, d_before = [p.clone() for p in g.parameters()], [p.clone() for p in d.parameters()]
    sr = g(lr)
    out_d = solver.d_step(d, hr, sr, opt_d)
    assert set(out_d) == {"loss_d", "d_real", "d_fake"} and 0 < out_d["d_real"] < 1
    assert all(torch.equal(a, b) for a, b in zip(g_before, g.parameters()))  # D's update left G alone
    d_after = [p.clone() for p in d.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(d_before, d_after))
    out_g = solver.g_step(sr, hr, training.DiscriminatorInput(d, frozen=True), losses.ContentLoss("mse"), opt_g,
                          **solver.loss_weights(cfg2))
    assert set(out_g) == {"loss_g", "loss_content", "loss_adv"}
    assert out_g["loss_g"].item() == pytest.approx(
        4.0 * out_g["loss_content"].item() + 1e-3 * out_g["loss_adv"].item(), rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(d_after, d.parameters()))  # G's update left D alone
    assert any(not torch.equal(a, b) for a, b in zip(g_before, g.parameters()))


# ------------------------------------------------------------------------------ previous runs


def test_a_fresh_run_never_overwrites_another_runs_results(tiny_lists, tmp_path, capsys):
    out = tmp_path / "run"
    assert solver.main(_cli_args(tiny_lists, out)) == 0
    (out / "checkpoint.pth").unlink()  # a finished run whose checkpoint was deleted
    before = {name: _sha(out / name) for name in ("generator_stage1.pth", "log.csv", "config.json")}
    capsys.readouterr()
    assert solver.main(_cli_args(tiny_lists, out, epochs=2)) == 2
    line = _one_error_line(capsys)
    assert "--overwrite" in line and "generator_stage1.pth" in line
    assert {name: _sha(out / name) for name in before} == before
    assert not (out / "train.lock").exists()
    # resume=True without a checkpoint does not overwrite them either
    cfg = tiny_config(tiny_lists, out, preset="mse", stage1={"epochs": 1})
    cfg.resume = True
    with pytest.raises(FileExistsError, match="overwrite"):
        solver.train(cfg)
    # --overwrite replaces the old run: its samples do not survive among the new ones
    (out / "samples" / "stage1_epoch0009_old.png").write_bytes(b"old")
    assert solver.main([*_cli_args(tiny_lists, out, epochs=2), "--overwrite"]) == 0
    assert [r["epoch"] for r in _read_csv(out / "log.csv")] == ["1", "2"]
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "stage1_epoch0001_val_0.png", "stage1_epoch0002_val_0.png"]
    assert solver.make_config("mse").overwrite is False


def test_stale_temp_files_are_removed_and_real_files_kept(tiny_lists, tmp_path):
    out = tmp_path / "run"
    solver.train(tiny_config(tiny_lists, out, preset="mse", stage1={"epochs": 1}, keep_generators=True))
    token = "0123456789ab"
    temps = [out / f".checkpoint.{token}.tmp.pth", out / f".log.{token}.tmp.csv", out / f".config.{token}.tmp.json",
             out / f".curves.{token}.tmp.png", out / "samples" / f".stage1_epoch0002_val_0.{token}.tmp.png",
             out / "generators" / f".stage1_epoch0002.{token}.tmp.pth"]
    for path in temps:
        path.write_bytes(b"partial")
    keep = [out / ".hidden_note", out / "notes.tmp.txt", out / "samples" / "stage1_epoch0001_val_0.png"]
    keep[0].write_text("not a temp")
    keep[1].write_text("not a temp either")
    # the name pattern is atomic_write's own
    assert utils.ATOMIC_TEMP_NAME.format(stem="checkpoint", token=token, suffix=".pth") == temps[0].name
    assert sorted(utils.remove_stale_temps(out)) == sorted(temps)
    assert not any(p.exists() for p in temps) and all(p.exists() for p in keep)
    assert utils.remove_stale_temps(tmp_path / "missing") == []
    # and a run removes them when it starts (here: resuming the finished run)
    for path in temps:
        path.write_bytes(b"partial")
    cfg = tiny_config(tiny_lists, out, preset="mse", stage1={"epochs": 2}, keep_generators=True)
    cfg.resume = True
    solver.train(cfg)
    assert not any(p.exists() for p in temps[1:4]) and all(p.exists() for p in keep)
    assert not list(out.glob(".*.tmp*")) and not list((out / "samples").glob(".*"))


_HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
import checkpoints
import losses
import solver
import training
lock = checkpoints.lock_run_folder(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.readline()
"""


def test_a_refused_run_keeps_the_holders_pid_in_the_lock_file(tiny_lists, tmp_path, capsys):
    pytest.importorskip("fcntl")
    out = tmp_path / "run"
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER.format(repo=str(REPO)))
    holder = subprocess.Popen([sys.executable, str(script), str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert (out / "train.lock").read_text().strip() == str(holder.pid)
        assert solver.main(_cli_args(tiny_lists, out)) == 2
        line = _one_error_line(capsys)
        assert "another training run" in line and str(holder.pid) in line
        assert (out / "train.lock").read_text().strip() == str(holder.pid)
    finally:
        holder.communicate("\n", timeout=60)
    assert solver.main(_cli_args(tiny_lists, out)) == 0  # free again


# ------------------------------------------------------------------------------ one-line errors


def _corrupt_checkpoints(folder: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {}
    files["zero-byte"] = folder / "zero.pth"
    files["zero-byte"].write_bytes(b"")
    files["text"] = folder / "text.pth"
    files["text"].write_text("this is not a checkpoint\n")
    flipped = bytearray(data)
    mid = len(flipped) // 2
    flipped[mid:mid + 4096] = bytes(255 - b for b in flipped[mid:mid + 4096])
    files["flipped"] = folder / "flipped.pth"
    files["flipped"].write_bytes(bytes(flipped))
    files["truncated"] = folder / "truncated.pth"
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["foreign dict"] = folder / "foreign.pth"
    torch.save({"model": torch.zeros(3)}, files["foreign dict"])
    files["a tensor"] = folder / "tensor.pth"
    torch.save(torch.zeros(3), files["a tensor"])
    files["a generator file"] = folder / "generator.pth"
    files["a generator file"].write_bytes((good.parent / "generator_stage1.pth").read_bytes())
    return files


def test_unusable_checkpoint_on_resume_is_one_line(tiny_lists, tmp_path, capsys):
    out = tmp_path / "run"
    assert solver.main(_cli_args(tiny_lists, out)) == 0
    good = out / "checkpoint.pth"
    for kind, path in _corrupt_checkpoints(tmp_path, good).items():
        run = tmp_path / f"resume-{kind.replace(' ', '-')}"
        run.mkdir()
        (run / "checkpoint.pth").write_bytes(path.read_bytes())
        capsys.readouterr()
        assert solver.main(["--out", str(run), "--resume", "--epochs", "2"]) == 2, kind
        line = _one_error_line(capsys)
        if kind != "flipped" or "resume" in line:  # flipped bytes may also break the zip directory
            assert str(run / "checkpoint.pth") in line, (kind, line)
        assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pth"], kind  # nothing created


def test_missing_list_wrong_scale_and_bad_folders_are_one_line_and_create_nothing(tiny_lists, tmp_path, capsys,
                                                                                   monkeypatch):
    out = tmp_path / "run"
    args = _cli_args(tiny_lists, out)
    missing = [*args, "--train-list", str(tmp_path / "nope" / "train.json")]
    assert solver.main(missing) == 2
    assert "nope/train.json" in _one_error_line(capsys)
    assert solver.main([*args, "--val-list", str(tmp_path / "Set14.json")]) == 2
    assert "--val-list none" in _one_error_line(capsys)
    # the lists are x4; an x2 model is refused before anything is built
    assert solver.main([*args, "--scale", "2"]) == 2
    line = _one_error_line(capsys)
    assert "x4" in line and "x2" in line and "--scale 4" in line
    # a file where the folder should be, and a read-only parent
    (tmp_path / "afile").write_text("x")
    assert solver.main([*_cli_args(tiny_lists, tmp_path / "afile" / "run")]) == 2
    assert "is a file" in _one_error_line(capsys)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == tmp_path else real_access(p, mode))
    assert solver.main(args) == 2
    assert "read-only" in _one_error_line(capsys)
    monkeypatch.undo()
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_one_line(tiny_lists, tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert solver.main(_cli_args(tiny_lists, parent / "run")) == 2
        assert "read-only" in _one_error_line(capsys)
    finally:
        parent.chmod(0o700)


@pytest.mark.parametrize("failure", ["ENOSPC", "torch-short-write"])
def test_full_disk_is_one_line_and_keeps_the_last_checkpoint(tiny_lists, tmp_path, capsys, monkeypatch, failure):
    out = tmp_path / "run"
    real = checkpoints.save_state

    def filling_up(path, state):
        if state.get("epoch") == 2:
            if failure == "ENOSPC":
                raise OSError(errno.ENOSPC, "No space left on device")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4928 vs 4816")
        real(path, state)

    monkeypatch.setattr(checkpoints, "save_state", filling_up)
    assert solver.main(_cli_args(tiny_lists, out, epochs=2)) == 2
    line = _one_error_line(capsys)
    assert "full" in line and "--resume" in line
    assert torch.load(out / "checkpoint.pth", weights_only=True)["epoch"] == 1
    assert not (out / "train.lock").exists()


def test_bare_solver_prints_usage_and_creates_nothing(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "solver.py")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert "usage: python solver.py --preset" in proc.stderr and "--profile quick" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_loader_workers_never_exceed_the_cpus(tiny_lists):
    cfg = solver.make_config("srgan-mse", "quick", data={"workers": 64})
    from_list = datasets.TrainDataset(tiny_lists["train"], scale=4, patch_size=16, patches_per_image=4)
    loader = training._make_loader(from_list, training.SeededSampler(len(from_list), 0), 4, cfg.data,
                                 torch.device("cpu"))
    assert loader.num_workers == min(64, training._usable_cpus()) <= (os.cpu_count() or 1)
    assert solver.make_config("srgan-mse", "quick").data.workers == 0


# ------------------------------------------------------------------------------ scale


def test_scale_is_one_option():
    cfg = solver.make_config("srgan-mse", "quick", scale=2)
    assert cfg.scale == 2 and cfg.model.generator.kwargs.scale == 2
    assert models.build_generator(cfg.model.generator).scale == 2
    cfg = solver.make_config("esrgan", **{"model.generator.kwargs.scale": 3})
    assert cfg.scale == 3 and cfg.model.generator.kwargs.scale == 3
    with pytest.raises(ValueError, match="differ"):
        solver.make_config("mse", scale=2, **{"model.generator.kwargs.scale": 3})
    bad = solver.make_config("mse")
    bad.model.generator.kwargs.scale = 8
    with pytest.raises(ValueError, match="differ"):
        solver.check_config(bad)
    args = solver.parse_args(["--preset", "mse", "--scale", "2"])
    assert solver.config_from_args(args).model.generator.kwargs.scale == 2


def test_cli_scale_2_trains_an_x2_generator(tmp_path, capsys):
    rng = np.random.default_rng(1)
    items = []
    for k in range(3):
        path = tmp_path / f"train_{k}.png"
        utils.save_image(_smooth_image(rng, 48, 48), path)
        items.append({"name": f"train_{k}", "hr": str(path), "lr": None})
    utils.save_image(_smooth_image(rng, 32, 32), tmp_path / "val_0.png")
    write_data_list(tmp_path / "train.json", "train", 2, items)
    write_data_list(tmp_path / "val.json", "val", 2, [{"name": "val_0", "hr": str(tmp_path / "val_0.png"), "lr": None}])
    lists = {"train": str(tmp_path / "train.json"), "val": str(tmp_path / "val.json")}
    out = tmp_path / "x2"
    assert solver.main([*_cli_args(lists, out, preset="srgan-mse"), "--scale", "2", "--stage1-epochs", "1",
                        "--stage2-epochs", "1", "--set", "model.generator.kwargs.n_blocks=1",
                        "model.generator.kwargs.channels=8", "model.discriminator.kwargs.channels=8",
                        "model.discriminator.kwargs.fc_size=16"]) == 0
    g = checkpoints.load_generator(out / "generator_stage2.pth")
    assert g.scale == 2 and tuple(g(torch.rand(1, 3, 8, 8)).shape) == (1, 3, 16, 16)
    assert float(_read_csv(out / "log.csv")[-1]["psnr"]) > 0
    # the x2 lists refuse an x4 model
    capsys.readouterr()
    assert solver.main([*_cli_args(lists, tmp_path / "x4"), "--scale", "4"]) == 2
    assert "x2" in _one_error_line(capsys) and not (tmp_path / "x4").exists()


# ------------------------------------------------------------------------------ bf16 on the CPU


def test_amp_auto_uses_bf16_on_the_cpu_only_where_it_is_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)
    assert training._amp_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    assert training._amp_dtype("auto", cpu) is None
    assert training._amp_dtype("bf16", cpu) == torch.bfloat16
    assert training._amp_dtype("off", cpu) is None and training._amp_dtype("fp16", cpu) is None


def test_bf16_training_on_the_cpu_validates_in_fp32(tiny_lists, tmp_path, monkeypatch):
    seen = []
    real_build = models.build_generator

    def build(arch):
        net = real_build(arch)
        net.register_forward_hook(lambda m, inp, out: seen.append((m.training, out.dtype)))
        return net

    monkeypatch.setattr(models, "build_generator", build)
    cfg = tiny_config(tiny_lists, tmp_path / "bf16", stage1={"epochs": 1}, stage2={"epochs": 1},
                      speed={"threads": 1, "amp": "bf16"})
    solver.train(cfg)
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}
    assert {dtype for training, dtype in seen if not training} == {torch.float32}
    rows = _read_csv(tmp_path / "bf16" / "log.csv")
    assert all(np.isfinite(float(r["loss_g"])) and float(r["psnr"]) > 0 for r in rows)
    ckpt = torch.load(tmp_path / "bf16" / "checkpoint.pth", weights_only=True)
    assert ckpt["scaler_g"] is None and ckpt["scaler_d"] is None  # GradScaler: fp16 only
    assert ckpt["config"]["runtime"]["amp"] == "bfloat16"


def test_an_enabled_grad_scaler_skips_a_non_finite_step_and_the_epoch_stops_on_it():
    torch.manual_seed(0)
    g = models.SRResNet(scale=4, n_blocks=1, channels=8)
    lr, hr = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 16, 16)
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = [p.detach().clone() for p in g.parameters()]
    training.attach_grad_scaler(opt, scaler)
    solver.pretrain_step(g, lr, hr, opt, "mse")
    assert any(not torch.equal(a, b) for a, b in zip(before, g.parameters())) and scaler.get_scale() == 2.0**10
    after = [p.detach().clone() for p in g.parameters()]
    bad_hr = hr.clone()
    bad_hr[0, 0, 0, 0] = float("inf")
    out = solver.pretrain_step(g, lr, bad_hr, opt, "mse")
    assert not torch.isfinite(out["loss_pixel"])
    assert all(torch.equal(a, b) for a, b in zip(after, g.parameters()))  # the step was skipped
    assert scaler.get_scale() == 2.0**9  # and the scale backed off
    # the epoch wrapper stops the run on that loss, naming it
    ctx = training.TrainContext(device=torch.device("cpu"), amp_dtype=None, channels_last=False, progress=False,
                                log_every=1, check_every=1, global_step=0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [100])
    with pytest.raises(solver.NonFiniteLossError, match="content loss is inf in stage 1, epoch 1, step 2"):
        training.train_epoch([(lr, hr), (lr, bad_hr)], ctx, 1, 1,
                             lambda lr, hr: solver.pretrain_step(g, lr, hr, opt), [sched], [g])


def test_a_run_stopped_before_its_first_checkpoint_leaves_nothing_behind(tiny_lists, tmp_path):
    cfg = tiny_config(tiny_lists, tmp_path / "run", preset="srgan-mse", stage1={"epochs": 0},
                      stage2={"epochs": 1, "lr_g": 1e30})
    with pytest.raises(solver.NonFiniteLossError):
        solver.train(cfg)
    assert not (tmp_path / "run").exists()
    cfg.stage2.lr_g = 1e-4
    solver.train(cfg)  # the same folder is a fresh run again: nothing to overwrite
    assert [r["stage"] for r in _read_csv(tmp_path / "run" / "log.csv")] == ["2"]
