"""Task 1: the SRResNet / SRGAN generator in models.py (Ledig et al. 2017, Fig. 4).

Run ``pytest tests/tasks/test_task1_generator.py``. Each test names what is wrong; an
unfinished part fails with ``not implemented yet: <its task>``.
PYTEST_DONT_REWRITE: the failure shows the message alone, not pytest's comparison details.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models

torch.manual_seed(0)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_residual_block_layers_in_the_papers_order(todo, layer_names):
    with todo():
        block = models.ResidualBlock(8)
    body = getattr(block, "body", None)
    assert isinstance(body, nn.Sequential), "ResidualBlock must keep its layers in self.body, an nn.Sequential"
    kinds = [type(m) for m in body]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.PReLU, nn.Conv2d, nn.BatchNorm2d], (
        "ResidualBlock.body must be conv3x3, BatchNorm, PReLU, conv3x3, BatchNorm (Fig. 4: no activation "
        f"after the second BN, the skip is added after it); yours is {layer_names(body)}")
    for conv in (body[0], body[3]):
        assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (8, 8, (3, 3), (1, 1)), (
            f"the residual block's convs must be 3x3, 8 -> 8 channels here, padding 1; one is {conv}")


def test_residual_block_adds_its_input(todo):
    with todo():
        block = models.ResidualBlock(8).eval()
        x = torch.randn(2, 8, 6, 5)
        out = block(x)
    assert out.shape == x.shape, f"ResidualBlock must keep the shape {tuple(x.shape)}, gave {tuple(out.shape)}"
    assert torch.allclose(out, x + block.body(x), atol=1e-6), "ResidualBlock.forward must return x + self.body(x)"


@pytest.mark.parametrize("factor", [2, 3])
def test_sub_pixel_block_upsamples_by_its_factor(todo, factor):
    with todo():
        block = models.SubPixelBlock(8, factor)
        x = torch.randn(2, 8, 5, 7)
        out = block(x)
    assert out.shape == (2, 8, 5 * factor, 7 * factor), (
        f"SubPixelBlock(8, {factor}) must map (2, 8, 5, 7) to (2, 8, {5 * factor}, {7 * factor}), gave {tuple(out.shape)}")
    conv = getattr(block, "conv", None)
    assert isinstance(conv, nn.Conv2d) and conv.out_channels == 8 * factor**2 and conv.kernel_size == (3, 3), (
        f"SubPixelBlock.conv must be a 3x3 conv from C to factor^2 * C = {8 * factor**2} channels, got {conv}")
    assert isinstance(getattr(block, "shuffle", None), nn.PixelShuffle), "SubPixelBlock.shuffle must be nn.PixelShuffle(factor)"
    act = getattr(block, "act", None)
    assert isinstance(act, nn.PReLU) and act.weight.numel() == 1, "SubPixelBlock.act must be nn.PReLU() (one shared slope)"
    expected = F.prelu(F.pixel_shuffle(conv(x), factor), act.weight)
    assert torch.allclose(out, expected, atol=1e-6), "SubPixelBlock.forward must be conv, pixel shuffle, PReLU"


def test_srresnet_x4_has_the_papers_parameter_count(todo):
    with todo():
        net = models.SRResNet(scale=4)
    n = n_params(net)
    no_bias = [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.bias is None]
    assert n == 1_549_462, (
        f"SRResNet x4 (16 blocks, 64 channels) must have 1,549,462 parameters, yours has {n:,}"
        + (f"; {len(no_bias)} of your convolutions have no bias (bias=False: {', '.join(no_bias[:3])}"
           f"{', ...' if len(no_bias) > 3 else ''}). Before a BatchNorm a bias is redundant, but the paper's "
           "network and the kit's checkpoints keep one in every conv: drop bias=False" if no_bias else ""))
    assert n_params(models.Generator(scale=4)) == n, "Generator must be the same network as SRResNet"


def test_srresnet_layers_and_names(todo, layer_names):
    with todo():
        net = models.SRResNet(scale=4, n_blocks=2, channels=16)
    head = getattr(net, "head", None)
    assert isinstance(head, nn.Sequential) and [type(m) for m in head] == [nn.Conv2d, nn.PReLU], (
        f"SRResNet.head must be nn.Sequential(9x9 conv, PReLU) (no BN: Fig. 4); yours is {layer_names(head or [])}")
    assert head[0].kernel_size == (9, 9) and head[0].in_channels == 3, "the head conv must be 9x9, from 3 channels"
    blocks = getattr(net, "res_blocks", None)
    assert isinstance(blocks, nn.Sequential) and len(blocks) == 2 and all(
        isinstance(b, models.ResidualBlock) for b in blocks), "SRResNet.res_blocks must hold n_blocks ResidualBlocks"
    tail_body = getattr(net, "body_tail", None)
    assert isinstance(tail_body, nn.Sequential) and [type(m) for m in tail_body] == [nn.Conv2d, nn.BatchNorm2d], (
        f"SRResNet.body_tail must be nn.Sequential(3x3 conv, BatchNorm); yours is {layer_names(tail_body or [])}")
    ups = getattr(net, "upsample", None)
    assert isinstance(ups, nn.Sequential) and len(ups) == 2 and all(isinstance(u, models.SubPixelBlock) for u in ups), (
        "for x4, SRResNet.upsample must hold two SubPixelBlocks of factor 2")
    tail = getattr(net, "tail", None)
    assert isinstance(tail, nn.Conv2d) and tail.kernel_size == (9, 9) and tail.out_channels == 3, (
        "SRResNet.tail must be a 9x9 conv to 3 channels, with no activation after it")
    # The kit's checkpoints (and the shipped weights) use these names.
    prefixes = {key.split(".")[0] for key in net.state_dict()}
    assert prefixes == {"head", "res_blocks", "body_tail", "upsample", "tail"}, (
        f"SRResNet's layers must be head, res_blocks, body_tail, upsample, tail (checkpoint keys); yours are {sorted(prefixes)}")


def test_srresnet_forward_has_the_long_skip_and_a_linear_output(todo):
    with todo():
        net = models.SRResNet(scale=4, n_blocks=2, channels=16).eval()
        lr = torch.rand(2, 3, 6, 5)
        sr = net(lr)
    with torch.no_grad():
        feat = net.head(lr)
        expected = net.tail(net.upsample(feat + net.body_tail(net.res_blocks(feat))))
    assert torch.allclose(sr, expected, atol=1e-5), (
        "SRResNet.forward must be tail(upsample(head + body_tail(res_blocks(head)))), "
        "with the long skip from the head's output (Fig. 4)")
    with torch.no_grad():
        net.tail.bias.fill_(-5.0)
        assert net(lr).max() < 0, "SRResNet's output must be linear (no tanh, sigmoid or clamp at the end)"


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_srresnet_output_size_for_each_scale(todo, scale):
    with todo():
        net = models.SRResNet(scale=scale, n_blocks=1, channels=8).eval()
        with torch.no_grad():
            sr = net(torch.rand(1, 3, 7, 5))
    assert sr.shape == (1, 3, 7 * scale, 5 * scale), (
        f"SRResNet x{scale} must map a (1, 3, 7, 5) LR batch to (1, 3, {7 * scale}, {5 * scale}), gave {tuple(sr.shape)}")
    factors = [u.shuffle.upscale_factor for u in net.upsample]
    expected = [3] if scale == 3 else [2] * (scale // 2)
    assert factors == expected, (
        f"x{scale} needs sub-pixel blocks of factors {expected} (_upsampling_factors), yours are {factors}")


def test_generator_is_the_srresnet(todo):
    with todo():
        srresnet = models.SRResNet(scale=4, n_blocks=2, channels=16)
        generator = models.Generator.from_srresnet(srresnet)
    assert generator.state_dict().keys() == srresnet.state_dict().keys()
    assert models.generator_arch(generator)["kwargs"] == {"scale": 4, "n_blocks": 2, "channels": 16}
