"""Inference speed of SRResNet x4 through ``utils.super_resolve``: output megapixels per second.

Cases (default SRResNet x4, 16 blocks, 64 channels, random init; timings are end to end:
uint8 in -> uint8 out, including host/device copies):

* ``cpu-fp32-256``: a 256x256 LR image (1024x1024 output), untiled.
* ``cpu-fp32-1000-tiled``: a 1000x1000 LR image (4000x4000 output), ``tile`` LR pixels per
  tile with the default overlap; peak RSS shows that memory stays bounded.
* on CUDA, when available: ``cuda-{fp32,fp16,bf16}-256`` (fp16/bf16 by ``torch.autocast``)
  and ``cuda-fp32-1000-tiled``.

Each case runs in its own subprocess so that its peak RSS (``resource.getrusage``,
``ru_maxrss``) is its own. Prints figures; asserts nothing.

    python benchmarks/bench_inference.py                 # all cases
    python benchmarks/bench_inference.py --skip-large    # only the 256x256 cases
    python benchmarks/bench_inference.py --tile 128 --threads 2
"""
from __future__ import annotations

import argparse
import contextlib
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_case(case: str, tile: int, repeats: int) -> None:
    import numpy as np
    import torch

    from models import SRResNet
    from utils import super_resolve

    device, precision, size, *rest = case.split("-")
    tiled = bool(rest)
    torch.manual_seed(0)
    model = SRResNet(scale=4).to(device).eval()
    lr = np.random.default_rng(0).integers(0, 256, (int(size), int(size), 3), dtype=np.uint8)
    amp = (torch.autocast("cuda", dtype={"fp16": torch.float16, "bf16": torch.bfloat16}[precision])
           if precision != "fp32" else contextlib.nullcontext())
    kwargs = {"tile": tile} if tiled else {}

    with amp:
        if not tiled or device == "cuda":  # warm-up (cuDNN autotune, allocator); the big CPU case is run once
            super_resolve(model, lr[:64, :64] if tiled else lr, **kwargs)
        times = []
        for _ in range(1 if tiled and device == "cpu" else repeats):
            start = time.perf_counter()
            sr = super_resolve(model, lr, **kwargs)
            times.append(time.perf_counter() - start)
    seconds = min(times)
    mpix = sr.shape[0] * sr.shape[1] / 1e6
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    extra = f" tile={tile}" if tiled else ""
    gpu = ""
    if device == "cuda":
        gpu = f"  peak GPU mem {torch.cuda.max_memory_allocated() / 2**20:8.0f} MiB"
    print(f"{case:22s} out {sr.shape[1]}x{sr.shape[0]}{extra:9s} {seconds:8.3f} s  {mpix / seconds:8.3f} MP/s  "
          f"peak RSS {rss_mib:7.0f} MiB{gpu}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    parser.add_argument("--tile", type=int, default=200, help="LR tile size for the 1000x1000 cases")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per small case (best is shown)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--skip-large", action="store_true", help="skip the 1000x1000 tiled cases")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case:
        run_case(args.case, args.tile, args.repeats)
        return

    cases = ["cpu-fp32-256"] + ([] if args.skip_large else ["cpu-fp32-1000-tiled"])
    if torch.cuda.is_available():
        cases += ["cuda-fp32-256", "cuda-fp16-256", "cuda-bf16-256"] + ([] if args.skip_large else ["cuda-fp32-1000-tiled"])
    print(f"SRResNet x4 (16 blocks, 64 ch, random init) via utils.super_resolve | torch {torch.__version__} | "
          f"CPU threads {args.threads or torch.get_num_threads()}"
          + (f" | {torch.cuda.get_device_name()}" if torch.cuda.is_available() else " | no CUDA"), flush=True)
    for case in cases:
        cmd = [sys.executable, __file__, "--case", case, "--tile", str(args.tile), "--repeats", str(args.repeats)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
