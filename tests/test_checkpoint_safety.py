"""Checkpoint files: no code ever runs from a .pth, flipped bytes and NaN weights are refused.

Every ``.pth`` the kit reads or writes goes through ``checkpoints.save_state`` / ``checkpoints.load_state``.
A file whose pickle would run code when loaded ("malicious pickle") must be refused with one
line from every entry point (``load_state``, ``checkpoints.load_generator``,
``Generator.from_srresnet``, solver's resume and ``--pretrained``), and the code must never
run: the marker file it would create must not exist afterwards.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from easydict import EasyDict

import checkpoints
import models
import solver
import utils
from create_data_lists import write_data_list

REPO = Path(__file__).resolve().parents[1]
SHIPPED_GENERATOR = REPO / "checkpoints" / "srresnet_x4.pth"


class _TouchOnLoad:
    """Pickles as a call of ``Path.touch(marker)``: unpickling it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _malicious_file(tmp_path: Path, name: str = "evil.pth") -> tuple[Path, Path]:
    """A generator/training-checkpoint look-alike whose pickle creates ``marker`` when loaded."""
    marker = tmp_path / f"{name}.marker"
    net = models.SRResNet(scale=4, n_blocks=1, channels=8)
    payload = {"format_version": 1, "arch": models.generator_arch(net), "generator": net.state_dict(),
               "config": _TouchOnLoad(marker)}
    path = tmp_path / name
    torch.save(payload, path)
    # the file really is dangerous: the unsafe loader runs it
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


def _assert_one_line(err: pytest.ExceptionInfo, *words: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for word in words:
        assert word in msg, msg
    return msg


def _flip_middle(path: Path, n: int = 4096) -> None:
    """Invert ``n`` bytes in the middle of the file."""
    data = bytearray(path.read_bytes())
    start = len(data) // 2 - n // 2
    data[start:start + n] = bytes(b ^ 0xFF for b in data[start:start + n])
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------- tiny runs for solver


@pytest.fixture(scope="module")
def tiny_lists(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    train = []
    for k in range(2):
        path = root / f"train_{k}.png"
        utils.save_image(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), path)
        train.append({"name": f"train_{k}", "hr": str(path), "lr": None})
    write_data_list(root / "train.json", "train", 4, train)
    return {"train": str(root / "train.json")}


def _config(lists: dict, out: Path, **overrides) -> EasyDict:
    settings = dict(
        out=str(out), seed=0, device="cpu", log_every=1,
        data={"train_list": lists["train"], "val_list": None, "patch_size": 16, "patches_per_image": 2,
              "batch_size": 4, "workers": 0, "cache_mb": 4, "n_samples": 0},
        model={"generator": {"name": "SRResNet", "kwargs": {"scale": 4, "n_blocks": 1, "channels": 8}},
               "discriminator": {"name": "Discriminator", "kwargs": {"channels": 8, "fc_size": 16}}},
        stage1={"epochs": 1}, speed={"threads": 1})
    settings.update(overrides)
    return solver.make_config("mse", "quick", **settings)


@pytest.fixture(scope="module")
def finished_run(tiny_lists, tmp_path_factory) -> Path:
    """A finished 1-epoch stage-1 run (checkpoint.pth, generator_stage1.pth, log.csv)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    solver.train(_config(tiny_lists, out))
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------- save_state / load_state


def test_save_state_round_trip_keeps_every_value_and_stores_a_digest(tmp_path):
    state = {"w": torch.randn(3, 4), "half": torch.ones(2, dtype=torch.bfloat16), "flag": torch.tensor(True),
             "nested": {"epoch": 3, "lr": 1e-4, "betas": (0.9, 0.999), "name": "x", "none": None},
             "rows": [{"psnr": 30.5}], 7: torch.arange(5)}
    path = checkpoints.save_state(tmp_path / "a" / "s.pth", state)
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw[checkpoints.DIGEST_KEY], str) and len(raw[checkpoints.DIGEST_KEY]) == 64
    loaded = checkpoints.load_state(path)
    assert checkpoints.DIGEST_KEY not in loaded and loaded.keys() == state.keys()
    for key in ("w", "half", "flag", 7):
        assert loaded[key].dtype == state[key].dtype and torch.equal(loaded[key], state[key])
    assert loaded["nested"] == state["nested"] and loaded["rows"] == state["rows"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_digest_depends_on_names_dtypes_shapes_bytes_and_values():
    base = {"a": torch.zeros(2, 3), "epoch": 1}
    digest = checkpoints.state_digest(base)
    assert checkpoints.state_digest({"a": torch.zeros(2, 3), "epoch": 1}) == digest
    for other in ({"b": torch.zeros(2, 3), "epoch": 1}, {"a": torch.zeros(3, 2), "epoch": 1},
                  {"a": torch.zeros(2, 3, dtype=torch.float64), "epoch": 1},
                  {"a": torch.zeros(2, 3).index_fill(1, torch.tensor([2]), 1e-30), "epoch": 1},
                  {"a": torch.zeros(2, 3), "epoch": 2}, {"a": torch.zeros(2, 3), "epoch": 1.0}):
        assert checkpoints.state_digest(other) != digest, other


def test_save_state_refuses_what_the_safe_loader_would_refuse(tmp_path):
    with pytest.raises(TypeError, match="EasyDict"):
        checkpoints.save_state(tmp_path / "s.pth", {"config": EasyDict(lr=1)})
    with pytest.raises(TypeError, match="ndarray"):
        checkpoints.save_state(tmp_path / "s.pth", {"rng": {"keys": np.zeros(3)}})
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("content, words", [
    (None, ["no checkpoint at", "missing.pth"]),
    (b"", ["empty", "0 bytes"]),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", ["text file"]),
    (b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n", ["HTML"]),
    (b"\x00\x01\x02binary junk", ["not a PyTorch file"]),
])
def test_load_state_errors_are_one_line_naming_the_file(tmp_path, content, words):
    path = tmp_path / "missing.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.load_state(path)
    _assert_one_line(err, str(path), *words)


def test_load_state_truncated_and_not_a_dict(tmp_path):
    full = tmp_path / "full.pth"
    checkpoints.save_state(full, {"w": torch.randn(64, 64)})
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.load_state(cut)
    _assert_one_line(err, str(cut), "truncated or corrupted")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.load_state(tmp_path / "list.pth")
    _assert_one_line(err, "list.pth", "not a dict")


def test_missing_file_is_also_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoints.load_state(tmp_path / "nope.pth")


# ---------------------------------------------------------------------- never unpickle code


def test_malicious_pickle_is_refused_by_load_state(tmp_path):
    path, marker = _malicious_file(tmp_path)
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.load_state(path)
    _assert_one_line(err, str(path), "contains code", "never unpickles code", "Python object")
    assert not marker.exists()


def test_malicious_plain_pickle_is_refused(tmp_path):
    """A bare pickle (the pre-zip torch format) holding the same payload."""
    import pickle

    marker = tmp_path / "marker"
    path = tmp_path / "old.pth"
    path.write_bytes(pickle.dumps({"generator": _TouchOnLoad(marker)}, protocol=2))
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.load_generator(path)
    _assert_one_line(err, str(path))
    assert not marker.exists()


def test_malicious_pickle_is_refused_by_load_generator_and_from_srresnet(tmp_path):
    path, marker = _malicious_file(tmp_path)
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.load_generator(path)
    _assert_one_line(err, str(path), "never unpickles code")
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.generator_from_srresnet(path)
    _assert_one_line(err, str(path), "never unpickles code")
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.load_state(path)
    _assert_one_line(err, str(path))
    assert not marker.exists()


def test_malicious_checkpoint_is_refused_on_resume(tiny_lists, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    path, marker = _malicious_file(out, "checkpoint.pth")
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.read_training_checkpoint(path)
    _assert_one_line(err, str(path), "never unpickles code")
    cfg = _config(tiny_lists, out)
    cfg.resume = True
    before = _snapshot(out)
    with pytest.raises(checkpoints.CheckpointError) as err:
        solver.train(cfg)
    _assert_one_line(err, "checkpoint.pth", "never unpickles code")
    assert not marker.exists()
    assert _snapshot(out) == before  # nothing written or overwritten
    # the command line reads the saved config first: the code must not run there either, and the
    # user gets one line, not a traceback
    capsys.readouterr()
    assert solver.main(["--out", str(out), "--resume"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "never unpickles code" in lines[0]
    assert not marker.exists()


def test_malicious_pretrained_generator_is_refused(tiny_lists, tmp_path):
    path, marker = _malicious_file(tmp_path, "pretrained.pth")
    cfg = _config(tiny_lists, tmp_path / "run", pretrained=str(path), stage2={"epochs": 1})
    with pytest.raises(checkpoints.CheckpointError) as err:
        solver.train(cfg)
    _assert_one_line(err, str(path), "never unpickles code")
    assert not marker.exists()


def test_convert_trusted_is_explicit_and_makes_a_safe_file(tmp_path, capsys):
    net = models.SRResNet(scale=4, n_blocks=1, channels=8)
    old = tmp_path / "old.pth"
    torch.save({"arch": models.generator_arch(net), "generator": net.state_dict(),
                "config": EasyDict(lr=1e-4, betas=(0.9, 0.999)), "mean": np.float32(0.5),
                "rng": np.arange(3)}, old)
    with pytest.raises(checkpoints.CheckpointError, match="convert-trusted"):
        checkpoints.load_generator(old)
    new = tmp_path / "new.pth"
    assert checkpoints.main(["convert-trusted", str(old), str(new)]) == 0
    loaded = checkpoints.load_generator(new)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    state = checkpoints.load_state(new)
    assert state["config"] == {"lr": 1e-4, "betas": [0.9, 0.999]} and type(state["config"]) is dict
    assert state["mean"] == 0.5 and torch.equal(state["rng"], torch.arange(3))
    # never overwrites
    assert checkpoints.main(["convert-trusted", str(old), str(new)]) == 1
    assert "error:" in capsys.readouterr().err


# ---------------------------------------------------------------------- integrity


def test_flipped_bytes_in_a_training_checkpoint_are_refused_and_nothing_is_overwritten(
        finished_run, tiny_lists, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    ckpt = out / "checkpoint.pth"
    assert checkpoints.read_training_checkpoint(ckpt)["epoch"] == 1  # intact copy loads
    _flip_middle(ckpt)
    before = _snapshot(out)
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.read_training_checkpoint(ckpt)
    _assert_one_line(err, str(ckpt), "corrupted")
    cfg = _config(tiny_lists, out, stage1={"epochs": 2})
    cfg.resume = True
    with pytest.raises(checkpoints.CheckpointError) as err:
        solver.train(cfg)
    _assert_one_line(err, "checkpoint.pth", "corrupted")
    assert _snapshot(out) == before


def _strip_digest(path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state.pop(checkpoints.DIGEST_KEY)
    torch.save(state, path)  # the same contents, without the digest that would vouch for them


def test_a_file_whose_digest_was_removed_is_refused_like_a_damaged_one(finished_run, tiny_lists, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    for name, load in (("generator_stage1.pth", checkpoints.load_generator),
                       ("checkpoint.pth", checkpoints.read_training_checkpoint)):
        _strip_digest(out / name)
        with pytest.raises(checkpoints.CheckpointError) as err:
            load(out / name)
        _assert_one_line(err, str(out / name), "no SHA-256 digest", "convert-trusted")
    before = _snapshot(out)
    assert solver.main(["--out", str(out), "--resume", "--stage1-epochs", "2"]) == 2  # resume: one line, no run
    assert "no SHA-256 digest" in capsys.readouterr().err
    assert _snapshot(out) == before
    # the way in for a file you trust: convert-trusted writes it again with its digest
    fixed = tmp_path / "fixed.pth"
    assert checkpoints.main(["convert-trusted", str(out / "generator_stage1.pth"), str(fixed)]) == 0
    assert checkpoints.load_generator(fixed).arch_kwargs == {"scale": 4, "n_blocks": 1, "channels": 8}


def test_flipped_bytes_in_the_shipped_generator_are_refused(tmp_path):
    copy = tmp_path / "srresnet_x4.pth"
    shutil.copyfile(SHIPPED_GENERATOR, copy)
    _flip_middle(copy)
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.load_generator(copy)
    _assert_one_line(err, str(copy), "corrupted")
    assert SHIPPED_GENERATOR.read_bytes() != copy.read_bytes()


def test_training_outputs_carry_a_digest(finished_run):
    for name in ("checkpoint.pth", "generator_stage1.pth"):
        raw = torch.load(finished_run / name, weights_only=True)
        assert raw[checkpoints.DIGEST_KEY] == checkpoints.state_digest(raw), name


# ---------------------------------------------------------------------- NaN / inf weights


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_generator_with_non_finite_weights_is_refused(tmp_path, bad):
    net = models.SRResNet(scale=4, n_blocks=1, channels=8)
    with torch.no_grad():
        net.tail.weight[0, 0, 0, 0] = bad
    path = checkpoints.save_generator(tmp_path / "diverged.pth", net)
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.load_generator(path)
    _assert_one_line(err, str(path), "NaN/inf")
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.generator_from_srresnet(path)
    _assert_one_line(err, str(path), "NaN/inf")
