"""Test helpers shared by all test files."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# Team-only data beside the checkout (users will not have it): tests skip without it.
SHARED = REPO.parent / "shared"
BENCHMARK = SHARED / "data" / "benchmark"
REFERENCE = SHARED / "reference"
# Set5/Set14 at x4 shipped in the repository (SelfExSR layout, MATLAB-made LR files).
BUNDLED = REPO / "benchmarks" / "data"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")  # session: module-scoped fixtures may need it too
def benchmark_dir() -> Path:
    """The bundled ``benchmarks/data``: Set5/Set14 ``image_SRF_4`` with MATLAB's LR files (x4 only).

    Always there (it is part of the repository), so the x4 tests run on every machine."""
    assert (BUNDLED / "Set5" / "image_SRF_4").is_dir(), f"bundled Set5 missing from {BUNDLED}"
    return BUNDLED


@pytest.fixture(scope="session")
def shared_benchmark_dir() -> Path:
    """``../shared/data/benchmark``: Set5/Set14 at x2, x3 and x4 with MATLAB LR files, or skip."""
    if not BENCHMARK.is_dir():
        pytest.skip(f"x2/x3 MATLAB files: shared benchmark data not found at {BENCHMARK} (team CI extra)")
    return BENCHMARK


@pytest.fixture
def reference_dir() -> Path:
    """``../shared/reference`` (MATLAB per-image PSNR/SSIM CSVs), or skip."""
    if not REFERENCE.is_dir():
        pytest.skip(f"shared MATLAB reference CSVs not found at {REFERENCE} (team CI extra)")
    return REFERENCE
