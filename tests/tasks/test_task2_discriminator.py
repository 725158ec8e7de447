"""Task 2: the SRGAN discriminator in models.py (Ledig et al. 2017, Fig. 4).

Run ``pytest tests/tasks/test_task2_discriminator.py``.
PYTEST_DONT_REWRITE: the failure shows the message alone, not pytest's comparison details.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import models


def papers_parameter_count(c: int = 64, fc: int = 1024) -> int:
    """Parameters of the paper's discriminator: 8 convs (+ bias), 7 BNs, dense fc, dense 1."""
    channels = [c, c, 2 * c, 2 * c, 4 * c, 4 * c, 8 * c, 8 * c]
    convs = sum(i * o * 9 + o for i, o in zip([3] + channels[:-1], channels))
    bns = sum(2 * o for o in channels[1:])
    return convs + bns + (8 * c * 6 * 6 * fc + fc) + (fc + 1)


def test_discriminator_has_the_papers_parameter_count(todo):
    with todo():
        net = models.Discriminator()
    n, expected = sum(p.numel() for p in net.parameters()), papers_parameter_count()
    no_bias = [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.bias is None]
    assert n == expected, (
        f"Discriminator() (64 channels, dense 1024) must have {expected:,} parameters, yours has {n:,}"
        + (f"; {len(no_bias)} of your convolutions have no bias (bias=False: {', '.join(no_bias[:3])}"
           f"{', ...' if len(no_bias) > 3 else ''}). Before a BatchNorm a bias is redundant, but the paper's "
           "network and the kit's checkpoints keep one in every conv: drop bias=False" if no_bias else ""))


def test_discriminator_conv_bn_leakyrelu_layout(todo, layer_names):
    with todo():
        net = models.Discriminator(channels=8, fc_size=16)
    features = getattr(net, "features", None)
    assert isinstance(features, nn.Sequential), "Discriminator.features must be an nn.Sequential of the conv layers"
    layers = list(features)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8, f"the discriminator has eight 3x3 convs (Fig. 4); yours has {len(convs)}: {layer_names(layers)}"
    got = [(layers[i].out_channels, layers[i].stride[0], layers[i].kernel_size) for i in convs]
    want = [(8 * 2 ** (k // 2), 2 if k % 2 else 1, (3, 3)) for k in range(8)]
    assert got == want, f"convs (channels, stride, kernel) must be {want}; yours are {got}"
    for k, i in enumerate(convs):
        after = layers[i + 1:(convs[k + 1] if k + 1 < len(convs) else len(layers))]
        want_after = [nn.LeakyReLU] if k == 0 else [nn.BatchNorm2d, nn.LeakyReLU]
        assert [type(m) for m in after] == want_after, (
            f"conv {k + 1} must be followed by {'LeakyReLU' if k == 0 else 'BatchNorm, LeakyReLU'} "
            f"(no BN after the first conv); yours: {layer_names(after)}")
        assert after[-1].negative_slope == pytest.approx(0.2), "LeakyReLU slope must be 0.2 (alpha = 0.2, Sec. 2.2)"


@pytest.mark.parametrize("size", [96, 128])
def test_discriminator_gives_one_logit_per_image(todo, size):
    with todo():
        net = models.Discriminator().eval()
        with torch.no_grad():
            logits = net(torch.rand(2, 3, size, size))
    assert logits.shape == (2,), (
        f"the discriminator must give one logit per image for 96x96 and 128x128 patches: shape (2,) for "
        f"a (2, 3, {size}, {size}) batch, yours gives {tuple(logits.shape)}")


def test_discriminator_returns_raw_logits(todo):
    with todo():
        net = models.Discriminator(channels=8, fc_size=16).eval()
        assert not any(isinstance(m, nn.Sigmoid) for m in net.modules()), (
            "no sigmoid in the discriminator: it returns logits, the losses use BCE with logits")
        last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            last.bias.fill_(5.0)
            logits = net(torch.rand(3, 3, 32, 32))
    assert last.out_features == 1, "the last dense layer must have one output"
    assert (logits > 1).all(), "the discriminator must return raw logits (not probabilities)"
