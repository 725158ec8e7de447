"""The networks of the kit: generators, discriminators and the perceptual-loss feature extractors.

Read top to bottom:

* ``SRResNet`` - the SRGAN paper's generator network (Ledig et al., CVPR 2017), trained
  alone with an MSE loss it is "SRResNet"; ``Generator`` is the very same network used as
  the SRGAN generator (same ``state_dict`` keys, so SRResNet weights load directly).
* ``Discriminator`` - the SRGAN discriminator (eight 3x3 convs, dense 1024, dense 1).
* ``RRDBNet`` - the ESRGAN generator (Wang et al., ECCVW 2018): residual-in-residual dense
  blocks, no batch norm; ``VGGStyleDiscriminator`` - the ESRGAN discriminator.
* ``spectral_normalize`` - spectral normalisation of either discriminator (an option of stage 2);
  ``interpolate_networks`` - ESRGAN network interpolation.
* ``TruncatedVGG19`` - frozen ImageNet VGG19 feature extractor phi_{i,j} for the
  perceptual (content) loss; ``TruncatedVGG16`` - the SRGAN lab's VGG16 ``features[:31]``
  (the weight files: ``vgg_weights.py``).
* The registry: ``GENERATORS`` / ``DISCRIMINATORS`` by name, ``build_generator``,
  ``build_discriminator``, ``generator_arch``. A new architecture is a class here plus one
  entry in its registry; the training config names it (``model.generator.name``).

Conventions (see the docstring of ``utils.py``): networks take and return ``float32``
``NxCxHxW`` RGB tensors with values in ``[0, 1]``. Generators have a *linear* output (no
final activation): the SRGAN paper ends with tanh and works in ``[-1, 1]``; this kit uses
``[0, 1]`` targets instead, so the output is only approximately in ``[0, 1]`` and is
clamped by ``utils.tensor2img`` when converted back to an image. Saving and loading
generator files: ``checkpoints.py``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from utils import PathLike, clean_state_dict, load_weights, unwrap
from vgg_weights import load_vgg_weights, vgg_source

SCALES = (2, 3, 4, 8)


def _check_scale(scale: int) -> int:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return int(scale)


def _upsampling_factors(scale: int) -> list[int]:
    """Split ``scale`` into upsampling steps: x2 steps for 2/4/8, a single x3 step for 3."""
    return [3] if scale == 3 else [2] * int(math.log2(scale))


# --------------------------------------------------------------------------------------
# SRGAN: SRResNet / Generator and Discriminator
# --------------------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """SRResNet residual block: conv3x3-BN-PReLU-conv3x3-BN, plus the identity skip.

    Layers: ``self.body = nn.Sequential(conv3x3 C->C, BatchNorm2d(C), PReLU(), conv3x3 C->C,
    BatchNorm2d(C))``, every conv with ``padding=1`` (the size is kept) and a bias; one
    shared PReLU slope (``nn.PReLU()``).

    Input and output: ``Nx{channels}xHxW`` feature maps.
    """

    def __init__(self, channels: int = 64):
        super().__init__()
        ### BEGIN SOLUTION
        ### TASK: ResidualBlock.__init__ - build self.body = nn.Sequential(conv3x3 C->C, BatchNorm2d, PReLU,
        ###   conv3x3 C->C, BatchNorm2d), padding 1 (Ledig et al. 2017, Fig. 4: the residual blocks "k3n64s1",
        ###   Sec. 2.2)
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.PReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
        )
        ### END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ### BEGIN SOLUTION
        ### TASK: ResidualBlock.forward - return x plus self.body(x), the identity skip connection (Ledig et al.
        ###   2017, Fig. 4)
        return x + self.body(x)  # NxCxHxW
        ### END SOLUTION


class SubPixelBlock(nn.Module):
    """Sub-pixel convolution upsampling by ``factor``: conv C -> factor^2*C, PixelShuffle, PReLU.

    Layers: ``self.conv`` (3x3, ``padding=1``, C -> ``factor**2 * C``), ``self.shuffle``
    (``nn.PixelShuffle(factor)``), ``self.act`` (``nn.PReLU()``, one shared slope).

    Input ``NxCxHxW`` -> output ``NxCx(factor*H)x(factor*W)``.
    """

    def __init__(self, channels: int = 64, factor: int = 2):
        super().__init__()
        ### BEGIN SOLUTION
        ### TASK: SubPixelBlock.__init__ - self.conv = conv3x3 C -> factor**2*C (padding 1), self.shuffle =
        ###   nn.PixelShuffle(factor), self.act = nn.PReLU() (Ledig et al. 2017, Fig. 4: "k3n256s1",
        ###   PixelShuffler x2, PReLU; the sub-pixel convolution of Shi et al. 2016)
        self.conv = nn.Conv2d(channels, channels * factor**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(factor)
        self.act = nn.PReLU()
        ### END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ### BEGIN SOLUTION
        ### TASK: SubPixelBlock.forward - conv, then pixel shuffle, then PReLU: NxCxHxW ->
        ###   NxCx(factor*H)x(factor*W) (Ledig et al. 2017, Fig. 4)
        feat = self.conv(x)  # Nx(factor^2*C)xHxW
        feat = self.shuffle(feat)  # NxCx(factor*H)x(factor*W)
        return self.act(feat)  # NxCx(factor*H)x(factor*W)
        ### END SOLUTION


class SRResNet(nn.Module):
    """SRResNet, the generator network of the SRGAN paper (Ledig et al., 2017, Fig. 4).

    Layout, with the attribute names that the checkpoints (``state_dict`` keys) use:

    * ``self.head``: ``nn.Sequential(9x9 conv 3 -> C (padding 4), PReLU())``;
    * ``self.res_blocks``: ``nn.Sequential`` of ``n_blocks`` ``ResidualBlock(C)``;
    * ``self.body_tail``: ``nn.Sequential(3x3 conv C -> C, BatchNorm2d(C))``, whose output
      is added to the head's output (the long skip connection);
    * ``self.upsample``: ``nn.Sequential`` of one ``SubPixelBlock(C, f)`` per factor ``f`` of
      ``_upsampling_factors(scale)`` (two x2 blocks for x4, one x3 block for x3);
    * ``self.tail``: 9x9 conv C -> 3 (padding 4).

    The x4 default has 1,549,462 parameters.

    Args:
        scale: upscaling factor, one of 2, 3, 4, 8.
        n_blocks: number of residual blocks (16 in the paper).
        channels: feature channels C (64 in the paper).

    Forward:
        lr: ``float32`` ``Nx3xhxw`` in ``[0, 1]``.
        returns sr: ``float32`` ``Nx3x(scale*h)x(scale*w)``, approximately in ``[0, 1]``.
        The output is linear (no tanh): the kit's targets are in ``[0, 1]`` instead of the
        paper's ``[-1, 1]``; ``utils.tensor2img`` clamps.
    """

    def __init__(self, scale: int = 4, n_blocks: int = 16, channels: int = 64):
        super().__init__()
        self.scale = _check_scale(scale)
        # Constructor arguments, stored in checkpoints so load_generator can rebuild the net.
        self.arch_kwargs = {"scale": self.scale, "n_blocks": int(n_blocks), "channels": int(channels)}

        ### BEGIN SOLUTION
        ### TASK: SRResNet.__init__ - build self.head (9x9 conv 3->C + PReLU), self.res_blocks (n_blocks
        ###   ResidualBlock), self.body_tail (3x3 conv + BatchNorm2d), self.upsample (a SubPixelBlock per
        ###   factor of _upsampling_factors(self.scale)), self.tail (9x9 conv C->3), with the names and layout
        ###   of the class docstring (Ledig et al. 2017, Fig. 4, generator network)
        self.head = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU())
        self.res_blocks = nn.Sequential(*[ResidualBlock(channels) for _ in range(n_blocks)])
        self.body_tail = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels))
        self.upsample = nn.Sequential(*[SubPixelBlock(channels, f) for f in _upsampling_factors(self.scale)])
        self.tail = nn.Conv2d(channels, 3, 9, padding=4)
        ### END SOLUTION

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        ### BEGIN SOLUTION
        ### TASK: SRResNet.forward - head, residual blocks, body_tail plus the long skip from the head's output,
        ###   upsample, tail; linear output, no tanh (Ledig et al. 2017, Fig. 4)
        feat = self.head(lr)  # NxCxhxw
        feat = feat + self.body_tail(self.res_blocks(feat))  # NxCxhxw, long skip connection
        feat = self.upsample(feat)  # NxCx(scale*h)x(scale*w)
        return self.tail(feat)  # Nx3x(scale*h)x(scale*w)
        ### END SOLUTION

class Generator(SRResNet):
    """The SRGAN generator: exactly the SRResNet network (same layers, same state_dict keys).

    SRGAN training starts from a trained SRResNet; use ``Generator.from_srresnet(srresnet)``
    or simply ``generator.load_state_dict(srresnet.state_dict())`` (from a file:
    ``checkpoints.generator_from_srresnet``).
    """

    @classmethod
    def from_srresnet(cls, state_or_model: nn.Module | dict) -> "Generator":
        """Build a Generator initialised from SRResNet weights.

        Args:
            state_or_model: an ``SRResNet`` (or ``Generator``) module, or a bare SRResNet
                ``state_dict`` (its architecture is inferred from the shapes).

        Returns:
            a ``Generator`` (train mode) holding a copy of those weights.
        """
        if isinstance(state_or_model, nn.Module):
            src = unwrap(state_or_model)
            if not isinstance(src, SRResNet):
                raise TypeError(f"expected an SRResNet, got {type(src).__name__}")
            kwargs, state = dict(src.arch_kwargs), src.state_dict()
        elif isinstance(state_or_model, dict):
            state = clean_state_dict(state_or_model)
            kwargs = srresnet_kwargs_from_state(state)
        else:
            raise TypeError(f"expected an SRResNet module or its state_dict, got {type(state_or_model).__name__}")
        generator = cls(**kwargs)
        load_weights(generator, state, "SRResNet weights")
        return generator


def srresnet_kwargs_from_state(state: dict) -> dict:
    """Infer ``scale``, ``n_blocks``, ``channels`` of an SRResNet from its state_dict shapes."""
    try:
        channels = state["head.0.weight"].shape[0]
        n_blocks = len({k.split(".")[1] for k in state if k.startswith("res_blocks.")})
        ups = sorted({int(k.split(".")[1]) for k in state if k.startswith("upsample.")})
        out_ch = state[f"upsample.{ups[0]}.conv.weight"].shape[0]
    except (KeyError, IndexError) as err:
        raise ValueError(f"this state_dict is not an SRResNet one (missing {err}); "
                         "pass an SRResNet model or a kit checkpoint instead") from err
    scale = 3 if out_ch == 9 * channels else 2 ** len(ups)
    return {"scale": scale, "n_blocks": n_blocks, "channels": channels}


class Discriminator(nn.Module):
    """The SRGAN discriminator (Ledig et al., 2017, Fig. 4).

    Layout, with the attribute names that the checkpoints use:

    * ``self.features``: ``nn.Sequential`` of eight 3x3 convs (``padding=1``) with
      ``C, C, 2C, 2C, 4C, 4C, 8C, 8C`` output channels (64..512 by default), stride 2 on the
      2nd, 4th, 6th and 8th, each followed by ``BatchNorm2d`` (all but the first conv) and
      ``LeakyReLU(0.2)``;
    * ``self.pool``: ``nn.AdaptiveAvgPool2d(6)`` (96x96 patches give 6x6 maps, so pooling
      keeps the paper's layout there and lets any patch size >= 16 work);
    * ``self.classifier``: ``nn.Sequential(Linear(8C*6*6 -> fc_size), LeakyReLU(0.2),
      Linear(fc_size -> 1))``.

    Forward:
        x: ``float32`` ``Nx3xHxW`` HR or SR patches in ``[0, 1]``.
        returns raw logits of shape ``(N,)`` (use ``BCEWithLogitsLoss``; no sigmoid here).
    """

    def __init__(self, channels: int = 64, fc_size: int = 1024):
        super().__init__()
        ### BEGIN SOLUTION
        ### TASK: Discriminator.__init__ - self.features (eight 3x3 convs C, C, 2C, 2C, 4C, 4C, 8C, 8C, stride 2
        ###   on every second one, BatchNorm2d after all but the first, LeakyReLU(0.2)), self.pool =
        ###   nn.AdaptiveAvgPool2d(6), self.classifier (Linear 8C*6*6 -> fc_size, LeakyReLU(0.2), Linear
        ###   fc_size -> 1) (Ledig et al. 2017, Fig. 4, discriminator network, and Sec. 2.2)
        layers: list[nn.Module] = []
        in_ch = 3
        for i in range(8):
            out_ch = channels * 2 ** (i // 2)
            stride = 2 if i % 2 == 1 else 1
            layers.append(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1))
            if i > 0:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(6)
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * 6 * 6, fc_size),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(fc_size, 1),
        )
        ### END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ### BEGIN SOLUTION
        ### TASK: Discriminator.forward - features, pool, flatten, classifier: one raw logit per image, shape
        ###   (N,), no sigmoid (Ledig et al. 2017, Fig. 4)
        feat = self.features(x)  # Nx8Cx(H/16)x(W/16)
        feat = self.pool(feat)  # Nx8Cx6x6
        logits = self.classifier(feat.flatten(1))  # Nx1
        return logits.squeeze(1)  # N
        ### END SOLUTION


# --------------------------------------------------------------------------------------
# ESRGAN: RRDBNet and the VGG-style discriminator
# --------------------------------------------------------------------------------------
def _scaled_kaiming_init(modules: list[nn.Module], scale: float = 0.1) -> None:
    """Kaiming-normal init of conv weights, multiplied by ``scale``; biases zero.

    ESRGAN does this in every dense block: with 23 RRDBs x 3 dense blocks the trunk is
    very deep, and starting each residual branch near zero keeps the sum of branches
    close to the identity, which stabilises early training (Wang et al., 2018, Sec. 3.3).
    """
    for m in modules:
        nn.init.kaiming_normal_(m.weight)
        m.weight.data.mul_(scale)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class ResidualDenseBlock(nn.Module):
    """Dense block of five 3x3 convs (each sees all previous outputs), residual-scaled by 0.2.

    Input and output: ``Nx{channels}xHxW``; ``growth`` channels are added by each of the
    first four convs.
    """

    def __init__(self, channels: int = 64, growth: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, growth, 3, padding=1)
        self.conv2 = nn.Conv2d(channels + growth, growth, 3, padding=1)
        self.conv3 = nn.Conv2d(channels + 2 * growth, growth, 3, padding=1)
        self.conv4 = nn.Conv2d(channels + 3 * growth, growth, 3, padding=1)
        self.conv5 = nn.Conv2d(channels + 4 * growth, channels, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        _scaled_kaiming_init([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x + 0.2 * x5  # residual scaling keeps the deep trunk stable


class RRDB(nn.Module):
    """Residual-in-Residual Dense Block: three dense blocks, the result residual-scaled by 0.2."""

    def __init__(self, channels: int = 64, growth: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(channels, growth)
        self.rdb2 = ResidualDenseBlock(channels, growth)
        self.rdb3 = ResidualDenseBlock(channels, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """The ESRGAN generator (Wang et al., 2018): RRDB trunk, no batch norm, LeakyReLU(0.2).

    Layout: 3x3 conv (3 -> C) ``conv_first``; ``n_blocks`` RRDBs ``body``; 3x3 conv
    ``conv_body`` + long skip from ``conv_first``; per factor 2 one nearest-neighbour x2
    upsampling + 3x3 conv + LeakyReLU (``conv_up1``, ``conv_up2``, ...; scale 3 uses one
    nearest x3 step); ``conv_hr`` + LeakyReLU; ``conv_last`` (C -> 3). For x4 the
    parameter names are those of BasicSR's ``RRDBNet``. Dense-block convs are
    kaiming-initialised and scaled by 0.1 (see ``_scaled_kaiming_init``).

    Args:
        scale: upscaling factor, one of 2, 3, 4, 8.
        n_blocks: number of RRDBs (23 in ESRGAN).
        channels: feature channels C (64).
        growth: channels added per conv inside a dense block (32).

    Forward:
        lr: ``float32`` ``Nx3xhxw`` in ``[0, 1]`` -> sr ``Nx3x(scale*h)x(scale*w)``,
        linear output, approximately in ``[0, 1]``.
    """

    def __init__(self, scale: int = 4, n_blocks: int = 23, channels: int = 64, growth: int = 32):
        super().__init__()
        self.scale = _check_scale(scale)
        self.arch_kwargs = {"scale": self.scale, "n_blocks": int(n_blocks),
                            "channels": int(channels), "growth": int(growth)}
        self.factors = _upsampling_factors(self.scale)

        self.conv_first = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*[RRDB(channels, growth) for _ in range(n_blocks)])
        self.conv_body = nn.Conv2d(channels, channels, 3, padding=1)
        for k in range(len(self.factors)):
            setattr(self, f"conv_up{k + 1}", nn.Conv2d(channels, channels, 3, padding=1))
        self.conv_hr = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_last = nn.Conv2d(channels, 3, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(lr)
        feat = feat + self.conv_body(self.body(feat))  # long skip connection
        for k, factor in enumerate(self.factors):
            conv_up = getattr(self, f"conv_up{k + 1}")
            feat = self.lrelu(conv_up(F.interpolate(feat, scale_factor=factor, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


class VGGStyleDiscriminator(nn.Module):
    """The ESRGAN discriminator (VGG-style, as in ESRGAN / BasicSR).

    Five stages of a 3x3 stride-1 conv and a 4x4 stride-2 conv, channels
    ``C, 2C, 4C, 8C, 8C`` (64 ... 512), BN on every conv but the first, LeakyReLU(0.2);
    then ``AdaptiveAvgPool2d(4)`` (a 128x128 patch gives 4x4 maps, so pooling keeps the
    original layout there and lets 96x96 patches work too), dense 100, LeakyReLU(0.2),
    dense 1.

    Forward:
        x: ``float32`` ``Nx3xHxW`` in ``[0, 1]`` (H, W >= 32) -> raw logits of shape ``(N,)``.
        ESRGAN's relativistic loss (in ``solver.py``) is built from these logits.
    """

    def __init__(self, channels: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        in_ch = channels
        for stage, out_ch in enumerate([channels, channels * 2, channels * 4, channels * 8, channels * 8]):
            if stage > 0:  # stage 0 starts with the BN-free first conv above
                layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
                           nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2, inplace=True)]
            layers += [nn.Conv2d(out_ch, out_ch, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2, inplace=True)]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * 4 * 4, 100),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(100, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.pool(self.features(x))
        return self.classifier(feat.flatten(1)).squeeze(1)


def spectral_normalize(discriminator: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al., ICLR 2018) of a discriminator, in place.

    Every ``Conv2d`` and ``Linear`` weight is divided by its largest singular value (one
    power iteration per training forward, ``torch.nn.utils.parametrizations.spectral_norm``),
    so each layer is 1-Lipschitz; every ``BatchNorm2d`` becomes an ``nn.Identity``, since a
    batch norm would rescale by 1 / std and undo the bound (SN-GAN and Real-ESRGAN's
    discriminators have none either). A D with a bounded slope cannot grow the sharp,
    periodic responses that teach G checkerboards and grids.

    Args:
        discriminator: ``Discriminator`` or ``VGGStyleDiscriminator`` (any module works).

    Returns:
        the same module; its ``state_dict`` keys change (``...weight`` becomes
        ``...parametrizations.weight.original`` plus the power-iteration vectors), so a
        checkpoint of it loads only into a spectrally normalised discriminator.
    """
    for parent in list(discriminator.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, (nn.Conv2d, nn.Linear)):
                setattr(parent, name, nn.utils.parametrizations.spectral_norm(child))
    return discriminator


def interpolate_networks(psnr_state: dict, gan_state: dict, alpha: float) -> dict:
    """ESRGAN network interpolation: ``(1 - alpha) * psnr + alpha * gan`` for every tensor.

    Blending the weights of a PSNR-oriented generator and its GAN-fine-tuned version trades
    fidelity (alpha = 0) against perceptual sharpness (alpha = 1) without retraining.

    Args:
        psnr_state: ``state_dict`` of the PSNR-trained generator (e.g. SRResNet / RRDBNet).
        gan_state: ``state_dict`` of the same architecture after GAN training.
        alpha: weight of the GAN network, in ``[0, 1]``.

    Returns:
        a new ``state_dict``; floating tensors are blended (in their own dtype), integer
        buffers (e.g. BatchNorm ``num_batches_tracked``) are copied from ``gan_state``.
        ``module.`` / ``_orig_mod.`` prefixes are stripped from both inputs first.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0 = PSNR network, 1 = GAN network), got {alpha}")
    psnr_state, gan_state = clean_state_dict(psnr_state), clean_state_dict(gan_state)
    if psnr_state.keys() != gan_state.keys():
        only_psnr = sorted(psnr_state.keys() - gan_state.keys())[:5]
        only_gan = sorted(gan_state.keys() - psnr_state.keys())[:5]
        raise ValueError("the two networks have different parameters (not the same architecture): "
                         f"only in psnr_state {only_psnr}, only in gan_state {only_gan}")
    out = {}
    for key, gan in gan_state.items():
        psnr = psnr_state[key]
        if psnr.shape != gan.shape:
            raise ValueError(f"shape mismatch for {key}: {tuple(psnr.shape)} (psnr) vs "
                             f"{tuple(gan.shape)} (gan); were they built with the same kwargs?")
        if gan.is_floating_point():
            out[key] = (1.0 - alpha) * psnr.to(gan) + alpha * gan
        else:
            out[key] = gan.clone()
    return out


# --------------------------------------------------------------------------------------
# Perceptual loss networks: truncated VGG19 (SRGAN, ESRGAN) and VGG16 (the SRGAN lab)
# --------------------------------------------------------------------------------------
# torchvision's vgg19().features / vgg16().features: numbers are 3x3 conv output channels
# (each followed by a ReLU), "M" is a 2x2 max-pool. Layer indices follow torchvision exactly.
_VGG_CFGS = {
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


_VGG19_CFG = _VGG_CFGS["vgg19"]


VGG16_N_LAYERS = 31  # len(vgg16().features): 13 conv + 13 ReLU + 5 max-pool; the lab's features[:31]


IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_layer_index(i: int, j: int, before_activation: bool = False) -> int:
    """Index in torchvision's ``vgg19().features`` of the last layer of phi_{i,j}.

    phi_{i,j} is the feature map of the j-th conv (after its ReLU, or before it when
    ``before_activation``) before the i-th max-pool. E.g. VGG54 -> 35 (ReLU) / 34 (conv),
    VGG22 -> 8 / 7.

    Raises:
        ValueError: no such layer (i in 1..5; j in 1..2 for i <= 2, 1..4 for i >= 3).
    """
    block, conv_in_block = 1, 0
    index = 0
    for v in _VGG19_CFG:
        if v == "M":
            block, conv_in_block = block + 1, 0
            index += 1
            continue
        conv_in_block += 1
        if (block, conv_in_block) == (i, j):
            return index if before_activation else index + 1
        index += 2  # conv + ReLU
    raise ValueError(f"VGG19 has no layer phi_{{{i},{j}}}: i must be 1..5 and j 1..2 for i <= 2, "
                     "1..4 for i >= 3 (SRGAN uses VGG54 = (5, 4) or VGG22 = (2, 2))")


def _vgg_features(n_layers: int, arch: str = "vgg19") -> nn.Sequential:
    """The first ``n_layers`` layers of torchvision's ``<arch>().features`` (random init)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG_CFGS[arch]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.ReLU(inplace=True)]
            in_ch = v
    return nn.Sequential(*layers[:n_layers])


def _vgg19_features(n_layers: int) -> nn.Sequential:
    """The first ``n_layers`` layers of torchvision's ``vgg19().features`` (random init)."""
    return _vgg_features(n_layers, "vgg19")


class TruncatedVGG(nn.Module):
    """A frozen ImageNet VGG (torchvision's ``vgg19`` or ``vgg16``) cut after ``n_layers`` layers.

    ``self.features`` holds the first ``n_layers`` layers of torchvision's
    ``<arch>().features``, with the same indices and ``state_dict`` keys
    (``features.0.weight`` ...). ``TruncatedVGG19`` (phi_{i,j}, SRGAN/ESRGAN) and
    ``TruncatedVGG16`` (the SRGAN lab's ``features[:31]``) are this class with their
    layer chosen by name.

    Weights, in this order: ``weights`` (a path to torchvision's file, or any state_dict
    with ``features.N.*`` keys; ``classifier.*`` is ignored), the torch hub cache
    (``torch.hub.get_dir()/checkpoints/<file>``), a download from ``VGG19_URL`` /
    ``VGG16_URL`` (sha256-checked). If all fail a one-line ``RuntimeError`` says how to
    supply the file. ``random_init=True`` skips loading (tests only; never a silent
    fallback).

    Args:
        arch: ``"vgg19"`` or ``"vgg16"``.
        n_layers: how many layers of ``features`` to keep (>= 1).
        normalize: apply the ImageNet mean/std to the input inside (torchvision's
            convention); ``False`` feeds the ``[0, 1]`` image as it is (the SRGAN lab).
        weights: path to the weights file.
        random_init: build with random weights instead of loading any.

    Forward:
        x: ``float32`` ``Nx3xHxW`` RGB in ``[0, 1]`` -> the feature map of the last kept
        layer. Parameters are frozen and the module stays in eval mode, but gradients
        flow to ``x``.
    """

    def __init__(self, arch: str, n_layers: int, normalize: bool = True,
                 weights: PathLike | None = None, random_init: bool = False):
        super().__init__()
        vgg_source(arch)  # validates the name
        total = sum(1 if v == "M" else 2 for v in _VGG_CFGS[arch])  # conv + ReLU, or a max-pool
        if not isinstance(n_layers, int) or not 1 <= n_layers <= total:
            raise ValueError(f"{arch.upper()} features have {total} layers; n_layers must be 1..{total}, "
                             f"got {n_layers!r}")
        self.arch, self.normalize = arch, normalize
        self.features = _vgg_features(n_layers, arch)
        # Non-persistent: the state_dict holds only torchvision-compatible `features.*` keys.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if random_init:
            if weights is not None:
                raise ValueError("give either weights=... or random_init=True, not both")
        else:
            self.load_vgg_state(load_vgg_weights(weights, arch))
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def load_vgg_state(self, state: dict) -> None:
        """Copy the needed ``features.N.*`` tensors from a full torchvision state_dict."""
        name, filename = self.arch.upper(), vgg_source(self.arch)[2]
        if not isinstance(state, dict):
            raise ValueError(f"{name} weights must be a state_dict, got {type(state).__name__}")
        state = clean_state_dict(state)
        own = self.features.state_dict()
        missing = [k for k in own if f"features.{k}" not in state]
        if missing:
            raise ValueError(f"the {name} weights lack {['features.' + k for k in missing[:4]]}...; "
                             f"expected torchvision's {self.arch} state_dict ({filename})")
        picked = {k: state[f"features.{k}"] for k in own}
        bad = [k for k in own if picked[k].shape != own[k].shape]
        if bad:
            other = "VGG16" if self.arch == "vgg19" else "VGG19"
            raise ValueError(f"the {name} weights have wrong shapes for {['features.' + k for k in bad[:4]]}: "
                             f"is this a {name} (not {other}) state_dict?")
        self.features.load_state_dict(picked)

    def train(self, mode: bool = True) -> "TruncatedVGG":
        """Always stays in eval mode: the loss network is a fixed function."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = (x - self.mean) / self.std
        return self.features(x)


class TruncatedVGG19(TruncatedVGG):
    """Frozen ImageNet VGG19 truncated at phi_{i,j}, the feature map of the perceptual loss.

    phi_{i,j} is the output of the j-th conv before the i-th max-pool, after its ReLU
    (SRGAN) or, with ``before_activation=True``, before it (ESRGAN: richer, non-sparse
    features). Weights as ``TruncatedVGG`` (path, hub cache ``vgg19-dcbb9e9d.pth``,
    download from ``VGG19_URL``). The input is ImageNet-normalised inside.

    Args:
        i, j: the layer phi_{i,j} (default VGG54, as SRGAN's best model).
        before_activation: stop before the ReLU of that conv.
        weights: path to the VGG19 weights file.
        random_init: build with random weights instead of loading any.

    Forward:
        x: ``float32`` ``Nx3xHxW`` RGB in ``[0, 1]`` -> features
        ``Nx{C}x(H/2^(i-1))x(W/2^(i-1))``; gradients flow to ``x`` only.
    """

    def __init__(self, i: int = 5, j: int = 4, before_activation: bool = False,
                 weights: PathLike | None = None, random_init: bool = False):
        last = vgg19_layer_index(i, j, before_activation)
        super().__init__("vgg19", last + 1, normalize=True, weights=weights, random_init=random_init)
        self.i, self.j, self.before_activation = i, j, before_activation



class TruncatedVGG16(TruncatedVGG):
    """Frozen ImageNet VGG16 ``features[:n_layers]``: the SRGAN lab's perception network.

    The lab computes the MSE of ``vgg16().features[:31]`` (all 13 convs and the last
    max-pool: 512 channels at 1/32 of the size) on its ``[0, 1]`` images *without*
    ImageNet normalisation, so ``normalize`` defaults to False here (its 0.006 weight was
    set for those features). Weights as ``TruncatedVGG`` (path, hub cache
    ``vgg16-397923af.pth``, download from ``VGG16_URL``).

    Forward:
        x: ``float32`` ``Nx3xHxW`` RGB in ``[0, 1]`` -> ``Nx512x(H/32)x(W/32)`` for the
        default 31 layers; gradients flow to ``x`` only.
    """

    def __init__(self, n_layers: int = VGG16_N_LAYERS, normalize: bool = False,
                 weights: PathLike | None = None, random_init: bool = False):
        super().__init__("vgg16", n_layers, normalize=normalize, weights=weights, random_init=random_init)


# --------------------------------------------------------------------------------------
# The registry: architectures by name (the training config and the checkpoints name them)
# --------------------------------------------------------------------------------------
GENERATORS: dict[str, type[nn.Module]] = {"SRResNet": SRResNet, "Generator": Generator, "RRDBNet": RRDBNet}
DISCRIMINATORS: dict[str, type[nn.Module]] = {"Discriminator": Discriminator,
                                              "VGGStyleDiscriminator": VGGStyleDiscriminator}


def build_generator(arch: dict) -> nn.Module:
    """Build a fresh (randomly initialised) generator from an ``arch`` record.

    Args:
        arch: ``{"name": "SRResNet" | "Generator" | "RRDBNet", "kwargs": {...}}`` as
            returned by ``generator_arch`` and stored in checkpoints.

    Returns:
        the network, in train mode, on the CPU.
    """
    if not isinstance(arch, dict) or "name" not in arch:
        raise ValueError(f"arch must be a dict {{'name': ..., 'kwargs': {{...}}}}, got {arch!r}")
    name = arch["name"]
    if name not in GENERATORS:
        raise ValueError(f"unknown generator architecture {name!r}; known: {sorted(GENERATORS)}")
    return GENERATORS[name](**dict(arch.get("kwargs", {})))


def build_discriminator(arch: dict) -> nn.Module:
    """Build a fresh discriminator from ``{"name": one of DISCRIMINATORS, "kwargs": {...},
    "spectral_norm": bool}`` (``spectral_normalize``-d when ``spectral_norm``); train mode, CPU."""
    if not isinstance(arch, dict) or arch.get("name") not in DISCRIMINATORS:
        name = arch.get("name") if isinstance(arch, dict) else arch
        raise ValueError(f"unknown discriminator {name!r}; choose one of {sorted(DISCRIMINATORS)}")
    net = DISCRIMINATORS[arch["name"]](**arch.get("kwargs", {}))
    return spectral_normalize(net) if arch.get("spectral_norm") else net


def generator_arch(model: nn.Module) -> dict:
    """The ``arch`` record of a generator: ``{"name": class name, "kwargs": constructor kwargs}``.

    Works through DDP / torch.compile wrappers. Raises ``TypeError`` for a network that is
    not one of ``GENERATORS``.
    """
    net = unwrap(model)
    name = type(net).__name__
    if name not in GENERATORS or not hasattr(net, "arch_kwargs"):
        raise TypeError(f"{name} is not a kit generator; expected one of {sorted(GENERATORS)}")
    return {"name": name, "kwargs": dict(net.arch_kwargs)}
