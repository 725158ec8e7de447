"""What ``pytest`` runs: plain ``pytest`` the unit tests in ``tests/``; ``pytest --nbval`` (or
``--nbval-lax``) those and the three notebooks, each cell's output compared with the stored one.

Naming files or folders on the command line (``pytest tests/test_models.py``, ``pytest --nbval
train.ipynb``) runs just those, as usual.
"""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
NOTEBOOKS = ("train.ipynb", "test.ipynb", "super_resolution.ipynb")


def pytest_configure(config: pytest.Config) -> None:
    notebooks = config.getoption("nbval", False) or config.getoption("nbval_lax", False)
    if notebooks and config.args_source == pytest.Config.ArgsSource.TESTPATHS:
        config.args = [*config.args, *(str(ROOT / name) for name in NOTEBOOKS)]
