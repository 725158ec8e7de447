"""The task tests' messages (tests/tasks): a student's common slip is named, not just counted."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A models.py as a student may write it: the reference networks, but the convolutions before each
# BatchNorm built with bias=False (a common habit: BN's shift makes that bias redundant).
NO_BIAS_MODELS = f'''
import importlib.util, sys
from torch import nn
_spec = importlib.util.spec_from_file_location("reference_models", {str(REPO / "models.py")!r})
kit = importlib.util.module_from_spec(_spec)
sys.modules["reference_models"] = kit
_spec.loader.exec_module(kit)


def _no_bias(conv):
    return nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)


_block_init = kit.ResidualBlock.__init__
def _init(self, *args, **kwargs):
    _block_init(self, *args, **kwargs)
    self.body[0], self.body[3] = _no_bias(self.body[0]), _no_bias(self.body[3])
kit.ResidualBlock.__init__ = _init

_disc_init = kit.Discriminator.__init__
def _disc(self, *args, **kwargs):
    _disc_init(self, *args, **kwargs)
    for name, module in list(self.named_modules()):
        children = list(module.named_children())
        for (a, conv), (_, nxt) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
                setattr(module, a, _no_bias(conv))
kit.Discriminator.__init__ = _disc


def __getattr__(name):
    return getattr(kit, name)
'''


def test_bias_false_before_batch_norm_is_named_by_the_parameter_count_tests(tmp_path):
    shutil.copytree(REPO / "tests" / "tasks", tmp_path / "tests" / "tasks")
    (tmp_path / "models.py").write_text(NO_BIAS_MODELS)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "parameter_count",
                           "tests/tasks/test_task1_generator.py", "tests/tasks/test_task2_discriminator.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 1 and "2 failed" in out, out[-3000:]
    without = 1_549_462 - 16 * 2 * 64  # two 64-channel convs per residual block lose their bias
    assert "SRResNet x4 (16 blocks, 64 channels) must have 1,549,462 parameters, " \
           f"yours has {without:,}; 32 of your convolutions have no bias (bias=False: res_blocks.0.body.0, res_blocks.0.body.3, " \
           "res_blocks.1.body.0, ...)" in out, out[-3000:]
    assert "Before a BatchNorm a bias is redundant, but the paper's network and the kit's checkpoints keep " \
           "one in every conv: drop bias=False" in out
    # the discriminator: its seven convs followed by a BatchNorm (all but the first)
    assert "Discriminator() (64 channels, dense 1024) must have" in out
    assert "; 7 of your convolutions have no bias (bias=False: " in out
