"""course/rating.py make-class / tally --session: one blind rating of a whole class and its leaderboard."""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import re
import sys
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np
import pytest

import inference
import metrics
import utils

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("course_rating", REPO / "course" / "rating.py")
rating = sys.modules.setdefault("course_rating", importlib.util.module_from_spec(_spec))
if not hasattr(rating, "make_class"):
    _spec.loader.exec_module(rating)

from test_rating import BROWSER_WAIT_S, browser, read_session  # noqa: E402,F401  (the Chromium fixture)

SET5 = rating.load_set(REPO / "benchmarks" / "data" / "Set5", 4)
NAMES = [image.name for image in SET5]
DELTA = {"img_001": -1, "img_002": 0, "img_003": 1, "img_004": 1, "img_005": -1}  # per-image spread, mean 0


def student_images(k: int) -> dict[str, np.ndarray]:
    """Student ``k``'s Set5 SR images: the HR image with a student-specific change (all distinct)."""
    rng = np.random.default_rng(100 + k)
    return {image.name: np.clip(image.hr.astype(np.int16) + rng.integers(-6 - k, 7 + k, image.hr.shape), 0, 255)
            .astype(np.uint8) for image in SET5}


def png_bytes(img: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    im = Image.fromarray(img)
    (im.convert(mode) if mode else im).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_zip(path: Path, files: dict[str, bytes], top: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(f"{top}/{name}" if top else name, data)
    return path


def submission_files(images: dict[str, np.ndarray], method: str = "srgan-local-run") -> dict[str, bytes]:
    files = {f"results/sr_set5/{name}_{method}_x4.png": png_bytes(img) for name, img in images.items()}
    files.update({f"results/sr_set5/{name}_bicubic_x4.png": png_bytes(inference.bicubic_upscale(image.lr, 4))
                  for name, image in zip(NAMES, SET5)})
    files["REPORT.md"] = b"| method | PSNR |\n| mine | 99.00 |\n"  # never read: the leaderboard recomputes
    return files


def decode(page: Path) -> tuple[dict, dict]:
    session = read_session_page(page)
    return session, rating.deobfuscate(session["meta"], bytes.fromhex(session["key"]))


def read_session_page(page: Path) -> dict:
    match = re.search(r"const SESSION = (\{.*?\});\n", page.read_text(encoding="utf-8"))
    assert match, page
    return json.loads(match.group(1))


# ------------------------------------------------------------------------------ bad submissions


def test_bad_submissions_are_named_in_one_line_and_left_out(tmp_path, capsys):
    good = student_images(0)
    subs = tmp_path / "hand_in"
    subs.mkdir()
    write_zip(subs / "ada.zip", submission_files(good), top="srgan-course")  # one top folder, as zips often are
    files = submission_files(student_images(1))
    del files["results/sr_set5/img_003_srgan-local-run_x4.png"]
    write_zip(subs / "bob.zip", files)
    files = submission_files(student_images(2))
    files["results/sr_set5/img_002_srgan-local-run_x4.png"] = png_bytes(student_images(2)["img_001"])
    write_zip(subs / "cy.zip", files)
    files = submission_files(student_images(3))
    files["results/sr_set5/img_004_srgan-local-run_x4.png"] = png_bytes(student_images(3)["img_004"], "RGBA")
    write_zip(subs / "dee.zip", files)
    files = submission_files(student_images(4))
    files.update({k.replace("srgan-local-run", "srresnet"): v for k, v in files.items() if "srgan" in k})
    write_zip(subs / "eve.zip", files)
    folder = subs / "fay"
    for name, data in submission_files(student_images(5)).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "results/sr_set5/img_005_srgan-local-run_x4.png").write_bytes(b"GIF89a not a png")
    bomb = submission_files(student_images(6))
    bomb["results/sr_set5/img_001_srgan-local-run_x4.png"] = b"\0" * (40 * 2**20)  # 40 MB that zip to 40 KB
    write_zip(subs / "gus.zip", bomb)
    (subs / "notes.txt").write_text("not a submission")
    out = tmp_path / "class"
    assert rating.main(["make-class", *map(str, sorted(subs.iterdir())), "--out", str(out), "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    left = {line.split(":")[0].split("/")[-1]: line for line in lines if line.startswith("left out ")}
    assert sorted(left) == ["bob.zip", "cy.zip", "dee.zip", "eve.zip", "fay", "gus.zip", "notes.txt"], lines
    assert "srgan-local-run: 4 of 5 images (missing img_003)" in left["bob.zip"]
    assert "img_002_srgan-local-run_x4.png is 512x512, the HR image is 288x288" in left["cy.zip"]
    assert "img_004_srgan-local-run_x4.png is a 8-bit RGBA PNG, not 8-bit RGB" in left["dee.zip"]
    assert "2 methods besides bicubic" in left["eve.zip"] and "choose one with --method" in left["eve.zip"]
    assert "img_005_srgan-local-run_x4.png is not a PNG file" in left["fay"]
    assert "refused" in left["gus.zip"]
    record = rating.read_class(out)
    assert record["students"] == ["ada"] and set(record["left_out"]) == {"bob", "cy", "dee", "eve", "fay", "gus",
                                                                         "notes.txt"}
    # the method can be chosen for everyone
    out2 = tmp_path / "class2"
    assert rating.main(["make-class", str(subs / "eve.zip"), "--out", str(out2), "--method", "srresnet"]) == 0
    assert rating.read_class(out2)["methods"] == {"eve": "srresnet"}
    assert rating.main(["make-class", str(subs / "bob.zip"), "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no usable submission among 1 (bob: ") and err.count("\n") == 1
    assert not (tmp_path / "none").exists()


# ------------------------------------------------------------------------------ a human-sized class


def test_sixty_students_balanced_subsets_of_the_default_size(tmp_path, capsys):
    """60 submissions (hard links of one set of PNGs: regular files, quick to make)."""
    shared = tmp_path / "shared"
    for name, data in submission_files(student_images(0)).items():
        (shared / name).parent.mkdir(parents=True, exist_ok=True)
        (shared / name).write_bytes(data)
    subs = []
    for k in range(60):
        folder = tmp_path / "hand_in" / f"student{k:02d}"
        for path in shared.rglob("*"):
            if path.is_file():
                target = folder / path.relative_to(shared)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, target)
        subs.append(str(folder))
    raters = 12
    out = tmp_path / "class"
    assert rating.main(["make-class", *subs, "--out", str(out), "--raters", str(raters), "--seed", "3",
                        "--calibration", "1"]) == 0
    capsys.readouterr()
    pages = sorted(out.glob("rater_*.html"))
    assert [p.name for p in pages] == [f"rater_{r:02d}.html" for r in range(1, raters + 1)]
    n_items = 60 * 5 + 3 * 5  # the students' images and the anchors HR, nearest, bicubic of each image
    floor = raters * rating.DEFAULT_PER_RATER // n_items
    counts: dict[tuple[str, str], int] = {}
    for page in pages:
        session, meta = decode(page)
        assert len(session["items"]) == rating.DEFAULT_PER_RATER == len(set(session["items"]))
        seen = [tuple(meta[t]) for t in session["items"]]
        assert {m for _, m in seen} >= set(rating.ANCHORS)  # every rater sees every anchor kind
        for key in seen:
            counts[key] = counts.get(key, 0) + 1
    expected = {(image, f"student{k:02d}") for k in range(60) for image in NAMES}
    expected |= {(image, anchor) for image in NAMES for anchor in rating.ANCHORS}
    assert set(counts) == expected
    assert min(counts.values()) >= floor >= 4, (min(counts.values()), floor)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert len(list((out / "images").iterdir())) == n_items + 2  # one calibration pair


# ------------------------------------------------------------------------------ end to end in Chromium

BASE = {"ada": 2, "bob": 4, "cy": 3, "dee": 2, "eve": 4, "fay": 3}  # each student's known mean score
ANCHOR_SCORE = {"nearest": 1, "bicubic": 2, "HR": 5}


def test_a_class_rated_in_headless_chromium_gives_the_leaderboard(tmp_path, browser, capsys):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    truth: dict[tuple[str, str], np.ndarray] = {}
    subs = tmp_path / "hand_in"
    subs.mkdir()
    for k, student in enumerate(BASE):
        images = student_images(k)
        truth.update({(name, student): img for name, img in images.items()})
        write_zip(subs / f"{student}.zip", submission_files(images))
    for image in SET5:
        truth[image.name, "HR"] = image.hr
        truth[image.name, "nearest"] = rating.nearest_upscale(image.lr, 4)
        truth[image.name, "bicubic"] = inference.bicubic_upscale(image.lr, 4)
    for image in rating.load_set(REPO / "benchmarks" / "data" / "Set14", 4):
        truth[f"Set14/{image.name}", "HR"] = image.hr
        truth[f"Set14/{image.name}", "nearest"] = rating.nearest_upscale(image.lr, 4)
    index = {(a.shape, a.tobytes()): key for key, a in truth.items()}

    browser.set_window_size(1600, 1200)  # a desktop window: Set5's sizes fit at different whole zooms
    out = tmp_path / "class"
    assert rating.main(["make-class", *map(str, sorted(subs.glob("*.zip"))), "--out", str(out), "--raters", "3",
                        "--per-rater", "30", "--seed", "5"]) == 0
    capsys.readouterr()

    def press(key: str) -> None:
        ActionChains(browser).send_keys(key).perform()

    def shown(previous: str | None) -> tuple[str, tuple[str, str]]:
        def loaded(d):
            picture = d.find_element(By.ID, "picture")
            src = picture.get_attribute("src")
            return picture.get_attribute("data-ready") == "1" and src and not src.endswith(f"/{previous}") and src
        src = WebDriverWait(browser, BROWSER_WAIT_S).until(loaded)
        path = Path(urllib.parse.unquote(urllib.parse.urlparse(src).path))
        img = utils.read_image(path, keep_gray=True)
        return path.name, index[img.shape, img.tobytes()]

    def check_zoom() -> None:
        """The largest whole-number zoom that fits the stage, nearest-neighbour."""
        z, width, natural, stage, ratio, rendering = browser.execute_script(
            "const p = document.getElementById('picture'), s = document.getElementById('stage');"
            "return [Number(p.dataset.zoom), p.getBoundingClientRect().width, [p.naturalWidth, p.naturalHeight],"
            "[s.clientWidth, s.clientHeight], window.devicePixelRatio, getComputedStyle(p).imageRendering];")
        fit = max(1, math.floor(min(stage[0] * ratio / natural[0], stage[1] * ratio / natural[1])))
        assert z == fit and width == pytest.approx(natural[0] * z / ratio, abs=0.5), (z, fit, natural, stage)
        assert rendering == ("pixelated" if z > 1 else "auto")

    pressed: dict[str, dict[tuple[str, str], int]] = {}
    zooms = set()
    for r, rater in enumerate(["Ann", "Ben", "Inverted Ivy"], 1):
        page = out / f"rater_{r:02d}.html"
        browser.get(page.as_uri())
        browser.find_element(By.ID, "rater").send_keys(rater)
        browser.find_element(By.ID, "begin").click()
        name = None
        for step in range(4):  # calibration: Set14 images, never rated ones
            name, (image, method) = shown(name)
            assert image.startswith("Set14/") and method == ("nearest", "HR")[step % 2]
            press("1" if method == "nearest" else "5")
        session = read_session_page(page)
        mine = pressed.setdefault(rater, {})
        for _ in session["items"]:
            name, (image, method) = shown(name)
            check_zoom()
            zooms.add(browser.execute_script("return document.getElementById('picture').dataset.zoom"))
            score = ANCHOR_SCORE.get(method) or BASE[method] + DELTA[image]
            if rater.startswith("Inverted"):
                score = 6 - score
            mine[image, method] = score
            press(str(score))
        text = WebDriverWait(browser, BROWSER_WAIT_S).until(
            lambda d: d.find_element(By.ID, "csv").get_attribute("value"))
        (tmp_path / f"ratings_{r}.csv").write_text(text)
        assert len(text.strip().splitlines()) == len(session["items"]) + 1
    assert len(zooms) >= 2  # Set5's sizes fit the window at different whole zooms

    mos_dir = tmp_path / "mos"
    assert rating.main(["tally", *map(str, sorted(tmp_path.glob("ratings_*.csv"))), "--session", str(out),
                        "--out", str(mos_dir)]) == 0
    assert "left out rater 'Inverted Ivy'" in capsys.readouterr().out
    with open(mos_dir / "leaderboard.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["student", "ratings", "mos", "ci_low", "ci_high", "rank", "psnr", "ssim", "niqe"]
        board = list(reader)
    assert sorted(r["student"] for r in board) == sorted(BASE)
    kept = [pressed["Ann"], pressed["Ben"]]
    mos_values = [float(r["mos"]) for r in board]
    assert mos_values == sorted(mos_values, reverse=True)
    for row in board:
        student = row["student"]
        scores = [s for given in kept for (image, m), s in given.items() if m == student]
        assert int(row["ratings"]) == len(scores) >= 2
        assert float(row["mos"]) == pytest.approx(np.mean(scores), abs=1e-12)
        low, high = float(row["ci_low"]), float(row["ci_high"])
        assert 1 <= low <= BASE[student] <= high <= 5, (student, low, high, scores)
        assert int(row["rank"]) == 1 + sum(m > float(row["mos"]) for m in mos_values)
        hr = {image.name: image.hr for image in SET5}
        assert float(row["psnr"]) == pytest.approx(
            np.mean([metrics.calculate_psnr(truth[n, student], hr[n], 4) for n in NAMES]), abs=1e-9)
        assert float(row["ssim"]) == pytest.approx(
            np.mean([metrics.calculate_ssim(truth[n, student], hr[n], 4) for n in NAMES]), abs=1e-9)
        assert float(row["niqe"]) == pytest.approx(
            np.mean([metrics.niqe_or_nan(truth[n, student], 4) for n in NAMES]), abs=1e-9)
    board_md = (mos_dir / "leaderboard.md").read_text()
    assert "from 2 raters" in board_md and "Left out (mean HR score below mean nearest score): Inverted Ivy." in board_md
