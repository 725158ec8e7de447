"""Speed of imresize (numpy float / uint8, torch CPU / CUDA) against a popular torch port.

Usage::

    python benchmarks/bench_imresize.py [--runs 7] [--threads N]

Cases: downscale a 2040x1356 RGB image by 1/4, upscale a 510x339 RGB image by 4.
Targets (this machine, from the issue): float path <= 0.073 s, uint8 path <= 0.146 s.
Prints the median of ``--runs`` timed runs after one warm-up; no assertions. The
"port" row is a loop-based torch imresize in the style of BasicSR's
``matlab_functions.imresize`` (mirror padding, one matrix-vector product per output
row and channel), timed on the same input so the comparison holds on a busy machine.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imresize import _cubic, imresize  # noqa: E402

TARGET_FLOAT = 0.073
TARGET_UINT8 = 0.146


def port_imresize(img: torch.Tensor, scale: float) -> torch.Tensor:
    """Loop-based bicubic port (``CxHxW`` float in [0, 1]), the usual Python approach."""

    def weights_indices(in_len: int, out_len: int):
        width = 4.0 / scale if scale < 1 else 4.0
        x = torch.arange(1, out_len + 1, dtype=torch.float64)
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = torch.floor(u - width / 2)
        p = math.ceil(width) + 2
        idx = left[:, None] + torch.arange(p, dtype=torch.float64)[None]
        dist = (u[:, None] - idx).numpy()
        w = torch.from_numpy(scale * _cubic(scale * dist) if scale < 1 else _cubic(dist))
        w = w / w.sum(1, keepdim=True)
        sym_s = int(-idx.min().item() + 1)
        sym_e = int(idx.max().item() - in_len)
        return w.float(), (idx + sym_s - 1).long(), sym_s, sym_e, p

    def pass_dim(x: torch.Tensor, out_len: int) -> torch.Tensor:  # resize dim 1 of CxLxR
        c, in_len, r = x.shape
        w, idx, sym_s, sym_e, p = weights_indices(in_len, out_len)
        aug = torch.cat([x[:, :sym_s].flip(1), x, x[:, in_len - sym_e :].flip(1)], 1)
        out = torch.empty(c, out_len, r)
        for i in range(out_len):
            start = int(idx[i, 0])
            for j in range(c):
                out[j, i] = aug[j, start : start + p].transpose(0, 1).mv(w[i])
        return out

    c, h, w = img.shape
    out = pass_dim(img, math.ceil(h * scale))
    out = pass_dim(out.transpose(1, 2), math.ceil(w * scale)).transpose(1, 2)
    return out.contiguous()


def timeit(fn, runs: int) -> float:
    fn()  # warm-up (also fills the weight caches)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per case (median is printed)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-port", action="store_true", help="skip the loop-based reference port")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    cases = {
        "down x1/4  2040x1356": (rng.integers(0, 256, (1356, 2040, 3), dtype=np.uint8), 1 / 4),
        "up   x4    510x339  ": (rng.integers(0, 256, (339, 510, 3), dtype=np.uint8), 4),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.runs} runs (seconds)")
    print(f"targets: float <= {TARGET_FLOAT}, uint8 <= {TARGET_UINT8}")
    for name, (img8, scale) in cases.items():
        imgf = img8.astype(np.float64) / 255
        tensor = torch.from_numpy(img8.transpose(2, 0, 1).copy()).float().div(255)
        rows = {
            "numpy float64": (lambda: imresize(imgf, scale), TARGET_FLOAT),
            "numpy uint8": (lambda: imresize(img8, scale), TARGET_UINT8),
            "torch CPU float32 (1x3xHxW)": (lambda: imresize(tensor[None], scale), TARGET_FLOAT),
        }
        if torch.cuda.is_available():
            cuda = tensor[None].cuda()
            rows["torch CUDA float32"] = (lambda: imresize(cuda, scale), TARGET_FLOAT)
        if not args.no_port:
            rows["loop-based torch port"] = (lambda: port_imresize(tensor, scale), None)
        for label, (fn, target) in rows.items():
            t = timeit(fn, args.runs)
            verdict = "" if target is None else ("  ok" if t <= target else f"  SLOWER than {target}")
            print(f"{name}  {label:28s} {t:8.4f}{verdict}")


if __name__ == "__main__":
    main()
