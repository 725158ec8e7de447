"""Multi-process training (DDP, gloo backend on the CPU) through torchrun.

Two processes train a tiny SRGAN for one epoch of each stage. Checks: both ranks end with
identical generator and discriminator weights (gradients are averaged across ranks), and
only rank 0 writes files (checkpoints, logs, curves, samples, generators).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import checkpoints
from test_solver import tiny_config, tiny_lists  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]

_WORKER = """
import json, os, sys
sys.path.insert(0, {repo!r})
import torch
from easydict import EasyDict
import checkpoints, solver, training, utils

rank = int(os.environ["RANK"])
config = EasyDict(json.load(open(sys.argv[1])))
record_dir = sys.argv[2]
writes = []

def recorder(module, name):
    real = getattr(module, name)
    def wrapped(*args, **kwargs):
        writes.append(name)
        return real(*args, **kwargs)
    setattr(module, name, wrapped)

for module, name in ((checkpoints, "save_state"), (training, "write_log_csv"), (training, "plot_curves"),
                     (training, "validate"), (checkpoints, "save_generator"), (training, "save_image")):
    recorder(module, name)

nets = {{}}
real_step = solver.gan_step
def spy(generator, discriminator, *args, **kwargs):
    nets["g"], nets["d"] = utils.unwrap(generator), utils.unwrap(discriminator.discriminator)
    return real_step(generator, discriminator, *args, **kwargs)
solver.gan_step = spy

solver.train(config)
torch.save({{"generator": nets["g"].state_dict(),
            "discriminator": nets["d"].state_dict(),
            "writes": writes, "world": int(os.environ["WORLD_SIZE"])}},
           os.path.join(record_dir, f"rank{{rank}}.pt"))
"""


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with the gloo backend is not available")
def test_two_process_ddp_on_cpu(tiny_lists, tmp_path):  # noqa: F811
    cfg = tiny_config(tiny_lists, tmp_path / "run", stage1={"epochs": 1}, stage2={"epochs": 1},
                      data={"batch_size": 4})  # global batch: 2 patches per process
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(json.dumps(checkpoints.to_plain(cfg)))
    script = tmp_path / "worker.py"
    script.write_text(_WORKER.format(repo=str(REPO)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(cfg_file), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]

    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["world"] == r1["world"] == 2
    for key in ("generator", "discriminator"):
        assert r0[key].keys() == r1[key].keys()
        for name in r0[key]:
            assert torch.allclose(r0[key][name], r1[key][name], atol=1e-6), f"{key}.{name} differs between ranks"
    assert r1["writes"] == [], f"rank 1 wrote files: {r1['writes']}"
    assert {"save_state", "write_log_csv", "save_generator", "validate"} <= set(r0["writes"])

    out = tmp_path / "run"
    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert ckpt["config"]["runtime"]["world_size"] == 2
    # 3 images x 4 patches = 12 per epoch, global batch 4 -> 3 steps per epoch on each rank
    assert ckpt["config"]["runtime"]["steps_per_epoch"] == 3 and ckpt["global_step"] == 6
    assert all(torch.equal(ckpt["generator"][k], r0["generator"][k]) for k in ckpt["generator"])
    assert [line.split(",")[0] for line in (out / "log.csv").read_text().splitlines()[1:]] == ["1", "2"]
