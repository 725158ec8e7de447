"""Helpers of the task tests: an unfinished task fails with its TODO message, not a traceback."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator

import pytest


@contextmanager
def _todo() -> Iterator[None]:
    try:
        yield
    except NotImplementedError as err:
        # `from None`: the failure shows the task's message alone, not the chained traceback
        raise pytest.fail.Exception(f"not implemented yet: {err}", pytrace=False) from None


@pytest.fixture
def todo() -> Callable[[], ContextManager[None]]:
    """``with todo(): ...`` turns a ``NotImplementedError`` into a one-line failure."""
    return _todo


def _layer_names(modules) -> str:
    names = []
    for m in modules:
        name = type(m).__name__
        if hasattr(m, "kernel_size"):
            k = m.kernel_size
            name += f"({k[0]}x{k[1]}" + (f", stride {m.stride[0]}" if m.stride[0] != 1 else "") + ")"
        names.append(name)
    return ", ".join(names) or "nothing"


@pytest.fixture
def layer_names() -> Callable[[object], str]:
    """``layer_names(modules)`` -> ``"Conv2d(3x3), BatchNorm2d, PReLU"``, for failure messages."""
    return _layer_names
