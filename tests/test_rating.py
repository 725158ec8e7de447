"""course/rating.py: the MOS tally, the blind session it builds, and a rating session in a real browser."""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import notebook_helpers
import utils
from imresize import imresize

REPO = Path(__file__).resolve().parents[1]
# course/ is not a package: load the script as a module (registered first: its dataclasses need it)
_spec = importlib.util.spec_from_file_location("course_rating", REPO / "course" / "rating.py")
rating = sys.modules.setdefault("course_rating", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(rating)

SCALE = 4
IMAGES = ["img_001", "img_002", "img_0021"]  # img_002 is a prefix of img_0021: file matching must not mix them
# seconds to wait for the page: a few suffice on an idle machine; CI once needed more than 10 on a loaded one
BROWSER_WAIT_S = 60
SR_SET_METHODS = {"Bicubic": "bicubic", "SRGAN (local run)": "srgan-local-run"}  # label -> name in file names
STUDENT = "student"


# --------------------------------------------------------------------------- test data
def write_set(root: Path, seed: int = 0) -> dict:
    """A tiny rated set: HR/LR PNGs, a data list, a save_sr_set folder (2 methods) and a student's
    folder (1 method). Returns every image version's pixels: ``{(image, method): uint8 array}``."""
    rng = np.random.default_rng(seed)
    truth = {}
    entries = []
    for k, name in enumerate(IMAGES):
        h, w = (16, 16) if k != 1 else (16, 20)
        hr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        lr = rng.integers(0, 256, (h // SCALE, w // SCALE, 3), dtype=np.uint8)
        utils.save_image(hr, root / "hr" / f"{name}_hr.png")
        utils.save_image(lr, root / "hr" / f"{name}_lr.png")
        entries.append({"name": name, "hr": str(root / "hr" / f"{name}_hr.png"),
                        "lr": str(root / "hr" / f"{name}_lr.png")})
        truth[name, "HR"] = hr
        truth[name, "nearest"] = imresize(lr, SCALE, method="nearest")  # MATLAB-exact nearest, independently
        for label, method in SR_SET_METHODS.items():
            sr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            utils.save_image(sr, root / "sr" / notebook_helpers.sr_filename(name, label, SCALE))
            truth[name, method] = sr
        sr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        utils.save_image(sr, root / STUDENT / (f"{name}.png" if k else f"{name}_mine.png"))
        truth[name, STUDENT] = sr
    utils.save_image(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), root / "sr" / "contact_sheet_x4.png")
    (root / "Tiny.json").write_text(json.dumps({"name": "Tiny", "scale": SCALE, "images": entries}))
    return truth


def make(root: Path, out: Path, *extra: str) -> int:
    return rating.main(["make", str(root / "sr"), f"{STUDENT}={root / STUDENT}", "--hr", str(root / "Tiny.json"),
                        "--out", str(out), *extra])


def read_session(out: Path) -> dict:
    """The session JSON embedded in the page."""
    html = (out / "index.html").read_text(encoding="utf-8")
    match = re.search(r"const SESSION = (\{.*?\});\n", html)
    assert match, "no SESSION in the page"
    return json.loads(match.group(1))


def pixel_index(truth: dict) -> dict:
    """``{pixels: (image, method)}`` to recognise a session image by its content."""
    index = {(a.shape, a.tobytes()): key for key, a in truth.items()}
    assert len(index) == len(truth)
    return index


def set14_truth() -> dict:
    """The calibration candidates (the bundled Set14): ``{(image, "HR" | "nearest"): pixels}``."""
    truth = {}
    for image in rating.load_set(REPO / "benchmarks" / "data" / "Set14", SCALE):
        truth[f"Set14/{image.name}", "HR"] = image.hr
        truth[f"Set14/{image.name}", "nearest"] = rating.nearest_upscale(image.lr, SCALE)
    return truth


def identify(path: Path, index: dict) -> tuple[str, str]:
    img = utils.read_image(path, keep_gray=True)
    return index[img.shape, img.tobytes()]


# --------------------------------------------------------------------------- make
def test_make_writes_a_blind_complete_session(tmp_path):
    truth = write_set(tmp_path)
    out = tmp_path / "session"
    assert make(tmp_path, out, "--calibration", "2") == 0

    files = sorted((out / "images").iterdir())
    assert all(re.fullmatch(r"[0-9a-f]{16}\.png", p.name) for p in files), [p.name for p in files]
    assert len(files) == len(IMAGES) * 5 + 2 * 2  # (3 methods + HR + nearest) per image, 2 calibration pairs

    html = (out / "index.html").read_text(encoding="utf-8")
    for word in ["HR", "nearest", "bicubic", "srgan", "local run", STUDENT, *IMAGES]:
        assert not re.search(rf"\b{re.escape(word)}\b", html, re.IGNORECASE), f"{word!r} is in the page"
    assert "http:" not in html and "https:" not in html  # nothing fetched from a network

    session = read_session(out)
    meta = rating.deobfuscate(session["meta"], bytes.fromhex(session["key"]))
    assert sorted(session["items"]) == sorted(meta)
    assert sorted(map(tuple, meta.values())) == sorted(truth)  # every version of every image, once
    index = pixel_index({**truth, **set14_truth()})
    for token, (image, method) in meta.items():
        assert identify(out / "images" / f"{token}.png", index) == (image, method)
    assert len(session["calibration"]) == 2
    for low, high in session["calibration"]:
        low_key = identify(out / "images" / f"{low}.png", index)
        high_key = identify(out / "images" / f"{high}.png", index)
        # calibration from Set14 by default: never an image that is also rated
        assert low_key[1] == "nearest" and high_key == (low_key[0], "HR") and high_key[0].startswith("Set14/")
        assert low not in meta and high not in meta  # calibration answers are not exported


def test_make_reads_selfexsr_folders_and_filters_methods(tmp_path, capsys):
    truth = write_set(tmp_path)
    srf = tmp_path / "Tiny" / f"image_SRF_{SCALE}"
    for name in IMAGES:  # SelfExSR names: img_001_SRF_4_HR.png -> image img_001
        utils.save_image(truth[name, "HR"], srf / f"{name}_SRF_{SCALE}_HR.png")
        utils.save_image(truth[name, "nearest"][::SCALE, ::SCALE], srf / f"{name}_SRF_{SCALE}_LR.png")
    out = tmp_path / "session"
    assert rating.main(["make", str(tmp_path / "sr"), "--hr", str(srf), "--out", str(out),
                        "--methods", "srgan-local-run", "--calibration", "0"]) == 0
    session = read_session(out)
    meta = rating.deobfuscate(session["meta"], bytes.fromhex(session["key"]))
    assert sorted(map(tuple, meta.values())) == sorted(k for k in truth if k[1] in ("srgan-local-run", "HR", "nearest"))
    assert session["calibration"] == []
    assert "3 images x 3 versions (srgan-local-run, HR, nearest) = 9 ratings per rater" in capsys.readouterr().out


def test_nearest_anchor_is_matlab_nearest():
    lr = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for scale in (2, 3, 4):
        np.testing.assert_array_equal(rating.nearest_upscale(lr, scale), imresize(lr, scale, method="nearest"))


@pytest.mark.parametrize("problem, expected", [
    ("missing folder", "SR folder not found"),
    ("missing image", "lacks image(s) img_0021"),
    ("wrong size", "but the HR image img_001 is 16x16"),
    ("reserved name", "reserved for the anchors"),
    ("output not empty", "is not empty"),
    ("same method twice", "is in both"),
    ("unknown method", "--methods: nope not found"),
])
def test_make_errors_are_one_line(tmp_path, capsys, problem, expected):
    truth = write_set(tmp_path)
    inputs = [str(tmp_path / "sr")]
    extra = []
    if problem == "missing folder":
        inputs = [str(tmp_path / "no_such_folder")]
    elif problem == "missing image":
        (tmp_path / "sr" / notebook_helpers.sr_filename("img_0021", "Bicubic", SCALE)).unlink()
    elif problem == "wrong size":
        utils.save_image(truth["img_001", "HR"][:8], tmp_path / "sr" / notebook_helpers.sr_filename("img_001", "Bicubic", SCALE))
    elif problem == "reserved name":
        inputs = [f"HR={tmp_path / STUDENT}"]
    elif problem == "output not empty":
        (tmp_path / "session").mkdir()
        (tmp_path / "session" / "notes.txt").write_text("mine")
    elif problem == "same method twice":
        inputs = [f"x={tmp_path / STUDENT}", f"x={tmp_path / STUDENT}"]
    elif problem == "unknown method":
        extra = ["--methods", "bicubic,nope"]
    code = rating.main(["make", *inputs, "--hr", str(tmp_path / "Tiny.json"), "--out", str(tmp_path / "session"),
                        *extra])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
    if problem == "output not empty":
        assert (tmp_path / "session" / "notes.txt").read_text() == "mine"
    else:
        assert not (tmp_path / "session").exists()  # nothing half-made


def test_make_overwrite_replaces_only_a_session(tmp_path):
    write_set(tmp_path)
    out = tmp_path / "session"
    assert make(tmp_path, out) == 0
    first = read_session(out)["id"]
    assert make(tmp_path, out, "--overwrite") == 0
    assert read_session(out)["id"] != first
    assert len(list((out / "images").iterdir())) == len(IMAGES) * 5 + 2 * 2  # old images gone
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


# --------------------------------------------------------------------------- tally
# Known score multisets per method (mean known exactly), spread over 6 raters x 5 images.
KNOWN = {"nearest": [1] * 24 + [2] * 6,              # MOS 1.2
         "bicubic": [2] * 15 + [3] * 15,             # MOS 2.5
         "srresnet": [2] * 6 + [3] * 18 + [4] * 6,   # MOS 3.0
         "srgan": [3] * 6 + [4] * 18 + [5] * 6,      # MOS 4.0
         "HR": [4] * 9 + [5] * 21}                   # MOS 4.7
RATERS = [f"rater{i}" for i in range(6)]
SET5 = [f"img_00{i}" for i in range(1, 6)]


def write_ratings(folder: Path, seed: int = 0) -> list[Path]:
    """One CSV per rater (as the page exports), plus a careless rater who swapped the scale."""
    rng = np.random.default_rng(seed)
    rows = {rater: [] for rater in RATERS}
    for method, scores in KNOWN.items():
        shuffled = rng.permutation(scores)
        for k, (rater, image) in enumerate((r, i) for r in RATERS for i in SET5):
            rows[rater].append([rater, image, method, int(shuffled[k]), round(float(rng.uniform(1, 9)), 1)])
    rows["careless"] = [["careless", image, method, {"HR": 1, "nearest": 5}.get(method, 3), 0.3]
                        for image in SET5 for method in KNOWN]
    paths = []
    for rater, lines in rows.items():
        path = folder / f"ratings_{rater}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(rating.COLUMNS)
            writer.writerows(rng.permutation(np.array(lines, dtype=object)).tolist())
        paths.append(path)
    return paths


def test_tally_reproduces_known_means_intervals_and_flags_the_careless_rater(tmp_path, capsys):
    paths = write_ratings(tmp_path)
    out = tmp_path / "mos"
    assert rating.main(["tally", *map(str, paths), "--out", str(out)]) == 0
    assert "left out rater 'careless'" in capsys.readouterr().out

    with open(out / "mos.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["method", "ratings", "mos", "ci_low", "ci_high"]
        rows = {row["method"]: row for row in reader}
    assert list(rows) == ["nearest", "bicubic", "srresnet", "srgan", "HR"]  # anchors outside, others by MOS
    for method, scores in KNOWN.items():
        row = rows[method]
        assert int(row["ratings"]) == 30  # the careless rater's 5 ratings per method are left out
        assert float(row["mos"]) == pytest.approx(sum(scores) / len(scores), abs=1e-12)
        low, high = stats.t.interval(0.95, len(scores) - 1, loc=np.mean(scores), scale=stats.sem(scores))
        assert float(row["ci_low"]) == pytest.approx(low, abs=1e-9)
        assert float(row["ci_high"]) == pytest.approx(high, abs=1e-9)
    # by hand for one method: s = sqrt(30 * 0.25 / 29), t(0.975, 29) = 2.0452296
    half = 2.0452296421 * math.sqrt(30 * 0.25 / 29) / math.sqrt(30)
    assert float(rows["bicubic"]["ci_high"]) == pytest.approx(2.5 + half, abs=1e-8)

    report = (out / "mos.md").read_text()
    assert "Left out (mean HR score below mean nearest score): careless." in report
    assert "![distribution of scores](mos.png)" in report
    assert (out / "mos.png").stat().st_size > 0 and (out / "mos_per_image.csv").is_file()
    with open(out / "mos_per_image.csv", newline="") as f:
        per_image = list(csv.DictReader(f))
    assert len(per_image) == len(SET5) * len(KNOWN)
    assert sum(int(r["ratings"]) for r in per_image) == 30 * len(KNOWN)


def test_mann_whitney_matches_counting_and_scipy(tmp_path):
    paths = write_ratings(tmp_path)
    result = rating.tally(paths, tmp_path / "mos")
    assert result["flagged"] == ["careless"]
    pairs = {(r["method_a"], r["method_b"]): r for r in result["pairs"]}
    assert len(pairs) == 10  # every pair of 5 methods
    for (a, b), row in pairs.items():
        x, y = np.array(KNOWN[a]), np.array(KNOWN[b])
        u = float((x[:, None] > y[None, :]).sum() + 0.5 * (x[:, None] == y[None, :]).sum())  # U by counting pairs
        assert row["u"] == pytest.approx(u)
        assert row["p"] == pytest.approx(stats.mannwhitneyu(x, y, alternative="two-sided").pvalue, rel=1e-12)
        # normal approximation with tie correction and continuity correction, written out
        n1, n2 = len(x), len(y)
        _, ties = np.unique(np.concatenate([x, y]), return_counts=True)
        sigma = math.sqrt(n1 * n2 / 12 * ((n1 + n2 + 1) - (ties ** 3 - ties).sum() / ((n1 + n2) * (n1 + n2 - 1))))
        z = (abs(u - n1 * n2 / 2) - 0.5) / sigma if sigma else 0.0
        assert row["p"] == pytest.approx(min(1.0, 2 * stats.norm.sf(z)), rel=1e-9)
    assert pairs["bicubic", "srgan"]["p"] < 1e-6 and pairs["srresnet", "srgan"]["p"] < 1e-3


@pytest.mark.parametrize("content, expected", [
    ("rater,image,method,score\nA,img_001,HR,5\n", "missing column(s) seconds"),
    ("rater,image,method,score,seconds\nA,img_001,HR,6,1.0\n", "line 2: score '6' is not an integer from 1 to 5"),
    ("rater,image,method,score,seconds\nA,img_001,HR,0,1.0\n", "score '0' is not an integer from 1 to 5"),
    ("rater,image,method,score,seconds\nA,img_001,HR,4.5,1.0\n", "score '4.5' is not an integer"),
    ("rater,image,method,score,seconds\nA,img_001,HR,4,-1\n", "seconds '-1' is not a number >= 0"),
    ("rater,image,method,score,seconds\nA,img_001,HR,4,1\nA,img_001,HR,5,1\n", "line 3: rater 'A' rated image"),
    ("rater,image,method,score,seconds\n", "no ratings in"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "is not a CSV text file"),
])
def test_tally_rejects_bad_ratings_files(tmp_path, capsys, content, expected):
    path = tmp_path / "ratings.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert rating.main(["tally", str(path), "--out", str(tmp_path / "mos")]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "mos").exists()


def test_cli_exit_status_and_message(tmp_path):
    missing = tmp_path / "nope.csv"
    done = subprocess.run([sys.executable, str(REPO / "course" / "rating.py"), "tally", str(missing), "--out",
                           str(tmp_path / "mos")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr == f"error: ratings file not found: {missing}\n"


# --------------------------------------------------------------------------- a real browser
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1000,800"]


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium driven by selenium, with a new empty profile; skips when either is missing."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("headless Chromium not found (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    try:
        driver = webdriver.Chrome(options=options, service=Service(driver_path))
    except WebDriverException as err:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"Chromium could not be started: {str(err.msg).splitlines()[0]}")
    driver.downloads = downloads
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_rating_session_in_headless_chromium(tmp_path, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    truth = write_set(tmp_path)
    index = pixel_index({**truth, **set14_truth()})
    out = tmp_path / "session"
    assert make(tmp_path, out, "--calibration", "2") == 0
    session = read_session(out)
    total = len(session["items"])

    def shown(previous: str | None = None) -> tuple[str, tuple[str, str]]:
        """Wait until the page shows a loaded image other than ``previous``; return its file name
        and what it is (recognised by its pixels)."""
        def loaded(d):
            picture = d.find_element(By.ID, "picture")
            src = picture.get_attribute("src")
            return picture.get_attribute("data-ready") == "1" and not src.endswith(f"/{previous}") and src
        src = WebDriverWait(browser, BROWSER_WAIT_S).until(loaded)
        path = Path(urllib.parse.unquote(urllib.parse.urlparse(src).path))
        return path.name, identify(path, index)

    def press(key: str) -> None:
        ActionChains(browser).send_keys(key).perform()

    def stored() -> dict:
        return browser.execute_script(f"return JSON.parse(localStorage.getItem('sr-rating/{session['id']}'))")

    browser.get(out.joinpath("index.html").as_uri())
    browser.find_element(By.ID, "rater").send_keys("Ada, the 1st")  # a comma: the CSV must quote it
    browser.find_element(By.ID, "begin").click()

    # calibration: nearest asks for 1, HR for 5; other keys do nothing
    for step in range(4):
        name, (image, method) = shown()
        assert method == ("nearest" if step % 2 == 0 else "HR")
        assert browser.find_element(By.ID, "progress-text").text == f"calibration {step + 1} / 4"
        press("3")
        assert shown()[0] == name
        press("1" if method == "nearest" else "5")
        WebDriverWait(browser, BROWSER_WAIT_S).until(lambda d: stored()["calibrated"] == step + 1)

    # rating: every image once, score by method (+1 on one image, so scores vary)
    base = {"nearest": 1, "bicubic": 2, "srgan-local-run": 3, STUDENT: 4, "HR": 5}
    expected, seen, seen_keys = {}, [], []
    name = None
    for i in range(total):
        name, (image, method) = shown(previous=name)
        assert (image, method) not in expected
        assert browser.find_element(By.ID, "progress-text").text == f"{i + 1} / {total}"
        score = min(5, base[method] + (image == "img_002"))
        expected[image, method] = score
        seen.append(name[:-4])
        seen_keys.append((image, method))
        press(str(score))
        if i == total // 2:  # reload half-way: nothing lost, same next image, same progress
            WebDriverWait(browser, BROWSER_WAIT_S).until(lambda d: len(stored()["ratings"]) == i + 1)
            next_name = shown(previous=name)[0]
            browser.refresh()
            assert shown()[0] == next_name
            assert len(stored()["ratings"]) == i + 1
            assert browser.find_element(By.ID, "progress-text").text == f"{i + 2} / {total}"
        if i == total - 3:  # close the tab, open the page again in a new one: same place
            WebDriverWait(browser, BROWSER_WAIT_S).until(lambda d: len(stored()["ratings"]) == i + 1)
            next_name = shown(previous=name)[0]
            old_tab = browser.current_window_handle
            browser.switch_to.new_window("tab")
            new_tab = browser.current_window_handle
            browser.switch_to.window(old_tab)
            browser.close()
            browser.switch_to.window(new_tab)
            browser.get(out.joinpath("index.html").as_uri())
            assert shown()[0] == next_name
            assert len(stored()["ratings"]) == i + 1
    assert sorted(expected) == sorted(truth)
    assert seen != session["items"]  # the rater's order is drawn, not the page's

    # export: the page's text and the downloaded file, with method names
    csv_box = WebDriverWait(browser, BROWSER_WAIT_S).until(lambda d: d.find_element(By.ID, "csv"))
    text = WebDriverWait(browser, BROWSER_WAIT_S).until(lambda d: csv_box.get_attribute("value"))
    rows = list(csv.DictReader(text.splitlines()))
    assert list(rows[0]) == list(rating.COLUMNS)
    assert {(r["image"], r["method"]): int(r["score"]) for r in rows} == expected
    assert {r["rater"] for r in rows} == {"Ada, the 1st"}
    assert [(r["image"], r["method"]) for r in rows] == seen_keys  # in the order rated
    assert all(float(r["seconds"]) >= 0 for r in rows)
    browser.find_element(By.ID, "download").click()
    WebDriverWait(browser, BROWSER_WAIT_S).until(lambda d: list(d.downloads.glob("*.csv")))
    downloaded = list(browser.downloads.glob("*.csv"))
    assert [p.name for p in downloaded] == ["ratings_Ada_the_1st.csv"]
    # Chromium can create the file empty and fill it a moment later: wait for all its bytes
    WebDriverWait(browser, BROWSER_WAIT_S).until(lambda d: downloaded[0].stat().st_size >= len(text.encode()))
    assert downloaded[0].read_text() == text

    # the next rater: after a confirmation the ratings leave the browser and the name is asked again
    browser.find_element(By.ID, "restart").click()
    browser.switch_to.alert.accept()
    assert browser.find_element(By.ID, "start").is_displayed() and stored() is None

    # tally of the export
    result = rating.tally(downloaded, tmp_path / "mos")
    mos = {row["method"]: row["mos"] for row in result["methods"]}
    for method in base:
        scores = [s for (image, m), s in expected.items() if m == method]
        assert mos[method] == pytest.approx(np.mean(scores))
    assert result["flagged"] == []
