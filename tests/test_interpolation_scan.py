"""benchmarks/interpolation_scan.py: blends of two generators scored on a list, and the rule that
picks one (lowest NIQE among the blends that keep a PSNR bound)."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import checkpoints
import inference
import metrics
import models
from create_data_lists import write_data_list
from datasets import EvalDataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import interpolation_scan  # noqa: E402


def test_choose_takes_the_lowest_niqe_that_keeps_the_bound():
    choose = interpolation_scan.choose
    rows = [{"alpha": 0.5, "psnr": 27.4, "niqe": 5.5}, {"alpha": 0.8, "psnr": 27.1, "niqe": 4.3},
            {"alpha": 0.9, "psnr": 26.9, "niqe": 4.2}, {"alpha": 1.0, "psnr": 26.6, "niqe": 4.1}]
    assert choose(rows, 27.0)["alpha"] == 0.8  # 0.9 and 1.0 are more natural but below the bound
    assert choose(rows, 26.0)["alpha"] == 1.0
    assert choose(rows, 27.5) is None


@pytest.fixture
def two_generators_and_a_list(tmp_path):
    torch.manual_seed(0)
    paths = []
    for name in ("psnr", "gan"):
        net = models.SRResNet(scale=4, n_blocks=1, channels=8)
        paths.append(checkpoints.save_generator(tmp_path / f"{name}.pth", net))
    rng = np.random.default_rng(0)
    images = []
    for k in range(2):
        hr = tmp_path / f"hr{k}.png"
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(hr)
        images.append({"name": f"img{k}", "hr": str(hr), "lr": None})
    lst = tmp_path / "val.json"
    write_data_list(lst, "val", 4, images)
    return paths[0], paths[1], lst


def test_scan_blends_and_scores_each_alpha(two_generators_and_a_list, tmp_path, capsys):
    psnr, gan, lst = two_generators_and_a_list
    out = tmp_path / "scan.csv"
    code = interpolation_scan.main(["--psnr", str(psnr), "--gan", str(gan), "--list", str(lst),
                               "--alphas", "0", "0.5", "1", "--csv", str(out)])
    assert code == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(row["alpha"]) for row in rows] == [0.0, 0.5, 1.0]
    psnrs = [float(row["psnr"]) for row in rows]
    assert len(set(psnrs)) == 3  # three different networks, not the same one three times
    # alpha 0 is the PSNR network itself, alpha 1 the GAN network itself
    for alpha, path in ((0.0, psnr), (1.0, gan)):
        net = checkpoints.load_generator(path)
        alone = metrics.mean_metrics(inference.evaluate(net, EvalDataset(str(lst)), 4, progress=False))
        assert psnrs[[0.0, 0.5, 1.0].index(alpha)] == pytest.approx(alone["psnr"], abs=1e-9)


def test_bad_inputs_are_one_line_errors(two_generators_and_a_list, tmp_path, capsys):
    psnr, gan, lst = two_generators_and_a_list
    other = checkpoints.save_generator(tmp_path / "other.pth", models.SRResNet(scale=4, n_blocks=2, channels=8))
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    cases = [
        (["--psnr", str(psnr), "--gan", str(other), "--list", str(lst)], "different architectures"),
        (["--psnr", str(text), "--gan", str(gan), "--list", str(lst)], "notes.pth"),
        (["--psnr", str(psnr), "--gan", str(gan), "--list", str(tmp_path / "none.json")], "no such file"),
        (["--psnr", str(psnr), "--gan", str(gan), "--list", str(lst), "--alphas", "1.5"], "in [0, 1]"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_:
            interpolation_scan.main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and "Traceback" not in err, err
