"""Imports flow one way, bottom to top in ``LAYERS``, at module level, so that each file can be read
(and given to students) from the bottom up."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]  # not from conftest: tests/tasks has a conftest.py too

# Each kit module and the kit modules it may import (everything below it):
# leaves (MATLAB resize; conventions and image I/O), metrics, the VGG weight files, the networks,
# the losses, every .pth file, inference, the notebooks' helpers, the data lists and datasets,
# how a run is carried out, and the training scheme on top.
LAYERS = ["imresize", "utils", "metrics", "vgg_weights", "models", "losses", "checkpoints", "inference",
          "notebook_helpers", "create_data_lists", "datasets", "training", "solver"]
ALLOWED = {name: set(LAYERS[:k]) for k, name in enumerate(LAYERS)}


def _kit_imports(module: str) -> tuple[set[str], set[tuple[str, str, str]]]:
    """(kit modules imported at module level, {(module, function, kit module)} imported in functions)."""
    tree = ast.parse((REPO / f"{module}.py").read_text())

    def kit(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split(".")[0]]
        else:
            return []
        return [n for n in names if n in LAYERS]

    top = {n for node in tree.body for n in kit(node)}
    local = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local |= {(module, fn.name, n) for node in ast.walk(fn) for n in kit(node)}
    return top, local


@pytest.mark.parametrize("module", LAYERS)
def test_imports_flow_one_way(module):
    top, local = _kit_imports(module)
    upward = (top | {n for _, _, n in local}) - ALLOWED[module]
    assert not upward, f"{module}.py imports {sorted(upward)}, which sit above it in {LAYERS}"


@pytest.mark.parametrize("module", LAYERS)
def test_no_function_level_kit_imports(module):
    _, local = _kit_imports(module)
    assert not local, f"function-level imports of kit modules (put them at the top of {module}.py): {sorted(local)}"


def test_the_leaves_import_no_kit_module():
    assert _kit_imports("utils")[0] == set()
    assert _kit_imports("imresize")[0] == set()


def test_every_kit_module_is_in_the_layers():
    modules = {p.stem for p in REPO.glob("*.py")} - {"conftest"}
    assert modules == set(LAYERS), f"add {sorted(modules - set(LAYERS))} to LAYERS (or remove {sorted(set(LAYERS) - modules)})"


def test_models_imports_no_checkpoint_or_training_code():
    """The networks file is a leaf of the scheme: it never reads or writes a training file."""
    assert _kit_imports("models")[0] <= {"utils", "vgg_weights"}


def _collected(*args: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "--continue-on-collection-errors",
                           *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_plain_pytest_collects_the_unit_tests_and_nbval_adds_the_notebooks():
    plain = _collected()
    assert plain and all(item.startswith("tests/") for item in plain)
    assert any(item.startswith("tests/test_imports.py::") for item in plain)
    if importlib.util.find_spec("nbval") is None:
        pytest.skip("nbval is not installed")
    with_notebooks = _collected("--nbval")
    notebooks = {item.split("::")[0] for item in with_notebooks if item.split("::")[0].endswith(".ipynb")}
    assert notebooks == {"train.ipynb", "test.ipynb", "super_resolution.ipynb"}
    assert set(plain) <= set(with_notebooks)
