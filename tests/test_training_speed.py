"""The CPU speed-ups of training (training.fast_cpu_prelu, fused Adam) change no value a step computes."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import models
import training


@pytest.mark.parametrize("dtype,channels_last", [(torch.float32, False), (torch.bfloat16, True)])
def test_scalar_prelu_gives_prelu_values_and_gradients(dtype, channels_last):
    torch.manual_seed(0)
    x = torch.randn(4, 8, 12, 12).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    ref = nn.PReLU()
    with torch.no_grad():
        ref.weight.fill_(0.3)
    fast = training.ScalarPReLU(nn.Parameter(ref.weight.detach().clone()))
    outs = []
    for act in (ref, fast):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            y = act(xi)
        assert y.dtype == dtype
        y.backward(grad)
        outs.append((y.detach().float(), xi.grad.float(), act.weight.grad.float()))
    (y0, gx0, gw0), (y1, gx1, gw1) = outs
    assert torch.equal(y0, y1)
    assert torch.equal(gx0, gx1)
    # d/dw sum(grad * prelu(x)) = sum over x < 0 of grad * x (products in x's dtype), summed in fp32
    expected = (grad * x.clamp(max=0)).double().sum()
    assert gw1.item() == pytest.approx(expected.item(), rel=1e-5)
    assert gw0.item() == pytest.approx(expected.item(), rel=2e-2)  # PyTorch's, summed in dtype


def test_fast_cpu_prelu_shares_the_parameters_and_keeps_the_state_dict():
    torch.manual_seed(0)
    g = models.SRResNet(scale=4, n_blocks=2, channels=16)
    before = copy.deepcopy(g.state_dict())
    prelus = [m for m in g.modules() if isinstance(m, nn.PReLU)]
    assert prelus, "the SRResNet has PReLU activations"
    training.fast_cpu_prelu(g)
    assert not any(isinstance(m, nn.PReLU) for m in g.modules())
    assert sum(isinstance(m, training.ScalarPReLU) for m in g.modules()) == len(prelus)
    after = g.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    # same outputs, and an optimizer step moves the very tensors the state dict saves
    ref = models.SRResNet(scale=4, n_blocks=2, channels=16)
    ref.load_state_dict(before)
    x = torch.rand(2, 3, 8, 8)
    g.eval(), ref.eval()
    assert torch.equal(g(x), ref(x))
    opt = torch.optim.Adam(g.parameters(), lr=1e-2, **training.adam_options(torch.device("cpu")))
    g.train()
    g(x).mean().backward()
    opt.step()
    slope_keys = [k for k in before if k.endswith("weight") and before[k].numel() == 1]
    assert slope_keys and all(not torch.equal(g.state_dict()[k], before[k]) for k in slope_keys)


def test_a_prelu_with_one_slope_per_channel_is_left_alone():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.PReLU(num_parameters=4))
    training.fast_cpu_prelu(net)
    assert type(net[1]) is nn.PReLU
