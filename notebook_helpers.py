"""What the notebooks (test.ipynb, super_resolution.ipynb) and the course tools use around the kit.

Which generators to use (``find_checkpoints``, ``model_label``), the image to super-resolve
(``load_sr_input``), network interpolation checks and curves, tables (``markdown_table``,
``save_csv``), figures (``comparison_figure``, ``show_figure``) and the SR image sets of a
report (``save_sr_set``). Every file is written atomically (``utils.atomic_write``), so an
error or an interrupted kernel never leaves a half-written result behind.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from checkpoints import CheckpointError, load_state
from imresize import imresize
from inference import bicubic_upscale, model_scale, super_resolve
from metrics import calculate_psnr, niqe_or_nan
from utils import ImageReadError, PathLike, atomic_write, modcrop, read_image, save_image

CHECKPOINT_KINDS = ("psnr", "gan")  # stage 1 (pixel loss, SRResNet) and stage 2 (GAN, SRGAN)


_RUN_FILES = {"psnr": "generator_stage1.pth", "gan": "generator_stage2.pth"}


_SHIPPED_FILES = {"psnr": "srresnet_x{scale}.pth", "gan": "srgan_x{scale}.pth"}


MIN_LR_SIDE = 8  # smallest LR side accepted: an x4 HR must survive the border shave and the 11x11 SSIM window


def find_checkpoints(root: PathLike = ".", scale: int = 4) -> dict[str, Path | None]:
    """The generator checkpoints the notebooks use by default.

    For each kind, the shipped file if it exists, else the newest one trained with
    ``train.ipynb`` / ``solver.py``, else None:

    * ``"psnr"`` (PSNR-oriented, stage 1): ``checkpoints/srresnet_x{scale}.pth``, else
      ``runs/<name>/generator_stage1.pth``;
    * ``"gan"`` (stage 2): ``checkpoints/srgan_x{scale}.pth``, else
      ``runs/<name>/generator_stage2.pth``.

    Only run files of ``scale`` count (read from their architecture record); "newest" is by
    modification time. When both come from ``runs/``, the stage-1 file of the
    run that gave the stage-2 one is preferred, so that the pair has the same architecture
    (network interpolation needs that).

    Args:
        root: the kit's folder (the one holding ``checkpoints/`` and ``runs/``).
        scale: upscaling factor of the generators to look for.

    Returns:
        ``{"psnr": Path | None, "gan": Path | None}``; paths are ``root / relative path``
        (so they stay relative when ``root`` is).
    """
    root = Path(root)

    def run_scale(path: Path) -> int | None:
        try:  # the scale the generator was built for, from the file's architecture record
            return int(load_state(path, "generator checkpoint")["arch"]["kwargs"]["scale"])
        except (CheckpointError, KeyError, TypeError, ValueError):
            return None  # not a usable generator file: not a candidate

    def newest(kind: str) -> Path | None:
        files = [p for p in root.glob(f"runs/*/{_RUN_FILES[kind]}") if p.is_file() and run_scale(p) == scale]
        return max(files, key=lambda p: (p.stat().st_mtime, str(p))) if files else None

    found: dict[str, Path | None] = {}
    for kind in ("gan", "psnr"):
        shipped = root / "checkpoints" / _SHIPPED_FILES[kind].format(scale=scale)
        if shipped.is_file():
            found[kind] = shipped
            continue
        paired = None
        if kind == "psnr" and found["gan"] is not None and found["gan"].parent.parent == root / "runs":
            paired = found["gan"].parent / _RUN_FILES["psnr"]
        found[kind] = paired if paired is not None and paired.is_file() else newest(kind)
    return {kind: found[kind] for kind in CHECKPOINT_KINDS}


def model_label(kind: str, model: torch.nn.Module, path: PathLike | None = None) -> str:
    """Display name of a generator found by :func:`find_checkpoints`.

    Args:
        kind: ``"psnr"`` (stage 1, pixel loss) or ``"gan"`` (stage 2).
        model: the loaded network.
        path: its checkpoint; when given and not a shipped file, " (local run)" is added,
            so a short quick-profile run is never shown as if it were the real SRGAN.

    Returns:
        ``"SRResNet"`` / ``"SRGAN"`` for the SRGAN paper's network, ``"RRDB-PSNR"`` /
        ``"ESRGAN"`` for ESRGAN's ``RRDBNet`` (plus `` (local run)`` as above).
    """
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"kind must be one of {CHECKPOINT_KINDS}, got {kind!r}")
    rrdb = type(getattr(model, "module", model)).__name__ == "RRDBNet"
    label = {("psnr", False): "SRResNet", ("gan", False): "SRGAN",
             ("psnr", True): "RRDB-PSNR", ("gan", True): "ESRGAN"}[kind, rrdb]
    if path is not None and not is_shipped_checkpoint(path):
        label += " (local run)"
    return label


def is_shipped_checkpoint(path: PathLike) -> bool:
    """True for a file in a ``checkpoints/`` folder (weights shipped with the kit, identical
    for everyone), False for one trained locally (e.g. ``runs/quick/...``)."""
    return Path(path).parent.name == "checkpoints"


def interpolation_problem(psnr_model: torch.nn.Module, gan_model: torch.nn.Module) -> str | None:
    """Why two generators cannot be interpolated (ESRGAN network interpolation), or None.

    Interpolation mixes the two ``state_dict`` s parameter by parameter, so it needs the same
    parameter names and shapes (same architecture and size); ``SRResNet`` and the SRGAN
    ``Generator`` count as the same network.

    Returns:
        None when they fit, else a sentence saying what differs.
    """
    a, b = psnr_model.state_dict(), gan_model.state_dict()
    if getattr(psnr_model, "scale", None) != getattr(gan_model, "scale", None):
        return (f"the PSNR-oriented model is x{getattr(psnr_model, 'scale', '?')} and the GAN model "
                f"x{getattr(gan_model, 'scale', '?')}")
    if a.keys() != b.keys():
        return (f"the two generators have different architectures ({type(psnr_model).__name__} with "
                f"{len(a)} tensors, {type(gan_model).__name__} with {len(b)} tensors)")
    for key in a:
        if a[key].shape != b[key].shape:
            return (f"the two generators differ in size ({key}: {tuple(a[key].shape)} vs "
                    f"{tuple(b[key].shape)})")
    return None


def load_sr_input(path: PathLike, scale: int, is_hr: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the image to super-resolve and make the ``(lr, hr)`` pair.

    Args:
        path: image file.
        scale: upscaling factor.
        is_hr: True: the file is a high-resolution image; it is mod-cropped to a multiple
            of ``scale`` and its LR is MATLAB ``imresize(hr, 1/scale)`` (bicubic, the way the
            test sets' LR images are made), so the SR result can be scored against it.
            False: the file is a low-resolution image to upscale; there is no ground truth.

    Returns:
        ``lr``: ``uint8`` ``hxwx3`` RGB; ``hr``: ``uint8`` ``(scale*h)x(scale*w)x3`` or None.
        (Grayscale files are replicated to RGB: the networks take 3 channels.)

    Raises:
        FileNotFoundError / ImageReadError: missing or undecodable file (message says what to do).
        ValueError: the LR image would be smaller than ``MIN_LR_SIDE`` pixels.
    """
    path = Path(path)
    try:
        img = read_image(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}. Set the image path in the configuration cell to an existing file.") from err
    except ImageReadError as err:
        raise ImageReadError(f"{err}. Use a PNG/JPEG/BMP/TIFF image (re-save it if it is damaged).") from err
    h, w = img.shape[:2]
    min_side = MIN_LR_SIDE * (scale if is_hr else 1)
    if min(h, w) < min_side:
        what = "HR image" if is_hr else "LR image"
        raise ValueError(
            f"{path} is {h}x{w} pixels: too small as an {what} for x{scale} super-resolution "
            f"(at least {min_side}x{min_side} is needed). Use a larger image.")
    if not is_hr:
        return img, None
    hr = modcrop(img, scale)
    lr = imresize(hr, output_shape=(hr.shape[0] // scale, hr.shape[1] // scale))
    return lr, hr


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub Markdown table.

    Args:
        header: column titles.
        rows: one list of cells per row (formatted with ``str``; format numbers beforehand
            to choose their decimals). Columns whose cells are all numbers (empty cells
            allowed, e.g. a reference row without PSNR) are right-aligned.

    Returns:
        the table as one string, lines separated by ``\\n``.
    """
    def is_number(value) -> bool:
        try:
            float(value)
            return True
        except (TypeError, ValueError):
            return False

    def align(col: int) -> str:
        cells = [r[col] for r in rows if str(r[col]) != ""]
        return "---:" if cells and all(is_number(c) for c in cells) else "---"

    lines = ["| " + " | ".join(map(str, header)) + " |",
             "| " + " | ".join(align(c) for c in range(len(header))) + " |"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def save_text(text: str, path: PathLike) -> Path:
    """Write a UTF-8 text file (Markdown report, ...) atomically; returns ``path``."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_csv(rows: list[dict], path: PathLike, columns: list[str] | None = None) -> Path:
    """Write dict rows as a CSV file atomically; floats keep full precision.

    Args:
        rows: one dict per line.
        path: destination ``.csv``.
        columns: column order (default: the keys of the first row).
    """
    columns = list(columns if columns is not None else (rows[0].keys() if rows else []))

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return atomic_write(path, write)


def save_figure(fig, path: PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure atomically (format from the extension, e.g. ``.png``)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight"))


def detail_crop(img: np.ndarray, size: int) -> tuple[slice, slice]:
    """The ``size x size`` window with the most detail (gradient energy), for zoomed crops.

    Deterministic (depends on the image only), so figures show the same region every run.

    Args:
        img: ``uint8`` ``HxW`` or ``HxWx3``.
        size: side of the window in pixels (clipped to the image).

    Returns:
        ``(rows, cols)`` slices; ``img[rows, cols]`` is the crop.
    """
    gray = img.astype(np.float64) if img.ndim == 2 else img.astype(np.float64).mean(axis=2)
    h, w = gray.shape
    sh, sw = min(size, h), min(size, w)
    energy = np.zeros_like(gray)
    energy[:, 1:] += np.abs(np.diff(gray, axis=1))
    energy[1:, :] += np.abs(np.diff(gray, axis=0))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[sh:, sw:] - integral[:-sh, sw:] - integral[sh:, :-sw] + integral[:-sh, :-sw]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return slice(int(top), int(top) + sh), slice(int(left), int(left) + sw)


def comparison_figure(panels: list[tuple[str, np.ndarray]], crop: tuple[slice, slice] | None = None,
                      full: bool = True, panel_size: float = 3.0):
    """Side-by-side matplotlib figure of same-size images (bicubic, SR, HR, ...), with zoomed crops.

    Pixels are drawn with ``interpolation="nearest"`` so that the crops show the real pixels
    (no smoothing by the viewer).

    Args:
        panels: ``(title, image)`` pairs; images ``uint8`` ``HxWx3`` or ``HxW``, all the same size.
        crop: ``(rows, cols)`` slices (see :func:`detail_crop`): adds a row of crops and draws
            the crop's box on the full images.
        full: show the full images; with ``False`` (and a crop) only the crops are shown.
        panel_size: inches per panel.

    Returns:
        the ``matplotlib`` Figure (show and close it with :func:`show_figure`).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if not panels:
        raise ValueError("comparison_figure: no panels given")
    shapes = {img.shape[:2] for _, img in panels}
    if crop is not None and len(shapes) > 1:
        raise ValueError(f"comparison_figure: a common crop needs images of one size, got {sorted(shapes)}")
    rows = (["full"] if full or crop is None else []) + (["crop"] if crop is not None else [])
    fig, axes = plt.subplots(len(rows), len(panels), squeeze=False,
                             figsize=(panel_size * len(panels), panel_size * len(rows)))
    for col, (title, img) in enumerate(panels):
        for row, kind in enumerate(rows):
            ax = axes[row][col]
            view = img[crop] if kind == "crop" else img
            ax.imshow(view, cmap="gray" if view.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if kind == "full" and crop is not None:
                ax.add_patch(Rectangle((crop[1].start - 0.5, crop[0].start - 0.5), crop[1].stop - crop[1].start,
                                       crop[0].stop - crop[0].start, fill=False, edgecolor="yellow", linewidth=1.5))
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def blend_images(sr_psnr: np.ndarray, sr_gan: np.ndarray, alpha: float) -> np.ndarray:
    """Image interpolation: ``(1 - alpha) * sr_psnr + alpha * sr_gan`` pixel by pixel.

    Args:
        sr_psnr, sr_gan: ``uint8`` images of the same shape (the PSNR and GAN generators' outputs).
        alpha: weight of ``sr_gan``, in ``[0, 1]``.

    Returns:
        ``uint8`` of the same shape, rounded half away from zero (as MATLAB).
    """
    if sr_psnr.shape != sr_gan.shape or sr_psnr.dtype != np.uint8 or sr_gan.dtype != np.uint8:
        raise ValueError(f"blend_images: expects two uint8 images of the same shape, got {sr_psnr.dtype} "
                         f"{sr_psnr.shape} and {sr_gan.dtype} {sr_gan.shape}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"blend_images: alpha must be in [0, 1] (0 = PSNR image, 1 = GAN image), got {alpha}")
    mix = (1 - alpha) * sr_psnr.astype(np.float64) + alpha * sr_gan.astype(np.float64)
    return np.floor(mix + 0.5).astype(np.uint8)  # mix >= 0: half away from zero


def interpolation_curves(network_srs: dict[float, np.ndarray], hr: np.ndarray | None, scale: int) -> list[dict]:
    """Network vs image interpolation (ESRGAN, Fig. 10): PSNR and NIQE for each alpha.

    Args:
        network_srs: ``{alpha: uint8 SR image}`` made by the network interpolation
            (``models.interpolate_networks(psnr, gan, alpha)``, then :func:`super_resolve`);
            it must hold alpha 0 (the PSNR generator) and 1 (the GAN generator), whose outputs
            are blended pixel-wise (:func:`blend_images`) for the image interpolation.
        hr: the ``uint8`` HR image for PSNR, or None (PSNR is then NaN).
        scale: border shaved for PSNR and NIQE (as :func:`evaluate`).

    Returns:
        one dict per alpha, in increasing alpha: ``{"alpha", "psnr_network", "niqe_network",
        "psnr_image", "niqe_image"}`` (dB; NIQE lower = more natural, NaN when too small).
    """
    if 0 not in network_srs or 1 not in network_srs:
        raise ValueError(f"interpolation_curves: network_srs needs alpha 0 and 1 (the two generators' "
                         f"outputs), got alphas {sorted(network_srs)}")

    def scores(img: np.ndarray) -> tuple[float, float]:
        psnr = float("nan") if hr is None else calculate_psnr(img, hr, crop_border=scale)
        return psnr, niqe_or_nan(img, crop_border=scale)

    rows = []
    for alpha in sorted(network_srs):
        psnr_net, niqe_net = scores(network_srs[alpha])
        psnr_img, niqe_img = scores(blend_images(network_srs[0], network_srs[1], alpha))
        rows.append({"alpha": float(alpha), "psnr_network": psnr_net, "niqe_network": niqe_net,
                     "psnr_image": psnr_img, "niqe_image": niqe_img})
    return rows


def interpolation_figure(rows: list[dict]):
    """PSNR vs alpha and NIQE vs alpha, network and image interpolation side by side.

    Args:
        rows: :func:`interpolation_curves`'s output.

    Returns:
        a matplotlib Figure with two panels (show it with :func:`show_figure`).
    """
    import matplotlib.pyplot as plt

    alphas = [r["alpha"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, title in ((axes[0], "psnr", "PSNR (dB), higher = closer to HR"),
                           (axes[1], "niqe", "NIQE, lower = more natural")):
        for kind, style in (("network", "o-"), ("image", "s--")):
            ax.plot(alphas, [r[f"{key}_{kind}"] for r in rows], style, label=f"{kind} interpolation")
        ax.set_xlabel("alpha (0 = PSNR generator, 1 = GAN generator)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def show_figure(fig, path: PathLike | None = None, dpi: int = 100, display_dpi: int | None = None) -> None:
    """Display a matplotlib figure in a notebook as a PNG, save it (atomically) if ``path``, close it.

    Showing the rendered PNG rather than the live figure keeps the cell's text output the same
    on every run (a live figure prints its size and number of axes), which nbval compares.

    Args:
        fig: the figure; it is closed afterwards.
        path: where to save it (``.png``), or None.
        dpi: resolution of the saved file.
        display_dpi: resolution of the copy shown in the notebook (default ``dpi``); a lower
            one keeps the notebook file small.
    """
    import matplotlib.pyplot as plt
    from IPython.display import Image as IPythonImage
    from IPython.display import display

    def render(resolution: int) -> bytes:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=resolution, bbox_inches="tight")
        return buffer.getvalue()

    try:
        png = render(dpi)
        if path is not None:
            atomic_write(path, lambda tmp: Path(tmp).write_bytes(png))
        if display_dpi is not None and display_dpi != dpi:
            png = render(display_dpi)
    finally:
        plt.close(fig)
    display(IPythonImage(data=png, format="png"))


def sr_filename(image: str, label: str, scale: int) -> str:
    """File name of an SR result: ``sr_filename("baby", "SRGAN", 4)`` -> ``"baby_srgan_x4.png"``.

    The method label is lower-cased and each run of characters other than letters and digits becomes ``-``.
    The image name (from a data list, which anyone can write) is reduced to a plain file name: its
    last path component, each run of characters other than letters, digits, ``.``, ``_`` and ``-``
    made ``-``, without leading dots (``"../../x/img"`` -> ``"img"``; nothing left: ``"image"``).
    """
    method = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "model"
    base = re.split(r"[/\\]", image)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).lstrip(".-") or "image"
    return f"{base}_{method}_x{scale}.png"


def save_sr_set(dataset, models: dict[str, torch.nn.Module | None], out_dir: PathLike, scale: int,
                tile: int | None = None, device: str | torch.device | None = None,
                progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """Super-resolve every LR image of a (small) set with each method; save lossless PNGs.

    Nothing is written until every image has been read and super-resolved by every method, so
    a bad file or model stops the run with its error before any output exists; each PNG is then
    written atomically as ``<out_dir>/<image name>_<label>_x<scale>.png`` (see :func:`sr_filename`,
    e.g. ``baby_srgan_x4.png``).

    Args:
        dataset: sequence of dicts with ``"name"`` and ``"lr"`` (``uint8`` ``HxWx3`` or
            ``HxW``), e.g. ``datasets.EvalDataset``.
        models: ``{label: network or None}``; None is the bicubic baseline (MATLAB imresize).
        out_dir: output folder (created).
        scale: upscaling factor; every network must have this ``scale``.
        tile, device: passed to :func:`super_resolve`.
        progress: show a tqdm bar.

    Returns:
        ``{image name: {label: uint8 SR image}}`` in set order (e.g. for a contact sheet).

    Raises:
        ValueError: a network of another scale, duplicate image names or labels (also names that
            give the same file name, e.g. ``a/x`` and ``b/x``), or ``out_dir`` is an existing
            file. Read errors of the set's files propagate.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output folder {out_dir} is an existing file; choose a folder path")
    names = {label: sr_filename("", label, scale) for label in models}
    if len(set(names.values())) != len(names):
        raise ValueError(f"model labels {list(models)} give the same file names; use distinct labels")
    for label, model in models.items():
        if model is not None and model_scale(model) != scale:
            raise ValueError(f"{label} is a x{model_scale(model)} network but the set is processed at "
                             f"x{scale}: load a x{scale} checkpoint")
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for i in tqdm(range(len(dataset)), desc="super-resolve", disable=not progress, unit="img"):
        item = dataset[i]
        if item["name"] in outputs:
            raise ValueError(f"two images are named {item['name']!r}; output files are named after images")
        outputs[item["name"]] = {
            label: bicubic_upscale(item["lr"], scale) if model is None
            else super_resolve(model, item["lr"], tile=tile, device=device)
            for label, model in models.items()
        }
    files = [(out_dir / sr_filename(name, label, scale), sr) for name, results in outputs.items()
             for label, sr in results.items()]
    if len({path for path, _ in files}) != len(files):
        raise ValueError(f"image names {list(outputs)} give the same file names once made plain file names; "
                         "use distinct image names")
    for path, sr in files:  # plain file names: every output lands in out_dir
        save_image(sr, path)
    return outputs
