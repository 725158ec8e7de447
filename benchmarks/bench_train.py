"""Training speed: SRResNet stage-1 and SRGAN stage-2 iterations per second.

Times the solver's own training steps (``solver.pretrain_step`` / ``solver.gan_step`` inside
``training.train_epoch``) on synthetic batches (batch 16, 96x96 HR patches, as in
the paper; data loading is not included, see ``--data`` for that), for several variants:

* ``fp32-nchw``      plain float32, default (NCHW) memory format
* ``channels-last``  NHWC activations and weights (the solver's default), float32
* ``channels-last+bf16``  the same under ``torch.autocast(dtype=torch.bfloat16)`` (CPU and CUDA;
                     what ``speed.amp="auto"`` picks on a CPU with native bf16, see
                     ``inference.cpu_has_native_bf16``)
* ``+compile``       ``torch.compile`` (inductor) on top of channels-last, if a C compiler works
* on CUDA also ``amp-fp16`` (autocast with GradScaler)

After each stage a line compares bf16 with fp32 (both channels-last) as a ratio of step
times from the same run, since the absolute figures move with the load of a shared CPU.

Stage 2 includes the discriminator step and a VGG54 content loss (random VGG weights: the
same amount of computation as the ImageNet ones, which this machine may not have).

Examples::

    python benchmarks/bench_train.py                      # CPU, all variants, 5 timed steps
    python benchmarks/bench_train.py --variants channels-last channels-last+bf16   # fp32 vs bf16
    python benchmarks/bench_train.py --device cuda --iters 50
    python benchmarks/bench_train.py --stages 1 --variants fp32-nchw channels-last --repeat 3
    python benchmarks/bench_train.py --data data/lists/train.json   # data loading throughput

Prints one line per (device, stage, variant) with the median s/iteration over
``--repeat`` measurements and iterations/s; also the machine load (``os.getloadavg``)
before and after, since other processes on a shared CPU change the figures.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
import solver  # noqa: E402
import inference  # noqa: E402
import losses  # noqa: E402
import training  # noqa: E402


def make_ctx(device: torch.device, amp: str, channels_last: bool) -> training.TrainContext:
    return training.TrainContext(
        device=device, amp_dtype=training._amp_dtype(amp, device), channels_last=channels_last, progress=False,
        log_every=10, global_step=0, check_every=1 if device.type == "cpu" else 10)


def scaled(optimizer: torch.optim.Optimizer, ctx: training.TrainContext) -> torch.optim.Optimizer:
    """``optimizer`` with a GradScaler attached under fp16 (as the solver does)."""
    device_type = ctx.device.type
    training.attach_grad_scaler(optimizer, torch.amp.GradScaler(device_type, enabled=ctx.amp_dtype == torch.float16))
    return optimizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_stage(stage: int, device: torch.device, variant: str, batch: int, patch: int, iters: int,
               warmup: int, repeat: int, n_blocks: int) -> list[float]:
    """Seconds per training iteration, one figure per repeat."""
    channels_last = variant != "fp32-nchw"
    amp = "bf16" if variant.endswith("bf16") else "fp16" if variant.endswith("fp16") else "off"
    compile_ = variant.endswith("compile")
    torch.manual_seed(0)
    g = models.SRResNet(scale=4, n_blocks=n_blocks, channels=64).to(device)
    mf = torch.channels_last if channels_last else torch.contiguous_format
    g = g.to(memory_format=mf)
    lr = torch.rand(batch, 3, patch // 4, patch // 4)
    hr = torch.rand(batch, 3, patch, patch)
    data = [(lr, hr)]
    ctx = make_ctx(device, amp, channels_last)
    kw = {"foreach": True} if device.type == "cpu" else {"fused": True}
    opt_g = scaled(torch.optim.Adam(g.parameters(), lr=1e-4, **kw), ctx)
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, [10**9])
    g_run = torch.compile(g) if compile_ else g
    if stage == 1:
        def run(n):
            training.train_epoch(data * n, ctx, 1, 1, lambda lr, hr: solver.pretrain_step(g_run, lr, hr, opt_g),
                                 [sched_g], [g_run])
    else:
        d = models.Discriminator().to(device).to(memory_format=mf)
        d_run = torch.compile(d) if compile_ else d
        opt_d = scaled(torch.optim.Adam(d.parameters(), lr=1e-4, **kw), ctx)
        sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, [10**9])
        content = losses.ContentLoss("vgg54", vgg_random_init=True).to(device).to(memory_format=mf)
        weights = solver.loss_weights(solver.make_config("srgan-vgg54").stage2)
        frozen = training.DiscriminatorInput(d_run, frozen=True)

        def run(n):
            training.train_epoch(data * n, ctx, 2, 1, lambda lr, hr: solver.gan_step(
                g_run, d_run, lr, hr, opt_g, opt_d, content, weights, frozen), [sched_g, sched_d], [g_run, d_run])
    run(warmup)
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(iters)
        _sync(device)
        times.append((time.perf_counter() - t0) / iters)
    return times


def bench_data(list_file: str, batch: int, patch: int, workers: int, n_batches: int) -> None:
    from torch.utils.data import DataLoader

    from datasets import TrainDataset

    ds = TrainDataset(list_file, scale=4, patch_size=patch, patches_per_image=100)
    sampler = training.SeededSampler(len(ds), seed=0)
    loader = DataLoader(training.SeededDataset(ds), batch_size=batch, sampler=sampler, num_workers=workers,
                        drop_last=True, persistent_workers=workers > 0)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    dt = (time.perf_counter() - t0) / n_batches
    print(f"data  {Path(list_file).name}: {dt:.4f} s/batch of {batch} ({1 / dt:.1f} batches/s) "
          f"with {workers} worker(s)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="all", help="cpu, cuda or all (default: all available)")
    p.add_argument("--stages", type=int, nargs="+", default=[1, 2])
    p.add_argument("--variants", nargs="+", default=None,
                   help="fp32-nchw channels-last channels-last+bf16 channels-last+compile amp-fp16")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--n-blocks", type=int, default=16)
    p.add_argument("--iters", type=int, default=5, help="timed iterations per measurement")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="measurements; the median is printed")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    p.add_argument("--data", default=None, help="also time the DataLoader on this train list")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    cc = training.c_compiler_available()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, mkldnn "
          f"{torch.backends.mkldnn.is_available()}, native CPU bf16 {inference.cpu_has_native_bf16()} "
          f"(speed.amp=auto uses {training._amp_dtype('auto', torch.device('cpu')) or 'fp32'} on this CPU), "
          f"C compiler {'ok' if cc else 'missing'}; "
          f"load average {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    print(f"batch {args.batch}, HR patch {args.patch}, SRResNet {args.n_blocks} blocks; median of "
          f"{args.repeat} x {args.iters} iterations after {args.warmup} warm-up")
    for dev in devices:
        device = torch.device(dev)
        if dev == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        variants = args.variants or (["fp32-nchw", "channels-last", "channels-last+bf16"]
                                     + (["channels-last+compile"] if cc else [])
                                     + (["amp-fp16"] if dev == "cuda" else []))
        for stage in args.stages:
            medians = {}
            for variant in variants:
                if variant.endswith("compile") and not cc and dev == "cpu":
                    print(f"{dev:4s} stage {stage} {variant:22s} skipped: no working C compiler")
                    continue
                try:
                    times = time_stage(stage, device, variant, args.batch, args.patch, args.iters,
                                       args.warmup, args.repeat, args.n_blocks)
                except Exception as err:  # noqa: BLE001 - report and go on with the other variants
                    print(f"{dev:4s} stage {stage} {variant:22s} failed: {type(err).__name__}: {err}")
                    continue
                med = medians[variant] = statistics.median(times)
                print(f"{dev:4s} stage {stage} {variant:22s} {med:8.4f} s/it  {1 / med:8.2f} it/s  "
                      f"(runs: {', '.join(f'{t:.3f}' for t in times)})", flush=True)
            if "channels-last" in medians and "channels-last+bf16" in medians:
                fp32, bf16 = medians["channels-last"], medians["channels-last+bf16"]
                name = "SRResNet step" if stage == 1 else "SRGAN step (D + G, VGG54)"
                print(f"{dev:4s} stage {stage} {name}: fp32 {fp32:.3f} s, bf16 {bf16:.3f} s, "
                      f"bf16 / fp32 = {bf16 / fp32:.2f}", flush=True)
    if args.data:
        bench_data(args.data, args.batch, args.patch, args.workers, n_batches=20)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
