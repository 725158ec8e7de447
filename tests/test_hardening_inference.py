"""super_resolve without ``tile`` on an image too large for the memory: tiles chosen from the free
memory give the untiled result; when not even one tile fits, one clear line. The memory is capped
for real (``RLIMIT_AS`` in a child process), on a small network and image, so the test is fast."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
resource = pytest.importorskip("resource")
pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")

SIZE, OVERLAP, CAP_MB = 320, 10, 160  # a 1-block SRResNet sees 8 + 2 * 1 = 10 LR pixels around each pixel

CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[1])
    from models import SRResNet
    from inference import super_resolve
    cap_mb, tile, out = int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
    torch.manual_seed(0)
    model = SRResNet(n_blocks=1, channels=16)
    lr = np.random.default_rng(0).integers(0, 256, ({size}, {size}, 3), dtype=np.uint8)
    super_resolve(model, lr[:8, :8], tile_overlap={overlap})  # everything imported and warmed up
    with open("/proc/self/status") as f:
        vm = [int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:")][0]
    resource.setrlimit(resource.RLIMIT_AS, (vm + cap_mb * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
    try:
        sr = super_resolve(model, lr, tile=tile, tile_overlap={overlap})
    except BaseException as err:
        print(json.dumps({{"error": type(err).__name__, "message": str(err)}}))
        sys.exit(3)
    np.save(out, sr)
    print(json.dumps({{"ok": True}}))
""").format(size=SIZE, overlap=OVERLAP)


def run_capped(tmp_path: Path, cap_mb: int, tile: int | None) -> tuple[dict, np.ndarray | None]:
    out = tmp_path / f"sr_{cap_mb}_{tile}.npy"
    # big blocks straight from mmap and back on free, so that the cap measures live memory
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536")
    done = subprocess.run([sys.executable, "-c", CHILD, str(REPO), str(cap_mb), json.dumps(tile), str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return report, (np.load(out) if out.is_file() else None)


def test_untiled_call_on_a_too_large_image_picks_tiles_from_the_free_memory(tmp_path):
    from inference import super_resolve
    from models import SRResNet

    torch.manual_seed(0)
    model = SRResNet(n_blocks=1, channels=16)
    lr = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    full = super_resolve(model, lr, tile=10**6, tile_overlap=OVERLAP)  # the whole image at once (no cap here)

    # under the cap, tile=None chooses tiles that fit, with the untiled result ...
    report, sr = run_capped(tmp_path, CAP_MB, None)
    assert report == {"ok": True}, report
    assert sr.shape == full.shape and sr.dtype == np.uint8
    assert np.abs(sr.astype(int) - full.astype(int)).max() <= 1  # tiled = untiled, up to float rounding
    # ... and the cap is real: the whole image at once does not fit in it (one line, not an allocator dump)
    report, _ = run_capped(tmp_path, CAP_MB, 10**6)
    assert report["error"] == "MemoryError", report
    assert "\n" not in report["message"] and "pass a smaller tile, or tile=None" in report["message"]


def test_one_clear_line_when_not_even_one_tile_fits(tmp_path):
    report, sr = run_capped(tmp_path, 4, None)
    assert sr is None and report["error"] == "MemoryError", report
    message = report["message"]
    assert "\n" not in message and message.startswith("super_resolve: not even one") and "free memory" in message


def test_free_memory_reports_the_address_space_limit():
    from inference import free_memory

    free = free_memory("cpu")
    assert free is not None and free > 0
    code = ("import resource, sys; sys.path.insert(0, sys.argv[1]); from inference import free_memory\n"
            "vm = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:')][0]\n"
            "resource.setrlimit(resource.RLIMIT_AS, (vm + 50 * 2**20, resource.RLIM_INFINITY))\n"
            "print(free_memory('cpu'))")
    done = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert 0 < int(done.stdout.strip()) <= 50 * 2**20, done.stderr[-2000:]


class _OutOfMemoryAbove(torch.nn.Module):
    """A network that fails as the allocator does ("out of memory") on inputs larger than
    ``limit`` LR pixels per side, and runs ``net`` otherwise: the retry path without a real cap."""

    def __init__(self, net: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.net, self.limit, self.scale, self.sizes = net, limit, net.scale, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        if max(x.shape[-2:]) > self.limit:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB")
        return self.net(x)


def test_an_out_of_memory_error_halves_the_tile_until_it_fits():
    from inference import super_resolve
    from models import SRResNet
    torch.manual_seed(0)
    net = SRResNet(n_blocks=1, channels=8).eval()
    lr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    failing = _OutOfMemoryAbove(net, limit=40)
    sr = super_resolve(failing, lr, tile_overlap=OVERLAP)
    # whole image (64) fails, then 32-px cores with 10 px of context (up to 52) fail, 16-px cores fit
    assert failing.sizes[0] == (64, 64) and max(max(s) for s in failing.sizes[-4:]) <= 40
    assert np.abs(sr.astype(int) - super_resolve(net, lr).astype(int)).max() <= 1


def test_no_tile_fitting_and_a_given_tile_not_fitting_are_one_line_memory_errors():
    from inference import super_resolve
    from models import SRResNet
    net = SRResNet(n_blocks=1, channels=8).eval()
    lr = np.zeros((64, 64, 3), dtype=np.uint8)
    with pytest.raises(MemoryError, match="not even one 8x8 tile") as err:
        super_resolve(_OutOfMemoryAbove(net, limit=0), lr, tile_overlap=OVERLAP)
    assert "\n" not in str(err.value)
    with pytest.raises(MemoryError, match="a 32x32 tile of this 64x64 image does not fit") as err:
        super_resolve(_OutOfMemoryAbove(net, limit=0), lr, tile=32, tile_overlap=OVERLAP)
    assert "\n" not in str(err.value)


def test_an_error_other_than_memory_is_not_retried():
    from inference import super_resolve
    from models import SRResNet

    class Broken(_OutOfMemoryAbove):
        def forward(self, x):
            self.sizes.append(tuple(x.shape[-2:]))
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    for tile in (None, 32):  # chosen from the memory, or given
        broken = Broken(SRResNet(n_blocks=1, channels=8).eval(), limit=0)
        with pytest.raises(RuntimeError, match="cannot be multiplied"):
            super_resolve(broken, np.zeros((64, 64, 3), dtype=np.uint8), tile=tile)
        assert len(broken.sizes) == 1
