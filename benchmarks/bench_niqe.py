"""Speed of metrics.calculate_niqe, against a per-block loop port of the NIQE MATLAB release.

Usage::

    python benchmarks/bench_niqe.py [--runs 11] [--threads 1]

Cases: a 512x512 RGB photograph (scikit-image's ``astronaut``; 25 blocks of 96x96) and
Set14's baboon (480x492, the MATLAB reference image; from ``benchmarks/data`` or
``../shared``). Prints the median of ``--runs`` timed runs after one warm-up; no assertions.
The "loop port" row computes the same features the way the MATLAB code reads (and BasicSR's
Python port works, 0.13 s for 512x512 RGB on a 2-core CPU): one block at a
time, and for every AGGD fit a scan of all 9,801 grid points; it is timed on the same input
so that the comparison holds on a busy machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scipy.special import gamma  # noqa: E402

import utils  # noqa: E402
import metrics  # noqa: E402
from imresize import imresize  # noqa: E402

BABOON = "Set14/image_SRF_4/img_001_SRF_4_HR.png"


def loop_port(img: np.ndarray) -> float:
    """NIQE block by block with a full grid scan per fit (same features as utils)."""
    shapes = np.arange(0.2, 10.0005, 0.001)
    ratio = gamma(2 / shapes) ** 2 / (gamma(1 / shapes) * gamma(3 / shapes))

    def fit(v: np.ndarray) -> tuple[float, float, float]:
        left, right = np.sqrt(np.mean(v[v < 0] ** 2)), np.sqrt(np.mean(v[v > 0] ** 2))
        g = left / right
        r = np.mean(np.abs(v)) ** 2 / np.mean(v ** 2)
        r_norm = r * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
        alpha = shapes[np.argmin((ratio - r_norm) ** 2)]
        spread = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
        return alpha, left * spread, right * spread

    def features(block: np.ndarray) -> list[float]:
        alpha, bl, br = fit(block.ravel())
        out = [alpha, (bl + br) / 2]
        for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
            alpha, bl, br = fit((block * np.roll(block, shift, axis=(0, 1))).ravel())
            out += [alpha, (br - bl) * gamma(2 / alpha) / gamma(1 / alpha), bl, br]
        return out

    mu_p, cov_p, window = metrics._niqe_model()
    y = metrics.rgb2y(img) if img.ndim == 3 else img
    rows, cols = y.shape[0] // 96, y.shape[1] // 96
    x = y[:rows * 96, :cols * 96].astype(np.float64)
    feats = []
    for scale in (1, 2):
        mscn = metrics._mscn(x, window)
        size = 96 // scale
        feats.append([features(mscn[i * size:(i + 1) * size, j * size:(j + 1) * size])
                      for j in range(cols) for i in range(rows)])
        x = imresize(x, 0.5, padding="symmetric")
    feats = np.concatenate([np.array(f) for f in feats], axis=1)
    d = mu_p - np.nanmean(feats, axis=0)
    cov = (cov_p + np.cov(feats[~np.isnan(feats).any(axis=1)], rowvar=False)) / 2
    return float(np.sqrt(d @ np.linalg.pinv(cov, rcond=36 * np.finfo(float).eps) @ d))


def timed(fn, runs: int) -> tuple[float, float]:
    """(median seconds, result) over ``runs`` runs after one warm-up."""
    result = fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=11)
    p.add_argument("--threads", type=int, default=None, help="torch threads (NIQE itself is numpy/scipy)")
    args = p.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    from skimage import data as skdata

    cases = {"512x512 RGB (astronaut)": skdata.astronaut()}
    for root in (REPO / "benchmarks" / "data", REPO.parent / "shared" / "data" / "benchmark"):
        if (root / BABOON).is_file():
            cases["Set14 baboon 480x492 RGB"] = utils.read_image(root / BABOON)[:, :492]
            break
    print(f"median of {args.runs} runs after a warm-up")
    print("| image | calculate_niqe | loop port | speed-up | NIQE | loop port NIQE |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, img in cases.items():
        fast, value = timed(lambda: metrics.calculate_niqe(img), args.runs)
        slow, ref = timed(lambda: loop_port(img), max(3, args.runs // 3))
        print(f"| {name} | {fast:.3f} s | {slow:.3f} s | {slow / fast:.1f}x | {value:.8f} | {ref:.8f} |")
    if "Set14 baboon 480x492 RGB" not in cases:
        print(f"(baboon not found: {BABOON} under benchmarks/data or ../shared/data/benchmark)")


if __name__ == "__main__":
    main()
