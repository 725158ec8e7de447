"""Losses, configuration and the training scheme for SRResNet / SRGAN / ESRGAN (x2, x3, x4, x8).

Read this file top to bottom:

1. **Losses** -- pixel (MSE / L1), VGG content loss, total variation, and the
   adversarial losses (standard GAN as in SRGAN, relativistic average GAN as in ESRGAN,
   and the SRGAN lab's ``1 - D`` form).
2. **Configuration** -- ``make_config(preset, profile, **overrides)`` returns an
   ``EasyDict``; ``PRESETS`` and ``PROFILES`` hold the recipes.
3. **The training scheme** -- ``train(config)`` on one screen: build G, stage 1
   (``pretrain_step``: the generator alone, pixel loss), stage 2 (``d_step`` then
   ``g_step``: content + adversarial loss); each stage is ``for epoch: train_stageN_epoch(...);
   end_epoch(...)``. The epoch functions hold the per-batch machinery (device, autocast,
   GradScaler, NaN checks, progress bar) around the steps.
4. **Machinery** -- checking the inputs, the folder lock, device/AMP/compile/DDP,
   epoch-end bookkeeping (validate, log, checkpoint), save and restore for exact resume.

Command line (``python solver.py --help``)::

    python create_data_lists.py --sample && python solver.py --preset srgan-mse --profile quick
    python solver.py --preset mse --train-list data/lists/train.json \\
        --val-list data/lists/Set14.json --out runs/srresnet --epochs 100
    python solver.py --out runs/srresnet --resume          # continue exactly where it stopped
    python solver.py --preset mse --scale 2 --train-list data/lists-x2/train.json ...  # x2
    python -m torch.distributed.run --nproc_per_node 2 solver.py --preset srgan-vgg54 ...

Files written in ``config.out``
-------------------------------
``checkpoint.pth``      rewritten atomically (temp file + ``os.replace``) after every epoch.
``generator_stage1.pth``/``generator_stage2.pth``  the generator at the end of each stage
                        (``models.save_generator`` format).
``log.csv``             one row per epoch (losses, D outputs, PSNR/SSIM/NIQE, lr, seconds).
``curves.png``          training curves, redrawn after every epoch.
``samples/``            a few validation images super-resolved after every epoch.
``generators/``         with ``keep_generators``: every epoch's generator, ``stage2_epoch0003.pth``.
``config.json``         the resolved configuration (human readable copy).
``train.lock``          exists while a run is using the folder (a second run there is refused).

A fresh run refuses a folder that holds another run's files (``--overwrite`` replaces them);
temporary files left by a killed run are removed when the next run starts there.

Checkpoint format (``checkpoint.pth``, format_version 1; kept stable across versions)
--------------------------------------------------------------------------------------
A dict that ``torch.load(path, weights_only=True)`` can read (only tensors, numbers,
strings, lists, dicts), so ``models.load_generator`` reads it too:

* ``format_version``: 1
* ``arch``: ``{"name", "kwargs"}`` of the generator (``models.generator_arch``).
* ``generator``: generator ``state_dict``.
* ``discriminator_arch`` / ``discriminator``: same for the discriminator, or ``None`` in stage 1.
* ``generator_ema``: the EMA generator's ``state_dict`` (``stage2.ema_decay > 0``), else ``None``
  (absent in files written before it existed).
* ``optimizer_g`` / ``optimizer_d``, ``scheduler_g`` / ``scheduler_d``,
  ``scaler_g`` / ``scaler_d``: state dicts (``None`` where not used).
* ``stage``: 1 or 2 -- the stage the run is in; ``epoch``: epochs *completed* in that stage.
* ``global_step``: optimiser steps done over the whole run (both stages).
* ``rng``: ``{"torch": ByteTensor, "cuda": [ByteTensor] or None, "numpy": {...}, "python": [...]}``.
* ``config``: the resolved configuration as a plain dict.
* ``log``: the rows of ``log.csv`` so far (list of dicts).

Training data randomness (crops, flips, shuffling) depends only on ``(config.seed, stage,
epoch)``, never on how many workers load it or whether the run was resumed: every sample
is drawn under its own seed (``SeededSampler``), so a resumed run is bit-identical to an
uninterrupted one on the same machine.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import errno
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from easydict import EasyDict
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

import models
import utils
from create_data_lists import load_data_list
from datasets import EvalDataset, TrainDataset
from utils import CheckpointError, atomic_write, load_state, save_state

try:
    import fcntl  # the run-folder lock (POSIX)
except ImportError:  # Windows: runs are not locked
    fcntl = None

CHECKPOINT_FORMAT = 1

# =====================================================================================
# 1. Losses
# =====================================================================================


def pixel_loss(sr: torch.Tensor, hr: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean pixel loss between ``sr`` and ``hr`` (both ``Nx3xHxW`` float in [0, 1]).

    ``kind``: ``"mse"`` (SRResNet/SRGAN) or ``"l1"`` (ESRGAN). Returns a scalar tensor.
    """
    if kind == "mse":
        return F.mse_loss(sr, hr)
    if kind == "l1":
        return F.l1_loss(sr, hr)
    raise ValueError(f"unknown pixel loss {kind!r}; use 'mse' or 'l1'")


TV_TYPES = ("l1", "squared")


def tv_loss(x: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Total variation of ``x`` (``NxCxHxW`` float). Scalar tensor.

    * ``"l1"`` (the kit's default): anisotropic, ``mean |dy| + mean |dx|``.
    * ``"squared"`` (the SRGAN lab's form): squared differences, each direction divided
      by its number of differences, ``2 * (sum dy^2 / (C*(H-1)*W) + sum dx^2 / (C*H*(W-1))) / N``.
    """
    dy = x[:, :, 1:, :] - x[:, :, :-1, :]
    dx = x[:, :, :, 1:] - x[:, :, :, :-1]
    if kind == "l1":
        return dy.abs().mean() + dx.abs().mean()
    if kind == "squared":
        # dy[0].numel() = C*(H-1)*W and dx[0].numel() = C*H*(W-1): the lab's count_h, count_w
        return 2 * (dy.pow(2).sum() / dy[0].numel() + dx.pow(2).sum() / dx[0].numel()) / x.shape[0]
    raise ValueError(f"unknown TV loss {kind!r}; use one of {list(TV_TYPES)}")


def random_translate(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Shift a batch by a random whole number of pixels in ``[-shift, shift - 1]`` (y and x).

    What the discriminator sees in stage 2 when ``stage2.d_translate > 0`` (the translation
    of DiffAugment, Zhao et al. 2020, applied to real and fake alike). Without it, D's
    strided convolutions sit at a fixed phase to G's pixel shuffle, and the adversarial
    gradient pushes the same periodic pattern into every SR patch, step after step (a
    dotted grid with a 4-pixel period after a few hundred steps); shifting at random
    changes that phase every call, so only what is not tied to it keeps adding up.

    Args:
        x: ``NxCxHxW`` float tensor (gradients flow through).
        shift: largest shift in pixels; ``2 * shift`` offsets are drawn uniformly with
            ``torch.randint`` (seeded and resumable with the run), one for the batch.
    Returns:
        ``NxCxHxW``, the batch moved by the offset; the pixels that come in from outside
        repeat the border (``replicate`` padding), so no black edge tells real from fake.
    """
    if shift <= 0:
        return x
    h, w = x.shape[-2:]
    dy, dx = torch.randint(0, 2 * shift, (2,)).tolist()
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    return padded[:, :, dy:dy + h, dx:dx + w]


# (i, j) of phi_{i,j}: the j-th convolution (after its ReLU) before the i-th max-pool of VGG19.
VGG_LAYERS = {"vgg22": (2, 2), "vgg54": (5, 4)}
# The SRGAN lab's perception network: VGG16 features[:31] on un-normalised [0, 1] images.
VGG16_LAB = "vgg16_lab"
CONTENT_LOSSES = ("mse", "l1", *VGG_LAYERS, VGG16_LAB)


class VGGContentLoss(nn.Module):
    """Distance between VGG19 feature maps phi_{i,j}(sr) and phi_{i,j}(hr).

    SRGAN (Ledig et al., eq. 5) uses the MSE of the feature maps; the paper rescales the
    features by 1/12.75 so the loss is on the scale of the pixel MSE, i.e. this returns
    ``mse(phi(sr), phi(hr)) * feature_scale**2`` with ``feature_scale = 1/12.75``.
    ESRGAN uses features *before* the activation, an L1 distance and no rescaling
    (``before_activation=True, criterion="l1", feature_scale=1``).
    ``layer="vgg16_lab"``: the SRGAN lab's perception loss instead, VGG16
    ``features[:31]`` on the un-normalised image (``models.TruncatedVGG16``; use it with
    ``feature_scale=1`` as the lab; ``before_activation`` does not apply).

    Inputs ``sr``, ``hr``: ``Nx3xHxW`` float in [0, 1] (the VGG19 applies the ImageNet
    normalisation inside; the lab's VGG16 takes them as they are).
    Output: scalar tensor. The VGG is frozen; gradients flow to ``sr`` only.
    """

    def __init__(self, layer: str = "vgg54", before_activation: bool = False,
                 criterion: str = "mse", feature_scale: float = 1 / 12.75,
                 weights: str | None = None, random_init: bool = False):
        super().__init__()
        if layer not in VGG_LAYERS and layer != VGG16_LAB:
            raise ValueError(f"unknown VGG layer {layer!r}; use one of {sorted(VGG_LAYERS) + [VGG16_LAB]}")
        if criterion not in ("mse", "l1"):
            raise ValueError(f"unknown VGG criterion {criterion!r}; use 'mse' or 'l1'")
        # Raises RuntimeError with instructions when the ImageNet weights are missing:
        # we never fall back silently to another loss.
        if layer == VGG16_LAB:
            self.vgg = models.TruncatedVGG16(weights=weights, random_init=random_init)
        else:
            i, j = VGG_LAYERS[layer]
            self.vgg = models.TruncatedVGG19(i=i, j=j, before_activation=before_activation,
                                             weights=weights, random_init=random_init)
        self.vgg.eval()
        for p in self.vgg.parameters():
            p.requires_grad_(False)
        self.criterion = criterion
        self.feature_scale = feature_scale

    def train(self, mode: bool = True) -> "VGGContentLoss":
        super().train(mode)
        self.vgg.eval()  # always frozen, whatever the surrounding mode
        return self

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        sr_features = self.vgg(sr) * self.feature_scale
        with torch.no_grad():
            hr_features = self.vgg(hr) * self.feature_scale
        if self.criterion == "mse":
            return F.mse_loss(sr_features.float(), hr_features.float())
        return F.l1_loss(sr_features.float(), hr_features.float())


GAN_TYPES = ("standard", "ragan", "lab")


def gan_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
               kind: str = "standard") -> torch.Tensor:
    """Discriminator loss from logits ``real_logits = C(hr)``, ``fake_logits = C(sr)`` (shape ``(N,)``).

    * ``"standard"`` (SRGAN): ``BCE(C(x_r), 1) + BCE(C(x_f), 0)``
      = ``-E[log D(x_r)] - E[log(1 - D(x_f))]`` with ``D = sigmoid(C)``.
    * ``"ragan"`` (ESRGAN, relativistic average):
      ``D_Ra(x_r, x_f) = sigmoid(C(x_r) - E[C(x_f)])``;
      loss ``= -E[log D_Ra(x_r, x_f)] - E[log(1 - D_Ra(x_f, x_r))]``.
    * ``"lab"`` (the SRGAN lab): ``1 - E[D(x_r)] + E[D(x_f)]`` on the probabilities
      ``D = sigmoid(C)`` themselves, no logarithm (0 at best, 2 at worst).

    Pass ``fake_logits`` computed from a *detached* ``sr`` so this step cannot reach G.
    """
    bce = F.binary_cross_entropy_with_logits
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    if kind == "standard":
        return (bce(real_logits, torch.ones_like(real_logits))
                + bce(fake_logits, torch.zeros_like(fake_logits)))
    if kind == "ragan":
        return (bce(real_logits - fake_logits.mean(), torch.ones_like(real_logits))
                + bce(fake_logits - real_logits.mean(), torch.zeros_like(fake_logits)))
    if kind == "lab":
        return 1 - torch.sigmoid(real_logits).mean() + torch.sigmoid(fake_logits).mean()
    raise ValueError(f"unknown GAN type {kind!r}; use one of {list(GAN_TYPES)}")


def gan_g_loss(fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None,
               kind: str = "standard") -> torch.Tensor:
    """Generator adversarial loss from logits (shape ``(N,)``).

    * ``"standard"`` (SRGAN): ``-E[log D(G(z))]`` = ``BCE(C(x_f), 1)`` (the non-saturating
      form; ``real_logits`` is not used).
    * ``"ragan"`` (ESRGAN): ``-E[log(1 - D_Ra(x_r, x_f))] - E[log D_Ra(x_f, x_r)]``; needs
      ``real_logits`` (detached: G must not move D).
    * ``"lab"`` (the SRGAN lab): ``E[1 - D(G(z))]`` with ``D = sigmoid(C)`` (no logarithm:
      its gradient fades where D is sure the image is fake, unlike ``"standard"``'s).
    """
    bce = F.binary_cross_entropy_with_logits
    fake_logits = fake_logits.float()
    if kind == "standard":
        return bce(fake_logits, torch.ones_like(fake_logits))
    if kind == "ragan":
        if real_logits is None:
            raise ValueError("the RaGAN generator loss needs real_logits = C(hr)")
        real_logits = real_logits.float().detach()
        return (bce(real_logits - fake_logits.mean(), torch.zeros_like(real_logits))
                + bce(fake_logits - real_logits.mean(), torch.ones_like(fake_logits)))
    if kind == "lab":
        return (1 - torch.sigmoid(fake_logits)).mean()
    raise ValueError(f"unknown GAN type {kind!r}; use one of {list(GAN_TYPES)}")


def d_probabilities(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                    kind: str = "standard") -> tuple[torch.Tensor, torch.Tensor]:
    """Mean discriminator outputs as probabilities, for logging: ``(D(x), D(G(z)))``.

    Standard GAN and the lab's: ``sigmoid(C(.))``; RaGAN: ``D_Ra(x_r, x_f)`` and ``D_Ra(x_f, x_r)``.
    """
    real_logits, fake_logits = real_logits.detach().float(), fake_logits.detach().float()
    if kind == "ragan":
        return (torch.sigmoid(real_logits - fake_logits.mean()).mean(),
                torch.sigmoid(fake_logits - real_logits.mean()).mean())
    return torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean()


class ContentLoss(nn.Module):
    """The content term of the generator loss, chosen by name.

    ``"mse"`` / ``"l1"``: pixel loss; ``"vgg22"`` / ``"vgg54"`` (VGG19) and ``"vgg16_lab"``
    (the SRGAN lab's VGG16 ``features[:31]``): ``VGGContentLoss``.
    ``forward(sr, hr)`` -> scalar tensor.
    """

    def __init__(self, name: str, vgg_before_activation: bool = False, vgg_criterion: str = "mse",
                 vgg_feature_scale: float = 1 / 12.75, vgg_weights: str | None = None,
                 vgg_random_init: bool = False):
        super().__init__()
        self.name = name
        if name in ("mse", "l1"):
            self.vgg = None
        elif name in VGG_LAYERS or name == VGG16_LAB:
            self.vgg = VGGContentLoss(name, before_activation=vgg_before_activation,
                                      criterion=vgg_criterion, feature_scale=vgg_feature_scale,
                                      weights=vgg_weights, random_init=vgg_random_init)
        else:
            raise ValueError(f"unknown content loss {name!r}; use one of {list(CONTENT_LOSSES)}")

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        if self.vgg is None:
            return pixel_loss(sr.float(), hr.float(), self.name)
        return self.vgg(sr, hr)


# =====================================================================================
# 2. Configuration
# =====================================================================================

# Every key of the configuration, with the paper's ("full" profile) values. Presets and
# profiles only override some of them; `make_config` refuses unknown keys (typos).
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
    # (`python create_data_lists.py --sample`). Smaller networks: SRResNet 4 blocks x 32
    # channels, discriminator 32 channels / fc 256, RRDBNet 2 blocks x 32 channels.
    "quick": {
        "data": {"train_list": "data/lists/train.json", "val_list": "data/lists/sample-test.json",
                 "patch_size": 48, "patches_per_image": 32, "batch_size": 8, "workers": 0,
                 "cache_mb": 256, "val_max_images": 3, "n_samples": 2},
        # 10 x 20 steps at a higher lr than the paper's 1e-4, to get somewhere in ~200 steps
        "stage1": {"epochs": 10, "lr": 5e-4},
        "stage2": {"epochs": 5},
        # No compiling (it takes longer than the whole quick run). One thread: these tiny
        # networks gain little from more, and on a busy CPU (other programs running)
        # several OpenMP threads can make each step 10x slower (measured on 2 cores).
        "speed": {"compile": False, "threads": 1},
        "log_every": 5,
    },
}

# Network sizes of the quick profile, by generator / discriminator name.
_QUICK_MODELS = {
    "SRResNet": {"n_blocks": 4, "channels": 32},
    "RRDBNet": {"n_blocks": 2, "channels": 32, "growth": 16},
    "Discriminator": {"channels": 32, "fc_size": 256},
    "VGGStyleDiscriminator": {},
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


def _to_plain(obj: Any) -> Any:
    """EasyDict / tuples -> plain dicts and lists (for JSON and weights_only checkpoints)."""
    if isinstance(obj, dict):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


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
    _deep_update(config, PRESETS[preset])
    _deep_update(config, PROFILES[profile])
    for stage in ("stage1", "stage2"):
        if PRESETS[preset].get(stage, {}).get("epochs") == 0:
            config[stage]["epochs"] = 0  # single-stage preset, whatever the profile's schedule
    if profile == "quick":
        for part in ("generator", "discriminator"):
            arch = config["model"][part]
            arch["kwargs"].update(_QUICK_MODELS.get(arch["name"], {}))
    config["preset"], config["profile"] = preset, profile
    _apply_overrides(config, overrides)
    if config["out"] is None:
        config["out"] = f"runs/{preset}-{profile}"
    return EasyDict(config)


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


def _check_scale(config: EasyDict) -> None:
    """Raise ``ValueError`` when ``config.scale`` is not the generator's scale or not supported."""
    scale, kw_scale = config.scale, config.model.generator.kwargs.get("scale")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 2:
        raise ValueError(f"config scale must be an integer >= 2, got {scale!r}")
    if kw_scale is not None and kw_scale != scale:
        raise ValueError(f"config scale {scale} and model.generator.kwargs.scale {kw_scale} differ; "
                         "set only `scale` (--scale): the generator follows it")


def config_from_checkpoint(path: str | os.PathLike, **overrides: Any) -> EasyDict:
    """The configuration saved in a training checkpoint, with ``overrides`` applied on top.

    Keys added to ``BASE_CONFIG`` since the checkpoint was written get their defaults.
    Raises ``SolverError`` (one line) when ``path`` is not a readable training checkpoint.
    """
    saved = _read_checkpoint(Path(path))["config"]
    saved = {k: v for k, v in saved.items() if k != "runtime"}
    config = make_config(saved["preset"], saved["profile"])
    _deep_update(config, saved, strict=False)
    _apply_overrides(config, overrides)
    return EasyDict(_to_plain(config))


# =====================================================================================
# 3. The training scheme
# =====================================================================================
# What is trained, in which order, and what one update does. Everything else a run needs
# (device, mixed precision, DDP, the folder lock, resume, logging, checkpoints) is in
# section 4, "Machinery", below; a new stage or a new step needs no code there.


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
    with start_run(config) as run:  # inputs checked, folder locked, data loaded, resume point read
        cfg1, cfg2 = run.config.stage1, run.config.stage2
        generator = initial_generator(run)  # seeded; --pretrained weights if given
        content = build_content_loss(run) if run.epochs2 > 0 else None  # missing VGG weights stop us now

        # ---- Stage 1: the generator alone, pixel loss (SRResNet; the paper's pre-training)
        if run.start_stage == 1:
            optimizer, scheduler = make_optimizer(run, generator, cfg1.lr, cfg1.betas, cfg1, run.epochs1)
            scaler, _ = new_grad_scalers(run)
            states, nets = {"g": (optimizer, scheduler, scaler)}, {"g": generator}
            g_train = wrap(run, generator)
            for epoch in remaining_epochs(run, 1, states, nets):  # restores a resumed run first
                metrics = train_stage1_epoch(g_train, run.loader, optimizer, scheduler, run.ctx,
                                             stage=1, epoch=epoch, pixel=cfg1.pixel_loss)
                end_epoch(run, 1, epoch, metrics, states, nets)
            finish_stage(run, 1, generator)

        # ---- Stage 2: content loss (+ adversarial loss against a discriminator)
        if run.epochs2 > 0:
            optimizer_g, scheduler_g = make_optimizer(run, generator, cfg2.lr_g, cfg2.betas, cfg2, run.epochs2)
            scaler_g, scaler_d = new_grad_scalers(run)
            states, nets = {"g": (optimizer_g, scheduler_g, scaler_g)}, {"g": generator}
            discriminator = optimizer_d = scheduler_d = None
            if cfg2.adversarial_weight > 0:
                discriminator = initial_discriminator(run)  # seeded with seed + 1
                optimizer_d, scheduler_d = make_optimizer(run, discriminator, cfg2.lr_d, cfg2.betas, cfg2,
                                                          run.epochs2)
                states["d"], nets["d"] = (optimizer_d, scheduler_d, scaler_d), discriminator
            ema = None
            if cfg2.ema_decay > 0:  # validated and exported instead of G (restored on resume)
                ema = nets["g_ema"] = copy.deepcopy(generator).requires_grad_(False)
            g_train, d_train = wrap(run, generator), wrap(run, discriminator)
            for epoch in remaining_epochs(run, 2, states, nets):
                metrics = train_stage2_epoch(g_train, d_train, run.loader, optimizer_g, optimizer_d, scheduler_g,
                                             scheduler_d, content, run.ctx, cfg2, stage=2, epoch=epoch, ema=ema)
                end_epoch(run, 2, epoch, metrics, states, nets)
            finish_stage(run, 2, ema if ema is not None else generator)
        return finish_run(run)


# ---------------------------------------------------------------------- one update


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler | None = None) -> None:
    """``zero_grad``, ``backward`` of the scalar ``loss``, ``step`` (through ``scaler`` when given)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # skipped when the gradients hold inf/NaN (fp16)
        scaler.update()


def pretrain_step(generator: nn.Module, lr: torch.Tensor, hr: torch.Tensor, optimizer: torch.optim.Optimizer,
                  pixel: str = "mse", scaler: torch.amp.GradScaler | None = None) -> dict[str, torch.Tensor]:
    """One stage-1 update of the generator with the pixel loss (the SRResNet's training).

    Forward ``sr = G(lr)``, loss ``pixel_loss(sr, hr, pixel)``, backward, one optimizer step.

    Args:
        generator: the generator (``Nx3xhxw`` -> ``Nx3x(s*h)x(s*w)``), in train mode.
        lr: ``Nx3xhxw`` float32 in [0, 1]; hr: ``Nx3x(s*h)x(s*w)`` float32 in [0, 1]; both
            on the generator's device.
        optimizer: updates the generator's parameters.
        pixel: ``"mse"`` (SRResNet) or ``"l1"`` (ESRGAN's pre-training).
        scaler: a ``torch.amp.GradScaler`` under fp16 autocast (scales the loss so small
            gradients survive fp16); None: plain ``backward()`` and ``step()``.
            Autocast, if any, is entered by the caller.

    Returns:
        ``{"loss_pixel": loss}``: the loss before the update, a detached 0-dim tensor.
    """
    ### BEGIN SOLUTION
    ### TASK: solver.pretrain_step - sr = generator(lr), pixel_loss(sr, hr, pixel), one update of G with
    ###   optimizer_step(loss, optimizer, scaler); return {"loss_pixel": loss.detach()} (Ledig et al. 2017,
    ###   Sec. 3.2: the SRResNet, G trained alone with the pixel MSE, which initialises the SRGAN)
    sr = generator(lr)                                 # Nx3x(s*h)x(s*w)
    loss = pixel_loss(sr.float(), hr, pixel)           # in fp32, whatever autocast computed sr in
    optimizer_step(loss, optimizer, scaler)            # zero_grad, backward, step
    return {"loss_pixel": loss.detach()}
    ### END SOLUTION


def d_step(discriminator: nn.Module, hr: torch.Tensor, sr: torch.Tensor, optimizer: torch.optim.Optimizer,
           gan_type: str = "standard", translate: int = 0,
           scaler: torch.amp.GradScaler | None = None) -> dict[str, torch.Tensor]:
    """(1) Update D: real ``hr`` -> "real", ``sr`` -> "fake" (``gan_d_loss``), one optimizer step.

    ``hr``/``sr``: ``Nx3xHxW`` in [0, 1]; ``sr`` is detached here, so no gradient reaches G.
    ``translate``: ``stage2.d_translate`` (``random_translate`` of what D sees).
    Returns detached 0-dim tensors ``loss_d`` and ``d_real`` = D(x), ``d_fake`` = D(G(z))
    as probabilities.
    """
    # (1) Update D
    real_logits = discriminator(random_translate(hr, translate))           # (N,)
    fake_logits = discriminator(random_translate(sr.detach(), translate))  # (N,)
    loss = gan_d_loss(real_logits, fake_logits, gan_type)
    optimizer_step(loss, optimizer, scaler)
    d_real, d_fake = d_probabilities(real_logits, fake_logits, gan_type)
    return {"loss_d": loss.detach(), "d_real": d_real, "d_fake": d_fake}


def g_step(sr: torch.Tensor, hr: torch.Tensor, discriminator: nn.Module | None, content: nn.Module,
           optimizer: torch.optim.Optimizer, cfg: EasyDict,
           scaler: torch.amp.GradScaler | None = None) -> dict[str, torch.Tensor]:
    """(2) Update G: content (+ adversarial, pixel, TV) loss of ``sr = G(lr)``, one optimizer step.

    ``sr`` must still carry G's graph; ``hr``: ``Nx3xHxW`` in [0, 1]. ``discriminator``: the
    plain D with ``requires_grad`` off (the caller freezes it), or None without GAN.
    ``cfg``: ``config.stage2`` (the loss weights, ``gan_type``, ``d_translate``).
    ``loss_g = content_weight * content + adversarial_weight * adv + pixel_weight * pixel
    + tv_weight * tv``. Returns each term and ``loss_g`` as detached 0-dim tensors.
    """
    # (2) Update G
    terms = {"loss_content": content(sr.float(), hr)}
    loss = cfg.content_weight * terms["loss_content"]
    if discriminator is not None:
        fake_logits = discriminator(random_translate(sr, cfg.d_translate))
        real_logits = None
        if cfg.gan_type == "ragan":  # the relativistic loss compares with real logits (no gradient to D)
            with torch.no_grad():
                real_logits = discriminator(random_translate(hr, cfg.d_translate))
        terms["loss_adv"] = gan_g_loss(fake_logits, real_logits, cfg.gan_type)
        loss = loss + cfg.adversarial_weight * terms["loss_adv"]
    if cfg.pixel_weight > 0:
        terms["loss_pixel"] = pixel_loss(sr.float(), hr, cfg.pixel_loss)
        loss = loss + cfg.pixel_weight * terms["loss_pixel"]
    if cfg.tv_weight > 0:
        terms["loss_tv"] = tv_loss(sr.float(), cfg.tv_type)
        loss = loss + cfg.tv_weight * terms["loss_tv"]
    optimizer_step(loss, optimizer, scaler)
    return {"loss_g": loss.detach(), **{k: v.detach() for k, v in terms.items()}}


@torch.no_grad()
def ema_update(ema: nn.Module, generator: nn.Module, decay: float) -> None:
    """(3) ``ema = decay * ema + (1 - decay) * generator``, for every floating tensor of the
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


# ---------------------------------------------------------------------- one epoch


class TrainContext(EasyDict):
    """The run's machinery an epoch needs besides the networks.

    ``device``; ``amp_dtype`` (autocast dtype, or None for fp32); ``channels_last``;
    ``scaler_g`` / ``scaler_d`` (``torch.amp.GradScaler``, enabled for fp16 only);
    ``progress`` (show bars); ``log_every`` (bar refresh); ``check_every`` (NaN check
    cadence, in steps); ``global_step``: optimizer steps over the run, counted by the
    epoch loops.
    """


def _autocast(ctx) -> Any:
    return torch.autocast(device_type=ctx.device.type, dtype=ctx.amp_dtype,
                          enabled=ctx.amp_dtype is not None)


def _enabled(scaler: torch.amp.GradScaler | None) -> torch.amp.GradScaler | None:
    """The scaler when it is in use (fp16), else None (the steps then skip it)."""
    return scaler if scaler is not None and scaler.is_enabled() else None


def _to_device(x: torch.Tensor, ctx) -> torch.Tensor:
    x = x.to(ctx.device, non_blocking=True)
    if ctx.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _set_requires_grad(net: nn.Module | None, flag: bool) -> None:
    if net is not None:
        for p in net.parameters():
            p.requires_grad_(flag)


def _epoch_means(sums: dict[str, torch.Tensor], steps: int, stage: int, epoch: int, ctx) -> dict[str, float]:
    """Per-epoch means of summed losses; a NaN/inf mean (missed between checks) raises."""
    means = {k: v.item() / max(steps, 1) for k, v in sums.items()}
    bad = {k.replace("loss_", "") + " loss": torch.tensor(v) for k, v in means.items() if not math.isfinite(v)}
    if bad:
        _check_finite(bad, stage, epoch, ctx.global_step, ctx.check_every)
    return means


def train_stage1_epoch(generator: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                       scheduler, ctx, stage: int = 1, epoch: int = 1, pixel: str = "mse") -> dict[str, float]:
    """One epoch of stage 1: ``pretrain_step`` on every batch, with the machinery around it.

    Each batch ``(lr, hr)`` (``Bx3x(p/s)x(p/s)``, ``Bx3xpxp`` in [0, 1]) goes to the device,
    ``pretrain_step`` runs under ``ctx``'s autocast with ``ctx.scaler_g``, the loss is
    checked for NaN/inf every ``ctx.check_every`` steps, the scheduler steps (schedulers
    count iterations) and ``ctx.global_step`` is incremented.

    Returns the epoch's mean ``loss_g`` = ``loss_content`` (the pixel loss) and ``steps``.
    Raises ``NonFiniteLossError`` on a NaN/inf loss.
    """
    generator.train()
    sums: dict[str, torch.Tensor] = {}
    steps = 0
    # at most one refresh a second: in a notebook each refresh is a widget message, and a flood of
    # them can push a cell's last messages out of the kernel's output queue
    bar = tqdm(loader, desc=f"stage {stage} epoch {epoch}", leave=False, disable=not ctx.progress, mininterval=1.0,
               dynamic_ncols=True)
    for lr, hr in bar:
        lr, hr = _to_device(lr, ctx), _to_device(hr, ctx)
        with _autocast(ctx):
            losses = pretrain_step(generator, lr, hr, optimizer, pixel, _enabled(ctx.get("scaler_g")))
        scheduler.step()
        ctx.global_step += 1
        steps += 1
        if steps % ctx.check_every == 0:
            _check_finite({"content loss": losses["loss_pixel"]}, stage, epoch, ctx.global_step, ctx.check_every)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0) + v
        if steps % ctx.log_every == 0:
            bar.set_postfix(loss=f"{sums['loss_pixel'].item() / steps:.4g}", refresh=False)
    bar.close()
    mean = _epoch_means(sums, steps, stage, epoch, ctx).get("loss_pixel", 0.0)
    return {"loss_g": mean, "loss_content": mean, "steps": steps}


def train_stage2_epoch(generator: nn.Module, discriminator: nn.Module | None, loader: DataLoader,
                       optimizer_g: torch.optim.Optimizer, optimizer_d: torch.optim.Optimizer | None,
                       scheduler_g, scheduler_d, content: ContentLoss, ctx, cfg2,
                       stage: int = 2, epoch: int = 1, ema: nn.Module | None = None) -> dict[str, float]:
    """One epoch of stage 2: per batch ``sr = G(lr)``, then ``d_step``, then ``g_step``
    (then ``ema_update`` of ``ema``, the plain EMA generator, when given).

    The machinery around the two updates: batches to the device, autocast (``ctx``),
    ``ctx.scaler_d`` / ``ctx.scaler_g``, D frozen (``requires_grad`` off) during the G step,
    NaN/inf checks every ``ctx.check_every`` steps, scheduler steps, ``ctx.global_step``.
    Without a discriminator (or with ``cfg2.adversarial_weight == 0``) only ``g_step`` runs.

    ``cfg2`` is ``config.stage2``. ``discriminator`` may be the DDP-wrapped one (used for
    the D step); the G step calls the plain module, so no D gradients are synchronised.
    Returns the epoch's mean losses, mean ``d_real`` = D(x) and ``d_fake`` = D(G(z)) as
    probabilities, and the number of steps.
    """
    adversarial = discriminator is not None and cfg2.adversarial_weight > 0
    # The G step calls D without the DDP wrapper: D is not updated there, so its gradients
    # must not be synchronised (and a frozen DDP module would confuse DDP's bookkeeping).
    d_plain = getattr(discriminator, "module", discriminator) if adversarial else None
    generator.train()
    if adversarial:
        discriminator.train()
    sums: dict[str, torch.Tensor] = {}
    steps = 0
    # at most one refresh a second: in a notebook each refresh is a widget message, and a flood of
    # them can push a cell's last messages out of the kernel's output queue
    bar = tqdm(loader, desc=f"stage {stage} epoch {epoch}", leave=False, disable=not ctx.progress, mininterval=1.0,
               dynamic_ncols=True)
    try:
        for lr, hr in bar:
            lr, hr = _to_device(lr, ctx), _to_device(hr, ctx)
            ctx.global_step += 1
            steps += 1
            check = steps % ctx.check_every == 0
            losses: dict[str, torch.Tensor] = {}
            with _autocast(ctx):
                sr = generator(lr)  # the graph is kept for the G step
                if adversarial:
                    _set_requires_grad(d_plain, True)
                    losses.update(d_step(discriminator, hr, sr, optimizer_d, cfg2.gan_type, cfg2.d_translate,
                                         _enabled(ctx.get("scaler_d"))))
                    scheduler_d.step()
                    if check:
                        _check_finite({"discriminator loss": losses["loss_d"]}, stage, epoch, ctx.global_step,
                                      ctx.check_every)
                    _set_requires_grad(d_plain, False)
                losses.update(g_step(sr, hr, d_plain, content, optimizer_g, cfg2, _enabled(ctx.get("scaler_g"))))
            if ema is not None:
                ema_update(ema, _unwrap(generator), cfg2.ema_decay)
            scheduler_g.step()
            if check:
                _check_finite({k.replace("loss_", "") + " loss": v for k, v in losses.items()
                               if k.startswith("loss_") and k != "loss_d"},
                              stage, epoch, ctx.global_step, ctx.check_every)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v
            if steps % ctx.log_every == 0:
                post = {"G": f"{sums['loss_g'].item() / steps:.4g}"}
                if adversarial:
                    post.update(D=f"{sums['loss_d'].item() / steps:.3g}",
                                Dx=f"{sums['d_real'].item() / steps:.2f}",
                                DGz=f"{sums['d_fake'].item() / steps:.2f}")
                bar.set_postfix(post, refresh=False)
    finally:
        bar.close()
        _set_requires_grad(d_plain, True)
    means = _epoch_means(sums, steps, stage, epoch, ctx)
    means["steps"] = steps
    return means


def validate(generator: nn.Module, eval_dataset, scale: int, device: torch.device | str | None = None,
             tile: int | None = None, samples_dir: str | os.PathLike | None = None,
             n_samples: int = 0, prefix: str = "", max_images: int | None = None,
             progress: bool = False) -> dict[str, float]:
    """Mean PSNR/SSIM (MATLAB protocol, Y channel; ``utils.evaluate``) of ``generator``, in fp32.

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
            rows = utils.evaluate(generator, eval_dataset, scale, device=device, tile=tile, progress=progress)
            if samples_dir is not None and n_samples > 0:
                for k in range(min(n_samples, len(eval_dataset))):
                    item = eval_dataset[k]
                    sr = utils.super_resolve(generator, item["lr"], tile=tile, device=device)
                    name = Path(str(item["name"])).stem
                    utils.save_image(sr, Path(samples_dir) / f"{prefix}{name}.png")
    finally:
        generator.train(was_training)
    means = utils.mean_metrics(rows)
    return {key: means[key] for key in ("psnr", "ssim", "niqe")}


# =====================================================================================
# 4. Machinery
# =====================================================================================
# How a run is carried out: nothing here decides what is trained. Checkpoint I/O and
# logging first, then the run (inputs, lock, resume point), networks and precision, the
# epoch bookkeeping, save and restore, and the data/settings helpers.


# ---------------------------------------------------------------------- checkpoints


def _rng_state() -> dict:
    """All RNG states, as tensors / plain lists (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Save a dict of tensors and plain data with ``utils.save_state``: atomic (never partial),
    safe to load, with a SHA-256 digest that ``utils.load_state`` verifies."""
    save_state(path, obj)


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write the training checkpoint atomically (see the format at the top of this file)."""
    atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a training checkpoint written by ``save_checkpoint`` (on the CPU).

    Raises ``utils.CheckpointError`` (one line naming the file) for a missing, empty, foreign,
    corrupted (digest mismatch) or unsafe file, or an unsupported format version.
    """
    ckpt = load_state(path, what="training checkpoint")
    version = ckpt.get("format_version")
    if version != CHECKPOINT_FORMAT:
        raise CheckpointError(f"training checkpoint {path}: format {version} is not supported "
                              f"(this solver reads format {CHECKPOINT_FORMAT}); is it a generator file?")
    return ckpt


# ---------------------------------------------------------------------- logging

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


# ---------------------------------------------------------------------- errors


class SolverError(RuntimeError):
    """A problem the user can fix (folder, data, checkpoint, disk, weights); the message is one line.

    The command line prints ``error: <message>`` for it (and for ``OSError``/``ValueError``)
    instead of a traceback.
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


def _one_line(err: BaseException) -> str:
    """The first line of an exception's message (torch's can run over many lines)."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0].strip()


# ---------------------------------------------------------------------- the run


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


# Files and folders of a run; a fresh run refuses a folder holding any of them (--overwrite).
RUN_FILES = ("checkpoint.pth", "generator_stage1.pth", "generator_stage2.pth", "log.csv", "config.json",
             "curves.png")
RUN_FOLDERS = ("samples", "generators")


@contextlib.contextmanager
def start_run(config: EasyDict) -> Iterator[Run]:
    """Check the inputs, lock ``config.out``, load the data and the resume point; release on exit.

    Nothing is created before the data lists, their scale, the output folder (writable, not
    held by another run, no other run's results unless ``overwrite``) and the checkpoint to
    resume from are checked. A run that stops before its first checkpoint removes what it
    wrote (``config.json``, and the folder itself if it made it).
    """
    config = EasyDict(_to_plain(config))
    check_config(config)
    rank, world, local_rank = _dist_setup()
    device = _resolve_device(config.device, local_rank)
    is_main = rank == 0
    out = Path(config.out)
    train_set, eval_set = open_datasets(config, is_main)
    if is_main:
        _check_folder_writable(out)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    threads = torch.get_num_threads()
    created = not out.exists()
    lock = _lock_run_folder(out) if is_main else None
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

    Raises ``FileNotFoundError`` / ``ValueError`` with one line when a list is missing, does
    not parse, or was made for another scale than the model's.
    """
    lists = [("training", config.data.train_list)]
    if is_main and config.data.val_list:
        lists.append(("validation", config.data.val_list))
    for role, path in lists:
        try:
            scale = load_data_list(path)["scale"]
        except FileNotFoundError:
            if config.profile == "quick" and Path(path).name in ("train.json", "sample-test.json"):
                how = "make it with `python create_data_lists.py --sample`"
            elif Path(path).name == "train.json":
                how = ("make it with `python create_data_lists.py --download div2k` (the paper's data; for a "
                       "few-minute run: `python create_data_lists.py --sample` and --profile quick)")
            else:
                how = "make it with `python create_data_lists.py` (README, Real data)"
            other = ", pass --val-list LIST, or --val-list none" if role == "validation" else ", or pass --train-list LIST"
            raise FileNotFoundError(f"{role} data list not found: {path}: {how}{other}") from None
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


def _file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, as ``sha256sum`` prints it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_folder_writable(out: Path) -> None:
    """Raise one line when ``out`` is not a folder, or it (or its nearest existing parent) is read-only."""
    if out.exists() and not out.is_dir():
        raise SolverError(f"output folder {out} is a file; choose another --out")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SolverError(f"cannot create the output folder {out}: {existing} is a file; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SolverError(f"output folder {existing} is read-only; choose a writable --out")


def _lock_run_folder(out: Path):
    """Hold an exclusive lock on ``out/train.lock`` so two runs never share a folder.

    Returns the open lock file (closing it releases the lock; the OS releases it if the
    process dies), or None where ``fcntl`` does not exist (Windows: no check). The file
    holds the holder's PID; a refused run leaves it as it is.
    """
    if fcntl is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / "train.lock", "a+")  # not "w": that would erase the holder's PID before we know
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        who = f"process {holder}" if holder.isdigit() else "another process"
        raise SolverError(f"another training run ({who}) is using {out}: wait for it to finish or "
                          "choose another output folder (--out)") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _read_checkpoint(path: Path) -> dict:
    """``load_checkpoint`` with every way a file can be unusable turned into one line."""
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError:
        raise  # already one line naming the file and what is wrong with it
    except OSError as err:
        raise SolverError(f"cannot read {path}: {err.strerror or _one_line(err)}") from None
    except Exception as err:  # noqa: BLE001 - a damaged file makes the unpickler raise anything
        raise SolverError(f"cannot resume from {path}: it is not a readable training checkpoint "
                          f"({type(err).__name__}: {_one_line(err)}); start a new run in another folder, "
                          "or restore the file") from None
    if not isinstance(ckpt, dict) or not {"stage", "epoch", "generator", "config", "rng"} <= set(ckpt):
        raise SolverError(f"cannot resume from {path}: it is not a training checkpoint of solver.py")
    return ckpt


def _check_previous_run(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a fresh run into a folder holding another run's results, or clear them with ``overwrite``."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    found += [name + "/" for name in RUN_FOLDERS if (out / name).is_dir() and any((out / name).iterdir())]
    if not found:
        return
    if not overwrite:
        how = ("continue it with --resume (resume=True), " if "checkpoint.pth" in found and not resume else "")
        raise FileExistsError(f"{out} holds another run's results ({', '.join(found)}): {how}choose another "
                              "folder (--out), or replace them with --overwrite (overwrite=True)")
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in RUN_FOLDERS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)


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
                      "pretrained_sha256": _file_sha256(config.pretrained) if config.pretrained else None}

    ckpt = None
    if config.resume and ckpt_path.is_file():
        ckpt = _read_checkpoint(ckpt_path)
    elif config.resume and is_main:
        print(f"resume: no checkpoint at {ckpt_path}; starting a new run", flush=True)
    if is_main:
        if ckpt is None:
            _check_previous_run(out, config.resume, bool(config.overwrite))
        with _disk_errors(out):
            removed = utils.remove_stale_temps(out)  # what a killed run's interrupted writes left
            (out / "samples").mkdir(exist_ok=True)
            atomic_write(out / "config.json",
                         lambda tmp: Path(tmp).write_text(json.dumps(_to_plain(config), indent=2)))
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


# ---------------------------------------------------------------------- networks, optimizers, precision


DISCRIMINATORS = {"Discriminator": lambda **kw: models.Discriminator(**kw),
                  "VGGStyleDiscriminator": lambda **kw: models.VGGStyleDiscriminator(**kw)}


def build_discriminator(arch: dict) -> nn.Module:
    """``{"name": "Discriminator" | "VGGStyleDiscriminator", "kwargs": {...}, "spectral_norm": bool}``
    -> module (``models.spectral_normalize``-d when ``spectral_norm``)."""
    if arch["name"] not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {arch['name']!r}; choose one of {sorted(DISCRIMINATORS)}")
    net = DISCRIMINATORS[arch["name"]](**arch.get("kwargs", {}))
    return models.spectral_normalize(net) if arch.get("spectral_norm") else net


def _place(run: Run, net: nn.Module) -> nn.Module:
    net = net.to(run.device)
    return net.to(memory_format=torch.channels_last) if run.config.speed.channels_last else net


def initial_generator(run: Run) -> nn.Module:
    """The generator at the start of the run: seeded with ``config.seed`` (torch, numpy, random),
    weights from ``config.pretrained`` when given; on the run's device and memory format.
    (A resumed run's weights are restored by ``remaining_epochs``.)"""
    config = run.config
    torch.manual_seed(int(config.seed))
    np.random.seed(int(config.seed) % 2**32)
    random.seed(int(config.seed))
    generator = models.build_generator(config.model.generator)
    arch = _to_plain(models.generator_arch(generator))
    if run.ckpt is not None and run.ckpt["arch"] != arch:
        raise SolverError(f"{run.out / 'checkpoint.pth'} holds generator {run.ckpt['arch']}, but the config builds "
                          f"{arch}; resume with the same model settings")
    if config.pretrained:
        pretrained = _unwrap(models.load_generator(config.pretrained, device="cpu"))
        found = _to_plain(models.generator_arch(pretrained))
        if found != arch:
            raise SolverError(f"--pretrained {config.pretrained} is {found}, but the config builds {arch} "
                              "(scale, blocks, channels must match)")
        generator.load_state_dict(pretrained.state_dict())
    return _place(run, generator)


def initial_discriminator(run: Run) -> nn.Module:
    """A fresh discriminator seeded with ``config.seed + 1``, on the run's device and memory format."""
    torch.manual_seed(int(run.config.seed) + 1)
    return _place(run, build_discriminator(run.config.model.discriminator))


def build_content_loss(run: Run) -> ContentLoss:
    """Stage 2's content loss; missing VGG weights raise ``SolverError`` before any training."""
    cfg2 = run.config.stage2
    try:
        content = ContentLoss(cfg2.content_loss, vgg_before_activation=cfg2.vgg_before_activation,
                              vgg_criterion=cfg2.vgg_criterion, vgg_feature_scale=cfg2.vgg_feature_scale,
                              vgg_weights=run.config.vgg.weights, vgg_random_init=run.config.vgg.random_init)
    except (RuntimeError, FileNotFoundError) as err:
        if "VGG19" not in str(err):
            raise
        raise SolverError(" ".join(str(err).split())) from None
    return _place(run, content)


def make_optimizer(run: Run, net: nn.Module, lr: float, betas: list[float], cfg_stage: EasyDict,
                   epochs: int) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.MultiStepLR]:
    """Adam for ``net`` and its ``MultiStepLR`` over the stage's ``epochs * steps_per_epoch`` steps.

    ``cfg_stage.lr_milestones`` (fractions of the stage) and ``lr_gamma`` set the schedule.
    Returns ``(optimizer, scheduler)``.
    """
    kw = {"foreach": True} if run.device.type == "cpu" else {"fused": True}
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=tuple(betas), **kw)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, _milestones(cfg_stage.lr_milestones, epochs * run.steps_per_epoch), gamma=cfg_stage.lr_gamma)
    return optimizer, scheduler


def new_grad_scalers(run: Run) -> tuple[torch.amp.GradScaler, torch.amp.GradScaler]:
    """Fresh GradScalers for G and D (enabled under fp16 autocast only), also set on ``run.ctx``."""
    enabled = run.ctx.amp_dtype == torch.float16
    run.ctx.scaler_g = torch.amp.GradScaler(run.device.type, enabled=enabled)
    run.ctx.scaler_d = torch.amp.GradScaler(run.device.type, enabled=enabled)
    return run.ctx.scaler_g, run.ctx.scaler_d


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


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers (whose state_dict we save)."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _amp_dtype(amp: str, device: torch.device):
    """Autocast dtype for ``speed.amp`` on ``device`` (None: fp32).

    ``auto``: CUDA bf16 where supported, else fp16; CPU bf16 where the CPU has native bf16
    (``utils.cpu_has_native_bf16``), else fp32. ``bf16`` forces bf16 (slow where it is emulated);
    ``fp16`` is for CUDA only (fp32 on the CPU).
    """
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    if device.type == "cpu" and (amp == "bf16" or (amp == "auto" and utils.cpu_has_native_bf16())):
        return torch.bfloat16
    return None


# ---------------------------------------------------------------------- epochs


def remaining_epochs(run: Run, stage: int, states: dict, nets: dict[str, nn.Module]) -> Iterator[int]:
    """The epochs of ``stage`` still to run (1-based), with a progress bar.

    When the run resumes inside ``stage``, the networks, optimizers, schedulers, scalers and
    RNG states are first restored from the checkpoint (``restore_state``), so a resumed run
    is bit-identical to an uninterrupted one. Before each epoch the data sampler gets the
    epoch's key, and the epoch's start time and learning rate are kept for its log row.

    ``states``: ``{"g": (optimizer, scheduler, scaler), "d": (...)}``; ``nets``: ``{"g": G, "d": D}``
    (plain modules).
    """
    if run.ckpt is not None and int(run.ckpt["stage"]) == stage:
        restore_state(run.ckpt, stage, run.config, states, nets)
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
        with _disk_errors(out):
            if run.eval_set is not None:
                row.update(validate(shown, run.eval_set, config.scale, device=run.device,
                                    tile=config.data.val_tile, samples_dir=out / "samples",
                                    n_samples=int(config.data.n_samples),
                                    prefix=f"stage{stage}_epoch{epoch:04d}_", max_images=config.data.val_max_images))
            run.log.append(row)
            save_checkpoint(out / "checkpoint.pth", checkpoint_state(run, stage, epoch, states, nets))
            if config.keep_generators:
                models.save_generator(out / "generators" / f"stage{stage}_epoch{epoch:04d}.pth", shown,
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
        with _disk_errors(run.out):
            models.save_generator(path, generator, stage=stage, epochs=planned, config=_to_plain(run.config))
        run.result["generator"] = str(path)


def finish_run(run: Run) -> dict:
    """The run's result (``train``'s return value), once every process is done."""
    stage1 = run.out / "generator_stage1.pth"
    if run.is_main and run.result["generator"] is None and stage1.is_file():
        run.result["generator"] = str(stage1)  # a finished single-stage run, resumed
    run.result["log"] = run.log
    run.barrier()
    return run.result


# ---------------------------------------------------------------------- save and restore

# The config entry holding each optimizer's learning rate, per (stage, network).
_LR_SETTINGS = {(1, "g"): ("stage1", "lr", "stage 1"), (2, "g"): ("stage2", "lr_g", "generator"),
                (2, "d"): ("stage2", "lr_d", "discriminator")}
_NET_KEYS = {"g": "generator", "d": "discriminator", "g_ema": "generator_ema"}


def checkpoint_state(run: Run, stage: int, epoch: int, states: dict, nets: dict[str, nn.Module]) -> dict:
    """The checkpoint dict (format at the top of this file), looping over ``nets`` and ``states``."""
    d = nets.get("d")
    state = {"format_version": CHECKPOINT_FORMAT, "arch": _to_plain(models.generator_arch(nets["g"])),
             "generator": nets["g"].state_dict(),
             "discriminator_arch": _to_plain(run.config.model.discriminator) if d is not None else None,
             "discriminator": d.state_dict() if d is not None else None,
             "generator_ema": nets["g_ema"].state_dict() if "g_ema" in nets else None,
             "stage": stage, "epoch": epoch, "global_step": run.ctx.global_step,
             "rng": _rng_state(), "config": _to_plain(run.config), "log": run.log}
    for name in ("g", "d"):
        optimizer, scheduler, scaler = states.get(name, (None, None, None))
        state[f"optimizer_{name}"] = optimizer.state_dict() if optimizer is not None else None
        state[f"scheduler_{name}"] = scheduler.state_dict() if scheduler is not None else None
        state[f"scaler_{name}"] = scaler.state_dict() if _enabled(scaler) is not None else None
    return state


def restore_state(ckpt: dict, stage: int, config: EasyDict, states: dict, nets: dict[str, nn.Module]) -> None:
    """Load ``nets`` and ``states`` (optimizer, scheduler, scaler per network) and the RNG from ``ckpt``.

    A learning rate changed in ``config`` since the checkpoint applies from the next step on;
    an EMA turned on since (``--set stage2.ema_decay=...``) starts from the restored G.
    """
    if "d" in nets and ckpt.get("discriminator_arch") != _to_plain(config.model.discriminator):
        raise SolverError(f"the checkpoint's discriminator is {ckpt.get('discriminator_arch')}, but the config "
                          f"builds {_to_plain(config.model.discriminator)}; resume with the same model settings")
    for name, net in nets.items():
        saved = ckpt.get(_NET_KEYS[name])
        net.load_state_dict(nets["g"].state_dict() if saved is None and name == "g_ema" else saved)
    for name, (optimizer, scheduler, scaler) in states.items():
        optimizer.load_state_dict(ckpt[f"optimizer_{name}"])
        scheduler.load_state_dict(ckpt[f"scheduler_{name}"])
        section, key, label = _LR_SETTINGS[(stage, name)]
        _apply_lr_change(optimizer, scheduler, ckpt["config"][section][key], config[section][key], label)
        if ckpt.get(f"scaler_{name}"):
            scaler.load_state_dict(ckpt[f"scaler_{name}"])
    _set_rng_state(ckpt["rng"])


def _apply_lr_change(optimizer: torch.optim.Optimizer, scheduler: Any, saved_lr: float, lr: float,
                     name: str) -> None:
    """On resume: if the config's lr differs from the checkpoint's, use it from the next step.

    The saved optimizer/scheduler states would otherwise keep the old rate. Milestones still
    to come multiply the new rate by ``lr_gamma`` as usual; past ones are not re-applied.
    """
    if float(saved_lr) == float(lr):
        return
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = float(lr)
    scheduler.base_lrs = [float(lr)] * len(optimizer.param_groups)
    print(f"resume: {name} lr {saved_lr:g} -> {lr:g} from step {scheduler.last_epoch} on", flush=True)


_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


@contextlib.contextmanager
def _disk_errors(out: Path) -> Iterator[None]:
    """Turn a failed write in the run folder (disk full, read-only, ...) into one ``SolverError`` line."""
    try:
        yield
    except OSError as err:
        if err.errno in _DISK_FULL:
            raise SolverError(f"the disk holding {out} is full ({_free_mb(out)} MB free): free some space and "
                              "continue with --resume (the last complete epoch is kept), or choose another --out") from None
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise SolverError(f"cannot write in {out} ({err.strerror}): make it writable or choose "
                              "another --out") from None
        raise
    except RuntimeError as err:
        # torch.save reports a short write (full disk) as "[enforce fail at inline_container.cc ...]
        # ... unexpected pos", or "PytorchStreamWriter failed writing file".
        text = str(err)
        if "inline_container" in text or "unexpected pos" in text or "PytorchStreamWriter" in text:
            raise SolverError(f"could not write a checkpoint in {out} ({_free_mb(out)} MB free; the disk is "
                              "probably full): free some space and continue with --resume, or choose "
                              "another --out") from None
        raise


def _free_mb(path: Path) -> int:
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free // 2**20
    except OSError:
        return -1


# ---------------------------------------------------------------------- data and settings


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
    _check_scale(config)


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
    for action in p._actions:  # readable metavars for the dotted destinations
        if "." in action.dest and action.metavar is None and action.nargs != 0 and not action.choices:
            action.metavar = action.dest.rsplit(".", 1)[1].upper()
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> EasyDict:
    """The run's configuration from parsed arguments (the saved one, with ``--resume``)."""
    overrides: dict[str, Any] = {}
    skip = {"preset", "profile", "resume", "epochs", "lr", "set"}
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
        result = train(config)
    except KeyboardInterrupt:
        where = Path(config.out) / "checkpoint.pth" if config is not None else "the run folder"
        print(f"\ninterrupted: the last complete epoch is in {where}; continue with --resume", file=sys.stderr)
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
