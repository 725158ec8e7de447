"""Task 3: generator pre-training, one stage-1 step in solver.py (``solver.pretrain_step``).

Ledig et al. 2017, Sec. 3.2: the generator is first trained alone with the pixel MSE
("SRResNet"), and the SRGAN is initialised with it. The tests use a tiny stand-in generator,
so they do not depend on task 1.

Run ``pytest tests/tasks/test_task3_pretraining.py``.
PYTEST_DONT_REWRITE: the failure shows the message alone, not pytest's comparison details.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import solver

SIGNATURE = "solver.pretrain_step(generator, lr, hr, optimizer, pixel='mse')"


def tiny_generator() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.PixelShuffle(4))


def fixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    hr = F.interpolate(torch.rand(2, 3, 4, 4), size=(16, 16), mode="bilinear", align_corners=False)
    return F.avg_pool2d(hr, 4), hr


def step(*args, **kwargs) -> dict:
    if not hasattr(solver, "pretrain_step"):
        pytest.fail(f"{SIGNATURE} does not exist in solver.py", pytrace=False)
    return solver.pretrain_step(*args, **kwargs)


def test_pretraining_lowers_the_pixel_loss(todo):
    generator = tiny_generator()
    lr, hr = fixed_batch()
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-2)
    with todo():
        losses = [float(step(generator, lr, hr, optimizer)["loss_pixel"]) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], (
        f"30 pre-training steps on one fixed batch must at least halve the pixel loss: "
        f"{losses[0]:.4g} -> {losses[-1]:.4g}")


@pytest.mark.parametrize("pixel", ["mse", "l1"])
def test_pretrain_step_returns_the_loss_before_the_update(todo, pixel):
    generator = tiny_generator()
    lr, hr = fixed_batch()
    with torch.no_grad():
        sr = generator(lr)
        expected = F.mse_loss(sr, hr) if pixel == "mse" else F.l1_loss(sr, hr)
    before = copy.deepcopy(generator.state_dict())
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-3)
    with todo():
        out = step(generator, lr, hr, optimizer, pixel=pixel)
    assert isinstance(out, dict) and "loss_pixel" in out, 'pretrain_step must return {"loss_pixel": loss}'
    loss = out["loss_pixel"]
    assert torch.is_tensor(loss) and not loss.requires_grad, 'return loss.detach() under "loss_pixel"'
    assert float(loss) == pytest.approx(float(expected), rel=1e-5), (
        f"loss_pixel must be the {pixel} of G(lr) against hr ({float(expected):.6g}), got {float(loss):.6g}")
    changed = any(not torch.equal(before[k], v) for k, v in generator.state_dict().items())
    assert changed, "pretrain_step must update the generator (optimizer.step())"


def test_pretrain_step_clears_old_gradients(todo):
    generator = tiny_generator()
    lr, hr = fixed_batch()
    reference = copy.deepcopy(generator)
    F.mse_loss(reference(lr), hr).backward()
    optimizer = torch.optim.SGD(generator.parameters(), lr=0.0)  # lr 0: the weights stay put
    with todo():
        step(generator, lr, hr, optimizer)
        step(generator, lr, hr, optimizer)
    for p, q in zip(generator.parameters(), reference.parameters()):
        assert p.grad is not None, "pretrain_step must back-propagate the loss to the generator"
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7), (
            "after two steps the gradient must be the last step's only: call optimizer.zero_grad() before backward()")
