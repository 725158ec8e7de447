"""How a training run is carried out around the steps of ``solver.py``: nothing here decides what is trained.

Read top to bottom:

1. **Around one step** -- ``optimizer_step`` (zero_grad, backward, step; through the fp16
   GradScaler the run attached to the optimizer), ``DiscriminatorInput`` (what D sees:
   translated, frozen for the G step), ``ema_update``, and ``train_epoch``: batches to the
   device, autocast, the step, NaN/inf checks, schedulers, progress bar.
2. **After an epoch** -- ``validate``, ``end_epoch`` (log row, checkpoint, ``log.csv``,
   ``curves.png``), ``finish_stage``.
3. **The run** -- ``start_run`` (inputs checked, folder locked, data loaded, resume point
   read), networks placed on the device, optimizers, precision, DDP/compile wrappers,
   ``resume_stage`` and ``remaining_epochs``.
4. **Data and settings** -- the seeded sampler (a resumed run draws the same samples as an
   uninterrupted one), the loader, the device and the processes.

Training data randomness (crops, flips, shuffling) depends only on ``(config.seed, stage,
epoch)``, never on how many workers load it or whether the run was resumed: every sample
is drawn under its own seed (``SeededSampler``), so a resumed run is bit-identical to an
uninterrupted one on the same machine.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from easydict import EasyDict
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

import checkpoints
import models
from checkpoints import SolverError, to_plain
from create_data_lists import how_to_make_list, load_data_list
from datasets import EvalDataset, TrainDataset
from inference import cpu_has_native_bf16, evaluate, super_resolve
from losses import ContentLoss, random_translate
from metrics import mean_metrics
from utils import atomic_write, remove_stale_temps, save_image, unwrap


# =====================================================================================
# 1. Around one step
# =====================================================================================

class TrainContext(EasyDict):
    """The run's machinery an epoch needs besides the networks.

    ``device``; ``amp_dtype`` (autocast dtype, or None for fp32); ``channels_last``;
    ``progress`` (show bars); ``log_every`` (bar refresh); ``check_every`` (NaN check
    cadence, in steps); ``global_step``: optimizer steps over the run, counted by
    ``train_epoch``.
    """


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/inf; the message says which loss, stage, epoch and step."""


def _check_finite(losses: dict[str, torch.Tensor], stage: int, epoch: int, step: int,
                  every: int) -> None:
    for name, value in losses.items():
        if not bool(torch.isfinite(value).all()):
            when = f"step {step}" if every == 1 else f"step {step} (checked every {every} steps)"
            raise NonFiniteLossError(
                f"{name} is {value.item()} in stage {stage}, epoch {epoch}, {when}. "
                "Training stopped; the last good checkpoint is untouched. Try a lower "
                "learning rate, amp='off', or resume from the checkpoint.")


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    """``zero_grad``, ``backward`` of the scalar ``loss``, ``step``.

    Under fp16 autocast the run attaches a ``torch.amp.GradScaler`` to the optimizer
    (``attach_grad_scaler``); the loss is then scaled so small gradients survive fp16, and a
    step whose gradients hold inf/NaN is skipped. Without one: plain ``backward`` and ``step``.
    """
    optimizer.zero_grad(set_to_none=True)
    scaler = getattr(optimizer, "grad_scaler", None)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # skipped when the gradients hold inf/NaN (fp16)
        scaler.update()


def attach_grad_scaler(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """Make ``optimizer_step`` go through ``scaler`` for ``optimizer`` (only when it is enabled: fp16)."""
    optimizer.grad_scaler = scaler if scaler is not None and scaler.is_enabled() else None


class DiscriminatorInput(nn.Module):
    """The discriminator as a step calls it: ``random_translate`` of its input (``translate``
    pixels, ``stage2.d_translate``), and with ``frozen`` no gradient to D's parameters (the
    G step: D is not updated there; under DDP pass the plain D, so nothing is synchronised).

    ``forward(x)``: ``Nx3xHxW`` -> logits ``(N,)``; gradients flow to ``x``.
    """

    def __init__(self, discriminator: nn.Module, translate: int = 0, frozen: bool = False):
        super().__init__()
        self.discriminator, self.translate, self.frozen = discriminator, translate, frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = random_translate(x, self.translate)
        if not self.frozen:
            return self.discriminator(x)
        params = [p for p in self.discriminator.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)  # the graph records no D parameter, so backward skips them
        try:
            return self.discriminator(x)
        finally:
            for p in params:
                p.requires_grad_(True)


@torch.no_grad()
def ema_update(ema: nn.Module, generator: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * generator``, for every floating tensor of the
    ``state_dict`` (weights and BatchNorm statistics); integer buffers are copied.

    An exponential moving average of G's weights over the last ~``1 / (1 - decay)`` steps
    (``stage2.ema_decay``; 0.999: ~1000 steps): adversarial updates make G oscillate, and
    patterns that come and go average out of the EMA (Yazici et al., ICLR 2019; Real-ESRGAN
    and BasicSR validate and release the EMA). ``ema`` and ``generator``: the same
    architecture, plain modules (not DDP-wrapped).
    """
    for e, g in zip(ema.state_dict().values(), generator.state_dict().values()):
        if e.is_floating_point():
            e.lerp_(g, 1.0 - decay)
        else:
            e.copy_(g)


def _autocast(ctx) -> Any:
    return torch.autocast(device_type=ctx.device.type, dtype=ctx.amp_dtype,
                          enabled=ctx.amp_dtype is not None)


def _batch_to_device(x: torch.Tensor, ctx) -> torch.Tensor:
    x = x.to(ctx.device, non_blocking=True)
    if ctx.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


# Progress-bar fields: log key -> (label, format).
_BAR_FIELDS = {"loss_g": ("G", ".4g"), "loss_pixel": ("loss", ".4g"), "loss_d": ("D", ".3g"),
               "d_real": ("Dx", ".2f"), "d_fake": ("DGz", ".2f")}


def _loss_label(key: str, stage: int) -> str:
    """``loss_d`` -> "discriminator loss"; stage 1's pixel loss is its "content loss"."""
    if key == "loss_d":
        return "discriminator loss"
    if stage == 1 and key == "loss_pixel":
        return "content loss"
    return key.replace("loss_", "") + " loss"


def train_epoch(loader: Any, ctx: TrainContext, stage: int, epoch: int,
                update: Callable[[torch.Tensor, torch.Tensor], dict], schedulers: list, networks: list[nn.Module],
                ema: tuple[nn.Module, nn.Module, float] | None = None) -> dict[str, float]:
    """One epoch: ``update(lr, hr)`` on every batch of ``loader``, with the machinery around it.

    Each batch ``(lr, hr)`` (``Bx3x(p/s)x(p/s)``, ``Bx3xpxp`` in [0, 1]) goes to the device,
    ``update`` runs under the run's autocast and returns detached 0-dim tensors by name
    (``loss_*``, ``d_real``, ``d_fake``); then ``ema_update(*ema)`` when given, the
    ``schedulers`` step (they count iterations), ``ctx.global_step`` is incremented, and
    the losses are checked for NaN/inf every ``ctx.check_every`` steps (the
    discriminator's first). ``networks`` are put in train mode first.

    Returns the epoch's mean of every value and ``steps``; stage 1's pixel loss is also
    its ``loss_g`` and ``loss_content`` (the log's columns). Raises ``NonFiniteLossError``.
    """
    for net in networks:
        net.train()
    sums: dict[str, torch.Tensor] = {}
    steps = 0
    # at most one refresh a second: in a notebook each refresh is a widget message, and a flood of
    # them can push a cell's last messages out of the kernel's output queue
    bar = tqdm(loader, desc=f"stage {stage} epoch {epoch}", leave=False, disable=not ctx.progress,
               mininterval=1.0, dynamic_ncols=True)
    try:
        for lr, hr in bar:
            lr, hr = _batch_to_device(lr, ctx), _batch_to_device(hr, ctx)
            with _autocast(ctx):
                losses = update(lr, hr)
            if ema is not None:
                ema_update(*ema)
            for scheduler in schedulers:
                scheduler.step()
            ctx.global_step += 1
            steps += 1
            if steps % ctx.check_every == 0:
                order = sorted((k for k in losses if k.startswith("loss_")), key=lambda k: k != "loss_d")
                _check_finite({_loss_label(k, stage): losses[k] for k in order if k != "loss_g" or stage == 2},
                              stage, epoch, ctx.global_step, ctx.check_every)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v
            if steps % ctx.log_every == 0:
                bar.set_postfix({label: f"{sums[k].item() / steps:{fmt}}" for k, (label, fmt) in _BAR_FIELDS.items()
                                 if k in sums and not (k == "loss_pixel" and "loss_g" in sums)}, refresh=False)
    finally:
        bar.close()
    means = {k: v.item() / max(steps, 1) for k, v in sums.items()}
    bad = {_loss_label(k, stage): torch.tensor(v) for k, v in means.items() if not math.isfinite(v)}
    if bad:  # a NaN/inf between two checks
        _check_finite(bad, stage, epoch, ctx.global_step, ctx.check_every)
    if stage == 1:
        mean = means.get("loss_pixel", 0.0)
        means = {"loss_g": mean, "loss_content": mean}
    return {**means, "steps": steps}


# =====================================================================================
# 2. After an epoch: validation, log, checkpoint
# =====================================================================================


def validate(generator: nn.Module, eval_dataset, scale: int, device: torch.device | str | None = None,
             tile: int | None = None, samples_dir: str | os.PathLike | None = None,
             n_samples: int = 0, prefix: str = "", max_images: int | None = None,
             progress: bool = False) -> dict[str, float]:
    """Mean PSNR/SSIM (MATLAB protocol, Y channel; ``inference.evaluate``) of ``generator``, in fp32.

    Args:
        generator: the plain (unwrapped) generator; put in eval mode here and back to train.
        eval_dataset: ``datasets.EvalDataset`` (items ``{"name", "lr", "hr"}`` uint8).
        max_images: score only the first N images (None: all).
        samples_dir / n_samples / prefix: save the first ``n_samples`` SR images as
            ``<samples_dir>/<prefix><name>.png``.

    Returns ``{"psnr": float, "ssim": float, "niqe": float}`` (dB; SSIM in [0, 1]; NIQE, lower
    = more natural, NaN when every image is too small for it), means over the images.
    Autocast is turned off here, so scores do not depend on the training's mixed precision.
    """
    if max_images is not None and max_images < len(eval_dataset):
        eval_dataset = torch.utils.data.Subset(eval_dataset, range(max_images))
    was_training = generator.training
    generator.eval()
    device_type = torch.device(device).type if device is not None else "cpu"
    try:
        with torch.autocast(device_type=device_type, enabled=False):
            rows = evaluate(generator, eval_dataset, scale, device=device, tile=tile, progress=progress)
            if samples_dir is not None and n_samples > 0:
                for k in range(min(n_samples, len(eval_dataset))):
                    item = eval_dataset[k]
                    sr = super_resolve(generator, item["lr"], tile=tile, device=device)
                    name = Path(str(item["name"])).stem
                    save_image(sr, Path(samples_dir) / f"{prefix}{name}.png")
    finally:
        generator.train(was_training)
    means = mean_metrics(rows)
    return {key: means[key] for key in ("psnr", "ssim", "niqe")}


LOG_COLUMNS = ["stage", "epoch", "step", "lr", "loss_g", "loss_content", "loss_adv", "loss_pixel",
               "loss_tv", "loss_d", "d_real", "d_fake", "psnr", "ssim", "niqe", "seconds"]


def write_log_csv(rows: list[dict], path: str | os.PathLike) -> None:
    """Write the per-epoch log rows to ``path`` (atomically); missing values are empty."""
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in LOG_COLUMNS})
    atomic_write(path, write)


def plot_curves(rows: list[dict], path: str | os.PathLike) -> None:
    """Draw ``curves_figure(rows)`` into ``path`` (PNG, atomically); nothing for no rows."""
    if not rows:
        return
    fig = curves_figure(rows)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))


def curves_figure(rows: list[dict]) -> Figure:
    """Losses, D outputs, PSNR/SSIM and NIQE per epoch (``rows``: log rows, ``LOG_COLUMNS``).

    Four panels side by side; a value missing from a row (e.g. D outputs in stage 1) is a gap.
    NIQE (no reference, lower = more natural) is the curve stage 2 is judged by: PSNR falls
    there by design.
    """
    # A Figure made directly (not through pyplot) needs no GUI backend and leaves the
    # caller's pyplot state (e.g. a notebook's inline backend) alone.
    x = np.arange(1, len(rows) + 1)

    def series(key):
        return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)

    def note(ax, text):
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")

    fig = Figure(figsize=(19, 4))
    axes = fig.subplots(1, 4)
    for key in ("loss_g", "loss_content", "loss_adv", "loss_pixel", "loss_d"):
        y = series(key)
        if np.isfinite(y).any():
            axes[0].plot(x, y, marker=".", label=key)
    axes[0].set_yscale("log")
    axes[0].set_title("losses")
    has_d = False
    for key, label in (("d_real", "D(x)"), ("d_fake", "D(G(z))")):
        y = series(key)
        if np.isfinite(y).any():
            axes[1].plot(x, y, marker=".", label=label)
            has_d = True
    if not has_d:
        note(axes[1], "no discriminator yet\n(stage 1, or no adversarial loss)")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("discriminator outputs (probabilities)")
    psnr, ssim = series("psnr"), series("ssim")
    axes[2].plot(x, psnr, marker=".", color="tab:blue", label="PSNR")
    axes[2].set_ylabel("PSNR (dB)")
    ax2 = axes[2].twinx()
    ax2.plot(x, ssim, marker=".", color="tab:orange", label="SSIM")
    ax2.set_ylabel("SSIM")
    axes[2].set_title("validation")
    h1, l1 = axes[2].get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)
    niqe = series("niqe")
    if np.isfinite(niqe).any():
        axes[3].plot(x, niqe, marker=".", color="tab:green", label="NIQE")
    else:
        note(axes[3], "no NIQE in the log\n(no validation set, or its\nimages are too small for NIQE)")
    axes[3].set_ylabel("NIQE")
    axes[3].set_title("validation NIQE (lower = more natural)")
    stages = [r["stage"] for r in rows]
    for ax in axes:
        for k in range(1, len(stages)):
            if stages[k] != stages[k - 1]:
                ax.axvline(k + 0.5, color="gray", linestyle="--", linewidth=1)
        ax.set_xlabel("epoch (both stages)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.5, len(rows) + 0.5)
        if ax is not axes[2] and ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


# =====================================================================================
# 3. The run: inputs, lock, resume point, networks, precision
# =====================================================================================


@dataclass
class Run:
    """What the scheme (``train``) gets from ``start_run``: settings, data, resume point, counters."""

    config: EasyDict
    out: Path
    device: torch.device
    rank: int
    world: int
    loader: DataLoader
    sampler: SeededSampler
    eval_set: EvalDataset | None
    steps_per_epoch: int
    epochs1: int                 # planned epochs of each stage
    epochs2: int
    ckpt: dict | None            # the checkpoint this run resumes from
    start_stage: int             # 1 or 2: the stage this run starts (or resumes) in
    done: int                    # epochs already completed in ``start_stage``
    log: list[dict]
    ctx: TrainContext
    use_compile: bool
    result: dict
    epoch_lr: float = 0.0        # set by ``remaining_epochs`` for the epoch's log row
    epoch_start: float = 0.0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


@contextlib.contextmanager
def start_run(config: EasyDict) -> Iterator[Run]:
    """Check the inputs, lock ``config.out``, load the data and the resume point; release on exit.

    Nothing is created before the data lists, their scale, the output folder (writable, not
    held by another run, no other run's results unless ``overwrite``) and the checkpoint to
    resume from are checked. A run that stops before its first checkpoint removes what it
    wrote (``config.json``, and the folder itself if it made it).
    """
    config = EasyDict(to_plain(config))
    rank, world, local_rank = _dist_setup()
    device = _resolve_device(config.device, local_rank)
    is_main = rank == 0
    out = Path(config.out)
    train_set, eval_set = open_datasets(config, is_main)
    if is_main:
        checkpoints.check_folder_writable(out)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    threads = torch.get_num_threads()
    created = not out.exists()
    lock = checkpoints.lock_run_folder(out) if is_main else None
    run = None
    try:
        if config.speed.threads:
            torch.set_num_threads(int(config.speed.threads))
        run = _prepare_run(config, train_set, eval_set, rank, world, device)
        yield run
    except BaseException:
        if run is not None and is_main and not (out / "checkpoint.pth").exists():
            # Stopped before its first checkpoint (missing VGG weights, NaN or Ctrl-C in epoch
            # 1): remove what this run wrote, so the folder does not look like a run's results.
            (out / "config.json").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                (out / "samples").rmdir()
        raise
    finally:
        torch.set_num_threads(threads)  # a run's thread setting must not leak to the caller
        if lock is not None:
            Path(lock.name).unlink(missing_ok=True)
            lock.close()
            if created:  # failed before writing anything: leave no empty folder behind
                for folder in (out / "samples", out):
                    with contextlib.suppress(OSError):
                        folder.rmdir()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def open_datasets(config: EasyDict, is_main: bool = True) -> tuple[TrainDataset, EvalDataset | None]:
    """The training set and (on the main process) the validation set, after checking both lists.

    Raises ``FileNotFoundError`` / ``ValueError`` with one line when a list is missing (naming
    the command that makes it), does not parse, names an image file that is not there (every
    file of both lists is checked here, before any training), or was made for another scale
    than the model's.
    """
    lists = [("training", config.data.train_list)]
    if is_main and config.data.val_list:
        lists.append(("validation", config.data.val_list))
    for role, path in lists:
        other = ", pass --val-list LIST, or --val-list none" if role == "validation" else ", or pass --train-list LIST"
        try:
            data = load_data_list(path)
        except FileNotFoundError:
            how = how_to_make_list(path, quick=config.profile == "quick")
            raise FileNotFoundError(f"{role} data list not found: {path}: {how}{other}") from None
        scale = data["scale"]
        missing = [p for item in data["images"] for p in (item["hr"], item["lr"])
                   if p is not None and not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(
                f"{role} list {path} names {len(missing)} image file(s) that are not there (first: {missing[0]}): "
                f"the images moved or were deleted; make the list again with create_data_lists.py{other}")
        if scale != config.scale:
            raise ValueError(
                f"{role} list {path} is for x{scale}, but the model is x{config.scale}: train with --scale {scale}, "
                f"or make x{config.scale} lists (`python create_data_lists.py --scale {config.scale} --output "
                f"data/lists-x{config.scale}`; the sample set: `python create_data_lists.py --sample --scale "
                f"{config.scale} --root data/x{config.scale}`)")
    train_set = TrainDataset(config.data.train_list, scale=config.scale, patch_size=config.data.patch_size,
                             patches_per_image=config.data.patches_per_image, augment=config.data.augment,
                             cache_mb=config.data.cache_mb)
    eval_set = EvalDataset(config.data.val_list, scale=config.scale) if len(lists) > 1 else None
    return train_set, eval_set


def _prepare_run(config: EasyDict, train_set: TrainDataset, eval_set: EvalDataset | None, rank: int,
                 world: int, device: torch.device) -> Run:
    """The resume point, the loader, the run folder's files; everything ``train`` reads from ``Run``."""
    out = Path(config.out)
    ckpt_path = out / "checkpoint.pth"
    is_main = rank == 0
    speed = config.speed
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(speed.cudnn_benchmark)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    batch = int(config.data.batch_size)
    if batch % world:
        raise ValueError(f"batch_size {batch} must be divisible by the number of processes ({world})")
    sampler = SeededSampler(len(train_set), int(config.seed), rank, world)
    loader = _make_loader(train_set, sampler, batch // world, config.data, device)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"the training set gives {len(sampler)} patches per process, fewer than one batch "
                         f"of {batch // world}: lower batch_size or raise patches_per_image")
    epochs1 = 0 if config.pretrained else _stage_epochs(config.stage1, steps_per_epoch)
    epochs2 = _stage_epochs(config.stage2, steps_per_epoch)
    use_compile = speed.compile is True or (speed.compile == "auto" and device.type == "cuda")
    if use_compile and device.type == "cpu" and not c_compiler_available():
        raise SolverError("speed.compile=True on the CPU needs a working C compiler (set CC or install "
                          "gcc), or train without it: speed.compile=False (--compile off)")
    amp_dtype = _amp_dtype(speed.amp, device)
    config.runtime = {"device": str(device), "world_size": world, "steps_per_epoch": steps_per_epoch,
                      "stage1_epochs": epochs1, "stage2_epochs": epochs2, "n_train_patches": len(train_set),
                      "torch": str(torch.__version__), "compile": use_compile,
                      "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
                      # which weights stage 2 started from, whatever the file is called later
                      "pretrained_sha256": checkpoints.file_sha256(config.pretrained) if config.pretrained else None}

    ckpt = None
    if config.resume and ckpt_path.is_file():
        ckpt = checkpoints.read_training_checkpoint(ckpt_path)
    elif config.resume and is_main:
        print(f"resume: no checkpoint at {ckpt_path}; starting a new run", flush=True)
    if is_main:
        if ckpt is None:
            checkpoints.check_previous_run(out, config.resume, bool(config.overwrite))
        with checkpoints.disk_errors(out):
            removed = remove_stale_temps(out)  # what a killed run's interrupted writes left
            (out / "samples").mkdir(exist_ok=True)
            atomic_write(out / "config.json", lambda tmp: Path(tmp).write_text(checkpoints.config_json(config)))
        if removed:
            print(f"removed {len(removed)} temporary file(s) left by an interrupted run", flush=True)

    ctx = TrainContext(device=device, amp_dtype=amp_dtype, channels_last=speed.channels_last,
                       progress=is_main, log_every=max(1, int(config.log_every)),
                       global_step=int(ckpt["global_step"]) if ckpt else 0,
                       check_every=1 if device.type == "cpu" else max(1, int(config.log_every)))
    return Run(config=config, out=out, device=device, rank=rank, world=world, loader=loader, sampler=sampler,
               eval_set=eval_set, steps_per_epoch=steps_per_epoch, epochs1=epochs1, epochs2=epochs2, ckpt=ckpt,
               start_stage=int(ckpt["stage"]) if ckpt else (1 if epochs1 > 0 else 2),
               done=int(ckpt["epoch"]) if ckpt else 0, log=list(ckpt["log"]) if ckpt else [], ctx=ctx,
               use_compile=use_compile,
               result={"out": str(out), "log": None, "generator": None, "checkpoint": str(ckpt_path)})


class _ScalarPReLUFunction(torch.autograd.Function):
    """PReLU with one slope ``w``: ``F.prelu`` forward, backward as ``leaky_relu``'s with slope
    ``w`` (the same input gradient as PyTorch's), the slope's gradient summed in fp32. On a CPU, PyTorch's PReLU backward
    is the slowest kernel of an SRResNet step in bf16 (a quarter of it); this one is ~2.8x
    faster on 24x24 and 48x48 maps (``benchmarks/bench_train.py --profile``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        weight = weight.to(x.dtype)  # as nn.PReLU under autocast
        ctx.slope = float(weight)    # a host read: fine on a CPU
        ctx.save_for_backward(x, weight)
        return torch.nn.functional.prelu(x, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, weight = ctx.saved_tensors
        grad_x = torch.ops.aten.leaky_relu_backward(grad, x, ctx.slope, False)
        grad_w = torch.sum(grad * x.clamp(max=0), dtype=torch.float32)  # d/dw of w * min(x, 0)
        return grad_x, grad_w.reshape(weight.shape)  # autograd casts it to the parameter's dtype


class ScalarPReLU(nn.Module):
    """Drop-in for a trained ``nn.PReLU()`` with one slope, sharing its ``weight`` (so the
    state dict, checkpoints and exported generators keep their keys). Put in by
    ``fast_cpu_prelu``; ``forward(x)``: any shape, same values as ``nn.PReLU``."""

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ScalarPReLUFunction.apply(x, self.weight)


def fast_cpu_prelu(net: nn.Module) -> nn.Module:
    """Replace (in place) every ``nn.PReLU`` with one slope in ``net`` by a ``ScalarPReLU``
    sharing its parameter; returns ``net``. For training on a CPU only (on CUDA the slope's
    host read would sync every call, and PyTorch's kernel is fast there)."""
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.PReLU and child.num_parameters == 1:
                setattr(module, name, ScalarPReLU(child.weight))
    return net


def _place(run: Run, net: nn.Module) -> nn.Module:
    net = net.to(run.device)
    if run.device.type == "cpu":
        fast_cpu_prelu(net)
    return net.to(memory_format=torch.channels_last) if run.config.speed.channels_last else net


def initial_generator(run: Run) -> nn.Module:
    """The generator at the start of the run: seeded with ``config.seed`` (torch, numpy, random),
    weights from ``config.pretrained`` when given; on the run's device and memory format.
    (A resumed run's weights are restored by ``resume_stage``.)"""
    config = run.config
    torch.manual_seed(int(config.seed))
    np.random.seed(int(config.seed) % 2**32)
    random.seed(int(config.seed))
    generator = models.build_generator(config.model.generator)
    arch = to_plain(models.generator_arch(generator))
    if run.ckpt is not None and run.ckpt["arch"] != arch:
        raise SolverError(f"{run.out / 'checkpoint.pth'} holds generator {run.ckpt['arch']}, but the config builds "
                          f"{arch}; resume with the same model settings")
    if config.pretrained:
        pretrained = unwrap(checkpoints.load_generator(config.pretrained, device="cpu"))
        found = to_plain(models.generator_arch(pretrained))
        if found != arch:
            raise SolverError(f"--pretrained {config.pretrained} is {found}, but the config builds {arch} "
                              "(scale, blocks, channels must match)")
        generator.load_state_dict(pretrained.state_dict())
    return _place(run, generator)


def initial_discriminator(run: Run) -> nn.Module:
    """A fresh discriminator seeded with ``config.seed + 1``, on the run's device and memory format."""
    torch.manual_seed(int(run.config.seed) + 1)
    return _place(run, models.build_discriminator(run.config.model.discriminator))


def build_content_loss(run: Run) -> ContentLoss:
    """Stage 2's content loss; missing VGG weights raise ``SolverError`` before any training."""
    cfg2 = run.config.stage2
    try:
        content = ContentLoss(cfg2.content_loss, vgg_before_activation=cfg2.vgg_before_activation,
                              vgg_criterion=cfg2.vgg_criterion, vgg_feature_scale=cfg2.vgg_feature_scale,
                              vgg_weights=run.config.vgg.weights, vgg_random_init=run.config.vgg.random_init)
    except (RuntimeError, OSError, ValueError) as err:
        if not re.search(r"VGG(16|19)", str(err)):
            raise
        raise SolverError(" ".join(str(err).split())) from None
    return _place(run, content)


def adam_options(device: torch.device) -> dict[str, bool]:
    """Adam's implementation for ``device``: the fused kernel (one pass over each parameter),
    on the CPU (3-7% faster steps than ``foreach`` on a 2-core CPU) as on CUDA.
    ``benchmarks/bench_train.py`` times the same."""
    return {"fused": True}


def make_optimizer(run: Run, net: nn.Module, lr: float, betas: list[float], cfg_stage: EasyDict,
                   epochs: int) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.MultiStepLR]:
    """Adam for ``net`` and its ``MultiStepLR`` over the stage's ``epochs * steps_per_epoch`` steps.

    ``cfg_stage.lr_milestones`` (fractions of the stage) and ``lr_gamma`` set the schedule.
    Returns ``(optimizer, scheduler)``.
    """
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=tuple(betas), **adam_options(run.device))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, _milestones(cfg_stage.lr_milestones, epochs * run.steps_per_epoch), gamma=cfg_stage.lr_gamma)
    return optimizer, scheduler


def grad_scaler(run: Run, optimizer: torch.optim.Optimizer) -> torch.amp.GradScaler:
    """A fresh GradScaler for ``optimizer`` (enabled under fp16 autocast only), attached to it
    (``attach_grad_scaler``), so that ``optimizer_step`` uses it; saved and restored with the run."""
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.ctx.amp_dtype == torch.float16)
    attach_grad_scaler(optimizer, scaler)
    return scaler


def wrap(run: Run, net: nn.Module | None) -> nn.Module | None:
    """The module the epoch calls: DDP across processes, then ``torch.compile`` when on."""
    if net is None:
        return None
    if run.distributed:
        net = DDP(net, device_ids=[run.device.index] if run.device.type == "cuda" else None,
                  broadcast_buffers=False)
    if run.use_compile:  # after DDP, as PyTorch recommends (DDP-aware graph breaks)
        net = torch.compile(net)
    return net


def _amp_dtype(amp: str, device: torch.device):
    """Autocast dtype for ``speed.amp`` on ``device`` (None: fp32).

    ``auto``: CUDA bf16 where supported, else fp16; CPU bf16 where the CPU has native bf16
    (``inference.cpu_has_native_bf16``), else fp32. ``bf16`` forces bf16 (slow where it is emulated);
    ``fp16`` is for CUDA only (fp32 on the CPU).
    """
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    if device.type == "cpu" and (amp == "bf16" or (amp == "auto" and cpu_has_native_bf16())):
        return torch.bfloat16
    return None


def resume_stage(run: Run, stage: int, states: dict, nets: dict[str, nn.Module]) -> None:
    """When the run resumes inside ``stage``: restore the networks, optimizers, schedulers,
    scalers and RNG states from its checkpoint (``checkpoints.restore_state``), so that the
    resumed run is bit-identical to an uninterrupted one. Otherwise nothing.

    ``states``: ``{"g": (optimizer, scheduler, scaler), "d": (...)}``; ``nets``: ``{"g": G, "d": D,
    "g_ema": EMA}`` (plain modules). Call it after ``wrap`` and right before the stage's epochs.
    """
    if run.ckpt is not None and int(run.ckpt["stage"]) == stage:
        checkpoints.restore_state(run.ckpt, stage, run.config, states, nets)


def remaining_epochs(run: Run, stage: int, states: dict) -> Iterator[int]:
    """The epochs of ``stage`` still to run (1-based), with a progress bar.

    Before each epoch the data sampler gets the epoch's key, and the epoch's start time and
    the generator's learning rate (``states["g"]``'s optimizer) are kept for its log row.
    """
    total = run.epochs1 if stage == 1 else run.epochs2
    done = run.done if run.start_stage == stage else 0
    for epoch in tqdm(range(done + 1, total + 1), desc=f"stage {stage}", disable=not run.is_main,
                      initial=done, total=total, dynamic_ncols=True):
        run.sampler.set_epoch(epoch_key(stage, epoch))
        run.epoch_lr = states["g"][0].param_groups[0]["lr"]
        run.epoch_start = time.time()
        yield epoch


def end_epoch(run: Run, stage: int, epoch: int, metrics: dict, states: dict, nets: dict[str, nn.Module]) -> None:
    """After an epoch: average BatchNorm statistics across processes; then on the main process
    validate, add the log row, write the checkpoint (and the epoch's generator with
    ``keep_generators``), ``log.csv`` and ``curves.png``; every process waits for it.
    With an EMA generator (``nets["g_ema"]``) the EMA is what is validated and kept."""
    seconds = time.time() - run.epoch_start
    if run.distributed:
        # BatchNorm running statistics are per process (buffers are not broadcast, so a
        # discriminator called twice per step stays valid): average them once per epoch
        # so that every rank, and the checkpoint, hold the same network.
        for net in nets.values():
            for buf in net.buffers():
                if buf.is_floating_point():
                    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                    buf.div_(run.world)
    if run.is_main:
        config, out = run.config, run.out
        shown = nets.get("g_ema", nets["g"])
        row = {"stage": stage, "epoch": epoch, "step": run.ctx.global_step, "lr": run.epoch_lr,
               "seconds": round(seconds, 3)}
        row.update({k: v for k, v in metrics.items() if k != "steps"})
        with checkpoints.disk_errors(out):
            if run.eval_set is not None:
                row.update(validate(shown, run.eval_set, config.scale, device=run.device,
                                    tile=config.data.val_tile, samples_dir=out / "samples",
                                    n_samples=int(config.data.n_samples),
                                    prefix=f"stage{stage}_epoch{epoch:04d}_", max_images=config.data.val_max_images))
            run.log.append(row)
            checkpoints.save_state(out / "checkpoint.pth", checkpoints.checkpoint_state(
                stage, epoch, run.ctx.global_step, run.config, run.log, states, nets))
            if config.keep_generators:
                checkpoints.save_generator(out / "generators" / f"stage{stage}_epoch{epoch:04d}.pth", shown,
                                      stage=stage, epoch=epoch, global_step=run.ctx.global_step,
                                      metrics={k: v for k, v in row.items() if isinstance(v, float)})
            write_log_csv(run.log, out / "log.csv")
            plot_curves(run.log, out / "curves.png")
        msg = " ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float) and k not in ("lr", "seconds"))
        tqdm.write(f"stage {stage} epoch {epoch}: {msg} ({seconds:.1f}s)")
    run.barrier()


def finish_stage(run: Run, stage: int, generator: nn.Module) -> None:
    """Write ``generator_stage<N>.pth`` (main process); the next stage starts from epoch 0."""
    planned = run.epochs1 if stage == 1 else run.epochs2
    if run.is_main and planned > 0:
        path = run.out / f"generator_stage{stage}.pth"
        with checkpoints.disk_errors(run.out):
            checkpoints.save_generator(path, generator, stage=stage, epochs=planned, config=to_plain(run.config))
        run.result["generator"] = str(path)


def finish_run(run: Run) -> dict:
    """The run's result (``train``'s return value), once every process is done."""
    stage1 = run.out / "generator_stage1.pth"
    if run.is_main and run.result["generator"] is None and stage1.is_file():
        run.result["generator"] = str(stage1)  # a finished single-stage run, resumed
    run.result["log"] = run.log
    run.barrier()
    return run.result


# =====================================================================================
# 4. Data and settings
# =====================================================================================


class SeededSampler(Sampler):
    """Yields ``(index, seed)`` pairs: the epoch's shuffled indices, each with its own seed.

    The order and the seeds depend only on ``(seed, epoch_key, rank)``: pass the result of
    ``epoch_key(stage, epoch)`` to ``set_epoch`` before each epoch. Under DDP each rank
    takes every ``world_size``-th index of the same permutation (as ``DistributedSampler``).
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.key = 0
        self.per_rank = math.ceil(n / world_size)

    def set_epoch(self, key: int) -> None:
        self.key = key

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.key)
        order = torch.randperm(self.n, generator=g)
        order = torch.cat([order, order[: self.per_rank * self.world_size - self.n]])  # pad
        seeds = torch.randint(0, 2**62, (self.per_rank * self.world_size,), generator=g)
        for pos in range(self.rank, len(order), self.world_size):
            yield int(order[pos]), int(seeds[pos])


class SeededDataset(Dataset):
    """Wraps a dataset so that ``ds[(index, seed)]`` draws the sample's randomness from ``seed``.

    The global torch RNG of the calling process is left as it was.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def epoch_key(stage: int, epoch: int) -> int:
    """A distinct integer per (stage, 1-based epoch), mixed into the data seeds."""
    return stage * 1_000_000 + epoch


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _make_loader(dataset: Dataset, sampler: SeededSampler, batch: int, cfg_data, device) -> DataLoader:
    # No more loader processes than CPUs: more only compete for them (and PyTorch warns).
    workers = min(int(cfg_data.workers), _usable_cpus())
    return DataLoader(SeededDataset(dataset), batch_size=batch, sampler=sampler, drop_last=True,
                      num_workers=workers, pin_memory=bool(cfg_data.pin_memory) and device.type == "cuda",
                      persistent_workers=bool(cfg_data.persistent_workers) and workers > 0)


def _milestones(fractions, total_steps: int) -> list[int]:
    return sorted({max(1, int(round(f * total_steps))) for f in fractions})


def _stage_epochs(cfg_stage, steps_per_epoch: int) -> int:
    if cfg_stage.epochs is not None:
        return int(cfg_stage.epochs)
    return max(1, int(round(cfg_stage.iterations / steps_per_epoch))) if cfg_stage.iterations else 0


def c_compiler_available() -> bool:
    """True when a C compiler builds a trivial program (torch.compile needs one on the CPU)."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "t.c"
        src.write_text("int main(void) { return 0; }\n")
        try:
            return subprocess.run([cc, str(src), "-o", str(Path(d) / "t")], capture_output=True,
                                  timeout=60).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SolverError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def _dist_setup():
    """(rank, world_size, local_rank) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local_rank
