"""The losses of SRResNet / SRGAN / ESRGAN training: small functions of ``(sr, hr)`` or of logits.

* pixel: ``pixel_loss`` (MSE, L1), ``tv_loss`` (total variation);
* perceptual: ``VGGContentLoss`` (VGG19 phi_{i,j} as SRGAN/ESRGAN, or the SRGAN lab's VGG16),
  ``ContentLoss`` (the content term chosen by name);
* adversarial: ``gan_d_loss`` / ``gan_g_loss`` (standard GAN, relativistic average GAN, the
  lab's ``1 - D``) and ``d_probabilities`` (D's outputs for the log);
* what D sees: ``random_translate`` (``stage2.d_translate``).

Inputs follow ``utils.py``: ``Nx3xHxW`` float in [0, 1]; logits are ``(N,)``. Every loss is a
scalar tensor computed in fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import models

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
