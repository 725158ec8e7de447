"""Tests for create_data_lists.py (lists, layouts, skipped files, sample) and datasets.py."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import create_data_lists as cdl
from create_data_lists import create_data_lists, load_data_list
from datasets import EvalDataset, TrainDataset
from imresize import imresize
from utils import ImageReadError, modcrop, read_image


# --------------------------------------------------------------------------- helpers
def noise(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """Random uint8 image: every patch is unique, so crops can be located exactly."""
    shape = (h, w, channels) if channels > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save_png(arr: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def write_list(path: Path, images: list[dict], scale: int = 4, name: str = "t") -> str:
    cdl.write_data_list(path, name, scale, images)
    return str(path)


def find_crop(big: np.ndarray, patch: np.ndarray) -> list[tuple[int, int]]:
    """All (y, x) where ``patch`` occurs in ``big``."""
    if patch.shape[0] > big.shape[0] or patch.shape[1] > big.shape[1]:
        return []
    windows = np.lib.stride_tricks.sliding_window_view(big, patch.shape[:2], axis=(0, 1))
    # windows: (H', W', [C,] ph, pw) -> compare with the patch laid out the same way
    target = np.moveaxis(patch, (0, 1), (-2, -1)) if patch.ndim == 3 else patch
    eq = (windows == target).reshape(windows.shape[0], windows.shape[1], -1).all(axis=2)
    return [(int(y), int(x)) for y, x in zip(*np.nonzero(eq))]


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """CxHxW float in [0, 1] that came from uint8 -> HxWxC uint8 (exact)."""
    return np.round(t.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)


TRANSFORMS = [
    lambda a, k=k, f=f: np.rot90(a[:, ::-1] if f else a, k)
    for k in range(4)
    for f in (False, True)
]


@pytest.fixture
def odd_images(tmp_path: Path) -> dict[str, Path]:
    """A folder with one file of each awkward kind, and the expected fate of each."""
    d = tmp_path / "odd"
    rgb = noise(120, 100, 1)
    files = {
        "rgb": save_png(rgb, d / "rgb.png"),
        "gray": save_png(noise(120, 100, 2, channels=1), d / "gray.png"),
        "rgba": save_png(np.dstack([rgb, noise(120, 100, 3, 1)]), d / "rgba.png"),
        "palette": d / "palette.png",
        "sixteen": d / "sixteen.png",
        "cmyk": d / "cmyk.jpg",
        "small": save_png(noise(60, 200, 4), d / "small.png"),
        "truncated": d / "truncated.png",
        "notimage": d / "notimage.png",
        "text": d / "readme.txt",
    }
    Image.fromarray(rgb).convert("P").save(files["palette"])
    Image.fromarray((noise(120, 100, 5, 1).astype(np.uint16) * 257 + 3)).save(files["sixteen"])
    Image.fromarray(rgb).convert("CMYK").save(files["cmyk"], quality=95)
    save_png(rgb, d / "full.png")
    files["truncated"].write_bytes((d / "full.png").read_bytes()[:3000])
    (d / "full.png").unlink()
    files["notimage"].write_bytes(b"this is not a PNG file at all\n" * 10)
    files["text"].write_text("notes\n")
    (d / ".hidden.png").write_bytes(b"junk")  # hidden files are ignored, not reported
    return files


# --------------------------------------------------------------------------- lists
def test_training_list_skips_bad_files_with_reasons(odd_images, tmp_path, capsys):
    folder = odd_images["rgb"].parent
    counts = create_data_lists([str(folder)], {}, str(tmp_path / "lists"), scale=4, min_size=96)
    out = capsys.readouterr().out
    good = {"rgb", "gray", "rgba", "palette", "sixteen", "cmyk"}
    assert counts == {"train": len(good)}
    data = load_data_list(tmp_path / "lists" / "train.json")
    assert data["name"] == "train" and data["scale"] == 4
    assert {im["name"] for im in data["images"]} == {odd_images[k].stem for k in good}
    assert all(os.path.isabs(im["hr"]) and im["lr"] is None for im in data["images"])
    # every skipped file is named, with its reason
    assert "skipped 4 file(s)" in out
    for key, reason in [("small", "too small"), ("truncated", "cannot decode"),
                        ("notimage", "cannot decode"), ("text", "not an image")]:
        line = next(l for l in out.splitlines() if odd_images[key].name in l)
        assert reason in line, line
    assert ".hidden" not in out


def test_test_list_makes_lr_with_imresize_and_caches_it(tmp_path, capsys):
    hr = noise(50, 43, 7)  # not a multiple of 4: the LR is made from the mod-cropped HR
    save_png(hr, tmp_path / "set" / "a.png")
    save_png(noise(33, 30, 8, channels=1), tmp_path / "set" / "g.png")
    out = tmp_path / "lists"
    assert create_data_lists([], {"MySet": str(tmp_path / "set")}, str(out)) == {"MySet": 2}
    data = load_data_list(out / "MySet.json")
    a, g = data["images"]
    assert Path(a["lr"]) == (out / "lr_cache" / "MySet" / "x4" / "a.png").resolve()
    np.testing.assert_array_equal(read_image(a["lr"]), imresize(modcrop(hr, 4), scale=1 / 4))
    assert read_image(g["lr"], keep_gray=True).shape == (8, 7)  # gray stays gray

    # reused when valid, re-made when corrupt or older than its HR
    stamp = os.stat(a["lr"]).st_mtime_ns
    Path(g["lr"]).write_bytes(b"broken")
    create_data_lists([], {"MySet": str(tmp_path / "set")}, str(out))
    assert os.stat(a["lr"]).st_mtime_ns == stamp
    assert read_image(g["lr"], keep_gray=True).shape == (8, 7)
    out_lines = capsys.readouterr().out.splitlines()
    assert out_lines == ["MySet: 2 images (LR made with imresize)"] * 2


def _smooth(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random RGB image (bicubic x4 recovers it well, unlike noise)."""
    small = np.random.default_rng(seed).integers(0, 256, (h // 16 + 2, w // 16 + 2, 3)).astype(np.float64)
    grid = np.kron(small, np.ones((16, 16, 1)))[:h, :w]
    blurred = np.asarray(Image.fromarray(grid.astype(np.uint8)).resize((w // 4, h // 4), Image.BILINEAR)
                         .resize((w, h), Image.BICUBIC))
    return blurred


def test_lr_cache_is_keyed_on_hr_content_not_mtime(tmp_path):
    """cp -p / rsync -a / tar x: a new HR image of the same size with an older mtime gets a new LR."""
    from inference import bicubic_upscale
    from metrics import calculate_psnr

    first, second = _smooth(64, 64, 1), _smooth(64, 64, 2)
    hr_path = save_png(first, tmp_path / "set" / "a.png")
    out = tmp_path / "lists"
    create_data_lists([], {"MySet": str(tmp_path / "set")}, str(out))
    lr_path = Path(load_data_list(out / "MySet.json")["images"][0]["lr"])
    old_lr = read_image(lr_path)

    save_png(second, hr_path)  # same size, different content ...
    past = lr_path.stat().st_mtime - 3600
    os.utime(hr_path, (past, past))  # ... and older than the cached LR
    assert hr_path.stat().st_size > 0 and hr_path.stat().st_mtime < lr_path.stat().st_mtime
    create_data_lists([], {"MySet": str(tmp_path / "set")}, str(out))
    lr = read_image(load_data_list(out / "MySet.json")["images"][0]["lr"])
    np.testing.assert_array_equal(lr, imresize(second, scale=1 / 4))
    psnr = calculate_psnr(bicubic_upscale(lr, 4), second, crop_border=4)
    stale = calculate_psnr(bicubic_upscale(old_lr, 4), second, crop_border=4)
    assert psnr > 30 and stale < psnr - 10, (psnr, stale)


def test_lr_cache_is_reused_for_unchanged_images(tmp_path):
    hr = _smooth(48, 48, 3)
    hr_path = save_png(hr, tmp_path / "set" / "a.png")
    out = tmp_path / "lists"
    create_data_lists([], {"MySet": str(tmp_path / "set")}, str(out))
    lr_path = Path(load_data_list(out / "MySet.json")["images"][0]["lr"])
    before = (lr_path.stat().st_ino, lr_path.stat().st_mtime_ns, lr_path.read_bytes())
    os.utime(hr_path)  # touched (newer mtime), same pixels: nothing to redo
    create_data_lists([], {"MySet": str(tmp_path / "set")}, str(out))
    assert (lr_path.stat().st_ino, lr_path.stat().st_mtime_ns, lr_path.read_bytes()) == before
    # the same pixels at another scale get their own LR
    create_data_lists([], {"MySet": str(tmp_path / "set")}, str(out), scale=2)
    lr2 = Path(load_data_list(out / "MySet.json")["images"][0]["lr"])
    np.testing.assert_array_equal(read_image(lr2), imresize(hr, scale=1 / 2))
    # and the key names the content, the method and the scale
    assert cdl.lr_cache_key(hr, 4) != cdl.lr_cache_key(hr, 2) != cdl.lr_cache_key(_smooth(48, 48, 4), 2)
    with Image.open(lr_path) as im:
        assert im.text[cdl.LR_CACHE_KEY] == cdl.lr_cache_key(hr, 4)


def test_imresize_lr_equals_matlab_lr_files(benchmark_dir, tmp_path):
    """A plain folder of Set5/Set14 HR images gets LR files identical to MATLAB's."""
    plain = {}
    for name in ("Set5", "Set14"):
        plain[name] = tmp_path / name
        plain[name].mkdir()
        for p in (benchmark_dir / name / "image_SRF_4").glob("*_HR.png"):
            shutil.copy(p, plain[name] / p.name)
    create_data_lists([], {k: str(v) for k, v in plain.items()}, str(tmp_path / "lists"), show_progress=False)
    n = 0
    for name in ("Set5", "Set14"):
        for item in load_data_list(tmp_path / "lists" / f"{name}.json")["images"]:
            matlab = benchmark_dir / name / "image_SRF_4" / (item["name"].replace("_HR", "_LR") + ".png")
            np.testing.assert_array_equal(read_image(item["lr"], keep_gray=True),
                                          read_image(matlab, keep_gray=True), err_msg=str(matlab))
            n += 1
    assert n == 19


def test_selfexsr_layout_uses_given_lr(benchmark_dir, tmp_path):
    counts = create_data_lists([], {"Set14": str(benchmark_dir / "Set14")}, str(tmp_path / "l"), show_progress=False)
    assert counts == {"Set14": 14}
    data = load_data_list(tmp_path / "l" / "Set14.json")
    assert [im["name"] for im in data["images"]] == [f"img_{k:03d}" for k in range(1, 15)]
    assert all(im["lr"].endswith("_SRF_4_LR.png") for im in data["images"])
    ds = EvalDataset(str(tmp_path / "l" / "Set14.json"))
    gray = ds[2]  # img_003 is a single-channel PNG: it stays HxW
    assert gray["hr"].ndim == 2 and gray["lr"].ndim == 2
    assert gray["lr"].shape == (gray["hr"].shape[0] // 4, gray["hr"].shape[1] // 4)
    with pytest.raises(ValueError, match="image_SRF_5"):
        create_data_lists([], {"Set14": str(benchmark_dir / "Set14")}, str(tmp_path / "l"), scale=5)


def test_div2k_and_edsr_layouts(tmp_path, capsys):
    root = tmp_path / "DIV2K"
    for k in (1, 2, 3):
        hr = noise(100, 104, k)
        save_png(hr, root / "DIV2K_train_HR" / f"{k:04d}.png")
        lr = imresize(hr, scale=1 / 4) if k != 3 else noise(20, 26, k)  # 0003: wrong LR size
        save_png(lr, root / "DIV2K_train_LR_bicubic" / "X4" / f"{k:04d}x4.png")
    edsr = tmp_path / "benchmark" / "Set5"
    save_png(noise(40, 36, 9), edsr / "HR" / "baby.png")
    save_png(noise(10, 9, 10), edsr / "LR_bicubic" / "X4" / "babyx4.png")
    save_png(noise(41, 39, 11), edsr / "HR" / "bird.png")  # no LR file: made with imresize
    counts = create_data_lists([str(root / "DIV2K_train_HR")], {"Set5": str(edsr)}, str(tmp_path / "lists"))
    out = capsys.readouterr().out
    assert counts == {"train": 2, "Set5": 2}
    assert "0003x4.png: LR size 26x20 != HR size / 4 (26x25" in out
    train = load_data_list(tmp_path / "lists" / "train.json")["images"]
    assert [Path(im["lr"]).name for im in train] == ["0001x4.png", "0002x4.png"]
    test = load_data_list(tmp_path / "lists" / "Set5.json")["images"]
    assert Path(test[0]["lr"]).name == "babyx4.png" and "lr_cache" in test[1]["lr"]
    assert read_image(test[1]["lr"]).shape == (10, 9, 3)


def test_missing_and_empty_folders_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        create_data_lists([str(tmp_path / "nowhere")], {}, str(tmp_path / "l"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found in .*empty"):
        create_data_lists([], {"E": str(tmp_path / "empty")}, str(tmp_path / "l"))
    save_png(noise(20, 20), tmp_path / "tiny" / "t.png")
    with pytest.raises(ValueError, match="no usable image"):
        create_data_lists([str(tmp_path / "tiny")], {}, str(tmp_path / "l"), min_size=96)


def test_load_data_list_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"--test missing=FOLDER --output {tmp_path}`"):
        load_data_list(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_data_list(tmp_path / "bad.json")
    (tmp_path / "keys.json").write_text(json.dumps({"name": "x", "images": []}))
    with pytest.raises(ValueError, match="'scale'"):
        load_data_list(tmp_path / "keys.json")
    (tmp_path / "entry.json").write_text(json.dumps({"name": "x", "scale": 4, "images": [{"name": "a"}]}))
    with pytest.raises(ValueError, match="entry 0"):
        load_data_list(tmp_path / "entry.json")
    # relative paths are resolved against the list's folder
    (tmp_path / "rel.json").write_text(json.dumps({"name": "x", "scale": 4, "images": [{"name": "a", "hr": "a.png"}]}))
    assert load_data_list(tmp_path / "rel.json")["images"][0] == {"name": "a", "hr": str(tmp_path / "a.png"), "lr": None}


def test_cli_sample_and_default_discovery(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cdl.main(["--sample"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path) not in out  # counts only: stable notebook output
    n_train, n_test = len(cdl.SAMPLE_TRAIN), len(cdl.SAMPLE_TEST)
    assert f"{n_train} train / {n_test} test images" in out
    train = load_data_list("data/lists/train.json")
    test = load_data_list("data/lists/sample-test.json")
    assert len(train["images"]) == n_train and len(test["images"]) == n_test
    assert not {i["name"] for i in train["images"]} & {i["name"] for i in test["images"]}
    for item in test["images"] + train["images"]:
        hr = read_image(item["hr"], keep_gray=True)
        # mod-cropped colour photographs, not blank
        assert hr.shape[0] % 4 == 0 and hr.shape[1] % 4 == 0 and hr.ndim == 3 and hr.std() > 20
    # deterministic and idempotent: a second run leaves the files alone and prints the same
    stamps = {p: p.stat().st_mtime_ns for p in Path("data").rglob("*.png")}
    assert cdl.main(["--sample"]) == 0
    assert capsys.readouterr().out == out
    assert stamps == {p: p.stat().st_mtime_ns for p in Path("data").rglob("*.png")}
    # an image the kit did not write is never deleted: the run is refused, naming it
    save_png(noise(128, 128), Path("data/sample/train/stray.png"))
    assert cdl.main(["--sample"]) == 1 and "stray.png" in capsys.readouterr().err
    assert Path("data/sample/train/stray.png").is_file()

    # a fresh clone: the bundled Set5/Set14 (MATLAB's LR files), and a word about training data
    shutil.rmtree("data")
    assert cdl.main([]) == 0
    out = capsys.readouterr().out
    assert "Set5 and Set14: the kit's bundled copy" in out and "no training set under data/" in out
    assert "data/benchmark/Set5" not in out and "not found (skipped): data/benchmark/B100" in out
    for name, n in (("Set5", 5), ("Set14", 14)):
        images = load_data_list(f"data/lists/{name}.json")["images"]
        assert len(images) == n and all(im["lr"].endswith("_SRF_4_LR.png") for im in images)
        assert Path(images[0]["hr"]).parent == cdl.BUNDLED_BENCHMARK / name / "image_SRF_4"
    assert not Path("data/lists/train.json").exists()
    assert cdl.main(["--scale", "3"]) == 1  # nothing bundled at x3
    assert "no data set under data/" in capsys.readouterr().out

    # default discovery names what is missing; here only Set5 exists (a plain folder)
    shutil.rmtree("data")
    monkeypatch.setattr(cdl, "BUNDLED_BENCHMARK", tmp_path / "no-bundle")
    assert cdl.main([]) == 1
    assert "no data set under data/" in capsys.readouterr().out
    save_png(noise(16, 16), tmp_path / "data" / "benchmark" / "Set5" / "x.png")
    assert cdl.main([]) == 0
    out = capsys.readouterr().out
    assert "not found (skipped): data/DIV2K/DIV2K_train_HR" in out and "Set14" in out
    assert load_data_list("data/lists/Set5.json")["images"][0]["name"] == "x"


# --------------------------------------------------------------------------- TrainDataset
@pytest.fixture
def train_list(tmp_path) -> str:
    images = []
    for k, (h, w) in enumerate([(64, 72), (50, 49), (80, 64)]):
        p = save_png(noise(h, w, 20 + k), tmp_path / "tr" / f"{k}.png")
        images.append({"name": str(k), "hr": str(p), "lr": None})
    return write_list(tmp_path / "train.json", images)


def test_train_patches_shapes_alignment_and_lr_is_imresize(train_list):
    ds = TrainDataset(train_list, scale=4, patch_size=16, patches_per_image=5, augment=False)
    assert len(ds) == 15
    torch.manual_seed(0)
    for i in range(len(ds)):
        lr, hr = ds[i]
        assert lr.shape == (3, 4, 4) and hr.shape == (3, 16, 16)
        assert lr.dtype == hr.dtype == torch.float32
        assert 0 <= float(hr.min()) and float(hr.max()) <= 1
        src = read_image(ds.images[i // 5]["hr"])
        hits = find_crop(src, to_uint8(hr))
        assert len(hits) == 1 and hits[0][0] % 4 == 0 and hits[0][1] % 4 == 0
        # the crop stays inside the mod-cropped image
        assert hits[0][0] + 16 <= src.shape[0] // 4 * 4 and hits[0][1] + 16 <= src.shape[1] // 4 * 4
        np.testing.assert_array_equal(to_uint8(lr), imresize(to_uint8(hr), scale=1 / 4))
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_train_augmentation_keeps_lr_equal_to_imresize(train_list):
    ds = TrainDataset(train_list, scale=4, patch_size=16, patches_per_image=20, augment=True)
    torch.manual_seed(1)
    seen = set()
    for i in range(20):
        lr, hr = ds[i]
        np.testing.assert_array_equal(to_uint8(lr), imresize(to_uint8(hr), scale=1 / 4))
        src = read_image(ds.images[0]["hr"])
        matches = [t for t, f in enumerate(TRANSFORMS) if find_crop(src, np.ascontiguousarray(f(to_uint8(hr))))]
        # undoing the augmentation finds an aligned crop of the source
        assert matches, i
        seen.add(matches[0])
    assert len(seen) > 2  # flips/rotations actually happen


def test_train_determinism_rng_state_and_workers(train_list):
    ds = TrainDataset(train_list, scale=4, patch_size=16, patches_per_image=4)

    def run(n=12):
        return [torch.cat([t.flatten() for t in ds[i]]) for i in range(n)]

    torch.manual_seed(123)
    a = run()
    torch.manual_seed(123)
    b = run()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    state = torch.get_rng_state()
    c = run()
    torch.set_rng_state(state)
    d = run()
    assert all(torch.equal(x, y) for x, y in zip(c, d))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))

    def loader_batches():
        torch.manual_seed(7)
        dl = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, num_workers=2)
        return [torch.cat([lr.flatten(), hr.flatten()]) for lr, hr in dl]

    e, f = loader_batches(), loader_batches()
    assert len(e) == 3 and all(torch.equal(x, y) for x, y in zip(e, f))


def test_train_given_lr_crop_aligns(tmp_path):
    hr = noise(48, 40, 30)
    lr_file = noise(12, 10, 31)  # unrelated pixels: only alignment can make them match
    item = {"name": "a", "hr": str(save_png(hr, tmp_path / "a.png")), "lr": str(save_png(lr_file, tmp_path / "ax4.png"))}
    lst = write_list(tmp_path / "l.json", [item])
    for augment in (False, True):
        ds = TrainDataset(lst, scale=4, patch_size=16, patches_per_image=30, augment=augment)
        torch.manual_seed(2)
        for i in range(30):
            lr, hr_patch = (to_uint8(t) for t in ds[i])
            ok = False
            for f in TRANSFORMS:
                hits = find_crop(hr, np.ascontiguousarray(f(hr_patch)))  # f undoes one of the augmentations
                for y, x in hits:
                    if y % 4 == 0 and x % 4 == 0:
                        ok |= np.array_equal(lr_file[y // 4 : y // 4 + 4, x // 4 : x // 4 + 4], np.ascontiguousarray(f(lr)))
            assert ok, (augment, i)


def test_train_cache_budget(tmp_path):
    images = [{"name": str(k), "hr": str(save_png(noise(512, 512, 40 + k), tmp_path / f"{k}.png")), "lr": None}
              for k in range(3)]  # 768 KiB each decoded
    lst = write_list(tmp_path / "l.json", images)
    ds = TrainDataset(lst, patch_size=16, patches_per_image=1, cache_mb=2)
    for i in range(3):
        ds[i]
    assert len(ds.cache) == 2 and ds.cache_bytes == 2 * 512 * 512 * 3 <= 2 * 2**20
    ds[2]  # the third image is decoded again, still not cached
    assert len(ds.cache) == 2
    ds0 = TrainDataset(lst, patch_size=16, patches_per_image=1, cache_mb=0)
    ds0[0]
    assert ds0.cache_bytes == 0 and not ds0.cache


def test_train_bad_inputs(odd_images, tmp_path):
    good = ["rgb", "gray", "rgba", "palette", "sixteen", "cmyk"]
    images = [{"name": k, "hr": str(odd_images[k]), "lr": None} for k in good + ["small", "notimage"]]
    lst = write_list(tmp_path / "l.json", images)
    with pytest.warns(UserWarning) as rec:
        ds = TrainDataset(lst, patch_size=96, patches_per_image=2)
    msg = next(str(w.message) for w in rec if "dropped" in str(w.message))
    assert "small.png" in msg and "smaller than the 96x96 patch" in msg and "notimage.png" in msg
    assert [im["name"] for im in ds.images] == good
    torch.manual_seed(0)
    for i in range(len(ds)):
        lr, hr = ds[i]
        assert hr.shape == (3, 96, 96) and lr.shape == (3, 24, 24)
    # conversions are utils.read_image's: check a 16-bit and a grayscale patch against it
    for key in ("sixteen", "gray"):
        k = good.index(key)
        ref = read_image(odd_images[key])
        assert ref.ndim == 3
        ds.augment = False
        _, hr = ds[k * 2]
        assert find_crop(ref, to_uint8(hr))

    # a truncated file among the good ones passes the header check but fails on access, naming it
    trunc = write_list(tmp_path / "t.json", [{"name": "t", "hr": str(odd_images["truncated"]), "lr": None}])
    ds_t = TrainDataset(trunc, patch_size=16, patches_per_image=1)
    with pytest.raises(ImageReadError, match="truncated.png"):
        ds_t[0]


def test_train_construction_errors(train_list, tmp_path):
    with pytest.raises(FileNotFoundError, match="create_data_lists"):
        TrainDataset(str(tmp_path / "none.json"))
    with pytest.raises(ValueError, match="scale 4, not 2"):
        TrainDataset(train_list, scale=2, patch_size=16)
    with pytest.raises(ValueError, match="multiple of scale"):
        TrainDataset(train_list, scale=4, patch_size=18)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no usable training image"):
        TrainDataset(train_list, scale=4, patch_size=96)
    # an LR file of the wrong size is dropped with a warning naming it
    hr = save_png(noise(32, 32), tmp_path / "h.png")
    bad = save_png(noise(9, 8), tmp_path / "hx4.png")
    good_hr = save_png(noise(32, 32, 1), tmp_path / "g.png")
    lst = write_list(tmp_path / "lr.json", [{"name": "h", "hr": str(hr), "lr": str(bad)},
                                            {"name": "g", "hr": str(good_hr), "lr": None}])
    with pytest.warns(UserWarning, match="hx4.png: LR size 8x9"):
        ds = TrainDataset(lst, patch_size=16)
    assert [im["name"] for im in ds.images] == ["g"]


# --------------------------------------------------------------------------- EvalDataset
def test_eval_dataset_modcrop_gray_and_conversions(odd_images, tmp_path):
    keys = ["rgb", "gray", "rgba", "palette", "sixteen", "cmyk", "small"]
    lst_dir = tmp_path / "lists"
    folder = tmp_path / "evalset"
    folder.mkdir()
    for k in keys:
        shutil.copy(odd_images[k], folder / odd_images[k].name)
    create_data_lists([], {"Odd": str(folder)}, str(lst_dir), scale=3)
    ds = EvalDataset(str(lst_dir / "Odd.json"), scale=3)
    assert len(ds) == len(keys)
    for sample in ds:
        src = read_image(folder / f"{sample['name']}{odd_images[sample['name']].suffix}", keep_gray=True)
        np.testing.assert_array_equal(sample["hr"], modcrop(src, 3))
        assert sample["hr"].dtype == sample["lr"].dtype == np.uint8
        assert sample["lr"].shape[:2] == (sample["hr"].shape[0] // 3, sample["hr"].shape[1] // 3)
        assert sample["lr"].ndim == sample["hr"].ndim == (2 if sample["name"] in ("gray", "sixteen") else 3)
    with pytest.raises(ValueError, match="scale 3, not 4"):
        EvalDataset(str(lst_dir / "Odd.json"), scale=4)


def test_eval_dataset_errors_and_channel_matching(tmp_path):
    hr = save_png(noise(40, 40, 1, channels=1), tmp_path / "g.png")
    lr_rgb_gray = save_png(np.repeat(noise(10, 10, 2, 1)[:, :, None], 3, axis=2), tmp_path / "gx4.png")
    wrong = save_png(noise(11, 10, 3), tmp_path / "wx4.png")
    colour_hr = save_png(noise(40, 40, 4), tmp_path / "c.png")
    lst = write_list(tmp_path / "l.json", [
        {"name": "g", "hr": str(hr), "lr": str(lr_rgb_gray)},
        {"name": "w", "hr": str(colour_hr), "lr": str(wrong)},
        {"name": "c", "hr": str(colour_hr), "lr": None},
    ])
    ds = EvalDataset(lst)
    g = ds[0]
    assert g["hr"].ndim == 2 and g["lr"].ndim == 2  # an RGB file with equal channels is gray
    with pytest.raises(ValueError, match="wx4.png is 10x11"):
        ds[1]
    c = ds[2]  # no LR file: imresize of the mod-cropped HR
    np.testing.assert_array_equal(c["lr"], imresize(c["hr"], scale=1 / 4))
    write_list(tmp_path / "empty.json", [])
    with pytest.raises(ValueError, match="no images"):
        EvalDataset(str(tmp_path / "empty.json"))
