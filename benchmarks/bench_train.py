"""Training speed: the SRResNet step (stage 1) and the SRGAN step (stage 2), as ratios.

Times the solver's own training steps (``solver.pretrain_step`` / ``solver.gan_step`` inside
``training.train_epoch``) on synthetic batches (batch 16, 96x96 HR patches, as in the
paper; data loading is not included, see ``--data`` for that), for several variants:

* ``default``        exactly what ``solver.py`` runs with its default speed settings on this
                     machine (``speed.channels_last``, ``speed.amp="auto"``, ``speed.compile="auto"``,
                     ``training.adam_options``, ``training.fast_cpu_prelu`` on a CPU): bf16 autocast on
                     a CPU with native bf16 (AVX512-BF16 or AMX) or on CUDA, fp32 elsewhere
* ``channels-last+bf16``  bf16 autocast with PyTorch's own PReLU and multi-tensor Adam: on a CPU
                     with native bf16, ``default`` without ``ScalarPReLU`` and fused Adam
* ``fp32-nchw``      plain float32, default (NCHW) memory format: the reference of the ratios
* ``channels-last``  NHWC activations and weights, float32
* ``channels-last+compile``  ``torch.compile`` (inductor) on top of channels-last, if a C compiler works
* ``default+compile``  ``default`` with ``torch.compile`` (inductor) on: whether compiling would pay
                     on this machine (the warm-up iteration holds the compile time)
* ``amp-fp16``       CUDA only: fp16 autocast with a GradScaler

Stage 2 is the preset's stage-2 step (``--stage2-preset``, default ``srgan-mse``: the losses of
the shipped SRGAN, content = 4 x pixel MSE + 1e-3 x adversarial, with ``d_translate=2``);
``--stage2-preset srgan-vgg54`` adds the VGG54 content loss (random VGG weights: the same
computation as the ImageNet ones).

After each stage every variant is printed as a ratio of step times against ``fp32-nchw``
from the same run: absolute figures move with the load of a shared machine, ratios much less.
``--profile N`` also prints the ``N`` most expensive operators of one ``default`` step and its
forward time by module type (``torch.profiler``).

Examples::

    python benchmarks/bench_train.py                      # about a minute on a 2-core CPU
    python benchmarks/bench_train.py --profile 15         # + where the time goes
    python benchmarks/bench_train.py --variants fp32-nchw channels-last channels-last+bf16 default --iters 5 --repeat 3
    python benchmarks/bench_train.py --device cuda --iters 50
    python benchmarks/bench_train.py --data data/lists/train.json   # data loading throughput

Prints a line before each measurement (so a long one says what it is doing), then one line per
(device, stage, variant) with the median s/iteration over ``--repeat`` measurements; also the
machine load (``os.getloadavg``) before and after.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import inference  # noqa: E402
import losses  # noqa: E402
import models  # noqa: E402
import solver  # noqa: E402
import training  # noqa: E402

VARIANTS = ("default", "fp32-nchw", "channels-last", "channels-last+bf16", "channels-last+compile", "default+compile",
            "amp-fp16")


def variant_settings(variant: str, device: torch.device) -> dict:
    """``{"channels_last", "amp_dtype", "compile", "adam"}`` of a variant on ``device``.

    ``default`` reads the solver's own defaults (``solver.make_config().speed``), so it
    measures what a training run on this machine does.
    """
    if variant in ("default", "default+compile"):
        speed = solver.make_config("mse").speed
        use_compile = speed.compile is True or (speed.compile == "auto" and device.type == "cuda")
        return {"channels_last": bool(speed.channels_last), "amp_dtype": training._amp_dtype(speed.amp, device),
                "compile": use_compile or variant == "default+compile", "adam": training.adam_options(device),
                "fast_prelu": device.type == "cpu"}
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    amp = "bf16" if variant.endswith("bf16") else "fp16" if variant.endswith("fp16") else "off"
    # the other variants keep PyTorch's own PReLU and multi-tensor Adam, to compare with ``default``
    return {"channels_last": variant != "fp32-nchw", "amp_dtype": training._amp_dtype(amp, device),
            "compile": variant.endswith("compile"),
            "adam": {"foreach": True} if device.type == "cpu" else {"fused": True}, "fast_prelu": False}


def describe(settings: dict) -> str:
    dtype = settings["amp_dtype"]
    return (f"{'channels_last' if settings['channels_last'] else 'NCHW'}, "
            f"{str(dtype).replace('torch.', '') if dtype else 'fp32'}"
            f"{', compiled' if settings['compile'] else ''}, Adam {'/'.join(settings['adam'])}"
            f"{', ScalarPReLU' if settings['fast_prelu'] else ''}")


def make_step(stage: int, device: torch.device, settings: dict, batch: int, patch: int, n_blocks: int,
              stage2_preset: str) -> tuple[Callable[[int], None], list[nn.Module]]:
    """``(run, networks)``: ``run(n)`` trains ``n`` iterations on one synthetic batch
    (LR ``batch x 3 x patch/4 x patch/4``, HR ``batch x 3 x patch x patch``, in [0, 1])."""
    mf = torch.channels_last if settings["channels_last"] else torch.contiguous_format
    ctx = training.TrainContext(device=device, amp_dtype=settings["amp_dtype"],
                                channels_last=settings["channels_last"], progress=False, log_every=10,
                                global_step=0, check_every=1 if device.type == "cpu" else 10)
    torch.manual_seed(0)
    g = models.SRResNet(scale=4, n_blocks=n_blocks, channels=64).to(device).to(memory_format=mf)
    if settings["fast_prelu"]:
        training.fast_cpu_prelu(g)
    data = [(torch.rand(batch, 3, patch // 4, patch // 4), torch.rand(batch, 3, patch, patch))]

    def adam(net: nn.Module) -> torch.optim.Optimizer:
        opt = torch.optim.Adam(net.parameters(), lr=1e-4, **settings["adam"])
        training.attach_grad_scaler(opt, torch.amp.GradScaler(device.type,
                                                              enabled=settings["amp_dtype"] == torch.float16))
        return opt

    opt_g = adam(g)
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, [10**9])
    g_run = torch.compile(g) if settings["compile"] else g
    if stage == 1:
        def run(n: int) -> None:
            training.train_epoch(data * n, ctx, 1, 1, lambda lr, hr: solver.pretrain_step(g_run, lr, hr, opt_g),
                                 [sched_g], [g_run])
        return run, [g]
    cfg2 = solver.make_config(stage2_preset).stage2
    d = models.Discriminator().to(device).to(memory_format=mf)
    d_run = torch.compile(d) if settings["compile"] else d
    opt_d = adam(d)
    sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, [10**9])
    content = losses.ContentLoss(cfg2.content_loss, vgg_random_init=True).to(device).to(memory_format=mf)
    weights = solver.loss_weights(cfg2)
    translate = 2  # the shipped SRGAN's stage2.d_translate
    d_for_d = training.DiscriminatorInput(d_run, translate)
    d_for_g = training.DiscriminatorInput(d_run, translate, frozen=True)

    def run(n: int) -> None:
        training.train_epoch(data * n, ctx, 2, 1, lambda lr, hr: solver.gan_step(
            g_run, d_for_d, lr, hr, opt_g, opt_d, content, weights, d_for_g), [sched_g, sched_d], [g_run, d_run])
    return run, [g, d]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_run(run: Callable[[int], None], device: torch.device, iters: int, warmup: int, repeat: int) -> list[float]:
    """Seconds per iteration, one figure per repeat, after ``warmup`` iterations."""
    run(warmup)
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(iters)
        _sync(device)
        times.append((time.perf_counter() - t0) / iters)
    return times


def profile_step(run: Callable[[int], None], networks: list[nn.Module], top: int) -> None:
    """Print the ``top`` operators of one step by self time, and the forward time by module type."""
    from torch.profiler import ProfilerActivity, profile, record_function

    handles, open_records = [], []

    def pre(module: nn.Module, _inputs) -> None:
        rec = record_function(f"module::{type(module).__name__}")
        rec.__enter__()
        open_records.append(rec)

    def post(module: nn.Module, _inputs, _output) -> None:
        open_records.pop().__exit__(None, None, None)

    for net in networks:
        for m in net.modules():
            if not list(m.children()):  # leaves only: their times add up without double counting
                handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    try:
        with profile(activities=activities) as prof:
            run(1)
    finally:
        for h in handles:
            h.remove()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    ops = sorted((e for e in events if not e.key.startswith("module::")), key=lambda e: -e.self_cpu_time_total)
    print(f"  top {top} operators of one step (self CPU time; backward kernels included; total "
          f"{total / 1e6:.3f} s):")
    for e in ops[:top]:
        print(f"    {e.key:45s} {e.self_cpu_time_total / 1e3:9.1f} ms  {100 * e.self_cpu_time_total / total:5.1f}%  "
              f"x{e.count}")
    per_module = defaultdict(float)
    for e in events:
        if e.key.startswith("module::"):
            per_module[e.key[len("module::"):]] += e.cpu_time_total
    fwd = sum(per_module.values()) or 1
    print(f"  forward by module type (total {fwd / 1e6:.3f} s): " + ", ".join(
        f"{k} {v / 1e3:.0f} ms ({100 * v / fwd:.0f}%)" for k, v in sorted(per_module.items(), key=lambda kv: -kv[1])))


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="all", help="cpu, cuda or all (default: all available)")
    p.add_argument("--stages", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    p.add_argument("--variants", nargs="+", default=None, choices=VARIANTS,
                   help="default: fp32-nchw and default (+ amp-fp16 on CUDA)")
    p.add_argument("--stage2-preset", default="srgan-mse", help="preset whose stage-2 losses are timed")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--n-blocks", type=int, default=16)
    p.add_argument("--iters", type=int, default=2, help="timed iterations per measurement")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeat", type=int, default=2, help="measurements; the median is printed")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also print the N most expensive operators of one default step")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    p.add_argument("--data", default=None, help="also time the DataLoader on this train list")
    p.add_argument("--workers", type=int, default=2)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if min(args.iters, args.repeat, args.batch, args.n_blocks) < 1 or args.warmup < 0 or args.patch % 4:
        p.error("--iters, --repeat, --batch, --n-blocks must be >= 1, --warmup >= 0, --patch a multiple of 4")
    if args.stage2_preset not in solver.PRESETS:
        p.error(f"--stage2-preset: one of {sorted(solver.PRESETS)}")

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    cc = training.c_compiler_available()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native CPU bf16 {inference.cpu_has_native_bf16()}, "
          f"C compiler {'ok' if cc else 'missing'}; load average {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    print(f"batch {args.batch}, HR patch {args.patch}, SRResNet {args.n_blocks} blocks, stage 2 = "
          f"{args.stage2_preset} + d_translate 2; median of {args.repeat} x {args.iters} iterations after "
          f"{args.warmup} warm-up", flush=True)
    started = time.perf_counter()
    for dev in devices:
        device = torch.device(dev)
        if dev == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        print(f"{dev}: default = {describe(variant_settings('default', device))}")
        variants = args.variants or (["fp32-nchw", "default"] + (["amp-fp16"] if dev == "cuda" else []))
        for stage in args.stages:
            medians = {}
            for variant in variants:
                if variant == "amp-fp16" and dev != "cuda":
                    print(f"{dev:4s} stage {stage} {variant:22s} skipped: fp16 autocast is for CUDA")
                    continue
                settings = variant_settings(variant, device)
                if settings["compile"] and not cc and dev == "cpu":
                    print(f"{dev:4s} stage {stage} {variant:22s} skipped: no working C compiler")
                    continue
                print(f"  [{time.perf_counter() - started:5.0f} s] timing {dev} stage {stage} {variant} "
                      f"({args.warmup} + {args.repeat} x {args.iters} iterations)...", flush=True)
                try:
                    run, _ = make_step(stage, device, settings, args.batch, args.patch, args.n_blocks,
                                       args.stage2_preset)
                    times = time_run(run, device, args.iters, args.warmup, args.repeat)
                except Exception as err:  # noqa: BLE001 - report and go on with the other variants
                    print(f"{dev:4s} stage {stage} {variant:22s} failed: {type(err).__name__}: {err}")
                    continue
                med = medians[variant] = statistics.median(times)
                print(f"{dev:4s} stage {stage} {variant:22s} {med:8.4f} s/it  {1 / med:8.2f} it/s  "
                      f"(runs: {', '.join(f'{t:.3f}' for t in times)})", flush=True)
            name = "SRResNet step" if stage == 1 else f"SRGAN step ({args.stage2_preset}: D + G)"
            if "fp32-nchw" in medians:
                ref = medians["fp32-nchw"]
                print(f"{dev:4s} stage {stage} {name}, time / fp32-nchw: " + ", ".join(
                    f"{v} {t / ref:.2f}" for v, t in medians.items()), flush=True)
            if args.profile:
                run, nets = make_step(stage, device, variant_settings("default", device), args.batch, args.patch,
                                      args.n_blocks, args.stage2_preset)
                run(max(1, args.warmup))
                print(f"{dev:4s} stage {stage} profile of one default step:")
                profile_step(run, nets, args.profile)
    if args.data:
        bench_data(args.data, args.batch, args.patch, args.workers, n_batches=20)
    print(f"load average after: {os.getloadavg()[0]:.2f}; {time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
