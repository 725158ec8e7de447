"""The ImageNet VGG19 / VGG16 weight files of the perceptual losses: where they are found,
downloaded and hash-checked.

``load_vgg_weights(weights, arch)`` returns torchvision's ``state_dict`` of ``arch`` from, in
this order: the path given, the torch hub cache (``torch.hub.get_dir()/checkpoints/<file>``),
a download from ``VGG19_URL`` / ``VGG16_URL`` (the sha256 prefix in the file name is
checked). It never falls back to anything else: when all fail, a one-line ``RuntimeError``
says how to supply the file. ``models.TruncatedVGG`` calls it.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch

from utils import PathLike

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"  # tests point it elsewhere


VGG19_OFFICIAL_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"


VGG19_FILENAME = "vgg19-dcbb9e9d.pth"


VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"  # tests point it elsewhere


VGG16_OFFICIAL_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


VGG16_FILENAME = "vgg16-397923af.pth"


# Safe unpickling of the downloaded file where this torch version supports the argument.
_WEIGHTS_ONLY = ({"weights_only": True}
                 if "weights_only" in inspect.signature(torch.hub.load_state_dict_from_url).parameters else {})


def vgg_source(arch: str) -> tuple[str, str, str]:
    """``(url, official url, file name)`` of torchvision's ImageNet weights of ``arch``.

    The URLs are read when called, so tests can point ``VGG19_URL`` / ``VGG16_URL`` elsewhere.
    """
    if arch == "vgg19":
        return VGG19_URL, VGG19_OFFICIAL_URL, VGG19_FILENAME
    if arch == "vgg16":
        return VGG16_URL, VGG16_OFFICIAL_URL, VGG16_FILENAME
    raise ValueError(f"unknown VGG {arch!r}; use 'vgg19' or 'vgg16'")


def missing_vgg_message(tried: list[str], arch: str = "vgg19") -> str:
    """One line: what was tried, and how to supply the ImageNet weights of ``arch``."""
    _, official, filename = vgg_source(arch)
    cache = Path(torch.hub.get_dir()) / "checkpoints" / filename
    size = {"vgg19": "548 MB", "vgg16": "528 MB"}[arch]
    cls = {"vgg19": "TruncatedVGG19", "vgg16": "TruncatedVGG16"}[arch]
    return (f"could not get the ImageNet {arch.upper()} weights needed for the perceptual loss ("
            + "; ".join(tried) + f"): download {official} ({size}) on a machine with internet access "
            f"and put it at {cache} (the torch hub cache; TORCH_HOME moves it), or pass its path as "
            f"{cls}(weights=...), i.e. the training config's vgg.weights (--vgg-weights)")


def _read_vgg_file(path: Path, arch: str) -> dict:
    """``torch.load(path, weights_only=True)`` with every way the file can be unusable (code in
    its pickle, text, truncated, empty) turned into one ``ValueError`` line naming it."""
    official, filename = vgg_source(arch)[1:]
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - UnpicklingError, RuntimeError (bad zip), EOFError, ...
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        raise ValueError(f"{arch.upper()} weights file {path} is not readable weights ({type(err).__name__}: "
                         f"{reason}); the kit never unpickles code: use torchvision's {filename} from "
                         f"{official}") from None


def load_vgg_weights(weights: PathLike | None, arch: str = "vgg19") -> dict:
    """Find the ``arch`` state_dict: explicit path, then torch hub cache, then download.

    Raises ``FileNotFoundError`` for a missing explicit path, ``ValueError`` (one line) for a
    file that is not readable weights, and ``RuntimeError`` (one line, saying how to supply
    the file) when neither the cache nor a download has it; never falls back to anything else.
    """
    url, _, filename = vgg_source(arch)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{arch.upper()} weights file not found: {path} (download it from {url})")
        return _read_vgg_file(path, arch)
    tried = []
    model_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached = model_dir / filename
    if cached.is_file():
        return _read_vgg_file(cached, arch)
    tried.append(f"not in the torch hub cache {cached}")
    try:
        # check_hash verifies the sha256 prefix in the file name (dcbb9e9d, 397923af) after download
        return torch.hub.load_state_dict_from_url(url, model_dir=str(model_dir), map_location="cpu",
                                                  progress=True, check_hash=True, **_WEIGHTS_ONLY)
    except Exception as err:  # noqa: BLE001 - offline, proxy, HTTP error, hash mismatch ...
        reason = " ".join(str(err).split())  # keep the message on one line
        tried.append(f"download from {url} failed: {type(err).__name__}: {reason}")
    raise RuntimeError(missing_vgg_message(tried, arch))
