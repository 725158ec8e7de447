"""The training scheme of SRResNet / SRGAN / ESRGAN (x2, x3, x4, x8): the steps, ``train``, the config.

Read this file top to bottom:

1. **One update per step** -- ``pretrain_step`` (stage 1: the generator alone, pixel loss),
   ``d_step`` then ``g_step`` (stage 2: the discriminator, then the generator against it).
   Each gets the networks, the optimizer, the batch and the loss weights, and returns its
   losses; mixed precision, DDP, NaN checks, EMA and the progress bar wrap them from outside
   (``training.train_epoch``).
2. **The training scheme** -- ``train(config)`` on one screen: build G, stage 1, stage 2;
   each stage is ``for epoch: train_epoch(...); end_epoch(...)``.
3. **Configuration** -- ``make_config(preset, profile, **overrides)`` returns an
   ``EasyDict``; ``BASE_CONFIG``, ``PRESETS`` and ``PROFILES`` hold the recipes.

The losses are in ``losses.py``, the networks in ``models.py``, how a run is carried out
(folder, resume, device, logging) in ``training.py``, the files in ``checkpoints.py``.

Command line (``python solver.py --help``)::

    python create_data_lists.py --sample && python solver.py --preset srgan-mse --profile quick
    python solver.py --preset mse --train-list data/lists/train.json \\
        --val-list data/lists/Set14.json --out runs/srresnet --epochs 100
    python solver.py --out runs/srresnet --resume          # continue exactly where it stopped
    python solver.py --preset mse --scale 2 --train-list data/lists-x2/train.json ...  # x2
    python -m torch.distributed.run --nproc_per_node 2 solver.py --preset srgan-vgg54 ...

Files written in ``config.out``
-------------------------------
``checkpoint.pth``      rewritten atomically (temp file + ``os.replace``) after every epoch
                        (format: ``checkpoints.py``).
``generator_stage1.pth``/``generator_stage2.pth``  the generator at the end of each stage
                        (``checkpoints.save_generator`` format).
``log.csv``             one row per epoch (losses, D outputs, PSNR/SSIM/NIQE, lr, seconds).
``curves.png``          training curves, redrawn after every epoch.
``samples/``            a few validation images super-resolved after every epoch.
``generators/``         with ``keep_generators``: every epoch's generator, ``stage2_epoch0003.pth``.
``config.json``         the resolved configuration (human readable copy).
``train.lock``          exists while a run is using the folder (a second run there is refused).

A fresh run refuses a folder that holds another run's files (``--overwrite`` replaces them);
temporary files left by a killed run are removed when the next run starts there.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from easydict import EasyDict

import models
from checkpoints import SolverError, config_json, read_training_checkpoint, to_plain
from losses import CONTENT_LOSSES, GAN_TYPES, TV_TYPES, d_probabilities, gan_d_loss, gan_g_loss, \
    pixel_loss, tv_loss
from training import (DiscriminatorInput, NonFiniteLossError, build_content_loss, end_epoch, finish_run,
                      finish_stage, grad_scaler, initial_discriminator, initial_generator, make_optimizer,
                      optimizer_step, remaining_epochs, resume_stage, start_run, train_epoch, wrap)

# =====================================================================================
# 1. One update per step
# =====================================================================================


def pretrain_step(generator: nn.Module, lr: torch.Tensor, hr: torch.Tensor, optimizer: torch.optim.Optimizer,
                  pixel: str = "mse") -> dict[str, torch.Tensor]:
    """One stage-1 update of the generator with the pixel loss (the SRResNet's training).

    Forward ``sr = G(lr)``, loss ``pixel_loss(sr, hr, pixel)``, backward, one optimizer step.

    Args:
        generator: the generator (``Nx3xhxw`` -> ``Nx3x(s*h)x(s*w)``), in train mode.
        lr: ``Nx3xhxw`` float32 in [0, 1]; hr: ``Nx3x(s*h)x(s*w)`` float32 in [0, 1]; both
            on the generator's device.
        optimizer: updates the generator's parameters.
        pixel: ``"mse"`` (SRResNet) or ``"l1"`` (ESRGAN's pre-training).

    Returns:
        ``{"loss_pixel": loss}``: the loss before the update, a detached 0-dim tensor.
    """
    ### BEGIN SOLUTION
    ### TASK: solver.pretrain_step - sr = generator(lr), pixel_loss(sr, hr, pixel), one update of G with
    ###   optimizer_step(loss, optimizer); return {"loss_pixel": loss.detach()} (Ledig et al. 2017,
    ###   Sec. 3.2: the SRResNet, G trained alone with the pixel MSE, which initialises the SRGAN)
    sr = generator(lr)                                 # Nx3x(s*h)x(s*w)
    loss = pixel_loss(sr.float(), hr, pixel)           # in fp32, whatever autocast computed sr in
    optimizer_step(loss, optimizer)                    # zero_grad, backward, step
    return {"loss_pixel": loss.detach()}
    ### END SOLUTION


def d_step(discriminator: nn.Module, hr: torch.Tensor, sr: torch.Tensor, optimizer: torch.optim.Optimizer,
           gan_type: str = "standard") -> dict[str, torch.Tensor]:
    """(1) Update D: real ``hr`` -> "real", ``sr`` -> "fake" (``gan_d_loss``), one optimizer step.

    ``hr``/``sr``: ``Nx3xHxW`` in [0, 1]; ``sr`` is detached here, so no gradient reaches G.
    ``discriminator``: ``Nx3xHxW`` -> logits ``(N,)``. Returns detached 0-dim tensors
    ``loss_d`` and ``d_real`` = D(x), ``d_fake`` = D(G(z)) as probabilities.
    """
    # DISCRIMINATOR UPDATE
    real_logits = discriminator(hr)            # (N,)
    fake_logits = discriminator(sr.detach())   # (N,)
    loss = gan_d_loss(real_logits, fake_logits, gan_type)
    optimizer_step(loss, optimizer)
    d_real, d_fake = d_probabilities(real_logits, fake_logits, gan_type)
    return {"loss_d": loss.detach(), "d_real": d_real, "d_fake": d_fake}


def g_step(sr: torch.Tensor, hr: torch.Tensor, discriminator: nn.Module | None, content: nn.Module,
           optimizer: torch.optim.Optimizer, content_weight: float = 1.0, adversarial_weight: float = 1e-3,
           gan_type: str = "standard", pixel_weight: float = 0.0, pixel_loss_type: str = "mse",
           tv_weight: float = 0.0, tv_type: str = "l1") -> dict[str, torch.Tensor]:
    """(2) Update G: content (+ adversarial, pixel, TV) loss of ``sr = G(lr)``, one optimizer step.

    ``sr`` must still carry G's graph; ``hr``: ``Nx3xHxW`` in [0, 1]. ``discriminator``: D
    (logits ``(N,)``; not updated here), or None without GAN. ``content``: ``ContentLoss``.
    ``loss_g = content_weight * content + adversarial_weight * adv + pixel_weight * pixel
    + tv_weight * tv``. Returns each term and ``loss_g`` as detached 0-dim tensors.
    """
    # GENERATOR UPDATE
    terms = {"loss_content": content(sr.float(), hr)}
    loss = content_weight * terms["loss_content"]
    if discriminator is not None:
        fake_logits = discriminator(sr)                           # (N,), gradients flow to G
        real_logits = None
        if gan_type == "ragan":  # the relativistic loss compares with real logits (no gradient to D)
            with torch.no_grad():
                real_logits = discriminator(hr)
        terms["loss_adv"] = gan_g_loss(fake_logits, real_logits, gan_type)
        loss = loss + adversarial_weight * terms["loss_adv"]
    if pixel_weight > 0:
        terms["loss_pixel"] = pixel_loss(sr.float(), hr, pixel_loss_type)
        loss = loss + pixel_weight * terms["loss_pixel"]
    if tv_weight > 0:
        terms["loss_tv"] = tv_loss(sr.float(), tv_type)
        loss = loss + tv_weight * terms["loss_tv"]
    optimizer_step(loss, optimizer)
    return {"loss_g": loss.detach(), **{k: v.detach() for k, v in terms.items()}}


def gan_step(generator: nn.Module, discriminator: nn.Module | None, lr: torch.Tensor, hr: torch.Tensor,
             optimizer_g: torch.optim.Optimizer, optimizer_d: torch.optim.Optimizer | None, content: nn.Module,
             weights: dict[str, Any], frozen_discriminator: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """One batch of stage 2: ``sr = G(lr)``, then (1) ``d_step``, then (2) ``g_step`` on the same ``sr``.

    ``discriminator``: the D that is updated, or None without GAN (then only ``g_step``).
    ``frozen_discriminator``: the D the G step calls (default ``discriminator``; the run
    passes the same network with no gradient to its parameters). ``weights``: ``g_step``'s
    loss weights (``loss_weights(config.stage2)``). Returns both steps' losses.
    """
    sr = generator(lr)  # Nx3xHxW; the graph is kept for the G step
    losses = d_step(discriminator, hr, sr, optimizer_d, weights["gan_type"]) if discriminator is not None else {}
    g_discriminator = frozen_discriminator if frozen_discriminator is not None else discriminator
    return {**losses, **g_step(sr, hr, g_discriminator, content, optimizer_g, **weights)}


def loss_weights(cfg2: EasyDict) -> dict[str, Any]:
    """``g_step``'s keyword arguments (the loss weights and types) from ``config.stage2``."""
    return {"content_weight": cfg2.content_weight, "adversarial_weight": cfg2.adversarial_weight,
            "gan_type": cfg2.gan_type, "pixel_weight": cfg2.pixel_weight, "pixel_loss_type": cfg2.pixel_loss,
            "tv_weight": cfg2.tv_weight, "tv_type": cfg2.tv_type}


# =====================================================================================
# 2. The training scheme
# =====================================================================================


def train(config: EasyDict) -> dict:
    """Run the training scheme of ``config`` (stage 1, then stage 2) and write ``config.out``.

    Stage 1 pre-trains the generator with the pixel loss alone (the paper's SRResNet);
    stage 2 trains it against the discriminator (or with a content loss alone, e.g. VGG54
    without GAN). Presets without stage 1 (``--pretrained``, or ``stage1.epochs = 0``) start
    at stage 2 from the weights they are given (or random ones).

    Args:
        config: from ``make_config`` (or ``config_from_checkpoint``). With
            ``config.resume`` the run continues exactly from ``<config.out>/checkpoint.pth``.

    Returns:
        ``{"out": run folder, "log": list of per-epoch rows, "generator": path of the last
        generator file written, "checkpoint": path}``.

    Raises:
        SolverError / OSError / ValueError: a problem with the data, the folder, the
            checkpoint or the disk (one-line message; nothing is created before the inputs
            are checked). NonFiniteLossError: a loss became NaN/inf (the last checkpoint is kept).
    """
    config = EasyDict(to_plain(config))
    check_config(config)
    with start_run(config) as run:  # inputs checked, folder locked, data loaded, resume point read
        cfg1, cfg2 = run.config.stage1, run.config.stage2
        generator = initial_generator(run)  # seeded; --pretrained weights if given
        content = build_content_loss(run) if run.epochs2 > 0 else None  # missing VGG weights stop us now

        # ---- Stage 1: the generator alone, pixel loss (SRResNet; the paper's pre-training)
        if run.start_stage == 1:
            optimizer, scheduler = make_optimizer(run, generator, cfg1.lr, cfg1.betas, cfg1, run.epochs1)
            states, nets = {"g": (optimizer, scheduler, grad_scaler(run, optimizer))}, {"g": generator}
            g_train = wrap(run, generator)  # DDP / torch.compile when on
            resume_stage(run, 1, states, nets)  # a resumed run: networks, optimizers, RNG as saved
            for epoch in remaining_epochs(run, 1, states):
                metrics = train_epoch(run.loader, run.ctx, 1, epoch, lambda lr, hr: pretrain_step(
                    g_train, lr, hr, optimizer, cfg1.pixel_loss), [scheduler], [g_train])
                end_epoch(run, 1, epoch, metrics, states, nets)
            finish_stage(run, 1, generator)

        # ---- Stage 2: content loss (+ adversarial loss against a discriminator)
        if run.epochs2 > 0:
            optimizer_g, scheduler_g = make_optimizer(run, generator, cfg2.lr_g, cfg2.betas, cfg2, run.epochs2)
            states, nets = {"g": (optimizer_g, scheduler_g, grad_scaler(run, optimizer_g))}, {"g": generator}
            discriminator = optimizer_d = None
            schedulers = [scheduler_g]
            if cfg2.adversarial_weight > 0:
                discriminator = initial_discriminator(run)  # seeded with seed + 1
                optimizer_d, scheduler_d = make_optimizer(run, discriminator, cfg2.lr_d, cfg2.betas, cfg2,
                                                          run.epochs2)
                states["d"], nets["d"] = (optimizer_d, scheduler_d, grad_scaler(run, optimizer_d)), discriminator
                schedulers.append(scheduler_d)
            ema = None
            if cfg2.ema_decay > 0:  # validated and exported instead of G (restored on resume)
                ema = nets["g_ema"] = copy.deepcopy(generator).requires_grad_(False)
            g_train, d_train = wrap(run, generator), wrap(run, discriminator)
            # What D sees: translated by up to d_translate pixels; in the G step the plain D, frozen.
            d_for_d = DiscriminatorInput(d_train, cfg2.d_translate) if discriminator is not None else None
            d_for_g = (DiscriminatorInput(getattr(d_train, "module", d_train), cfg2.d_translate, frozen=True)
                       if discriminator is not None else None)
            weights = loss_weights(cfg2)
            resume_stage(run, 2, states, nets)
            for epoch in remaining_epochs(run, 2, states):
                metrics = train_epoch(run.loader, run.ctx, 2, epoch, lambda lr, hr: gan_step(
                    g_train, d_for_d, lr, hr, optimizer_g, optimizer_d, content, weights, d_for_g),
                    schedulers, [n for n in (g_train, d_train) if n is not None],
                    ema=(ema, generator, cfg2.ema_decay) if ema is not None else None)
                end_epoch(run, 2, epoch, metrics, states, nets)
            finish_stage(run, 2, ema if ema is not None else generator)
        return finish_run(run)


# =====================================================================================
# 3. Configuration
# =====================================================================================

# The configuration is built in this one place, by `make_config`, in this order (later wins):
#
#     BASE_CONFIG  <  PROFILES[profile]  <  PRESETS[preset]  <  overrides (arguments, --set, CLI options)
#
# * A preset defines the recipe: architecture and network size, losses and loss weights, learning
#   rates and schedule, crop size. Whatever it sets is used, whatever the profile.
# * A profile sets the length and sizing a preset leaves open: epochs, images, batch, workers,
#   validation size, the network size of presets that name none, the speed settings.
# * A profile that must change a value the preset sets lists it under "force"; such values are
#   applied after the preset and reported in the resolved config under "profile_forced".
#
# `python solver.py ... --show-config` prints the resolved configuration (JSON) and exits; every
# run saves the same JSON (plus "runtime": device, steps per epoch, ...) as <out>/config.json.
# A new architecture: a class and one registry entry in models.py (GENERATORS / DISCRIMINATORS);
# the config names it in model.generator / model.discriminator.

# Every key of the configuration, with the paper's ("full" profile) values. Profiles and
# presets only override some of them; `make_config` refuses unknown keys (typos).
BASE_CONFIG: dict[str, Any] = {
    "preset": "srgan-vgg54",
    "profile": "full",
    "seed": 0,
    "device": "auto",            # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    "out": None,                 # run folder; default runs/<preset>
    "resume": False,             # continue from <out>/checkpoint.pth
    "overwrite": False,          # a fresh run may replace another run's results in `out`
    "pretrained": None,          # generator checkpoint to start stage 2 from (skips stage 1)
    "scale": 4,                  # upscaling factor; the generator's kwargs.scale follows it
    "data": {
        "train_list": "data/lists/train.json",
        "val_list": "data/lists/Set14.json",   # None: no validation
        "patch_size": 96,        # HR patch side; LR patches are patch_size / scale
        "patches_per_image": 100,  # one epoch = n_images * patches_per_image patches
        "batch_size": 16,        # global batch (split across processes under DDP)
        "workers": 4,
        "augment": True,
        "cache_mb": 2048,
        "pin_memory": True,
        "persistent_workers": True,
        "val_max_images": None,  # validate on the first N images only (None: all)
        "val_tile": None,        # tile size for validation inference (None: whole image)
        "n_samples": 3,          # validation images saved to samples/ each epoch
    },
    "model": {
        "generator": {"name": "SRResNet", "kwargs": {"scale": 4, "n_blocks": 16, "channels": 64}},
        "discriminator": {"name": "Discriminator", "kwargs": {"channels": 64, "fc_size": 1024},
                          "spectral_norm": False},  # True: models.spectral_normalize (no BN); not the paper
    },
    "vgg": {
        "weights": None,         # path to the ImageNet VGG19 weights (VGG16 for vgg16_lab;
                                 # see models.TruncatedVGG19 / TruncatedVGG16)
        "random_init": False,    # tests only: a random VGG (NOT a perceptual loss)
    },
    # Stage 1: the generator alone, pixel loss ("SRResNet"; the paper's pre-training).
    "stage1": {
        "epochs": None,          # None: round(iterations / iterations per epoch)
        "iterations": 1_000_000,
        "lr": 1e-4,
        "betas": [0.9, 0.999],
        "pixel_loss": "mse",     # "mse" or "l1"
        "lr_milestones": [],     # fractions of the stage's iterations where lr *= lr_gamma
        "lr_gamma": 0.1,
    },
    # Stage 2: G starts from the stage-1 weights. Adversarial training when
    # adversarial_weight > 0 (then a discriminator is built), otherwise content loss only.
    "stage2": {
        "epochs": None,
        "iterations": 200_000,   # 1e5 at 1e-4, then 1e5 at 1e-5 (lr_milestones=[0.5])
        "lr_g": 1e-4,
        "lr_d": 1e-4,
        "betas": [0.9, 0.999],
        "lr_milestones": [0.5],
        "lr_gamma": 0.1,
        "content_loss": "vgg54",  # "mse", "l1", "vgg22", "vgg54", "vgg16_lab"
        "content_weight": 1.0,
        "adversarial_weight": 1e-3,
        "gan_type": "standard",  # "standard" (SRGAN), "ragan" (ESRGAN) or "lab" (1 - D, the SRGAN lab)
        "pixel_loss": "mse",     # extra pixel term, used when pixel_weight > 0
        "pixel_weight": 0.0,
        "tv_weight": 0.0,
        "tv_type": "l1",         # "l1" (anisotropic, mean |d|) or "squared" (the SRGAN lab's; see tv_loss)
        "d_translate": 0,        # > 0: D sees real and fake shifted by up to this many pixels
                                 # (random_translate; 0 = the paper)
        "vgg_before_activation": False,
        "vgg_criterion": "mse",
        "vgg_feature_scale": 1 / 12.75,
        "ema_decay": 0.0,        # > 0: validate and export an EMA of G's weights (ema_update), e.g. 0.999;
                                 # 0 = the paper (the trained weights themselves)
    },
    "speed": {
        "channels_last": True,   # NHWC activations: faster convolutions on CPU and GPU
        "amp": "auto",           # "auto": CUDA bf16 if supported else fp16; CPU bf16 where the CPU has it
                                 # natively (AVX512-BF16/AMX), else fp32. "bf16", "fp16" (CUDA), "off".
                                 # Validation and every score are computed in fp32 whatever this is.
        "compile": "auto",       # torch.compile G and D: True, False, or "auto" = on CUDA only
                                 # (on a 2-core CPU it made steps no faster and costs ~1 min
                                 # of compiling; see benchmarks/bench_train.py)
        "threads": None,         # torch.set_num_threads (None: leave PyTorch's default)
        "cudnn_benchmark": True,
    },
    "log_every": 10,             # progress-bar refresh (and NaN check on CUDA) every N steps
    "keep_generators": False,    # also keep every epoch's generator (a few MB each) in <out>/generators/,
                                 # for picking an epoch or network interpolation afterwards
    "profile_forced": {},        # set by make_config: {key: {"preset": value, "profile": value}} for each
                                 # value the profile had to change in the preset (see the rule above)
}

PRESETS: dict[str, dict[str, Any]] = {
    # SRResNet trained with the pixel MSE only (stage 1 only).
    "mse": {"stage2": {"epochs": 0, "iterations": 0}},
    # SRResNet-VGG22 / -VGG54: MSE pre-training, then the VGG content loss alone (no GAN).
    "vgg22": {"stage2": {"content_loss": "vgg22", "adversarial_weight": 0.0}},
    "vgg54": {"stage2": {"content_loss": "vgg54", "adversarial_weight": 0.0}},
    # SRGAN: MSE pre-training, then content + 1e-3 * adversarial.
    # SRGAN-MSE: the paper computes the MSE on HR images in [-1, 1], 4x the MSE in this kit's
    # [0, 1]; content_weight 4 keeps the paper's balance against the 1e-3 adversarial term
    # (with weight 1 the GAN term is 4x too strong: Set5 PSNR fell below bicubic in one epoch).
    "srgan-mse": {"stage2": {"content_loss": "mse", "content_weight": 4.0}},
    # The course case's basic mode: no pre-training; G and D start from random weights and are
    # updated alternately from the first step, with SRGAN-MSE's losses and weights. The case
    # expects a poor model from it: the baseline that a student's training scheme must beat.
    "basic": {"stage1": {"epochs": 0, "iterations": 0},
              "stage2": {"content_loss": "mse", "content_weight": 4.0}},
    "srgan-vgg22": {"stage2": {"content_loss": "vgg22"}},
    "srgan-vgg54": {"stage2": {"content_loss": "vgg54"}},
    # ESRGAN (Wang et al. 2018): RRDBNet, L1 pre-training (lr 2e-4 halved every 2e5 its),
    # then RaGAN + pre-activation VGG54 (L1, no rescaling) + 1e-2 L1 pixel, 5e-3 adversarial.
    "esrgan": {
        "data": {"patch_size": 128},
        "model": {
            "generator": {"name": "RRDBNet", "kwargs": {"scale": 4, "n_blocks": 23, "channels": 64, "growth": 32}},
            "discriminator": {"name": "VGGStyleDiscriminator", "kwargs": {}},
        },
        "stage1": {"pixel_loss": "l1", "lr": 2e-4, "iterations": 1_000_000,
                   "lr_milestones": [0.2, 0.4, 0.6, 0.8], "lr_gamma": 0.5},
        "stage2": {"iterations": 400_000, "lr_g": 1e-4, "lr_d": 1e-4,
                   "lr_milestones": [0.125, 0.25, 0.5, 0.75], "lr_gamma": 0.5,
                   "content_loss": "vgg54", "vgg_before_activation": True, "vgg_criterion": "l1",
                   "vgg_feature_scale": 1.0, "content_weight": 1.0, "adversarial_weight": 5e-3,
                   "gan_type": "ragan", "pixel_loss": "l1", "pixel_weight": 1e-2},
    },
    # The SRGAN lab's recipe (a widely used PyTorch SRGAN, trained there on CelebA-HQ faces):
    # G loss = pixel MSE + 1e-3 * mean(1 - D(G(z))) + 6e-3 * MSE of VGG16 features[:31]
    # (un-normalised input) + 2e-8 * squared TV; D loss = 1 - D(x) + D(G(z)); 240x240 HR
    # crops; a 5-block generator. Like the lab, no pre-training: stage 2 from random init
    # (the MSE term trains G from the first step). Optimiser and schedule: the kit's.
    "srgan-lab": {
        "data": {"patch_size": 240},
        "model": {"generator": {"name": "SRResNet", "kwargs": {"scale": 4, "n_blocks": 5, "channels": 64}}},
        "stage1": {"epochs": 0, "iterations": 0},
        "stage2": {"pixel_loss": "mse", "pixel_weight": 1.0,
                   "content_loss": "vgg16_lab", "content_weight": 6e-3, "vgg_feature_scale": 1.0,
                   "adversarial_weight": 1e-3, "gan_type": "lab",
                   "tv_weight": 2e-8, "tv_type": "squared"},
    },
}

PROFILES: dict[str, dict[str, Any]] = {
    # The papers' schedules (see BASE_CONFIG / PRESETS).
    "full": {},
    # A few minutes on a laptop CPU with the scikit-image sample photos
    # (`python create_data_lists.py --sample`), for presets that keep the SRResNet and the SRGAN
    # discriminator: SRResNet 4 blocks x 32 channels, discriminator 32 channels / fc 256, 48x48
    # HR patches. A preset that sets its own network or crop (esrgan, srgan-lab) keeps them:
    # the run is then as short, but each step as slow as the recipe's.
    "quick": {
        "data": {"train_list": "data/lists/train.json", "val_list": "data/lists/sample-test.json",
                 "patch_size": 48, "patches_per_image": 32, "batch_size": 8, "workers": 0,
                 "cache_mb": 256, "val_max_images": 3, "n_samples": 2},
        "model": {"generator": {"kwargs": {"scale": 4, "n_blocks": 4, "channels": 32}},
                  "discriminator": {"kwargs": {"channels": 32, "fc_size": 256}}},
        # 10 x 20 steps at a higher lr than the paper's 1e-4, to get somewhere in ~200 steps
        # (a preset with its own stage-1 lr, esrgan, keeps it)
        "stage1": {"epochs": 10, "lr": 5e-4},
        "stage2": {"epochs": 5},
        # No compiling (it takes longer than the whole quick run). One thread: these tiny
        # networks gain little from more, and on a busy CPU (other programs running)
        # several OpenMP threads can make each step 10x slower (measured on 2 cores).
        "speed": {"compile": False, "threads": 1},
        "log_every": 5,
        "force": {},  # values this profile must change even where the preset sets them: none
    },
}


def _deep_update(base: dict, new: dict, path: str = "", strict: bool = True) -> dict:
    """Recursively copy ``new`` into ``base``; unknown keys raise (when ``strict``)."""
    for key, value in new.items():
        name = f"{path}{key}"
        if strict and key not in base:
            raise KeyError(f"unknown config key {name!r}; valid keys here: {sorted(base)}")
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "kwargs":
            _deep_update(base[key], value, name + ".", strict)
        else:
            base[key] = copy.deepcopy(value)
    return base


def make_config(preset: str = "srgan-vgg54", profile: str = "full", **overrides: Any) -> EasyDict:
    """Build the training configuration.

    Args:
        preset: one of ``PRESETS`` (``mse, vgg22, vgg54, srgan-mse, basic, srgan-vgg22,
            srgan-vgg54, esrgan, srgan-lab``).
        profile: ``"full"`` (the paper's schedule) or ``"quick"`` (CPU, minutes).
        **overrides: values replacing the defaults, either nested dicts
            (``stage1={"epochs": 2}``) or dotted keys (``**{"stage1.epochs": 2}``).
            ``scale=2`` also sets ``model.generator.kwargs.scale`` (see ``_apply_overrides``).

    Returns:
        An ``EasyDict`` holding every setting (see ``BASE_CONFIG`` for their meaning).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    config = copy.deepcopy(BASE_CONFIG)
    profile_values = {k: v for k, v in PROFILES[profile].items() if k != "force"}
    _deep_update(config, profile_values)       # length and sizing ...
    _deep_update(config, PRESETS[preset])      # ... under the recipe, which wins where both set a value
    forced = {}
    for key, value in _flatten(PROFILES[profile].get("force", {})).items():
        recipe = _get(config, key)
        if recipe != value:
            forced[key] = {"preset": copy.deepcopy(recipe), "profile": copy.deepcopy(value)}
            _apply_overrides(config, {key: value})
    config["preset"], config["profile"], config["profile_forced"] = preset, profile, forced
    _apply_overrides(config, overrides)
    if config["out"] is None:
        config["out"] = f"runs/{preset}-{profile}"
    return EasyDict(config)


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (``kwargs`` dicts stay whole: they replace, not merge)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key != "kwargs":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _get(config: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config[part]
    return config


def _apply_overrides(config: dict, overrides: dict[str, Any]) -> None:
    """Apply nested or dotted-key ``overrides`` to ``config`` (in place), keeping the scale in one place.

    ``scale`` and ``model.generator.kwargs.scale`` follow each other: overriding either one
    sets both; overriding both with different values raises ``ValueError``.
    """
    kwargs = config["model"]["generator"]["kwargs"]
    before = (config["scale"], kwargs.get("scale"))
    for key, value in overrides.items():
        if "." in key:  # dotted key -> nested dict
            for part in reversed(key.split(".")):
                value = {part: value}
            key, value = next(iter(value.items()))
        _deep_update(config, {key: value})
    kwargs = config["model"]["generator"]["kwargs"]
    scale, kw_scale = config["scale"], kwargs.get("scale")
    if kw_scale is None:  # every kit generator takes a scale: make it explicit
        kwargs["scale"] = scale
        return
    if scale == kw_scale:
        return
    if (scale, kw_scale) != before and kw_scale == before[1]:   # only `scale` was changed
        kwargs["scale"] = scale
    elif scale == before[0]:                                    # only the generator's was changed
        config["scale"] = kw_scale
    else:
        raise ValueError(f"config scale {scale} and model.generator.kwargs.scale {kw_scale} differ; "
                         "set only `scale` (--scale): the generator follows it")


def config_from_checkpoint(path: str | os.PathLike, **overrides: Any) -> EasyDict:
    """The configuration saved in a training checkpoint, with ``overrides`` applied on top.

    Keys added to ``BASE_CONFIG`` since the checkpoint was written get their defaults.
    Raises ``SolverError`` (one line) when ``path`` is not a readable training checkpoint.
    """
    saved = read_training_checkpoint(Path(path))["config"]
    saved = {k: v for k, v in saved.items() if k != "runtime"}
    config = make_config(saved["preset"], saved["profile"])
    _deep_update(config, saved, strict=False)
    _apply_overrides(config, overrides)
    return EasyDict(to_plain(config))


def check_config(config: EasyDict) -> None:
    """Raise ``ValueError`` naming the setting when a value is not one the solver knows."""
    choices = {
        "stage1.pixel_loss": (config.stage1.pixel_loss, ("mse", "l1")),
        "stage2.pixel_loss": (config.stage2.pixel_loss, ("mse", "l1")),
        "stage2.content_loss": (config.stage2.content_loss, CONTENT_LOSSES),
        "stage2.gan_type": (config.stage2.gan_type, GAN_TYPES),
        "stage2.tv_type": (config.stage2.tv_type, TV_TYPES),
        "stage2.vgg_criterion": (config.stage2.vgg_criterion, ("mse", "l1")),
        "speed.amp": (config.speed.amp, ("auto", "bf16", "fp16", "off")),
        "speed.compile": (config.speed.compile, (True, False, "auto")),
        "model.generator.name": (config.model.generator.name, tuple(models.GENERATORS)),
        "model.discriminator.name": (config.model.discriminator.name, tuple(models.DISCRIMINATORS)),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"config {key} = {value!r} is not one of {list(allowed)}")
    decay = config.stage2.ema_decay
    if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0 <= decay < 1:
        raise ValueError(f"config stage2.ema_decay must be a number in [0, 1) (0: no EMA), got {decay!r}")
    shift = config.stage2.d_translate
    if not isinstance(shift, int) or isinstance(shift, bool) or shift < 0:
        raise ValueError(f"config stage2.d_translate must be an integer >= 0 (pixels), got {shift!r}")
    for key in ("stage1.epochs", "stage2.epochs"):
        stage, name = key.split(".")
        value = config[stage][name]
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"config {key} must be None or an integer >= 0, got {value!r}")
    scale, kw_scale = config.scale, config.model.generator.kwargs.get("scale")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 2:
        raise ValueError(f"config scale must be an integer >= 2, got {scale!r}")
    if kw_scale is not None and kw_scale != scale:
        raise ValueError(f"config scale {scale} and model.generator.kwargs.scale {kw_scale} differ; "
                         "set only `scale` (--scale): the generator follows it")


# =====================================================================================
# Command line
# =====================================================================================

USAGE = ("usage: python solver.py --preset PRESET [--profile quick|full] [--train-list LIST] [--val-list LIST] "
         "[--out FOLDER] [--scale N] ...  (python solver.py --help: every option)\n"
         "quick example (CPU, minutes): python create_data_lists.py --sample && "
         "python solver.py --preset srgan-mse --profile quick\n"
         f"presets: {', '.join(sorted(PRESETS))}; continue a run: python solver.py --out FOLDER --resume")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's options (``python solver.py --help``); dotted destinations are config keys."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=None, help=f"one of {sorted(PRESETS)} (needed for a new run)")
    p.add_argument("--profile", default=None, help="full (the paper's schedule, default) or quick")
    p.add_argument("--out", default=None, help="run folder (default runs/<preset>-<profile>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pth; its saved "
                   "config is used, with the options given here on top")
    p.add_argument("--overwrite", action="store_const", const=True, dest="overwrite",
                   help="a new run may replace the results of another run in --out")
    p.add_argument("--scale", type=int, dest="scale",
                   help="upscaling factor (2, 3, 4, 8); the generator and the checks follow it "
                        "(the data lists must be made for it: create_data_lists.py --scale N)")
    p.add_argument("--train-list", dest="data.train_list")
    p.add_argument("--val-list", dest="data.val_list", help="evaluation list ('none': no validation)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of the preset's last stage (stage 1 for 'mse', else stage 2)")
    p.add_argument("--stage1-epochs", type=int, dest="stage1.epochs")
    p.add_argument("--stage2-epochs", type=int, dest="stage2.epochs")
    p.add_argument("--batch-size", type=int, dest="data.batch_size")
    p.add_argument("--patch-size", type=int, dest="data.patch_size")
    p.add_argument("--patches-per-image", type=int, dest="data.patches_per_image")
    p.add_argument("--workers", type=int, dest="data.workers")
    p.add_argument("--lr", type=float, default=None, help="learning rate of every optimiser; with "
                   "--resume it replaces the saved rate from the next step on")
    p.add_argument("--pretrained", default=None, help="generator checkpoint: skip stage 1")
    p.add_argument("--vgg-weights", dest="vgg.weights")
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--amp", dest="speed.amp", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision (default auto: bf16 on CPUs with native bf16 and on CUDA)")
    p.add_argument("--compile", dest="speed.compile", choices=["auto", "on", "off"],
                   help="torch.compile the networks (default auto: on CUDA only)")
    p.add_argument("--threads", type=int, dest="speed.threads",
                   help="CPU threads; on a CPU shared with other busy programs use 1: several "
                        "threads then wait on each other and steps can get many times slower")
    p.add_argument("--val-max-images", type=int, dest="data.val_max_images")
    p.add_argument("--keep-generators", action="store_const", const=True, dest="keep_generators",
                   help="keep every epoch's generator in <out>/generators/ (a few MB each)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="any other setting, dotted key and JSON value, e.g. stage2.tv_weight=2e-8")
    p.add_argument("--show-config", action="store_true", dest="show_config",
                   help="print the resolved configuration (JSON, as the run's config.json) and exit; "
                        "nothing is created")
    for action in p._actions:  # readable metavars for the dotted destinations
        if "." in action.dest and action.metavar is None and action.nargs != 0 and not action.choices:
            action.metavar = action.dest.rsplit(".", 1)[1].upper()
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> EasyDict:
    """The run's configuration from parsed arguments (the saved one, with ``--resume``)."""
    overrides: dict[str, Any] = {}
    skip = {"preset", "profile", "resume", "epochs", "lr", "set", "show_config"}
    for key, value in vars(args).items():
        if key not in skip and value is not None:
            overrides[key] = value
    if "data.val_list" in overrides and overrides["data.val_list"].lower() in ("none", ""):
        overrides["data.val_list"] = None
    for item in args.set:
        key, _, text = item.partition("=")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text

    ckpt = Path(args.out) / "checkpoint.pth" if args.out else None
    if args.resume and ckpt is not None and ckpt.is_file():
        config = config_from_checkpoint(ckpt, **overrides)
    elif args.preset is None:
        raise SolverError(f"no checkpoint at {ckpt} to resume from; start a new run with --preset")
    else:
        config = make_config(args.preset, args.profile or "full", **overrides)
    if args.epochs is not None:
        config[("stage1" if config.stage2.epochs == 0 else "stage2")].epochs = args.epochs
    if args.lr is not None:
        config.stage1.lr = config.stage2.lr_g = config.stage2.lr_d = args.lr
    if isinstance(config.speed.compile, str) and config.speed.compile in ("on", "off"):
        config.speed.compile = config.speed.compile == "on"
    config.resume = bool(args.resume)
    return config


def main(argv: list[str] | None = None) -> int:
    """``python solver.py ...``: 0 when done, 2 for an error the user can fix (one line on
    stderr, no traceback), 1 for a NaN/inf loss, 130 for Ctrl-C."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.preset is None and not (args.resume and args.out):
        print(USAGE, file=sys.stderr)
        return 2
    config = None
    try:
        config = config_from_args(args)
        if args.show_config:
            check_config(config)
            print(config_json(config))
            return 0
        result = train(config)
    except KeyboardInterrupt:
        where = Path(config.out) / "checkpoint.pth" if config is not None else None
        if where is not None and where.is_file():
            print(f"\ninterrupted: the last complete epoch is in {where}; continue with --resume", file=sys.stderr)
        else:  # stopped before the first checkpoint: the run removed what it had written
            print("\ninterrupted before the first epoch was complete: nothing was saved; run the same command "
                  "again to start over", file=sys.stderr)
        return 130
    except NonFiniteLossError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        return 1
    except (SolverError, OSError, ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {result['out']} (generator: {result['generator']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
