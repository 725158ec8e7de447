"""benchmarks/bench_train.py: what it times, the ratios and the profile it prints, and defaults
that stay short (the figures themselves are not tested: they depend on the machine)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_train  # noqa: E402
import solver  # noqa: E402
import training  # noqa: E402

TINY = ["--batch", "2", "--patch", "16", "--n-blocks", "1", "--iters", "1", "--repeat", "1", "--warmup", "0"]


def test_default_variant_is_what_the_solver_runs_on_this_machine():
    cpu = torch.device("cpu")
    got = bench_train.variant_settings("default", cpu)
    speed = solver.make_config("mse").speed
    assert got["channels_last"] == speed.channels_last
    assert got["amp_dtype"] == training._amp_dtype(speed.amp, cpu)  # bf16 only where the CPU has it natively
    assert got["compile"] is False  # compile="auto" is CUDA only
    assert got["adam"] == training.adam_options(cpu) and got["fast_prelu"] is True
    assert bench_train.variant_settings("fp32-nchw", cpu) == {
        "channels_last": False, "amp_dtype": None, "compile": False, "adam": {"foreach": True}, "fast_prelu": False}
    with pytest.raises(ValueError, match="unknown variant"):
        bench_train.variant_settings("fp8", cpu)


def test_default_plus_compile_is_the_default_compiled():
    cpu = torch.device("cpu")
    assert bench_train.variant_settings("default+compile", cpu) == {
        **bench_train.variant_settings("default", cpu), "compile": True}


def test_defaults_are_short_two_variants_and_five_iterations_each():
    args = bench_train.build_parser().parse_args([])
    # fp32-nchw + default, 1 warm-up + 2 x 2 timed iterations, stages 1 and 2: about a minute on 2 cores
    assert args.variants is None and args.stages == [1, 2] and args.profile == 0
    assert args.warmup + args.repeat * args.iters <= 5


def test_prints_a_progress_line_before_each_measurement_ratios_and_a_profile():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_train.py"), "--device", "cpu",
                           "--stages", "1", "2", "--profile", "3", *TINY],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    for stage in (1, 2):
        for variant in ("fp32-nchw", "default"):
            timing = next(i for i, l in enumerate(lines) if f"timing cpu stage {stage} {variant} " in l)
            result = next(i for i, l in enumerate(lines) if re.match(rf"cpu\s+stage {stage} {variant}\s+[\d.]+ s/it", l))
            assert timing < result, f"no progress line before stage {stage} {variant}"
        ratio = next(l for l in lines if f"stage {stage} " in l and "time / fp32-nchw" in l)
        assert re.search(r"fp32-nchw 1\.00, default \d+\.\d\d", ratio), ratio
    tops = [i for i, l in enumerate(lines) if "top 3 operators of one step" in l]
    assert len(tops) == 2, "one profile per stage"
    for i in tops:
        assert all(re.match(r"\s+\S.*\s[\d.]+ ms\s+[\d.]+%\s+x\d+$", lines[i + k]) for k in (1, 2, 3)), \
            lines[i:i + 4]
        assert "forward by module type" in lines[i + 4] and "Conv2d" in lines[i + 4]
    modules = [lines[i + 4] for i in tops]
    assert "LeakyReLU" not in modules[0] and "LeakyReLU" in modules[1]  # stage 2 includes D, stage 1 not


def test_bad_arguments_are_one_line_errors():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_train.py"), "--patch", "10"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "multiple of 4" in proc.stderr.strip().splitlines()[-1]
