"""Losses, configuration and the training loop for SRResNet / SRGAN / ESRGAN (x4).

Read this file top to bottom:

1. **Losses** -- pixel (MSE / L1), VGG content loss, total variation, and the
   adversarial losses (standard GAN as in SRGAN, relativistic average GAN as in ESRGAN,
   and the SRGAN lab's ``1 - D`` form).
2. **Configuration** -- ``make_config(preset, profile, **overrides)`` returns an
   ``EasyDict``; ``PRESETS`` and ``PROFILES`` hold the recipes.
3. **Training** -- ``train_stage1_epoch`` (content loss only: the "pre-training" of the
   generator), ``train_stage2_epoch`` (one discriminator update, then one generator
   update with content + adversarial loss), ``validate`` and ``train(config)`` which runs
   stage 1 then stage 2 and writes everything to ``config.out``.

Command line (``python solver.py --help``)::

    python solver.py --preset mse --train-list data/lists/train.json \\
        --val-list data/lists/Set14.json --out runs/srresnet --epochs 100
    python solver.py --out runs/srresnet --resume          # continue exactly where it stopped
    python -m torch.distributed.run --nproc_per_node 2 solver.py --preset srgan-vgg54 ...

Files written in ``config.out``
-------------------------------
``checkpoint.pth``      rewritten atomically (temp file + ``os.replace``) after every epoch.
``generator_stage1.pth``/``generator_stage2.pth``  the generator at the end of each stage
                        (``models.save_generator`` format).
``log.csv``             one row per epoch (losses, D outputs, PSNR/SSIM, lr, seconds).
``curves.png``          training curves, redrawn after every epoch.
``samples/``            a few validation images super-resolved after every epoch.
``generators/``         with ``keep_generators``: every epoch's generator, ``stage2_epoch0003.pth``.
``config.json``         the resolved configuration (human readable copy).
``train.lock``          exists while a run is using the folder (a second run there is refused).

Checkpoint format (``checkpoint.pth``, format_version 1; kept stable across versions)
--------------------------------------------------------------------------------------
A dict that ``torch.load(path, weights_only=True)`` can read (only tensors, numbers,
strings, lists, dicts), so ``models.load_generator`` reads it too:

* ``format_version``: 1
* ``arch``: ``{"name", "kwargs"}`` of the generator (``models.generator_arch``).
* ``generator``: generator ``state_dict``.
* ``discriminator_arch`` / ``discriminator``: same for the discriminator, or ``None`` in stage 1.
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
import copy
import csv
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from easydict import EasyDict
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

import models
from datasets import EvalDataset, TrainDataset
from utils import atomic_write

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
    "pretrained": None,          # generator checkpoint to start stage 2 from (skips stage 1)
    "scale": 4,
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
        "discriminator": {"name": "Discriminator", "kwargs": {"channels": 64, "fc_size": 1024}},
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
    },
    "speed": {
        "channels_last": True,   # NHWC activations: faster convolutions on CPU and GPU
        "amp": "auto",           # "auto" (bf16 if supported else fp16, CUDA only), "bf16", "fp16", "off"
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
        preset: one of ``PRESETS`` (``mse, vgg22, vgg54, srgan-mse, srgan-vgg22,
            srgan-vgg54, esrgan, srgan-lab``).
        profile: ``"full"`` (the paper's schedule) or ``"quick"`` (CPU, minutes).
        **overrides: values replacing the defaults, either nested dicts
            (``stage1={"epochs": 2}``) or dotted keys (``**{"stage1.epochs": 2}``).

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
    for key, value in overrides.items():
        if "." in key:  # dotted key -> nested dict
            for part in reversed(key.split(".")):
                value = {part: value}
            key, value = next(iter(value.items()))
        _deep_update(config, {key: value})
    if config["out"] is None:
        config["out"] = f"runs/{preset}-{profile}"
    return EasyDict(config)


def config_from_checkpoint(path: str | os.PathLike, **overrides: Any) -> EasyDict:
    """The configuration saved in a training checkpoint, with ``overrides`` applied on top.

    Keys added to ``BASE_CONFIG`` since the checkpoint was written get their defaults.
    """
    saved = torch.load(path, map_location="cpu", weights_only=True)["config"]
    saved = {k: v for k, v in saved.items() if k != "runtime"}
    config = make_config(saved["preset"], saved["profile"])
    _deep_update(config, saved, strict=False)
    for key, value in overrides.items():
        if "." in key:
            for part in reversed(key.split(".")):
                value = {part: value}
            key, value = next(iter(value.items()))
        _deep_update(config, {key: value})
    return EasyDict(_to_plain(config))


# =====================================================================================
# 3. Training
# =====================================================================================


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


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers (whose state_dict we save)."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


class TrainContext(EasyDict):
    """What a training epoch needs besides the networks: device, autocast dtype, scalers, ..."""


def _autocast(ctx) -> Any:
    return torch.autocast(device_type=ctx.device.type, dtype=ctx.amp_dtype,
                          enabled=ctx.amp_dtype is not None)


def _to_device(x: torch.Tensor, ctx) -> torch.Tensor:
    x = x.to(ctx.device, non_blocking=True)
    if ctx.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def train_stage1_epoch(generator: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                       scheduler, ctx, stage: int = 1, epoch: int = 1,
                       pixel: str = "mse", content: Callable | None = None) -> dict[str, float]:
    """One epoch of content-loss-only training of the generator (stage 1).

    Each batch: ``lr`` (``Bx3x(p/s)x(p/s)``) -> ``sr = G(lr)`` -> loss = pixel loss
    (or ``content(sr, hr)`` when given, e.g. a VGG loss) -> Adam step -> lr scheduler step
    (schedulers count iterations).

    Returns the epoch's mean ``loss_g`` / ``loss_content`` and the number of steps.
    Raises ``NonFiniteLossError`` on a NaN/inf loss.
    """
    generator.train()
    total = torch.zeros((), device=ctx.device)
    steps = 0
    bar = tqdm(loader, desc=f"stage {stage} epoch {epoch}", leave=False, disable=not ctx.progress,
               dynamic_ncols=True)
    for lr, hr in bar:
        lr, hr = _to_device(lr, ctx), _to_device(hr, ctx)
        with _autocast(ctx):
            sr = generator(lr)
        loss = content(sr.float(), hr) if content is not None else pixel_loss(sr.float(), hr, pixel)
        ctx.global_step += 1
        steps += 1
        if steps % ctx.check_every == 0:
            _check_finite({"content loss": loss}, stage, epoch, ctx.global_step, ctx.check_every)

        optimizer.zero_grad(set_to_none=True)
        ctx.scaler_g.scale(loss).backward()
        ctx.scaler_g.step(optimizer)
        ctx.scaler_g.update()
        scheduler.step()

        total += loss.detach()
        if steps % ctx.log_every == 0:
            bar.set_postfix(loss=f"{total.item() / steps:.4g}")
    bar.close()
    mean = total.item() / max(steps, 1)
    if not math.isfinite(mean):
        _check_finite({"content loss": torch.tensor(mean)}, stage, epoch, ctx.global_step, ctx.check_every)
    return {"loss_g": mean, "loss_content": mean, "steps": steps}


def train_stage2_epoch(generator: nn.Module, discriminator: nn.Module | None, loader: DataLoader,
                       optimizer_g: torch.optim.Optimizer, optimizer_d: torch.optim.Optimizer | None,
                       scheduler_g, scheduler_d, content: ContentLoss, ctx, cfg2,
                       stage: int = 2, epoch: int = 1) -> dict[str, float]:
    """One epoch of stage 2: alternate one D update and one G update per batch.

    For each batch ``(lr, hr)``:

    1. ``sr = G(lr)``.
    2. **D step** (when adversarial): logits ``C(hr)`` and ``C(sr.detach())`` -> ``gan_d_loss``
       -> update D only (``sr`` is detached, so no gradient reaches G).
    3. **G step**: ``loss_g = content_weight * content(sr, hr)
       + adversarial_weight * gan_g_loss(C(sr), C(hr)) + pixel_weight * pixel(sr, hr)
       + tv_weight * tv(sr)`` -> update G only (D's parameters are frozen meanwhile).

    With ``cfg2.d_translate > 0`` every input of D (both steps) goes through
    ``random_translate`` first.

    ``cfg2`` is ``config.stage2``. ``discriminator`` may be the DDP-wrapped one (used for
    the D step); the G step calls the plain module so no D gradients are synchronised.
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
    names = ["loss_g", "loss_content", "loss_adv", "loss_pixel", "loss_tv", "loss_d", "d_real", "d_fake"]
    sums = {k: torch.zeros((), device=ctx.device) for k in names}
    steps = 0
    bar = tqdm(loader, desc=f"stage {stage} epoch {epoch}", leave=False, disable=not ctx.progress,
               dynamic_ncols=True)
    for lr, hr in bar:
        lr, hr = _to_device(lr, ctx), _to_device(hr, ctx)
        ctx.global_step += 1
        steps += 1
        check = steps % ctx.check_every == 0

        # 1. Super-resolve the batch (the graph is kept for the G step).
        with _autocast(ctx):
            sr = generator(lr)

        # 2. Discriminator step: real hr -> 1, detached sr -> 0.
        if adversarial:
            for p in d_plain.parameters():
                p.requires_grad_(True)
            with _autocast(ctx):
                real_logits = discriminator(random_translate(hr, cfg2.d_translate))
                fake_logits = discriminator(random_translate(sr.detach(), cfg2.d_translate))
            loss_d = gan_d_loss(real_logits, fake_logits, cfg2.gan_type)
            if check:
                _check_finite({"discriminator loss": loss_d}, stage, epoch, ctx.global_step, ctx.check_every)
            optimizer_d.zero_grad(set_to_none=True)
            ctx.scaler_d.scale(loss_d).backward()
            ctx.scaler_d.step(optimizer_d)
            ctx.scaler_d.update()
            scheduler_d.step()
            d_real, d_fake = d_probabilities(real_logits, fake_logits, cfg2.gan_type)
            sums["loss_d"] += loss_d.detach()
            sums["d_real"] += d_real
            sums["d_fake"] += d_fake

        # 3. Generator step: content (+ adversarial, pixel, TV); D frozen.
        if adversarial:
            for p in d_plain.parameters():
                p.requires_grad_(False)
        terms: dict[str, torch.Tensor] = {}
        srf = sr.float()
        with _autocast(ctx):  # the VGG of a perceptual loss runs in mixed precision too
            terms["loss_content"] = content(srf, hr)
            if adversarial:
                fake_logits_g = d_plain(random_translate(sr, cfg2.d_translate))
                real_logits_g = None
                if cfg2.gan_type == "ragan":
                    with torch.no_grad():
                        real_logits_g = d_plain(random_translate(hr, cfg2.d_translate))
        loss_g = cfg2.content_weight * terms["loss_content"]
        if adversarial:
            terms["loss_adv"] = gan_g_loss(fake_logits_g, real_logits_g, cfg2.gan_type)
            loss_g = loss_g + cfg2.adversarial_weight * terms["loss_adv"]
        if cfg2.pixel_weight > 0:
            terms["loss_pixel"] = pixel_loss(srf, hr, cfg2.pixel_loss)
            loss_g = loss_g + cfg2.pixel_weight * terms["loss_pixel"]
        if cfg2.tv_weight > 0:
            terms["loss_tv"] = tv_loss(srf, cfg2.tv_type)
            loss_g = loss_g + cfg2.tv_weight * terms["loss_tv"]
        terms["loss_g"] = loss_g
        if check:
            _check_finite({k.replace("loss_", "") + " loss": v for k, v in terms.items()},
                          stage, epoch, ctx.global_step, ctx.check_every)
        optimizer_g.zero_grad(set_to_none=True)
        ctx.scaler_g.scale(loss_g).backward()
        ctx.scaler_g.step(optimizer_g)
        ctx.scaler_g.update()
        scheduler_g.step()

        for k, v in terms.items():
            sums[k] += v.detach()
        if steps % ctx.log_every == 0:
            post = {"G": f"{sums['loss_g'].item() / steps:.4g}"}
            if adversarial:
                post.update(D=f"{sums['loss_d'].item() / steps:.3g}",
                            Dx=f"{sums['d_real'].item() / steps:.2f}",
                            DGz=f"{sums['d_fake'].item() / steps:.2f}")
            bar.set_postfix(post)
    bar.close()
    if adversarial:
        for p in d_plain.parameters():
            p.requires_grad_(True)
    used = set(["loss_g", "loss_content"]) | (
        {"loss_adv", "loss_d", "d_real", "d_fake"} if adversarial else set()) | (
        {"loss_pixel"} if cfg2.pixel_weight > 0 else set()) | ({"loss_tv"} if cfg2.tv_weight > 0 else set())
    means = {k: sums[k].item() / max(steps, 1) for k in names if k in used}
    bad = {k: torch.tensor(v) for k, v in means.items() if not math.isfinite(v)}
    if bad:
        _check_finite(bad, stage, epoch, ctx.global_step, ctx.check_every)
    means["steps"] = steps
    return means


def validate(generator: nn.Module, eval_dataset, scale: int, device: torch.device | str | None = None,
             tile: int | None = None, samples_dir: str | os.PathLike | None = None,
             n_samples: int = 0, prefix: str = "", max_images: int | None = None,
             progress: bool = False) -> dict[str, float]:
    """Mean PSNR/SSIM (MATLAB protocol, Y channel; ``utils.evaluate``) of ``generator``.

    Args:
        generator: the plain (unwrapped) generator; put in eval mode here and back to train.
        eval_dataset: ``datasets.EvalDataset`` (items ``{"name", "lr", "hr"}`` uint8).
        max_images: score only the first N images (None: all).
        samples_dir / n_samples / prefix: save the first ``n_samples`` SR images as
            ``<samples_dir>/<prefix><name>.png``.

    Returns ``{"psnr": float, "ssim": float}`` (dB, and SSIM in [0, 1]).
    """
    import utils

    if max_images is not None and max_images < len(eval_dataset):
        eval_dataset = torch.utils.data.Subset(eval_dataset, range(max_images))
    was_training = generator.training
    generator.eval()
    try:
        rows = utils.evaluate(generator, eval_dataset, scale, device=device, tile=tile, progress=progress)
        if samples_dir is not None and n_samples > 0:
            for k in range(min(n_samples, len(eval_dataset))):
                item = eval_dataset[k]
                sr = utils.super_resolve(generator, item["lr"], tile=tile, device=device)
                name = Path(str(item["name"])).stem
                utils.save_image(sr, Path(samples_dir) / f"{prefix}{name}.png")
    finally:
        generator.train(was_training)
    return {"psnr": float(np.mean([r["psnr"] for r in rows])),
            "ssim": float(np.mean([r["ssim"] for r in rows]))}


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
    """``torch.save`` through ``utils.atomic_write``: the file is never partial."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write the training checkpoint atomically (see the format at the top of this file)."""
    atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a training checkpoint written by ``save_checkpoint`` (on the CPU)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    version = ckpt.get("format_version")
    if version != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {version} is not supported "
                         f"(this solver reads format {CHECKPOINT_FORMAT})")
    return ckpt


# ---------------------------------------------------------------------- logging

LOG_COLUMNS = ["stage", "epoch", "step", "lr", "loss_g", "loss_content", "loss_adv", "loss_pixel",
               "loss_tv", "loss_d", "d_real", "d_fake", "psnr", "ssim", "seconds"]


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
    """Draw losses, D outputs and PSNR/SSIM per epoch into ``path`` (PNG, atomically)."""
    # A Figure made directly (not through pyplot) needs no GUI backend and leaves the
    # caller's pyplot state (e.g. a notebook's inline backend) alone.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not rows:
        return
    x = np.arange(1, len(rows) + 1)

    def series(key):
        return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)

    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 3)
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
        axes[1].text(0.5, 0.5, "no discriminator yet\n(stage 1, or no adversarial loss)",
                     ha="center", va="center", transform=axes[1].transAxes, color="gray")
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
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))


# ---------------------------------------------------------------------- setup helpers

DISCRIMINATORS = {"Discriminator": lambda **kw: models.Discriminator(**kw),
                  "VGGStyleDiscriminator": lambda **kw: models.VGGStyleDiscriminator(**kw)}


def build_discriminator(arch: dict) -> nn.Module:
    """``{"name": "Discriminator" | "VGGStyleDiscriminator", "kwargs": {...}}`` -> module."""
    if arch["name"] not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {arch['name']!r}; choose one of {sorted(DISCRIMINATORS)}")
    return DISCRIMINATORS[arch["name"]](**arch.get("kwargs", {}))


def c_compiler_available() -> bool:
    """True when a C compiler builds a trivial program (torch.compile needs one on the CPU)."""
    import shutil
    import subprocess

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
            raise RuntimeError(f"device {name!r} requested but CUDA is not available; use device='cpu'")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def _amp_dtype(amp: str, device: torch.device):
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _make_loader(dataset: Dataset, sampler: SeededSampler, batch: int, cfg_data, device) -> DataLoader:
    workers = int(cfg_data.workers)
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
    shift = config.stage2.d_translate
    if not isinstance(shift, int) or isinstance(shift, bool) or shift < 0:
        raise ValueError(f"config stage2.d_translate must be an integer >= 0 (pixels), got {shift!r}")
    for key in ("stage1.epochs", "stage2.epochs"):
        stage, name = key.split(".")
        value = config[stage][name]
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"config {key} must be None or an integer >= 0, got {value!r}")


def _dist_setup():
    """(rank, world_size, local_rank) from torchrun's environment; init the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local_rank


def _lock_run_folder(out: Path):
    """Hold an exclusive lock on ``out/train.lock`` so two runs never share a folder.

    Returns the open lock file (closing it releases the lock; the OS releases it if the
    process dies), or None where ``fcntl`` does not exist (Windows: no check).
    """
    try:
        import fcntl
    except ImportError:
        return None
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / "train.lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise RuntimeError(f"another training run is using {out} (it holds {out / 'train.lock'}); "
                           "wait for it to finish or choose another output folder") from None
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def train(config: EasyDict) -> dict:
    """Run stage 1 (content-loss pre-training) then stage 2 as configured; see the module doc.

    Args:
        config: from ``make_config`` (or ``config_from_checkpoint``). With
            ``config.resume`` the run continues from ``<config.out>/checkpoint.pth``.

    Returns:
        ``{"out": run folder, "log": list of per-epoch rows, "generator": path of the last
        generator file written, "checkpoint": path}``.

    Raises:
        NonFiniteLossError: a loss became NaN/inf (the last checkpoint is kept).
    """
    import torch.distributed as dist

    config = EasyDict(_to_plain(config))
    rank, world, local_rank = _dist_setup()
    device = _resolve_device(config.device, local_rank)
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0
    threads = torch.get_num_threads()
    lock = _lock_run_folder(Path(config.out)) if is_main else None
    try:
        if config.speed.threads:
            torch.set_num_threads(int(config.speed.threads))
        return _train(config, rank, world, device, distributed, is_main)
    finally:
        torch.set_num_threads(threads)  # a run's thread setting must not leak to the caller
        if lock is not None:
            Path(lock.name).unlink(missing_ok=True)
            lock.close()
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: EasyDict, rank: int, world: int, device: torch.device, distributed: bool,
           is_main: bool) -> dict:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    check_config(config)
    out = Path(config.out)
    ckpt_path = out / "checkpoint.pth"
    speed = config.speed
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(speed.cudnn_benchmark)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def barrier():
        if distributed:
            dist.barrier()

    # ---- data
    batch = int(config.data.batch_size)
    if batch % world:
        raise ValueError(f"batch_size {batch} must be divisible by the number of processes ({world})")
    train_set = TrainDataset(config.data.train_list, scale=config.scale, patch_size=config.data.patch_size,
                             patches_per_image=config.data.patches_per_image, augment=config.data.augment,
                             cache_mb=config.data.cache_mb)
    sampler = SeededSampler(len(train_set), int(config.seed), rank, world)
    loader = _make_loader(train_set, sampler, batch // world, config.data, device)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"the training set gives {len(sampler)} patches per process, fewer than one batch "
                         f"of {batch // world}: lower batch_size or raise patches_per_image")
    eval_set = None
    if is_main and config.data.val_list:
        eval_set = EvalDataset(config.data.val_list, scale=config.scale)
    epochs1 = _stage_epochs(config.stage1, steps_per_epoch)
    epochs2 = _stage_epochs(config.stage2, steps_per_epoch)
    if config.pretrained:
        epochs1 = 0

    config.runtime = {"device": str(device), "world_size": world, "steps_per_epoch": steps_per_epoch,
                      "stage1_epochs": epochs1, "stage2_epochs": epochs2, "n_train_patches": len(train_set),
                      "torch": str(torch.__version__)}
    use_compile = speed.compile is True or (speed.compile == "auto" and device.type == "cuda")
    if use_compile and device.type == "cpu" and not c_compiler_available():
        raise RuntimeError("speed.compile=True on the CPU needs a working C compiler (set CC or install "
                           "gcc), or train without it: speed.compile=False (--compile off)")
    config.runtime["compile"] = use_compile

    # ---- generator
    torch.manual_seed(int(config.seed))
    np.random.seed(int(config.seed) % 2**32)
    random.seed(int(config.seed))
    generator = models.build_generator(config.model.generator).to(device)
    if config.pretrained:
        pretrained = models.load_generator(config.pretrained, device="cpu")
        generator.load_state_dict(_unwrap(pretrained).state_dict())
    if speed.channels_last:
        generator = generator.to(memory_format=torch.channels_last)
    g_plain = generator

    ckpt = None
    if config.resume:
        if ckpt_path.is_file():
            ckpt = load_checkpoint(ckpt_path)
            if ckpt["arch"] != _to_plain(models.generator_arch(g_plain)):
                raise ValueError(f"{ckpt_path} holds generator {ckpt['arch']}, but the config builds "
                                 f"{models.generator_arch(g_plain)}; resume with the same model settings")
            g_plain.load_state_dict(ckpt["generator"])
        elif is_main:
            print(f"resume: no checkpoint at {ckpt_path}; starting a new run", flush=True)
    elif ckpt_path.is_file():
        raise FileExistsError(f"{ckpt_path} exists: pass resume=True (--resume) to continue it, "
                              "or choose another output folder")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        for stale in [*out.glob(".*.tmp"), *out.glob(".*.tmp.png")]:  # left by a killed run
            stale.unlink()
        with open(out / "config.json", "w") as f:
            json.dump(_to_plain(config), f, indent=2)

    log: list[dict] = list(ckpt["log"]) if ckpt else []
    global_step = int(ckpt["global_step"]) if ckpt else 0
    stage = int(ckpt["stage"]) if ckpt else (1 if epochs1 > 0 else 2)
    done = int(ckpt["epoch"]) if ckpt else 0      # epochs completed in `stage`

    ctx = TrainContext(device=device, amp_dtype=_amp_dtype(speed.amp, device), channels_last=speed.channels_last,
                       progress=is_main, log_every=max(1, int(config.log_every)), global_step=global_step,
                       check_every=1 if device.type == "cpu" else max(1, int(config.log_every)))
    use_scaler = ctx.amp_dtype == torch.float16
    result = {"out": str(out), "log": log, "generator": None, "checkpoint": str(ckpt_path)}

    def wrap(model):
        if distributed:
            model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                        broadcast_buffers=False)
        if use_compile:  # after DDP, as PyTorch recommends (DDP-aware graph breaks)
            model = torch.compile(model)
        return model

    def make_adam(params, lr, betas):
        kw = {"foreach": True} if device.type == "cpu" else {"fused": True}
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), **kw)

    def end_epoch(stage_now, epoch_now, metrics, seconds, state_extra, nets):
        """Validate, log, checkpoint (rank 0); all ranks wait for it."""
        if distributed:
            # BatchNorm running statistics are per process (buffers are not broadcast, so a
            # discriminator called twice per step stays valid): average them once per epoch
            # so that every rank, and the checkpoint, hold the same network.
            for net in nets:
                for buf in net.buffers():
                    if buf.is_floating_point():
                        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                        buf.div_(world)
        if is_main:
            row = {"stage": stage_now, "epoch": epoch_now, "step": ctx.global_step,
                   "lr": state_extra["lr"], "seconds": round(seconds, 3)}
            row.update({k: v for k, v in metrics.items() if k != "steps"})
            if eval_set is not None:
                row.update(validate(g_plain, eval_set, config.scale, device=device, tile=config.data.val_tile,
                                    samples_dir=out / "samples", n_samples=int(config.data.n_samples),
                                    prefix=f"stage{stage_now}_epoch{epoch_now:04d}_",
                                    max_images=config.data.val_max_images))
            log.append(row)
            state = {"format_version": CHECKPOINT_FORMAT,
                     "arch": _to_plain(models.generator_arch(g_plain)),
                     "generator": g_plain.state_dict(),
                     "stage": stage_now, "epoch": epoch_now, "global_step": ctx.global_step,
                     "rng": _rng_state(), "config": _to_plain(config), "log": log}
            state.update(state_extra["states"])
            save_checkpoint(ckpt_path, state)
            if config.keep_generators:
                models.save_generator(out / "generators" / f"stage{stage_now}_epoch{epoch_now:04d}.pth", g_plain,
                                      stage=stage_now, epoch=epoch_now, global_step=ctx.global_step,
                                      metrics={k: v for k, v in row.items() if isinstance(v, float)})
            write_log_csv(log, out / "log.csv")
            plot_curves(log, out / "curves.png")
            msg = " ".join(f"{k}={v:.4g}" for k, v in row.items()
                           if isinstance(v, float) and k not in ("lr", "seconds"))
            tqdm.write(f"stage {stage_now} epoch {epoch_now}: {msg} ({seconds:.1f}s)")
        barrier()

    # The stage-2 content loss is built now, so that missing VGG weights stop the run
    # before stage 1 rather than after it.
    cfg2 = config.stage2
    content = None
    if epochs2 > 0:
        content = ContentLoss(cfg2.content_loss, vgg_before_activation=cfg2.vgg_before_activation,
                              vgg_criterion=cfg2.vgg_criterion, vgg_feature_scale=cfg2.vgg_feature_scale,
                              vgg_weights=config.vgg.weights, vgg_random_init=config.vgg.random_init).to(device)
        if speed.channels_last:
            content = content.to(memory_format=torch.channels_last)

    # ================================================================ stage 1
    if stage == 1:
        cfg1 = config.stage1
        optimizer = make_adam(g_plain.parameters(), cfg1.lr, cfg1.betas)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, _milestones(cfg1.lr_milestones, epochs1 * steps_per_epoch), gamma=cfg1.lr_gamma)
        ctx.scaler_g = torch.amp.GradScaler(device.type, enabled=use_scaler)
        if ckpt is not None and ckpt["stage"] == 1:
            optimizer.load_state_dict(ckpt["optimizer_g"])
            scheduler.load_state_dict(ckpt["scheduler_g"])
            _apply_lr_change(optimizer, scheduler, ckpt["config"]["stage1"]["lr"], cfg1.lr, "stage 1")
            if ckpt.get("scaler_g"):
                ctx.scaler_g.load_state_dict(ckpt["scaler_g"])
            _set_rng_state(ckpt["rng"])
        g_train = wrap(g_plain)
        for epoch in tqdm(range(done + 1, epochs1 + 1), desc="stage 1", disable=not is_main,
                          initial=done, total=epochs1, dynamic_ncols=True):
            sampler.set_epoch(epoch_key(1, epoch))
            t0, lr_now = time.time(), optimizer.param_groups[0]["lr"]
            metrics = train_stage1_epoch(g_train, loader, optimizer, scheduler, ctx, stage=1, epoch=epoch,
                                         pixel=cfg1.pixel_loss)
            end_epoch(1, epoch, metrics, time.time() - t0, {
                "lr": lr_now,
                "states": {"discriminator_arch": None, "discriminator": None,
                           "optimizer_g": optimizer.state_dict(), "optimizer_d": None,
                           "scheduler_g": scheduler.state_dict(), "scheduler_d": None,
                           "scaler_g": ctx.scaler_g.state_dict() if use_scaler else None,
                           "scaler_d": None}}, [g_plain])
        if is_main and epochs1 > 0:
            path = out / "generator_stage1.pth"
            models.save_generator(path, g_plain, stage=1, epochs=epochs1, config=_to_plain(config))
            result["generator"] = str(path)
        stage, done = 2, 0
        del g_train

    # ================================================================ stage 2
    if epochs2 > 0:
        adversarial = cfg2.adversarial_weight > 0
        total2 = epochs2 * steps_per_epoch
        optimizer_g = make_adam(g_plain.parameters(), cfg2.lr_g, cfg2.betas)
        scheduler_g = torch.optim.lr_scheduler.MultiStepLR(
            optimizer_g, _milestones(cfg2.lr_milestones, total2), gamma=cfg2.lr_gamma)
        ctx.scaler_g = torch.amp.GradScaler(device.type, enabled=use_scaler)
        ctx.scaler_d = torch.amp.GradScaler(device.type, enabled=use_scaler)
        d_plain = optimizer_d = scheduler_d = None
        if adversarial:
            torch.manual_seed(int(config.seed) + 1)
            d_plain = build_discriminator(config.model.discriminator).to(device)
            if speed.channels_last:
                d_plain = d_plain.to(memory_format=torch.channels_last)
            optimizer_d = make_adam(d_plain.parameters(), cfg2.lr_d, cfg2.betas)
            scheduler_d = torch.optim.lr_scheduler.MultiStepLR(
                optimizer_d, _milestones(cfg2.lr_milestones, total2), gamma=cfg2.lr_gamma)
        if ckpt is not None and ckpt["stage"] == 2:
            optimizer_g.load_state_dict(ckpt["optimizer_g"])
            scheduler_g.load_state_dict(ckpt["scheduler_g"])
            _apply_lr_change(optimizer_g, scheduler_g, ckpt["config"]["stage2"]["lr_g"], cfg2.lr_g, "generator")
            if ckpt.get("scaler_g"):
                ctx.scaler_g.load_state_dict(ckpt["scaler_g"])
            if adversarial:
                d_plain.load_state_dict(ckpt["discriminator"])
                optimizer_d.load_state_dict(ckpt["optimizer_d"])
                scheduler_d.load_state_dict(ckpt["scheduler_d"])
                _apply_lr_change(optimizer_d, scheduler_d, ckpt["config"]["stage2"]["lr_d"], cfg2.lr_d,
                                 "discriminator")
                if ckpt.get("scaler_d"):
                    ctx.scaler_d.load_state_dict(ckpt["scaler_d"])
            _set_rng_state(ckpt["rng"])
        g_train = wrap(g_plain)
        d_train = wrap(d_plain) if adversarial else None
        for epoch in tqdm(range(done + 1, epochs2 + 1), desc="stage 2", disable=not is_main,
                          initial=done, total=epochs2, dynamic_ncols=True):
            sampler.set_epoch(epoch_key(2, epoch))
            t0, lr_now = time.time(), optimizer_g.param_groups[0]["lr"]
            metrics = train_stage2_epoch(g_train, d_train, loader, optimizer_g, optimizer_d, scheduler_g,
                                         scheduler_d, content, ctx, cfg2, stage=2, epoch=epoch)
            end_epoch(2, epoch, metrics, time.time() - t0, {
                "lr": lr_now,
                "states": {"discriminator_arch": _to_plain(config.model.discriminator) if adversarial else None,
                           "discriminator": d_plain.state_dict() if adversarial else None,
                           "optimizer_g": optimizer_g.state_dict(),
                           "optimizer_d": optimizer_d.state_dict() if adversarial else None,
                           "scheduler_g": scheduler_g.state_dict(),
                           "scheduler_d": scheduler_d.state_dict() if adversarial else None,
                           "scaler_g": ctx.scaler_g.state_dict() if use_scaler else None,
                           "scaler_d": ctx.scaler_d.state_dict() if use_scaler else None}},
                      [g_plain] + ([d_plain] if adversarial else []))
        if is_main:
            path = out / "generator_stage2.pth"
            models.save_generator(path, g_plain, stage=2, epochs=epochs2, config=_to_plain(config))
            result["generator"] = str(path)
    elif is_main and result["generator"] is None and (out / "generator_stage1.pth").is_file():
        result["generator"] = str(out / "generator_stage1.pth")
    barrier()
    return result


# =====================================================================================
# Command line
# =====================================================================================


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=None, help=f"one of {sorted(PRESETS)} (default srgan-vgg54)")
    p.add_argument("--profile", default=None, help="full (the paper's schedule, default) or quick")
    p.add_argument("--out", default=None, help="run folder (default runs/<preset>-<profile>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pth; its saved "
                   "config is used, with the options given here on top")
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
    p.add_argument("--amp", dest="speed.amp", choices=["auto", "bf16", "fp16", "off"])
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides: dict[str, Any] = {}
    skip = {"preset", "profile", "resume", "epochs", "lr", "set"}
    for key, value in vars(args).items():
        if key not in skip and value is not None:
            overrides[key] = value
    if overrides.get("data.val_list", "").lower() in ("none", ""):
        if "data.val_list" in overrides:
            overrides["data.val_list"] = None
    for item in args.set:
        key, _, text = item.partition("=")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text

    out = args.out
    ckpt = Path(out) / "checkpoint.pth" if out else None
    if args.resume and ckpt is not None and ckpt.is_file():
        config = config_from_checkpoint(ckpt, **overrides)
        preset = config.preset
    else:
        preset = args.preset or "srgan-vgg54"
        config = make_config(preset, args.profile or "full", **overrides)
    if args.epochs is not None:
        config[("stage1" if config.stage2.epochs == 0 else "stage2")].epochs = args.epochs
    if args.lr is not None:
        config.stage1.lr = config.stage2.lr_g = config.stage2.lr_d = args.lr
    if isinstance(config.speed.compile, str) and config.speed.compile in ("on", "off"):
        config.speed.compile = config.speed.compile == "on"
    config.resume = bool(args.resume)
    try:
        result = train(config)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the last complete epoch is in {Path(config.out) / 'checkpoint.pth'}; "
              "continue with --resume", file=sys.stderr)
        return 130
    except NonFiniteLossError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {result['out']} (generator: {result['generator']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
