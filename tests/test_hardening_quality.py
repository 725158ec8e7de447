"""benchmarks/quality.py refuses a file it cannot use (a pickle payload, a text file, a missing
file) with one ``error:`` line, never a traceback, and runs nothing from it."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _quality_module():
    spec = importlib.util.spec_from_file_location("quality_hardening", REPO / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"arch": {"name": "srresnet"}, "generator": _Payload(marker)}, evil)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    return {"evil": evil, "text": text, "missing": tmp_path / "nothere.pth", "marker": marker}


def test_cli_refuses_a_bad_generator_in_one_line(bad_files, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("evil", "text", "missing"):
        done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "quality.py"), "--generators",
                               str(bad_files[key]), "--crops", ""], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert len(lines) == 1 and lines[0].startswith("error: ") and bad_files[key].name in lines[0], done.stderr
    assert not bad_files["marker"].exists()


@pytest.mark.parametrize("key", ["evil", "text", "missing"])
def test_export_refuses_a_bad_checkpoint_in_one_line(bad_files, tmp_path, monkeypatch, key):
    quality = _quality_module()
    monkeypatch.setattr(quality, "load_sets", lambda benchmark: {})  # no data needed to refuse the file
    out = tmp_path / "out.pth"
    monkeypatch.setattr(sys, "argv", ["quality.py", "--export", str(bad_files[key]), "--to", str(out)])
    with pytest.raises(SystemExit) as info:
        quality.main()
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message and bad_files[key].name in message, message
    assert not out.exists() and not bad_files["marker"].exists()
