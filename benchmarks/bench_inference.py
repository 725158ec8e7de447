"""Inference speed of SRResNet x4 through ``inference.super_resolve``, fp32 and bf16 side by side.

Cases (SRResNet x4, 16 blocks, 64 channels, random init; timings are end to end: uint8 in
-> uint8 out, including host/device copies), each in fp32 and in bf16
(``super_resolve(..., precision="bf16")``, ``torch.autocast`` bf16), with the ratio
bf16 / fp32 of the two times (< 1: bf16 is faster):

* ``cpu-200``: a 200x200 LR image (800x800 output), untiled, best of ``--repeats``.
* ``cpu-1000-tiled``: a 1000x1000 LR image (4000x4000 output), ``--tile`` LR pixels per
  tile with the default overlap, run once; peak RSS shows that memory stays bounded.
  ``--large N`` uses an NxN image instead (the ratio per tile is the same).
* on CUDA, when available: the same two cases on the GPU, plus fp16 (a ``.half()`` model).

bf16 is fast where the hardware computes it natively: GPUs, and CPUs with AVX512-BF16 or
AMX (the header says whether this CPU has it). Elsewhere PyTorch emulates it, slower than
fp32 and with ~10x the memory, and ``super_resolve`` refuses it; the CPU bf16 cases are
then skipped unless ``--emulated-bf16`` (which lets them run to show what the refusal
avoids: several GB per 200x200 image). Scores (``inference.evaluate``) are always fp32.

Each case runs in its own subprocess so that its peak RSS (``resource.getrusage``,
``ru_maxrss``) is its own. Prints figures; asserts nothing. Run it when the machine is
otherwise idle, or compare only ratios taken in the same run.

    python benchmarks/bench_inference.py                      # all cases
    python benchmarks/bench_inference.py --skip-large         # only the 200x200 cases
    python benchmarks/bench_inference.py --large 400 --threads 1
    python benchmarks/bench_inference.py --skip-large --emulated-bf16   # bf16 on an AVX2 CPU
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_case(case: str, tile: int, repeats: int, emulated_bf16: bool = False) -> None:
    """Run one case (``device-precision-size[-tiled]``) and print its line and a JSON line."""
    import numpy as np
    import torch

    import inference
    from inference import super_resolve
    from models import SRResNet

    if emulated_bf16:  # measure what super_resolve refuses on CPUs without native bf16
        inference.cpu_has_native_bf16 = lambda: True

    device, precision, size, *rest = case.split("-")
    tiled = bool(rest)
    torch.manual_seed(0)
    model = SRResNet(scale=4).to(device).eval()
    if precision == "fp16":  # fp16 as a half model (super_resolve casts the input to it)
        model = model.half()
    lr = np.random.default_rng(0).integers(0, 256, (int(size), int(size), 3), dtype=np.uint8)
    kwargs = {"tile": tile} if tiled else {}
    kwargs["precision"] = "bf16" if precision == "bf16" else "fp32"

    if not tiled or device == "cuda":  # warm-up (cuDNN autotune, allocator); the big CPU case is run once
        super_resolve(model, lr[:64, :64] if tiled else lr, **kwargs)
    times = []
    for _ in range(1 if tiled and device == "cpu" else repeats):
        if device == "cuda":
            torch.cuda.synchronize()
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
    print(json.dumps({"case": case, "seconds": seconds}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    parser.add_argument("--size", type=int, default=200, help="LR side of the untiled case (default 200)")
    parser.add_argument("--large", type=int, default=1000, help="LR side of the tiled case (default 1000)")
    parser.add_argument("--tile", type=int, default=200, help="LR tile size for the tiled case")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per untiled case (best is shown)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--skip-large", action="store_true", help="skip the tiled cases")
    parser.add_argument("--emulated-bf16", action="store_true",
                        help="run the CPU bf16 cases on a CPU without native bf16 too (slow, GBs of memory)")
    args = parser.parse_args()

    import torch

    from inference import cpu_has_native_bf16

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case:
        run_case(args.case, args.tile, args.repeats, args.emulated_bf16)
        return

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes = [f"{args.size}"] + ([] if args.skip_large else [f"{args.large}-tiled"])
    print(f"SRResNet x4 (16 blocks, 64 ch, random init) via inference.super_resolve | torch {torch.__version__} | "
          f"CPU {torch.backends.cpu.get_cpu_capability()}, native bf16: {'yes' if cpu_has_native_bf16() else 'no'} | "
          f"threads {args.threads or torch.get_num_threads()}"
          + (f" | {torch.cuda.get_device_name()}" if torch.cuda.is_available() else " | no CUDA"), flush=True)
    for device in devices:
        for size in sizes:
            seconds = {}
            for precision in ["fp32", "bf16"] + (["fp16"] if device == "cuda" else []):
                case = f"{device}-{precision}-{size}"
                if case.startswith("cpu-bf16") and not (cpu_has_native_bf16() or args.emulated_bf16):
                    print(f"{case:22s} skipped: no native bf16 on this CPU (super_resolve refuses it; "
                          "--emulated-bf16 runs it anyway)", flush=True)
                    continue
                cmd = [sys.executable, __file__, "--case", case, "--tile", str(args.tile),
                       "--repeats", str(args.repeats)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                if args.emulated_bf16:
                    cmd += ["--emulated-bf16"]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                for line in out.splitlines():
                    if line.startswith("{"):
                        seconds[precision] = json.loads(line)["seconds"]
                    else:
                        print(line, flush=True)
            ratios = ", ".join(f"{p}/fp32 = {seconds[p] / seconds['fp32']:.2f}" for p in seconds if p != "fp32")
            if ratios:
                print(f"{'':22s} {device} {size}: {ratios}", flush=True)


if __name__ == "__main__":
    main()
