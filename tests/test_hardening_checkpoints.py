"""Checkpoint files whose digest is valid but whose contents are wrong or hostile: architecture
records that would exhaust memory, weights of another network, malformed training state, and the
advice given for a file the safe loader refuses. Every one ends in one line, before any network is
built or any training step runs."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoints
import models
import solver
from test_checkpoint_safety import _assert_one_line as _one_line
from test_solver import tiny_config, tiny_lists  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]




def _generator_file(tmp_path: Path, name: str = "g.pth", arch: dict | None = None, weights=None) -> Path:
    net = models.SRResNet(scale=4, n_blocks=1, channels=8)
    record = {"arch": arch if arch is not None else models.generator_arch(net),
              "generator": net.state_dict() if weights is None else weights}
    return checkpoints.save_state(tmp_path / name, record)  # a valid digest: only the contents are wrong


# ---------------------------------------------------------------------- item 7: the architecture record
CAPPED_LOAD = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, sys.argv[1])
    import checkpoints
    vm = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:')][0]
    resource.setrlimit(resource.RLIMIT_AS, (vm + 1024 * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
    try:
        checkpoints.load_generator(sys.argv[2])
    except checkpoints.CheckpointError as err:
        print("refused:", err)
        sys.exit(0)
    print("loaded")
    sys.exit(1)
""")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
@pytest.mark.parametrize("kwargs", [{"n_blocks": 2_000_000}, {"channels": 200_000}])
def test_a_huge_architecture_record_is_refused_before_anything_is_built(tmp_path, kwargs):
    arch = {"name": "SRResNet", "kwargs": {"scale": 4, "n_blocks": 1, "channels": 8, **kwargs}}
    path = _generator_file(tmp_path, arch=arch)
    # 1 GB of address space: building the network would need several
    done = subprocess.run([sys.executable, "-c", CAPPED_LOAD, str(REPO), str(path)], capture_output=True,
                          text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, (done.stdout, done.stderr[-2000:])
    line = done.stdout.strip()
    assert line.startswith("refused:") and "\n" not in line and str(path) in line
    assert next(iter(kwargs)) in line


@pytest.mark.parametrize("arch, words", [
    ({"name": "SRResNet", "kwargs": {"scale": 4, "n_blocks": 3, "channels": 8}}, ["do not fit", "res_blocks.1"]),
    ({"name": "SRResNet", "kwargs": {"scale": 4, "n_blocks": 1, "channels": 16}}, ["do not fit", "head.0.weight"]),
    ({"name": "SRResNet", "kwargs": {"scale": 4, "n_blocks": 1, "channels": 8, "depth": 3}}, ["'depth'"]),
    ({"name": "SRResNet", "kwargs": {"scale": 5, "n_blocks": 1, "channels": 8}}, ["scale"]),
    ({"name": "SRResNet", "kwargs": {"scale": 4, "n_blocks": "1", "channels": 8}}, ["n_blocks"]),
    ({"name": "SRResNet", "kwargs": [4, 1, 8]}, ["kwargs"]),
    ({"name": "os.system"}, ["'os.system'"]),
    ("SRResNet", ["arch"]),
])
def test_an_architecture_record_that_does_not_fit_its_weights_is_one_line(tmp_path, arch, words):
    path = _generator_file(tmp_path, arch=arch)
    with pytest.raises(checkpoints.CheckpointError) as info:
        checkpoints.load_generator(path)
    _one_line(info, str(path), *words)


@pytest.mark.parametrize("weights, words", [
    ([torch.zeros(3)], ["list"]),
    ({"head.0.weight": "not a tensor"}, ["state_dict"]),
    (models.Discriminator(channels=8, fc_size=16).state_dict(), ["do not fit"]),  # another network's weights
])
def test_weights_that_are_not_the_generators_are_one_line(tmp_path, weights, words):
    path = _generator_file(tmp_path, weights=weights)
    with pytest.raises(checkpoints.CheckpointError) as info:
        checkpoints.load_generator(path)
    _one_line(info, str(path), *words)


def test_a_sound_generator_file_still_loads(tmp_path):
    path = _generator_file(tmp_path)
    assert checkpoints.load_generator(path).arch_kwargs == {"scale": 4, "n_blocks": 1, "channels": 8}


# ---------------------------------------------------------------------- item 15: solver.py --pretrained
@pytest.mark.parametrize("case", ["other_network", "mismatch", "unknown_argument", "list"])
def test_pretrained_problems_are_one_line_on_the_command_line(tiny_lists, tmp_path, capsys, case):
    net = models.SRResNet(scale=4, n_blocks=1, channels=8)
    arch, weights = models.generator_arch(net), net.state_dict()
    if case == "other_network":
        weights = models.Discriminator(channels=8, fc_size=16).state_dict()
    elif case == "mismatch":
        arch = {"name": "SRResNet", "kwargs": {"scale": 4, "n_blocks": 2, "channels": 8}}
    elif case == "unknown_argument":
        arch = {"name": "SRResNet", "kwargs": {**arch["kwargs"], "width": 3}}
    else:
        weights = list(weights.values())
    path = checkpoints.save_state(tmp_path / "pretrained.pth", {"arch": arch, "generator": weights})
    out = tmp_path / "run"
    argv = ["--preset", "srgan-mse", "--pretrained", str(path), "--out", str(out), "--stage2-epochs", "1",
            "--train-list", tiny_lists["train"], "--val-list", "none", "--batch-size", "4", "--patch-size", "16",
            "--patches-per-image", "4", "--workers", "0", "--device", "cpu", "--threads", "1", "--compile", "off",
            "--set", "model.generator.kwargs.n_blocks=1", "model.generator.kwargs.channels=8",
            "model.discriminator.kwargs.channels=8", "model.discriminator.kwargs.fc_size=16", "vgg.random_init=true"]
    capsys.readouterr()
    assert solver.main(argv) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "pretrained.pth" in lines[0], captured.err
    assert "Traceback" not in captured.err and not (out / "checkpoint.pth").exists()


# ---------------------------------------------------------------------- item 18: resume a malformed checkpoint
@pytest.fixture(scope="module")
def one_epoch_run(tiny_lists, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    solver.train(tiny_config(tiny_lists, out, preset="mse", stage1={"epochs": 2}))
    ckpt = checkpoints.load_state(out / "checkpoint.pth")
    ckpt["epoch"] = 1  # one of two epochs done: a resume would train the second one
    checkpoints.save_state(out / "checkpoint.pth", ckpt)
    return out


def _break(ckpt: dict, case: str) -> dict:
    if case == "optimizer_none":
        ckpt["optimizer_g"] = None
    elif case == "optimizer_garbage":
        ckpt["optimizer_g"] = {"state": [], "param_groups": "x"}
    elif case == "scheduler":
        ckpt["scheduler_g"] = 3
    elif case == "rng_torch":
        ckpt["rng"]["torch"] = torch.zeros(7, dtype=torch.uint8)
    elif case == "rng_python":
        ckpt["rng"]["python"] = [3, [1, 2], None]
    elif case == "nan_weights":
        key = next(k for k, v in ckpt["generator"].items() if v.is_floating_point())
        ckpt["generator"][key] = torch.full_like(ckpt["generator"][key], float("nan"))
    elif case == "nan_optimizer":
        state = next(iter(ckpt["optimizer_g"]["state"].values()))
        state["exp_avg"] = torch.full_like(state["exp_avg"], float("inf"))
    elif case == "weights_list":
        ckpt["generator"] = list(ckpt["generator"].values())
    elif case == "epoch":
        ckpt["epoch"] = "1"
    return ckpt


@pytest.mark.parametrize("case, words", [
    ("optimizer_none", ["optimizer_g"]), ("optimizer_garbage", ["optimizer_g"]), ("scheduler", ["scheduler_g"]),
    ("rng_torch", ["RNG"]), ("rng_python", ["RNG"]), ("nan_weights", ["NaN/inf"]),
    ("nan_optimizer", ["optimizer_g", "NaN/inf"]), ("weights_list", ["generator"]), ("epoch", ["epoch"]),
])
def test_resume_refuses_a_malformed_checkpoint_before_training(one_epoch_run, tmp_path, capsys, monkeypatch,
                                                               case, words):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("checkpoint.pth", "config.json", "log.csv"):
        if (one_epoch_run / name).exists():
            (out / name).write_bytes((one_epoch_run / name).read_bytes())
    ckpt = _break(checkpoints.load_state(out / "checkpoint.pth"), case)
    checkpoints.save_state(out / "checkpoint.pth", ckpt)  # the digest is recomputed: only the contents are bad
    before = (out / "checkpoint.pth").read_bytes()
    monkeypatch.setattr(solver, "pretrain_step", lambda *a, **k: pytest.fail("trained on a bad checkpoint"))
    with pytest.raises(checkpoints.CheckpointError) as info:
        checkpoints.read_training_checkpoint(out / "checkpoint.pth")
    _one_line(info, str(out / "checkpoint.pth"), *words)
    capsys.readouterr()
    assert solver.main(["--out", str(out), "--resume"]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "checkpoint.pth" in lines[0], captured.err
    assert (out / "checkpoint.pth").read_bytes() == before


def test_a_sound_checkpoint_still_resumes(one_epoch_run, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("checkpoint.pth", "config.json", "log.csv"):
        if (one_epoch_run / name).exists():
            (out / name).write_bytes((one_epoch_run / name).read_bytes())
    assert solver.main(["--out", str(out), "--resume"]) == 0
    assert checkpoints.load_state(out / "checkpoint.pth")["epoch"] == 2


# ---------------------------------------------------------------------- item 22b: convert-trusted
class _System:
    def __reduce__(self):
        return (os.system, ("true",))


def test_convert_trusted_on_an_empty_file_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    assert checkpoints.main(["convert-trusted", str(empty), str(tmp_path / "new.pth")]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "empty" in lines[0] and str(empty) in lines[0]
    assert not (tmp_path / "new.pth").exists()


def test_refusal_advises_convert_trusted_only_for_plain_data(tmp_path):
    data_only = tmp_path / "old.pth"  # e.g. an older kit file: numpy arrays, OrderedDict, torch tensors
    torch.save({"generator": models.SRResNet(4, 1, 8).state_dict(), "rng": np.arange(3)}, data_only)
    with pytest.raises(checkpoints.CheckpointError) as info:
        checkpoints.load_state(data_only)
    _one_line(info, "convert-trusted")
    assert checkpoints.code_globals(data_only) == []

    for protocol in (2, 4):
        evil = tmp_path / f"evil{protocol}.pth"
        if protocol == 2:
            torch.save({"generator": _System()}, evil)
        else:
            evil.write_bytes(pickle.dumps({"generator": _System()}, protocol=4))
        with pytest.raises(checkpoints.CheckpointError) as info:
            checkpoints.load_state(evil)
        message = _one_line(info, str(evil), "contains code", "must not be converted", "system")
        assert "convert-trusted" not in message
        assert checkpoints.code_globals(evil) == [f"{os.system.__module__}.system"]
        # and convert-trusted itself refuses it (converting would run it)
        assert checkpoints.main(["convert-trusted", str(evil), str(tmp_path / "new.pth")]) == 1
        assert not (tmp_path / "new.pth").exists()
