"""Tests of the notebook helpers (test.ipynb, super_resolution.ipynb) in utils.py, models.py
and create_data_lists.py: default checkpoints, checked loading, single-image input, report
files, test lists, batch SR."""
from __future__ import annotations

import csv
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoints
import inference
import metrics
import models
import notebook_helpers
import utils
from create_data_lists import BUNDLED_BENCHMARK, load_data_list, prepare_test_lists
from imresize import imresize


def tiny(scale: int = 4, n_blocks: int = 1, channels: int = 8, cls=models.SRResNet) -> torch.nn.Module:
    torch.manual_seed(0)
    return cls(scale=scale, n_blocks=n_blocks, channels=channels).eval()


def touch(path: Path, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def run_generator(path: Path, mtime: float | None = None, scale: int = 4) -> Path:
    """A real (tiny) generator file of ``scale``, as a training run writes it."""
    checkpoints.save_generator(path, tiny(scale))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def listing(folder: Path) -> list[str]:
    """Every file under ``folder`` (temporary files included), relative."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- find_checkpoints
def test_find_checkpoints_nothing(tmp_path):
    assert notebook_helpers.find_checkpoints(tmp_path) == {"psnr": None, "gan": None}


def test_find_checkpoints_prefers_shipped(tmp_path):
    now = time.time()
    run_generator(tmp_path / "runs/quick/generator_stage1.pth", now)
    run_generator(tmp_path / "runs/quick/generator_stage2.pth", now)
    shipped_psnr = touch(tmp_path / "checkpoints/srresnet_x4.pth", now - 100)
    found = notebook_helpers.find_checkpoints(tmp_path)
    assert found["psnr"] == shipped_psnr  # shipped wins even when older
    assert found["gan"] == tmp_path / "runs/quick/generator_stage2.pth"
    shipped_gan = touch(tmp_path / "checkpoints/srgan_x4.pth", now - 100)
    assert notebook_helpers.find_checkpoints(tmp_path) == {"psnr": shipped_psnr, "gan": shipped_gan}
    # the shipped names carry the scale, and run files count only for their own scale
    assert notebook_helpers.find_checkpoints(tmp_path, scale=2) == {"psnr": None, "gan": None}
    x2 = run_generator(tmp_path / "runs/x2/generator_stage2.pth", now - 500, scale=2)
    assert notebook_helpers.find_checkpoints(tmp_path, scale=2)["gan"] == x2
    assert notebook_helpers.find_checkpoints(tmp_path)["gan"] == shipped_gan
    (tmp_path / "runs/bad").mkdir()
    (tmp_path / "runs/bad/generator_stage2.pth").write_text("not a checkpoint")  # never picked
    assert notebook_helpers.find_checkpoints(tmp_path, scale=2)["gan"] == x2


def test_find_checkpoints_newest_run_and_pairing(tmp_path):
    now = time.time()
    run_generator(tmp_path / "runs/old/generator_stage1.pth", now - 300)
    run_generator(tmp_path / "runs/old/generator_stage2.pth", now - 200)
    # a newer run that has only finished stage 1
    run_generator(tmp_path / "runs/new/generator_stage1.pth", now - 10)
    found = notebook_helpers.find_checkpoints(tmp_path)
    # the newest stage-2 file, and the stage-1 file of the same run (same architecture)
    assert found == {"psnr": tmp_path / "runs/old/generator_stage1.pth",
                     "gan": tmp_path / "runs/old/generator_stage2.pth"}
    (tmp_path / "runs/old/generator_stage1.pth").unlink()
    assert notebook_helpers.find_checkpoints(tmp_path)["psnr"] == tmp_path / "runs/new/generator_stage1.pth"


def test_find_checkpoints_relative_root(tmp_path, monkeypatch):
    run_generator(tmp_path / "runs/quick/generator_stage2.pth")
    monkeypatch.chdir(tmp_path)
    found = notebook_helpers.find_checkpoints()
    assert found["gan"] == Path("runs/quick/generator_stage2.pth")
    assert not found["gan"].is_absolute()  # the notebooks print it


def test_is_shipped_and_label():
    assert notebook_helpers.is_shipped_checkpoint("checkpoints/srgan_x4.pth")
    assert not notebook_helpers.is_shipped_checkpoint("runs/quick/generator_stage2.pth")
    assert notebook_helpers.model_label("psnr", tiny()) == "SRResNet"
    assert notebook_helpers.model_label("gan", tiny(cls=models.Generator)) == "SRGAN"
    rrdb = models.RRDBNet(scale=4, n_blocks=1, channels=8, growth=4)
    assert (notebook_helpers.model_label("psnr", rrdb), notebook_helpers.model_label("gan", rrdb)) == ("RRDB-PSNR", "ESRGAN")
    with pytest.raises(ValueError, match="kind"):
        notebook_helpers.model_label("stage1", rrdb)


# --------------------------------------------------------------------------- checked loading
def test_load_generator_checked_ok(tmp_path):
    net = tiny()
    path = checkpoints.save_generator(tmp_path / "g.pth", net)
    loaded = checkpoints.load_generator_checked(path, scale=4)
    assert loaded.scale == 4 and not loaded.training
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_load_generator_checked_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.ipynb"):
        checkpoints.load_generator_checked(tmp_path / "runs/quick/generator_stage1.pth", scale=4)


def test_load_generator_checked_wrong_scale(tmp_path):
    path = checkpoints.save_generator(tmp_path / "x2.pth", tiny(scale=2))
    with pytest.raises(ValueError, match=r"x2 generator.*x4"):
        checkpoints.load_generator_checked(path, scale=4)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_load_generator_checked_unreadable(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="broken.pth"):
        checkpoints.load_generator_checked(path, scale=4)


def test_load_generator_checked_not_a_generator(tmp_path):
    path = tmp_path / "disc.pth"
    checkpoints.save_state(path, {"discriminator": tiny().state_dict()})
    with pytest.raises(ValueError, match="not a kit generator checkpoint"):
        checkpoints.load_generator_checked(path, scale=4)


# --------------------------------------------------------------------------- interpolation check
def test_interpolation_problem():
    assert notebook_helpers.interpolation_problem(tiny(), tiny(cls=models.Generator)) is None
    assert "different architectures" in notebook_helpers.interpolation_problem(
        tiny(), models.RRDBNet(scale=4, n_blocks=1, channels=8, growth=4))
    assert "size" in notebook_helpers.interpolation_problem(tiny(channels=8), tiny(channels=16))
    assert "x2" in notebook_helpers.interpolation_problem(tiny(scale=2), tiny(scale=4))


# --------------------------------------------------------------------------- single image input
def test_load_sr_input_hr(tmp_path):
    img = textured(50, 43)
    utils.save_image(img, tmp_path / "photo.png")
    lr, hr = notebook_helpers.load_sr_input(tmp_path / "photo.png", scale=4)
    assert hr.shape == (48, 40, 3) and np.array_equal(hr, img[:48, :40])
    assert lr.shape == (12, 10, 3)
    assert np.array_equal(lr, imresize(hr, 1 / 4))  # MATLAB bicubic, as the test sets


def test_load_sr_input_lr_and_gray(tmp_path):
    gray = textured(20, 30)[:, :, 0]
    utils.save_image(gray, tmp_path / "small.png")
    lr, hr = notebook_helpers.load_sr_input(tmp_path / "small.png", scale=4, is_hr=False)
    assert hr is None and lr.shape == (20, 30, 3)  # replicated to RGB for the networks
    assert np.array_equal(lr[:, :, 1], gray)


def test_load_sr_input_too_small(tmp_path):
    utils.save_image(textured(31, 200), tmp_path / "thin.png")
    with pytest.raises(ValueError, match=r"too small.*32x32"):
        notebook_helpers.load_sr_input(tmp_path / "thin.png", scale=4)
    utils.save_image(textured(7, 40), tmp_path / "tiny_lr.png")
    with pytest.raises(ValueError, match="too small as an LR image"):
        notebook_helpers.load_sr_input(tmp_path / "tiny_lr.png", scale=4, is_hr=False)


def test_load_sr_input_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="configuration cell"):
        notebook_helpers.load_sr_input(tmp_path / "nope.png", scale=4)
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(utils.ImageReadError, match="fake.png"):
        notebook_helpers.load_sr_input(tmp_path / "fake.png", scale=4)


# --------------------------------------------------------------------------- reports
def test_mean_metrics():
    rows = [{"psnr": 30.0, "ssim": 0.8, "seconds": 1.0}, {"psnr": 20.0, "ssim": 0.6, "seconds": 3.0}]
    assert metrics.mean_metrics(rows) == pytest.approx({"psnr": 25.0, "ssim": 0.7, "seconds": 2.0, "images": 2})
    assert metrics.mean_metrics([])["images"] == 0 and np.isnan(metrics.mean_metrics([])["psnr"])
    rows = [{"psnr": 24.0, "ssim": 0.6, "sharpness": 0.5, "seconds": 1.0},
            {"psnr": 26.0, "ssim": 0.8, "sharpness": 0.9, "seconds": 3.0}]
    assert metrics.mean_metrics(rows)["sharpness"] == pytest.approx(0.7)
    # NIQE: averaged over the images that have one (NaN = too small for NIQE)
    rows = [{"psnr": 24.0, "ssim": 0.6, "niqe": 5.0, "seconds": 1.0},
            {"psnr": 26.0, "ssim": 0.8, "niqe": float("nan"), "seconds": 3.0},
            {"psnr": 28.0, "ssim": 0.7, "niqe": 7.0, "seconds": 2.0}]
    assert metrics.mean_metrics(rows) == pytest.approx({"psnr": 26.0, "ssim": 0.7, "niqe": 6.0, "seconds": 2.0,
                                                      "images": 3})
    assert np.isnan(metrics.mean_metrics([{"niqe": float("nan")}])["niqe"])


def test_markdown_table():
    table = notebook_helpers.markdown_table(["Method", "PSNR (dB)"], [["Bicubic", "28.42"], ["SRGAN", "26.02"]])
    lines = table.split("\n")
    assert lines[0] == "| Method | PSNR (dB) |"
    assert lines[1] == "| --- | ---: |"  # numbers right-aligned
    assert lines[3] == "| SRGAN | 26.02 |" and len(lines) == 4
    # a reference row with an empty cell keeps the column right-aligned; text does not
    table = notebook_helpers.markdown_table(["Method", "PSNR", "NIQE"], [["SRGAN", "26.02", "6.49"], ["HR", "", "4.92"]])
    assert table.split("\n")[1] == "| --- | ---: | ---: |"
    assert notebook_helpers.markdown_table(["A"], [["x"], [""]]).split("\n")[1] == "| --- |"


def test_save_csv_and_text(tmp_path):
    rows = [{"set": "Set5", "image": "baby", "psnr": 31.123456789}, {"set": "Set5", "image": "bird", "psnr": 1 / 3}]
    path = notebook_helpers.save_csv(rows, tmp_path / "out/per_image.csv")
    with open(path, newline="") as f:
        read = list(csv.DictReader(f))
    assert [r["image"] for r in read] == ["baby", "bird"]
    assert float(read[1]["psnr"]) == 1 / 3  # full precision
    notebook_helpers.save_text("# report\n", tmp_path / "out/report.md")
    assert (tmp_path / "out/report.md").read_text() == "# report\n"
    assert listing(tmp_path / "out") == ["per_image.csv", "report.md"]  # no temporary files left


def test_failed_writes_leave_nothing(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    class Boom(Exception):
        pass

    fig = plt.figure()
    fig.savefig = lambda *a, **k: (_ for _ in ()).throw(Boom())  # fails mid-write
    with pytest.raises(Boom):
        notebook_helpers.save_figure(fig, tmp_path / "fig.png")
    plt.close(fig)
    with pytest.raises(AttributeError):  # the second row is not a dict: fails after the header is written
        notebook_helpers.save_csv([{"a": 1}, 5], tmp_path / "rows.csv", columns=["a"])
    assert listing(tmp_path) == []


def test_detail_crop_finds_texture():
    img = np.full((100, 120, 3), 128, np.uint8)
    img[60:80, 10:30] = textured(20, 20)
    rows, cols = notebook_helpers.detail_crop(img, 20)
    assert (rows.start, cols.start) == (60, 10)
    rows, cols = notebook_helpers.detail_crop(img[:, :, 0], 500)  # larger than the image: the whole image
    assert (rows, cols) == (slice(0, 100), slice(0, 120))


def test_comparison_and_show_figure(tmp_path):
    import matplotlib
    matplotlib.use("Agg")

    img = textured(40, 48)
    crop = notebook_helpers.detail_crop(img, 16)
    fig = notebook_helpers.comparison_figure([("a", img), ("b", img[:, :, 0])], crop=crop)
    assert len(fig.axes) == 4  # full images + crops
    notebook_helpers.show_figure(fig, tmp_path / "figs/cmp.png")
    assert utils.read_image(tmp_path / "figs/cmp.png").ndim == 3
    fig = notebook_helpers.comparison_figure([("a", img)])
    notebook_helpers.show_figure(fig, tmp_path / "figs/hi.png", dpi=100, display_dpi=50)
    assert utils.read_image(tmp_path / "figs/hi.png").shape[1] > 250  # saved at dpi, not display_dpi
    (tmp_path / "figs/hi.png").unlink()
    assert listing(tmp_path) == ["figs/cmp.png"]
    assert len(notebook_helpers.comparison_figure([("a", img)], crop=crop, full=False).axes) == 1
    with pytest.raises(ValueError, match="one size"):
        notebook_helpers.comparison_figure([("a", img), ("b", img[:20])], crop=crop)


# --------------------------------------------------------------------------- lists and batch SR
def write_selfexsr(folder: Path, n: int) -> None:
    sub = folder / "image_SRF_4"
    for k in range(1, n + 1):
        hr = textured(32, 40, seed=k)
        utils.save_image(hr, sub / f"img_{k:03d}_SRF_4_HR.png")
        utils.save_image(imresize(hr, 1 / 4), sub / f"img_{k:03d}_SRF_4_LR.png")


def sample_list(lists: Path, images: Path, name: str = "sample-test", scale: int = 4) -> dict:
    """A list of one real image, written to ``lists/<name>.json``; returns its content."""
    hr = images / f"{name}.png"
    utils.save_image(textured(32, 40, seed=9), hr)
    data = {"name": name, "scale": scale, "images": [{"name": "a", "hr": str(hr), "lr": str(hr)}]}
    lists.mkdir(parents=True, exist_ok=True)
    (lists / f"{name}.json").write_text(json.dumps(data))
    return data


def test_prepare_test_lists(tmp_path):
    lists = tmp_path / "lists"
    # a usable sample list is kept as it is (no sample data made)
    sample = sample_list(lists, tmp_path / "img")
    train = sample_list(lists, tmp_path / "img", "train")
    (lists / "Other.json").write_text(json.dumps(dict(sample, name="Other", scale=2)))
    shared = tmp_path / "shared"
    write_selfexsr(shared / "Set5", 2)
    write_selfexsr(tmp_path / "data/benchmark/Set14", 3)  # a user's data folder
    found = prepare_test_lists(lists, 4, data_root=tmp_path / "data", shared_benchmark=shared)
    assert list(found) == ["Set5", "Set14", "sample-test"]  # standard order, x2 list left out, no train
    assert json.loads((lists / "sample-test.json").read_text()) == sample
    assert json.loads((lists / "train.json").read_text()) == train
    assert not (tmp_path / "data/sample").exists()
    set5 = json.loads(found["Set5"].read_text())  # the shared copy comes before the bundled one
    assert [im["name"] for im in set5["images"]] == ["img_001", "img_002"]
    assert len(json.loads(found["Set14"].read_text())["images"]) == 3  # data_root before both
    before = {p: p.stat().st_mtime_ns for p in lists.glob("*.json")}
    assert prepare_test_lists(lists, 4, data_root=tmp_path / "data", shared_benchmark=shared) == found
    assert {p: p.stat().st_mtime_ns for p in lists.glob("*.json")} == before  # never rewritten


def test_prepare_test_lists_uses_the_bundled_set5_and_set14(tmp_path):
    """A fresh clone (no data/, no ../shared) gets Set5 and Set14 with MATLAB's LR files."""
    lists = tmp_path / "lists"
    found = prepare_test_lists(lists, 4, data_root=tmp_path / "data")
    assert list(found) == ["Set5", "Set14", "sample-test"]
    for name, n in (("Set5", 5), ("Set14", 14)):
        images = load_data_list(found[name])["images"]
        assert [im["name"] for im in images] == [f"img_{k:03d}" for k in range(1, n + 1)]
        for im in images:
            assert Path(im["hr"]).parent == BUNDLED_BENCHMARK / name / "image_SRF_4"
            assert im["lr"] == im["hr"].replace("_HR.png", "_LR.png")  # MATLAB's, not made here
    assert load_data_list(lists / "train.json")["images"]  # the sample training list, made with it
    # no bundled files for x3: Set5/Set14 are simply absent, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(prepare_test_lists(tmp_path / "lists3", 3, data_root=tmp_path / "data")) == ["sample-test"]
    assert list(prepare_test_lists(tmp_path / "none", 4, data_root=tmp_path / "data", bundled=None)) == ["sample-test"]


def test_prepare_test_lists_keeps_a_users_train_list(tmp_path):
    """Opening test.ipynb after `--download div2k` must not replace train.json by the sample's."""
    lists = tmp_path / "lists"
    train = sample_list(lists, tmp_path / "div2k", "train")
    found = prepare_test_lists(lists, 4, data_root=tmp_path / "data", bundled=None)
    assert list(found) == ["sample-test"]
    assert json.loads((lists / "train.json").read_text()) == train


def test_prepare_test_lists_remakes_a_list_whose_files_are_gone(tmp_path):
    """Lists hold absolute paths: after the checkout moved, they are made again."""
    lists = tmp_path / "lists"
    write_selfexsr(tmp_path / "old/Set5", 2)
    first = prepare_test_lists(lists, 4, data_root=tmp_path / "data", shared_benchmark=tmp_path / "old", bundled=None)
    (tmp_path / "old").rename(tmp_path / "new")
    (tmp_path / "data/sample").rename(tmp_path / "moved-sample")
    found = prepare_test_lists(lists, 4, data_root=tmp_path / "data", shared_benchmark=tmp_path / "new", bundled=None)
    assert found == first
    set5 = load_data_list(found["Set5"])["images"]
    assert all(Path(im["hr"]).is_file() and str(tmp_path / "new") in im["hr"] for im in set5)
    assert all(Path(im["hr"]).is_file() for im in load_data_list(found["sample-test"])["images"])


def test_save_sr_set(tmp_path):
    write_selfexsr(tmp_path / "Set5", 2)
    from datasets import EvalDataset

    from create_data_lists import create_data_lists
    create_data_lists([], {"Set5": str(tmp_path / "Set5")}, str(tmp_path / "lists"), 4, show_progress=False)
    dataset = EvalDataset(str(tmp_path / "lists/Set5.json"), 4)
    net = tiny()
    out = notebook_helpers.save_sr_set(dataset, {"Bicubic": None, "SRResNet": net}, tmp_path / "sr", 4, progress=False)
    assert list(out) == ["img_001", "img_002"]
    assert listing(tmp_path / "sr") == ["img_001_bicubic_x4.png", "img_001_srresnet_x4.png",
                                        "img_002_bicubic_x4.png", "img_002_srresnet_x4.png"]
    lr = dataset[1]["lr"]
    assert np.array_equal(utils.read_image(tmp_path / "sr/img_002_srresnet_x4.png"), inference.super_resolve(net, lr))
    assert np.array_equal(out["img_002"]["Bicubic"], inference.bicubic_upscale(lr, 4))
    assert notebook_helpers.sr_filename("baby", "RRDB PSNR", 4) == "baby_rrdb-psnr_x4.png"


def test_save_sr_set_writes_nothing_on_error(tmp_path):
    write_selfexsr(tmp_path / "Set5", 2)
    from datasets import EvalDataset

    from create_data_lists import create_data_lists
    create_data_lists([], {"Set5": str(tmp_path / "Set5")}, str(tmp_path / "lists"), 4, show_progress=False)
    dataset = EvalDataset(str(tmp_path / "lists/Set5.json"), 4)
    with pytest.raises(ValueError, match="x2 network"):
        notebook_helpers.save_sr_set(dataset, {"Bicubic": None, "SRGAN": tiny(scale=2)}, tmp_path / "sr", 4, progress=False)
    # the second image's LR file becomes unreadable: the first image's results must not be written
    (tmp_path / "Set5/image_SRF_4/img_002_SRF_4_LR.png").write_bytes(b"garbage")
    with pytest.raises(utils.ImageReadError):
        notebook_helpers.save_sr_set(dataset, {"Bicubic": None, "SRResNet": tiny()}, tmp_path / "sr", 4, progress=False)
    with pytest.raises(ValueError, match="same file names"):
        notebook_helpers.save_sr_set(dataset, {"SR GAN": None, "sr-gan": None}, tmp_path / "sr", 4, progress=False)
    assert not (tmp_path / "sr").exists()


def test_local_runs_are_labelled_as_such(tmp_path):
    """A quick local run must never be shown as if it were the shipped/real model."""
    import models
    from notebook_helpers import model_label, sr_filename

    net = models.SRResNet(scale=4, n_blocks=1, channels=8)
    local = checkpoints.save_generator(tmp_path / "runs" / "quick" / "generator_stage2.pth", net)
    assert model_label("gan", net) == "SRGAN"
    assert model_label("gan", net, local) == "SRGAN (local run)"
    assert model_label("psnr", net, "checkpoints/srresnet_x4.pth") == "SRResNet"
    assert sr_filename("baby", "SRGAN (local run)", 4) == "baby_srgan-local-run_x4.png"
