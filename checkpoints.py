"""Every ``.pth`` file of the kit: one safe writer and reader with a digest, generator files,
training checkpoints (resume state), and the run folder they live in.

Read top to bottom:

1. **Safe files** -- ``save_state`` / ``load_state``: the one place ``.pth`` files are written
   and read (never unpickling code; a SHA-256 digest inside every file, checked on load);
   ``convert_trusted`` (``python checkpoints.py convert-trusted OLD.pth NEW.pth``) is the way
   in for an old file you trust.
2. **Generator files** -- ``save_generator``, ``load_generator``, ``load_generator_checked``
   (with the messages the notebooks need), ``generator_from_srresnet``.
3. **Training checkpoints** -- ``checkpoint_state`` / ``restore_state`` (networks,
   optimizers, schedulers, GradScalers and RNG states, for a bit-exact resume) and
   ``read_training_checkpoint``.
4. **The run folder** -- the lock, the checks before a run writes anything, disk errors.

Generator file (``generator_stage1.pth``, ``checkpoints/srresnet_x4.pth``, ...): a dict
``{"arch": {"name": "SRResNet" | "Generator" | "RRDBNet", "kwargs": {...}}, "generator":
state_dict, ...}`` where further keys (stage, epoch, config, metrics) are allowed.
``load_generator(path)`` rebuilds the right network from it (``models.build_generator``).

Training checkpoint (``<run>/checkpoint.pth``, format_version 1; kept stable across versions)
---------------------------------------------------------------------------------------------
A dict that ``load_state`` reads (only tensors, numbers, strings, lists, dicts), so
``load_generator`` reads it too:

* ``format_version``: 1
* ``arch``: ``{"name", "kwargs"}`` of the generator (``models.generator_arch``).
* ``generator``: generator ``state_dict``.
* ``discriminator_arch`` / ``discriminator``: same for the discriminator, or ``None`` in stage 1.
* ``generator_ema``: the EMA generator's ``state_dict`` (``stage2.ema_decay > 0``), else ``None``
  (absent in files written before it existed).
* ``optimizer_g`` / ``optimizer_d``, ``scheduler_g`` / ``scheduler_d``,
  ``scaler_g`` / ``scaler_d``: state dicts (``None`` where not used).
* ``stage``: 1 or 2 -- the stage the run is in; ``epoch``: epochs *completed* in that stage.
* ``global_step``: optimiser steps done over the whole run (both stages).
* ``rng``: ``{"torch": ByteTensor, "cuda": [ByteTensor] or None, "numpy": {...}, "python": [...]}``.
* ``config``: the resolved configuration as a plain dict.
* ``log``: the rows of ``log.csv`` so far (list of dicts).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import inspect
import io
import json
import os
import pickle
import pickletools
import random
import re
import shutil
import sys
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

import models
from utils import PathLike, atomic_write, clean_state_dict, load_weights, unwrap

try:
    import fcntl  # the run-folder lock (POSIX)
except ImportError:  # Windows: runs are not locked
    fcntl = None

CHECKPOINT_FORMAT = 1


# =====================================================================================
# 1. Safe files
# =====================================================================================
#
# The one place the kit reads and writes ``.pth`` files. A file is a dict saved with
# ``torch.save`` that PyTorch's safe loader (``weights_only=True``) reads: tensors, numbers,
# strings, bytes, None and plain containers (dict, OrderedDict, Counter, list, tuple, set),
# nothing that runs code when loaded. ``save_state`` adds the key ``DIGEST_KEY``: the
# SHA-256 of every tensor (its name = path in the dict, dtype, shape and bytes) and of
# every plain value, in order. ``load_state`` never unpickles code (no fallback to
# ``weights_only=False``) and checks the digest, so flipped bytes are an error, not a
# silently wrong network or a resumed run that diverges later.

DIGEST_KEY = "state_sha256"


_CONTAINERS = (dict, OrderedDict, Counter)


_SEQUENCES = (list, tuple, torch.Size)


_SCALARS = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)


_TEXT_BYTES = set(range(32, 127)) | {9, 10, 13}


class CheckpointError(ValueError):
    """A ``.pth`` file cannot be used; the one-line message names the file and says what is wrong."""


class CheckpointMissingError(CheckpointError, FileNotFoundError):
    """The ``.pth`` file does not exist (also a ``FileNotFoundError``)."""


class SolverError(RuntimeError):
    """A problem the user can fix (folder, data, checkpoint, disk, weights); the message is one line.

    The command line prints ``error: <message>`` for it (and for ``OSError``/``ValueError``)
    instead of a traceback.
    """


def _digest_update(h: "hashlib._Hash", obj: object, name: str) -> None:
    """Feed ``obj`` (found at ``name`` inside the saved dict) into the hash ``h``.

    Every item is written with a type tag and a length, so different contents can never
    give the same byte stream. Raises ``TypeError`` for a type the safe loader refuses.
    """
    def put(tag: bytes, data: bytes) -> None:
        h.update(tag + len(data).to_bytes(8, "little") + data)

    if isinstance(obj, torch.Tensor) and type(obj) in (torch.Tensor, torch.nn.Parameter):
        if obj.layout != torch.strided or obj.is_quantized:
            raise TypeError(f"{name}: only dense tensors can be saved, got layout {obj.layout}")
        t = obj.detach().cpu().resolve_conj().resolve_neg().contiguous()
        put(b"T", f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        put(b"D", memoryview(t.reshape(-1).view(torch.uint8).numpy()).tobytes()
            if t.numel() else b"")
    elif type(obj) in _CONTAINERS:
        put(b"M", f"{name}|{len(obj)}".encode())
        for key, value in obj.items():
            if type(key) not in _SCALARS:
                raise TypeError(f"{name}: dict key {key!r} of type {type(key).__name__} cannot be saved")
            put(b"K", f"{type(key).__name__}:{key!r}".encode())
            _digest_update(h, value, f"{name}/{key}")
    elif type(obj) in _SEQUENCES:
        put(b"L", f"{name}|{len(obj)}".encode())
        for i, value in enumerate(obj):
            _digest_update(h, value, f"{name}/{i}")
    elif type(obj) is set:
        put(b"S", f"{name}|{len(obj)}".encode())
        for value in sorted(obj, key=repr):
            _digest_update(h, value, f"{name}/*")
    elif type(obj) in _SCALARS:
        put(b"V", f"{name}|{type(obj).__name__}:{obj!r}".encode())
    else:
        raise TypeError(
            f"{name or 'the state'}: a {type(obj).__name__} cannot be saved in a kit .pth file (only "
            "tensors, numbers, strings and plain dict/list/tuple/set); convert it first, e.g. an "
            "EasyDict with a plain dict, a numpy array with torch.from_numpy")


def state_digest(obj: dict) -> str:
    """SHA-256 (hex) of a state dict as ``save_state`` stores it (the ``DIGEST_KEY`` entry left out).

    Args:
        obj: a dict of tensors and plain values (see the banner above).

    Returns:
        64 hex characters; equal for equal names, dtypes, shapes, tensor bytes and values.

    Raises:
        TypeError: ``obj`` holds something the safe loader would refuse.
    """
    h = hashlib.sha256()
    _digest_update(h, {k: v for k, v in obj.items() if k != DIGEST_KEY}, "")
    return h.hexdigest()


def save_state(path: PathLike, obj: dict) -> Path:
    """Write ``obj`` to ``path`` as a kit ``.pth`` file: safe-loadable, with its SHA-256 digest.

    Args:
        path: destination file; parent folders are created. The write is atomic (see
            :func:`atomic_write`): ``path`` is the old file or the new one, never partial.
        obj: a dict of tensors and plain values (no modules, no EasyDict, no numpy). Tensors
            are saved as they are (device and dtype); load with ``load_state`` (on the CPU).

    Returns:
        ``path``.

    Raises:
        TypeError: ``obj`` is not a dict or holds a type the safe loader would refuse
            (caught here, before anything is written).
    """
    if type(obj) not in _CONTAINERS:
        raise TypeError(f"save_state expects a dict, got {type(obj).__name__}")
    stored = {k: v for k, v in obj.items() if k != DIGEST_KEY}
    stored[DIGEST_KEY] = state_digest(stored)
    return atomic_write(path, lambda tmp: torch.save(stored, tmp))


def _one_line(err: BaseException) -> str:
    """The most telling line of a (possibly multi-line) error message."""
    text = str(err)
    match = re.search(r"GLOBAL ([\w.]+)", text)
    if match:
        return f"it refers to the Python object {match.group(1)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else type(err).__name__


# ---------------------------------------------------------------- what a pickle would import
# Globals a trusted older kit file may name: the data types of torch, numpy and collections (and
# the helpers their pickles use to rebuild them), plain builtins, paths and EasyDict configs.
_DATA_BUILTINS = {"set", "frozenset", "complex", "slice", "bytearray", "bytes", "int", "float", "str", "list",
                  "dict", "tuple", "bool", "range"}
_REBUILD_HELPERS = {("_codecs", "encode"), ("numpy.core.multiarray", "_reconstruct"),
                    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "_reconstruct"),
                    ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
                    ("numpy._core.numeric", "_frombuffer"), ("easydict", "EasyDict"),
                    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"),
                    ("pathlib", "PureWindowsPath"), ("pathlib", "Path")}


def _is_data_global(module: str, name: str) -> bool:
    """Whether a pickle's ``module.name`` is a data type (or a helper rebuilding one), not code."""
    if (module, name) in _REBUILD_HELPERS:
        return True
    if module in ("builtins", "__builtin__"):
        return name in _DATA_BUILTINS
    if module == "torch._utils" and name.startswith("_rebuild_"):
        return True
    data_modules = ("torch", "torch.nn", "torch.optim", "torch.storage", "torch._tensor", "numpy", "numpy.dtypes",
                    "numpy.core.multiarray", "numpy._core.multiarray", "collections")
    if not any(module == m or module.startswith(m + ".") for m in data_modules if m not in ("torch", "numpy")) \
            and module not in data_modules:
        return False
    obj = sys.modules.get(module)  # only what is imported already: nothing is imported to check
    for part in name.split("."):
        obj = getattr(obj, part, None)
    return isinstance(obj, type)


def pickle_globals(path: PathLike) -> list[tuple[str, str]] | None:
    """The ``(module, name)`` globals the pickle(s) of a ``.pth`` file would import, read without
    unpickling (``pickletools``); None when they cannot be told (damaged, or names built at
    load time).

    Args:
        path: a ``torch.save`` file (zip archive with ``*/data.pkl``) or a bare pickle.
    """
    def scan(data: bytes) -> list[tuple[str, str]] | None:
        found, complete, recent, memo = [], None, [], {}
        stream = io.BytesIO(data)
        try:
            # a legacy torch file holds several pickles in a row, then raw tensor bytes
            while stream.tell() < len(data):
                memo.clear()
                for op, arg, _ in pickletools.genops(stream):
                    if op.name in ("GLOBAL", "INST"):
                        module, _, name = str(arg).partition(" ")
                        found.append((module, name))
                    elif op.name == "STACK_GLOBAL":
                        if len(recent) < 2 or not all(isinstance(v, str) for v in recent[-2:]):
                            return None
                        found.append((recent[-2], recent[-1]))
                    elif op.name in ("EXT1", "EXT2", "EXT4"):
                        return None
                    if op.name in ("MEMOIZE",) and recent:
                        memo[len(memo)] = recent[-1]
                    elif op.name in ("PUT", "BINPUT", "LONG_BINPUT") and recent:
                        memo[arg] = recent[-1]
                    elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                        recent.append(memo.get(arg))
                    elif "UNICODE" in op.name or op.name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
                        recent.append(arg)
                    elif op.name not in ("PROTO", "FRAME", "STOP"):
                        recent.append(None)
                    del recent[:-2]
                complete = list(found)
        except Exception:  # noqa: BLE001 - a damaged stream, or the raw bytes after a legacy file's pickles
            return complete
        return complete

    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith(".pkl")]
                found = []
                for n in names:
                    part = scan(archive.read(n))
                    if part is None:
                        return None
                    found += part
                return found if names else None
        return scan(path.read_bytes())
    except (OSError, zipfile.BadZipFile, RuntimeError):
        return None


def code_globals(path: PathLike) -> list[str] | None:
    """The globals of :func:`pickle_globals` that are not data types (e.g. ``posix.system``):
    ``[]`` for a file that holds only data; None when the pickle cannot be read."""
    found = pickle_globals(path)
    if found is None:
        return None
    return [f"{module}.{name}" for module, name in dict.fromkeys(found) if not _is_data_global(module, name)]


def _refusal_advice(path: PathLike) -> str:
    """What to do with a file the safe loader refused, from what its pickle would import:
    ``convert-trusted`` only for a file that names nothing but data types."""
    code = code_globals(path)
    if code:
        return (f"it contains code ({', '.join(code[:3])}), and the kit never unpickles code: it must not be "
                "converted or loaded; delete it and get the file from its source again")
    if code is None:
        return ("it may contain code (its contents cannot be checked), and the kit never unpickles code: "
                "do not convert it; get the file from its source again")
    return ("it holds only data (torch, numpy or collections types) that the safe loader does not read, and "
            "the kit never unpickles code. Only if you made it yourself and trust it: "
            f"python checkpoints.py convert-trusted {path} NEW.pth")


def load_state(path: PathLike, what: str = "checkpoint", map_location: str | torch.device = "cpu") -> dict:
    """Read a kit ``.pth`` file safely and check its digest; returns the dict.

    Only PyTorch's safe loader is used (``torch.load(weights_only=True)``): the kit never
    unpickles code, so a file holding Python objects is refused rather than run. A file
    without its digest (written by plain ``torch.save``, or with the digest entry removed)
    is refused like a damaged one: ``convert_trusted`` rewrites a file you trust.

    Args:
        path: the file.
        what: what the file should be, for messages ("generator checkpoint", "training
            checkpoint", ...).
        map_location: where to put its tensors (read on the CPU, then moved).

    Returns:
        the saved dict without its ``DIGEST_KEY`` entry; tensors on ``map_location``.

    Raises:
        CheckpointMissingError: no such file (a ``CheckpointError`` and a ``FileNotFoundError``).
        CheckpointError: one line naming the file and the problem: empty, not a PyTorch file
            (text/HTML, truncated, corrupted), refused by the safe loader, no digest or a
            digest mismatch (corrupted), or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointMissingError(
            f"no {what} at {path}: train one with train.ipynb (or solver.py), or point to an existing .pth file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes), e.g. a save or copy that did not finish; "
                              "use an intact copy")
    with open(path, "rb") as f:
        head = f.read(512)
    # torch.save writes a zip archive; files from torch < 1.6 are a bare pickle (protocol 2).
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        kind = ("an HTML page (a failed download?)" if head.lstrip()[:1] == b"<"
                else "a text file" if set(head) <= _TEXT_BYTES else "not a PyTorch file")
        raise CheckpointError(f"{what} {path} is not a readable PyTorch checkpoint: it is {kind}; "
                              "use the .pth file itself")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        code = code_globals(path)
        if "GLOBAL" not in str(err) and not code:  # a damaged pickle stream, not a refused object
            raise CheckpointError(f"{what} {path} is not a readable PyTorch checkpoint (corrupted: "
                                  f"{_one_line(err)}); use an intact copy") from None
        refers = _one_line(err) if "GLOBAL" in str(err) else f"it refers to the Python object {code[0]}"
        raise CheckpointError(f"{what} {path} was refused by the safe loader ({refers}): "
                              + _refusal_advice(path)) from None
    except Exception as err:  # noqa: BLE001 - truncated zip, bad header, storage size mismatch, ...
        raise CheckpointError(f"{what} {path} is not a readable PyTorch checkpoint (truncated or corrupted: "
                              f"{_one_line(err)}); use an intact copy") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {path} holds a {type(obj).__name__}, not a dict; "
                              "it was not written by the kit")
    stored = obj.pop(DIGEST_KEY, None)
    if stored is None:
        raise CheckpointError(
            f"{what} {path} has no SHA-256 digest, so it cannot be checked: it is damaged or was not written "
            "by the kit; use an intact copy, or, only if you made it yourself and trust it: "
            f"python checkpoints.py convert-trusted {path} NEW.pth")
    try:
        actual = state_digest(obj)
    except TypeError:
        actual = None
    if actual != stored:
        raise CheckpointError(f"{what} {path} is corrupted: its contents do not match the SHA-256 digest "
                              "stored in it; use an intact copy (copy or download it again, or retrain)")
    return obj if str(map_location) == "cpu" else _to_device(obj, map_location)


def _to_device(obj: Any, device: str | torch.device) -> Any:
    """Move every tensor inside nested dicts/lists/tuples to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return type(obj)((k, _to_device(v, device)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def check_finite_state(state: dict, what: str) -> None:
    """Refuse weights holding NaN or inf (a diverged run), with one line naming the first one.

    Args:
        state: a ``state_dict`` (str -> tensor). what: names the file, for the message.

    Raises:
        CheckpointError: a floating-point tensor holds NaN or inf.
    """
    for name, tensor in state.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{what} holds NaN/inf weights ({bad} values in {name}): the training run diverged; "
                "use an earlier checkpoint or retrain with a lower learning rate")


def to_plain(obj: Any) -> Any:
    """EasyDict / tuples -> plain dicts and lists (for JSON and the safe ``.pth`` files)."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def config_json(config: dict) -> str:
    """A training configuration as JSON text: what ``python solver.py ... --show-config`` prints and
    a run's ``config.json`` holds (there with the run's ``runtime`` entry)."""
    return json.dumps(to_plain(config), indent=2)


# =====================================================================================
# 2. Generator files
# =====================================================================================


def save_generator(path: PathLike, model: nn.Module, **extra: Any) -> Path:
    """Save a generator checkpoint ``{"arch": ..., "generator": state_dict, **extra}``.

    Written by ``save_state``: atomic (an interrupted save never leaves a truncated
    file), safe to load (plain data only), with a SHA-256 digest that loading verifies.
    Parent folders are created.

    Args:
        path: destination file (``.pth``).
        model: an ``SRResNet`` / ``Generator`` / ``RRDBNet`` (wrappers are unwrapped, so
            the saved keys have no ``module.`` / ``_orig_mod.`` prefix).
        **extra: more entries to store (optimiser states, config, epoch, metrics, ...).

    Returns:
        the checkpoint path.
    """
    reserved = {"arch", "generator"} & set(extra)
    if reserved:
        raise ValueError(f"extra keys {sorted(reserved)} are reserved for the generator itself")
    net = unwrap(model)
    checkpoint = {"arch": models.generator_arch(net), "generator": net.state_dict(), **extra}
    return save_state(path, checkpoint)


def load_generator(path: PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Load a generator checkpoint written by ``save_generator`` (or ``solver.py``).

    Args:
        path: checkpoint file holding ``{"arch": ..., "generator": state_dict, ...}``;
            ``module.`` / ``_orig_mod.`` key prefixes are accepted. A training checkpoint
            with ``generator_ema`` gives the EMA generator (``generator_weights``).
        device: where to put the network.

    Returns:
        the generator (``SRResNet``, ``Generator`` or ``RRDBNet``) in eval mode on ``device``.

    Raises:
        CheckpointError (a ValueError): no such file (also a ``FileNotFoundError``), not a
            safe, intact PyTorch file (see ``load_state``), weights holding NaN/inf, or an
            architecture record that is not a kit one or does not fit the weights
            (:func:`check_generator_record`, checked before anything is built).
        ValueError: not a kit generator checkpoint.
    """
    checkpoint = load_state(path, what="generator checkpoint")
    if "arch" not in checkpoint or "generator" not in checkpoint:
        found = sorted(map(str, checkpoint))[:8]
        raise ValueError(
            f"{path} is not a kit generator checkpoint: expected a dict with keys 'arch' and "
            f"'generator' (written by checkpoints.save_generator / solver.py), found {found}. "
            "For a bare state_dict build the network yourself and call load_state_dict.")
    weights = generator_weights(checkpoint)
    check_generator_record(checkpoint["arch"], weights, f"generator checkpoint {path}")
    check_finite_state(weights, f"generator checkpoint {path}")
    model = models.build_generator(checkpoint["arch"])
    load_weights(model, weights, f"weights in {path}")
    return model.to(device).eval()


# Bounds of the integer arguments in a generator file's "arch" record, checked before anything
# is built: far above any trained network, far below what would exhaust memory.
ARCH_LIMITS = {"scale": (1, 8), "n_blocks": (1, 256), "channels": (1, 1024), "growth": (1, 1024)}


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def check_generator_record(arch: object, weights: object, what: str) -> None:
    """Refuse a generator record whose architecture is not a kit one or does not fit its weights.

    Checked before the network is built, so that a crafted record (``n_blocks=2000000``,
    ``channels=200000``) cannot exhaust memory: the name is one of ``models.GENERATORS``, the
    arguments are among its constructor's, integers within :data:`ARCH_LIMITS`, and the network
    they describe (built on the ``meta`` device: no memory) has exactly the weights' names and shapes.

    Args:
        arch: the ``"arch"`` entry (``{"name": ..., "kwargs": {...}}``).
        weights: the generator ``state_dict`` stored with it.
        what: names the file, for the message.

    Raises:
        CheckpointError: one line naming the file and the first problem.
    """
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise CheckpointError(f"{what}: its 'arch' must be {{'name': ..., 'kwargs': {{...}}}}, got "
                              f"{type(arch).__name__}; the file was not written by the kit")
    name, kwargs = arch["name"], arch.get("kwargs", {})
    if name not in models.GENERATORS:
        raise CheckpointError(f"{what}: unknown generator architecture {name!r} (known: "
                              f"{', '.join(sorted(models.GENERATORS))}); the file was not written by the kit")
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{what}: its arch kwargs must be a dict, got {type(kwargs).__name__}")
    allowed = inspect.signature(models.GENERATORS[name]).parameters
    for key, value in kwargs.items():
        if key not in allowed:
            raise CheckpointError(f"{what}: {name} has no argument {key!r} (it takes "
                                  f"{', '.join(allowed)}); the file was not written by this kit")
        low, high = ARCH_LIMITS.get(key, (None, None))
        if low is not None and (not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high):
            raise CheckpointError(f"{what}: its arch has {key}={value!r}, outside {low}..{high}; the file is "
                                  "damaged or was not written by the kit")
    if not _is_state_dict(weights):
        raise CheckpointError(f"{what}: its generator weights must be a state_dict (names -> tensors), got "
                              f"{type(weights).__name__}; the file was not written by the kit")
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in models.build_generator(arch).state_dict().items()}
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{what}: its arch {arch} cannot be built ({_one_line(err)})") from None
    found = {k: tuple(v.shape) for k, v in clean_state_dict(weights).items()}
    if found != expected:
        missing = [k for k in expected if k not in found]
        extra = [k for k in found if k not in expected]
        shapes = [k for k in expected if k in found and found[k] != expected[k]]
        why = (f"{shapes[0]} is {list(found[shapes[0]])}, {name} expects {list(expected[shapes[0]])}" if shapes
               else f"{missing[0]} is missing" if missing else f"{extra[0]} is not one of {name}'s")
        raise CheckpointError(f"{what}: the weights do not fit {name}({kwargs}): {why}; the file holds another "
                              "network's weights (a different architecture or size), or its arch record was changed")


def generator_weights(checkpoint: dict) -> dict:
    """The generator ``state_dict`` a kit checkpoint stands for: its EMA weights when it has
    them (a training checkpoint of a run with ``stage2.ema_decay > 0``, whose validation and
    exported files use the EMA), else ``checkpoint["generator"]``."""
    ema = checkpoint.get("generator_ema")
    return ema if ema is not None else checkpoint["generator"]


def load_generator_checked(path: PathLike, scale: int, device: str | torch.device = "cpu") -> nn.Module:
    """:func:`load_generator` plus the checks a notebook needs, with messages that say what to do.

    Args:
        path: generator checkpoint (``{"arch": ..., "generator": state_dict, ...}``).
        scale: the upscaling factor the caller works at.
        device: where to put the network.

    Returns:
        the generator in eval mode; it maps ``float32`` ``Nx3xhxw`` in [0, 1] to
        ``Nx3x(scale*h)x(scale*w)``.

    Raises:
        FileNotFoundError: no such file (train one with ``train.ipynb`` or add the shipped weights).
        ValueError: not a readable generator checkpoint, or a generator of another scale.
        RuntimeError: weights that do not fit the architecture recorded in the checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no generator checkpoint at {path}. Run train.ipynb first (it writes "
            f"runs/<name>/generator_stage1.pth and generator_stage2.pth), or copy the shipped "
            f"weights into checkpoints/, then re-run this cell.")
    model = load_generator(path, device=device)
    model_scale = getattr(model, "scale", None)
    if model_scale != scale:
        raise ValueError(
            f"{path} holds a x{model_scale} generator, but this notebook works at x{scale}: "
            f"choose a x{scale} checkpoint, or set the scale to {model_scale} at the top of the notebook.")
    return model


def generator_from_srresnet(source: nn.Module | dict | PathLike) -> models.Generator:
    """A ``models.Generator`` initialised from SRResNet weights, wherever they are.

    Args:
        source: an ``SRResNet`` module, a bare SRResNet ``state_dict``, a kit checkpoint dict
            (``{"arch": ..., "generator": state_dict}``; its EMA weights when it has them),
            or the path of such a file (read with ``load_state``).

    Returns:
        a ``Generator`` (train mode) holding a copy of those weights.

    Raises:
        CheckpointError: an unreadable file, or weights holding NaN/inf. ValueError: a
            checkpoint of another architecture. TypeError: anything else.
    """
    what = "SRResNet weights"
    if isinstance(source, (str, os.PathLike)):
        what = f"SRResNet checkpoint {source}"
        source = load_state(source, what="SRResNet checkpoint")
    if isinstance(source, dict) and "generator" in source and "arch" in source:
        arch = source["arch"]
        if arch.get("name") not in ("SRResNet", "Generator"):
            raise ValueError(f"checkpoint holds a {arch.get('name')!r}, not an SRResNet")
        state = clean_state_dict(generator_weights(source))
        check_finite_state(state, what)
        generator = models.Generator(**dict(arch["kwargs"]))
        load_weights(generator, state, "SRResNet weights")
        return generator
    if isinstance(source, dict):
        check_finite_state(source, what)
    elif isinstance(source, nn.Module):
        check_finite_state(source.state_dict(), what)
    return models.Generator.from_srresnet(source)


# =====================================================================================
# 3. Training checkpoints: what a run saves after every epoch and restores on resume
# =====================================================================================


def rng_state() -> dict:
    """All RNG states, as tensors / plain lists (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict) -> None:
    """Restore the RNG states saved by ``rng_state`` (torch, CUDA when present, numpy, random)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def read_training_checkpoint(path: PathLike) -> dict:
    """Read a training checkpoint written by ``solver.py`` (``checkpoint_state``), on the CPU.

    Raises:
        CheckpointError: one line naming the file: missing, empty, foreign, corrupted (digest
            mismatch or no digest), unsafe, or an unsupported format version.
        SolverError: unreadable (permissions), or a kit file that is not a training checkpoint.
        CheckpointError: a part that cannot be restored (:func:`check_training_checkpoint`).
    """
    path = Path(path)
    try:
        ckpt = load_state(path, what="training checkpoint")
    except CheckpointError:
        raise  # already one line naming the file and what is wrong with it
    except OSError as err:
        raise SolverError(f"cannot read {path}: {err.strerror or _one_line(err)}") from None
    except Exception as err:  # noqa: BLE001 - a damaged file makes the unpickler raise anything
        raise SolverError(f"cannot resume from {path}: it is not a readable training checkpoint "
                          f"({type(err).__name__}: {_one_line(err)}); start a new run in another folder, "
                          "or restore the file") from None
    version = ckpt.get("format_version")
    if version != CHECKPOINT_FORMAT:
        raise CheckpointError(f"training checkpoint {path}: format {version} is not supported "
                              f"(this solver reads format {CHECKPOINT_FORMAT}); is it a generator file?")
    if not {"stage", "epoch", "generator", "config", "rng"} <= set(ckpt):
        raise SolverError(f"cannot resume from {path}: it is not a training checkpoint of solver.py")
    check_training_checkpoint(ckpt, path)
    return ckpt


def check_training_checkpoint(ckpt: dict, path: PathLike) -> None:
    """Refuse, before any training, a training checkpoint whose parts cannot be restored.

    The digest proves the file is what was written; this checks that what was written is a
    resume state: integer counters, a generator record that fits its weights
    (:func:`check_generator_record`), finite weights in every network, and optimizer, scheduler
    and scaler states of the form PyTorch saves for every network of the checkpoint's stage
    (finite too), and RNG states that can be set (tried, then the current ones put back).

    Raises:
        CheckpointError: one line naming the file and the part that is wrong.
    """
    def bad(part: str, why: str) -> CheckpointError:
        return CheckpointError(f"cannot resume from {path}: its {part} {why}; the file is damaged or was not "
                               "written by solver.py: restore an intact copy, or start a new run in another folder")

    for key in ("stage", "epoch", "global_step"):
        value = ckpt.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad(key, f"is {value!r}, not a count")
    if ckpt["stage"] not in (1, 2):
        raise bad("stage", f"is {ckpt['stage']}, not 1 or 2")
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("log"), list):
        raise bad("config or log", "is not a dict / list")
    check_generator_record(ckpt.get("arch"), ckpt.get("generator"), f"training checkpoint {path}")
    for key in ("generator", "generator_ema", "discriminator"):
        state = ckpt.get(key)
        if state is None and key != "generator":
            continue
        if not _is_state_dict(state):
            raise bad(key, f"is a {type(state).__name__}, not a state_dict")
        check_finite_state(state, f"training checkpoint {path} ({key})")
    for name in ("g", "d") if ckpt["stage"] == 2 else ("g",):
        optimizer = ckpt.get(f"optimizer_{name}")
        if not (isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
                and isinstance(optimizer.get("param_groups"), list)
                and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in optimizer["param_groups"])
                and all(isinstance(s, dict) for s in optimizer["state"].values())):
            raise bad(f"optimizer_{name}", f"({type(optimizer).__name__}) is not an optimizer state")
        for values in optimizer["state"].values():
            if any(torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()
                   for v in values.values()):
                raise bad(f"optimizer_{name}", "holds NaN/inf values (the run diverged)")
        if not isinstance(ckpt.get(f"scheduler_{name}"), dict):
            raise bad(f"scheduler_{name}", f"({type(ckpt.get(f'scheduler_{name}')).__name__}) is not a scheduler state")
        if not isinstance(ckpt.get(f"scaler_{name}"), (dict, type(None))):
            raise bad(f"scaler_{name}", "is not a GradScaler state")
    if ckpt["stage"] == 2 and ckpt.get("discriminator") is None:
        raise bad("discriminator", "is missing (a stage-2 checkpoint has one)")
    current = rng_state()
    try:
        set_rng_state(ckpt["rng"])
    except Exception as err:  # noqa: BLE001 - whatever a malformed state makes the setters raise
        raise bad("RNG state", f"cannot be restored ({type(err).__name__}: {_one_line(err)})") from None
    finally:
        set_rng_state(current)


# The config entry holding each optimizer's learning rate, per (stage, network).
_LR_SETTINGS = {(1, "g"): ("stage1", "lr", "stage 1"), (2, "g"): ("stage2", "lr_g", "generator"),
                (2, "d"): ("stage2", "lr_d", "discriminator")}
_NET_KEYS = {"g": "generator", "d": "discriminator", "g_ema": "generator_ema"}


def checkpoint_state(stage: int, epoch: int, global_step: int, config: dict, log: list[dict],
                     states: dict, nets: dict[str, nn.Module]) -> dict:
    """The training checkpoint dict (format at the top of this file), looping over ``nets`` and ``states``.

    Args:
        stage, epoch: the stage the run is in and the epochs completed in it.
        global_step: optimiser steps over the run. config: the resolved config. log: the log rows.
        states: ``{"g": (optimizer, scheduler, scaler), "d": (...)}``; a scaler is saved when enabled.
        nets: ``{"g": G, "d": D, "g_ema": EMA of G}`` (plain modules; "d", "g_ema" optional).
    """
    d = nets.get("d")
    state = {"format_version": CHECKPOINT_FORMAT, "arch": to_plain(models.generator_arch(nets["g"])),
             "generator": nets["g"].state_dict(),
             "discriminator_arch": to_plain(config["model"]["discriminator"]) if d is not None else None,
             "discriminator": d.state_dict() if d is not None else None,
             "generator_ema": nets["g_ema"].state_dict() if "g_ema" in nets else None,
             "stage": stage, "epoch": epoch, "global_step": global_step,
             "rng": rng_state(), "config": to_plain(config), "log": log}
    for name in ("g", "d"):
        optimizer, scheduler, scaler = states.get(name, (None, None, None))
        state[f"optimizer_{name}"] = optimizer.state_dict() if optimizer is not None else None
        state[f"scheduler_{name}"] = scheduler.state_dict() if scheduler is not None else None
        state[f"scaler_{name}"] = scaler.state_dict() if scaler is not None and scaler.is_enabled() else None
    return state


def restore_state(ckpt: dict, stage: int, config: dict, states: dict, nets: dict[str, nn.Module]) -> None:
    """Load ``nets`` and ``states`` (optimizer, scheduler, scaler per network) and the RNG from ``ckpt``.

    A learning rate changed in ``config`` since the checkpoint applies from the next step on;
    an EMA turned on since (``--set stage2.ema_decay=...``) starts from the restored G.
    """
    if "d" in nets and ckpt.get("discriminator_arch") != to_plain(config.model.discriminator):
        raise SolverError(f"the checkpoint's discriminator is {ckpt.get('discriminator_arch')}, but the config "
                          f"builds {to_plain(config.model.discriminator)}; resume with the same model settings")
    for name, net in nets.items():
        saved = ckpt.get(_NET_KEYS[name])
        net.load_state_dict(nets["g"].state_dict() if saved is None and name == "g_ema" else saved)
    for name, (optimizer, scheduler, scaler) in states.items():
        optimizer.load_state_dict(ckpt[f"optimizer_{name}"])
        scheduler.load_state_dict(ckpt[f"scheduler_{name}"])
        section, key, label = _LR_SETTINGS[(stage, name)]
        _apply_lr_change(optimizer, scheduler, ckpt["config"][section][key], config[section][key], label)
        if ckpt.get(f"scaler_{name}"):
            scaler.load_state_dict(ckpt[f"scaler_{name}"])
    set_rng_state(ckpt["rng"])


def _apply_lr_change(optimizer: torch.optim.Optimizer, scheduler: Any, saved_lr: float, lr: float,
                     name: str) -> None:
    """On resume: if the config's lr differs from the checkpoint's, use it from the next step.

    The saved optimizer/scheduler states would otherwise keep the old rate. Milestones still
    to come multiply the new rate by ``lr_gamma`` as usual; past ones are not re-applied.
    """
    if float(saved_lr) == float(lr):
        return
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = float(lr)
    scheduler.base_lrs = [float(lr)] * len(optimizer.param_groups)
    print(f"resume: {name} lr {saved_lr:g} -> {lr:g} from step {scheduler.last_epoch} on", flush=True)


# =====================================================================================
# 4. The run folder
# =====================================================================================

# Files and folders of a run; a fresh run refuses a folder holding any of them (--overwrite).
RUN_FILES = ("checkpoint.pth", "generator_stage1.pth", "generator_stage2.pth", "log.csv", "config.json",
             "curves.png")


RUN_FOLDERS = ("samples", "generators")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, as ``sha256sum`` prints it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_folder_writable(out: Path) -> None:
    """Raise one line when ``out`` is not a folder, or it (or its nearest existing parent) is read-only."""
    if out.exists() and not out.is_dir():
        raise SolverError(f"output folder {out} is a file; choose another --out")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SolverError(f"cannot create the output folder {out}: {existing} is a file; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SolverError(f"output folder {existing} is read-only; choose a writable --out")


def lock_run_folder(out: Path):
    """Hold an exclusive lock on ``out/train.lock`` so two runs never share a folder.

    Returns the open lock file (closing it releases the lock; the OS releases it if the
    process dies), or None where ``fcntl`` does not exist (Windows: no check). The file
    holds the holder's PID; a refused run leaves it as it is.
    """
    if fcntl is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / "train.lock", "a+")  # not "w": that would erase the holder's PID before we know
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        who = f"process {holder}" if holder.isdigit() else "another process"
        raise SolverError(f"another training run ({who}) is using {out}: wait for it to finish or "
                          "choose another output folder (--out)") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def check_previous_run(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a fresh run into a folder holding another run's results, or clear them with ``overwrite``."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    found += [name + "/" for name in RUN_FOLDERS if (out / name).is_dir() and any((out / name).iterdir())]
    if not found:
        return
    if not overwrite:
        how = ("continue it with --resume (resume=True), " if "checkpoint.pth" in found and not resume else "")
        raise FileExistsError(f"{out} holds another run's results ({', '.join(found)}): {how}choose another "
                              "folder (--out), or replace them with --overwrite (overwrite=True)")
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in RUN_FOLDERS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)


_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


@contextlib.contextmanager
def disk_errors(out: Path) -> Iterator[None]:
    """Turn a failed write in the run folder (disk full, read-only, ...) into one ``SolverError`` line."""
    try:
        yield
    except OSError as err:
        if err.errno in _DISK_FULL:
            raise SolverError(f"the disk holding {out} is full ({_free_mb(out)} MB free): free some space and "
                              "continue with --resume (the last complete epoch is kept), or choose another --out") from None
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise SolverError(f"cannot write in {out} ({err.strerror}): make it writable or choose "
                              "another --out") from None
        raise
    except RuntimeError as err:
        # torch.save reports a short write (full disk) as "[enforce fail at inline_container.cc ...]
        # ... unexpected pos", or "PytorchStreamWriter failed writing file".
        text = str(err)
        if "inline_container" in text or "unexpected pos" in text or "PytorchStreamWriter" in text:
            raise SolverError(f"could not write a checkpoint in {out} ({_free_mb(out)} MB free; the disk is "
                              "probably full): free some space and continue with --resume, or choose "
                              "another --out") from None
        raise


def _free_mb(path: Path) -> int:
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free // 2**20
    except OSError:
        return -1


# =====================================================================================
# Command line: python checkpoints.py convert-trusted OLD.pth NEW.pth
# =====================================================================================


def _plain_state(obj: object, name: str = "") -> object:
    """``obj`` with what the safe loader refuses turned into plain data (for ``convert_trusted``).

    EasyDict and other dict subclasses -> dict, numpy arrays -> tensors, numpy scalars ->
    Python numbers, modules -> their ``state_dict``, paths -> str. Raises ``TypeError`` for
    anything else, naming where it is.
    """
    if isinstance(obj, torch.nn.Module):
        return _plain_state(obj.state_dict(), name)
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone() if type(obj) is not torch.Tensor else obj
    if isinstance(obj, dict):
        return {k: _plain_state(v, f"{name}/{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain_state(v, f"{name}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if type(obj) in _SCALARS or type(obj) is set:
        return obj
    raise TypeError(f"{name or 'the file'} holds a {type(obj).__module__}.{type(obj).__name__}, which has no "
                    "plain-data form; convert this file by hand")


def convert_trusted(src: PathLike, dst: PathLike) -> Path:
    """Rewrite a ``.pth`` file YOU TRUST as a safe kit file (plain data + digest).

    This is the kit's only call of ``torch.load(weights_only=False)``, which runs whatever
    code the file's pickle names: use it only on a file you made yourself or fully trust.

    Args:
        src: the old file (e.g. with an EasyDict config or numpy arrays, or a pickled module).
        dst: the new file; must not exist yet (nothing is overwritten).

    Returns:
        ``dst``, which ``load_state`` reads.

    Raises:
        FileNotFoundError: no ``src``. FileExistsError: ``dst`` exists.
        ValueError: ``src`` is empty or unreadable, or its pickle names code (anything but the
            data types of torch, numpy, collections and plain Python, see :func:`code_globals`):
            converting would run it.
        TypeError: ``src`` holds an object with no plain-data form.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"no file at {src}")
    if dst.exists():
        raise FileExistsError(f"{dst} exists: choose a new file name (nothing is overwritten)")
    if src.stat().st_size == 0:
        raise ValueError(f"{src} is empty (0 bytes), e.g. a save or copy that did not finish: there is nothing "
                         "to convert; use an intact copy")
    code = code_globals(src)
    if code is None:
        raise ValueError(f"{src} cannot be checked (not a readable PyTorch file or pickle): it is not converted")
    if code:
        raise ValueError(f"{src} contains code ({', '.join(code[:3])}): it must not be converted (converting "
                         "would run it); delete it and get the file from its source again")
    obj = _plain_state(torch.load(src, map_location="cpu", weights_only=False))
    if not isinstance(obj, dict):
        obj = {"state": obj}
    return save_state(dst, obj)


def main(argv: list[str] | None = None) -> int:
    """``python checkpoints.py convert-trusted OLD.pth NEW.pth``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python checkpoints.py", description="Kit file tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert-trusted", help="rewrite a .pth file you trust (it may run code when "
                          "read) as a safe kit file with a digest")
    conv.add_argument("src", help="the trusted old file")
    conv.add_argument("dst", help="the new file (must not exist)")
    args = parser.parse_args(argv)
    try:
        out = convert_trusted(args.src, args.dst)
    except (OSError, TypeError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
