"""Quality of the x4 generators on Set5 and Set14, and how the shipped weights were exported.

Scores bicubic and each generator with test.ipynb's protocol (``inference.evaluate``: MATLAB
``imresize`` LR, uint8 SR, Y channel, 4 border pixels shaved), with NIQE (``metrics.calculate_niqe``,
no reference, lower = more natural; the HR images get their own row, ``inference.evaluate_hr``)
and the kit's sharpness measure (``metrics.calculate_sharpness``: gradient magnitude vs HR,
1 = as sharp as HR), prints one Markdown table, and draws zoomed crops of every Set5 image
from every method (the "look sharper" check of the GAN generator).

    python benchmarks/quality.py                                  # shipped checkpoints/*.pth
    python benchmarks/quality.py --generators runs/x/generator_stage2.pth --crops crops.png
    # export a training checkpoint as a shipped generator (weights + config + log + metrics)
    python benchmarks/quality.py --export runs/srgan291/checkpoint.pth --to checkpoints/srgan_x4.pth \\
        --hardware "2-core CPU, no GPU" --train-data "train291 (T91 + BSD200)"
    # ... or one kept epoch (solver.py --keep-generators), blended with the PSNR network
    # (ESRGAN network interpolation: alpha * GAN + (1 - alpha) * PSNR)
    python benchmarks/quality.py --export runs/srgan291/checkpoint.pth \\
        --generator runs/srgan291/generators/stage2_epoch0010.pth \\
        --interpolate-with checkpoints/srresnet_x4.pth --alpha 0.8 --to checkpoints/srgan_x4.pth

Set5 / Set14 (x4) are those ``create_data_lists.prepare_test_lists`` finds: under ``data/``
after ``python create_data_lists.py --download benchmark``, else in ``--benchmark DIR`` (a
SelfExSR folder such as the course team's copy), else the kit's bundled ``benchmarks/data``.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import models  # noqa: E402
import checkpoints  # noqa: E402
import inference  # noqa: E402
import metrics  # noqa: E402
import notebook_helpers  # noqa: E402
from create_data_lists import prepare_test_lists  # noqa: E402
from datasets import EvalDataset  # noqa: E402

SCALE = 4
SETS = ("Set5", "Set14")


def load_sets(benchmark: Path | None) -> dict[str, EvalDataset]:
    """Set5 / Set14 x4 evaluation sets (those found)."""
    lists = prepare_test_lists(REPO / "data/lists", SCALE, data_root=REPO / "data", shared_benchmark=benchmark)
    found = {name: EvalDataset(str(lists[name]), SCALE) for name in SETS if name in lists}
    if not found:
        sys.exit("error: Set5/Set14 not found (the kit bundles them in benchmarks/data): pass --benchmark DIR "
                 "or run `python create_data_lists.py --download benchmark`")
    return found


def score(net: torch.nn.Module | None, sets: dict[str, EvalDataset]) -> dict[str, dict[str, float]]:
    """Mean PSNR / SSIM / NIQE / sharpness per set (``metrics.mean_metrics`` of ``inference.evaluate``)."""
    return {name: metrics.mean_metrics(inference.evaluate(net, data, SCALE, progress=False))
            for name, data in sets.items()}


def score_hr(sets: dict[str, EvalDataset]) -> dict[str, dict[str, float]]:
    """Mean NIQE of the HR images per set (``inference.evaluate_hr``, same border shaved)."""
    return {name: metrics.mean_metrics(inference.evaluate_hr(data, SCALE, progress=False)) for name, data in sets.items()}


def export(checkpoint: Path, dst: Path, sets: dict[str, EvalDataset], hardware: str, train_data: str,
           note: str = "", generator: Path | None = None, interpolate_with: Path | None = None,
           alpha: float = 1.0) -> None:
    """Write the generator of a training checkpoint (``solver.py``) as a shipped file.

    The file holds ``arch``, ``generator`` (what ``checkpoints.load_generator`` reads) and, for
    the reader: the training config, the per-epoch log (up to the shipped epoch), where and
    how long it trained, and its Set5/Set14 scores.

    ``generator``: a kept epoch of that run (``<run>/generators/stageS_epochNNNN.pth``) to
    ship instead of the checkpoint's last one. ``interpolate_with`` + ``alpha``: ship
    ``models.interpolate_networks(interpolate_with, generator, alpha)`` (ESRGAN network
    interpolation with the PSNR-oriented network the GAN stage started from).
    """
    state = checkpoints.load_state(checkpoint, what="training checkpoint")
    stage, epoch, step = int(state["stage"]), int(state["epoch"]), int(state["global_step"])
    weights = checkpoints.generator_weights(state)  # the EMA when the run kept one
    if generator is not None:
        kept = checkpoints.load_state(generator, what="generator checkpoint")
        if kept["arch"] != state["arch"]:
            raise SystemExit(f"{generator} is not a generator of the run {checkpoint} (other architecture)")
        stage, epoch, step, weights = int(kept["stage"]), int(kept["epoch"]), int(kept["global_step"]), kept["generator"]
    log = [row for row in state["log"] if (int(row["stage"]), int(row["epoch"])) <= (stage, epoch)]
    if interpolate_with is not None:
        base = checkpoints.load_state(interpolate_with, what="generator checkpoint")
        weights = models.interpolate_networks(base["generator"], weights, alpha)
    net = models.build_generator(state["arch"])
    net.load_state_dict(weights)
    metrics = score(net.eval(), sets)
    training = {"kind": "srresnet" if stage == 1 else "srgan", "stage": stage,
                "epochs_completed": epoch, "global_step": step,
                "train_data": train_data, "hardware": hardware,
                "train_seconds": round(sum(float(r.get("seconds", 0)) for r in log), 1),
                "note": note}
    if interpolate_with is not None:
        training["network_interpolation"] = {"alpha": float(alpha), "psnr_network": Path(interpolate_with).name}
    metrics_x4 = {name: {"psnr": round(m["psnr"], 4), "ssim": round(m["ssim"], 5), "niqe": round(m["niqe"], 4),
                         "sharpness": round(m["sharpness"], 4)} for name, m in metrics.items()}
    checkpoints.save_generator(dst, net, config=state["config"], training=training, log=log,
                          metrics_x4=metrics_x4)
    print(f"wrote {dst}: {training}")
    for name, m in metrics.items():  # unrounded: rounding twice can change the last digit
        print(f"  {name}: {m['psnr']:.2f} dB / {m['ssim']:.4f}, NIQE {m['niqe']:.2f}, sharpness {m['sharpness']:.2f}")


def crops_figure(sets: dict[str, EvalDataset], nets: dict[str, torch.nn.Module], path: Path, size: int = 64) -> None:
    """Rows: the Set5 images; columns: bicubic, each generator, HR; the most detailed crop."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = sets.get("Set5") or next(iter(sets.values()))
    columns = ["Bicubic", *nets, "HR"]
    fig, axes = plt.subplots(len(data), len(columns), squeeze=False,
                             figsize=(2.2 * len(columns), 2.4 * len(data)))
    for row in range(len(data)):
        item = data[row]
        hr = item["hr"]
        rows, cols = notebook_helpers.detail_crop(hr, size)
        outputs = {"Bicubic": inference.bicubic_upscale(item["lr"], SCALE),
                   **{label: inference.super_resolve(net, item["lr"]) for label, net in nets.items()}, "HR": hr}
        for col, (label, img) in enumerate(outputs.items()):
            ax = axes[row][col]
            ax.imshow(img[rows, cols], cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            niqe = metrics.niqe_or_nan(img, SCALE)
            if label != "HR":
                ax.set_xlabel(f"{metrics.calculate_psnr(img, hr, SCALE):.2f} dB, NIQE {niqe:.2f}, "
                              f"sharp. {metrics.calculate_sharpness(img, hr, SCALE):.2f}", fontsize=7)
            else:
                ax.set_xlabel(f"NIQE {niqe:.2f}", fontsize=7)
            if row == 0:
                ax.set_title(textwrap.fill(label, 24), fontsize=10)  # long run/file labels would overlap
            if col == 0:
                ax.set_ylabel(item["name"], fontsize=9)
    fig.suptitle(f"{len(data)} test images x{SCALE}, most detailed {size}x{size} HR crop "
                 "(PSNR, NIQE and sharpness of the whole image)", fontsize=10)
    fig.tight_layout()
    notebook_helpers.save_figure(fig, path, dpi=110)
    plt.close(fig)
    print(f"saved {path}")


def main(argv: list[str] | None = None) -> None:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); a file that cannot be used
    (missing, not a checkpoint, refused by the safe loader) ends it with one ``error:`` line."""
    try:
        _main(argv)
    except (ValueError, OSError) as err:  # CheckpointError is a ValueError
        sys.exit(f"error: {' '.join(str(err).split())}")


def _main(argv: list[str] | None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--benchmark", type=Path, default=None,
                   help="SelfExSR folder with Set5/ and Set14/ (HR images and MATLAB's LR images) to use "
                        "instead of the bundled benchmarks/data (sets under data/ come first)")
    p.add_argument("--generators", nargs="*", type=Path, default=None,
                   help="generator checkpoints (default: the shipped checkpoints/sr*_x4.pth)")
    p.add_argument("--crops", default=str(REPO / "results/set5_crops_x4.png"),
                   help="where to save the crops figure ('' for none)")
    p.add_argument("--export", type=Path, help="training checkpoint to export (with --to)")
    p.add_argument("--to", type=Path, help="destination of --export")
    p.add_argument("--hardware", default="", help="--export: where it trained, e.g. '2-core CPU, no GPU'")
    p.add_argument("--train-data", default="", help="--export: what it trained on")
    p.add_argument("--note", default="", help="--export: anything else a reader should know")
    p.add_argument("--generator", type=Path, default=None,
                   help="--export: a kept epoch of that run (generators/stageS_epochNNNN.pth) instead of its last")
    p.add_argument("--interpolate-with", type=Path, default=None,
                   help="--export: PSNR generator to blend with (ESRGAN network interpolation)")
    p.add_argument("--alpha", type=float, default=1.0, help="--export: GAN weight of the blend, in [0, 1]")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.export:
        if not args.to:
            p.error("--export needs --to")
        sets = load_sets(args.benchmark)
        export(args.export, args.to, sets, args.hardware, args.train_data, args.note, generator=args.generator,
               interpolate_with=args.interpolate_with, alpha=args.alpha)
        return

    paths = args.generators
    if paths is None:
        paths = [path for path in (REPO / "checkpoints/srresnet_x4.pth", REPO / "checkpoints/srgan_x4.pth")
                 if path.is_file()]
    nets = {}
    for path in paths:
        net = checkpoints.load_generator_checked(path, SCALE)
        kind = "psnr" if "srresnet" in path.name or "stage1" in path.name else "gan"
        label = notebook_helpers.model_label(kind, net, path)
        if not notebook_helpers.is_shipped_checkpoint(path):  # several epochs or runs side by side: say which file
            run = path.parent.parent if path.parent.name == "generators" else path.parent
            label = f"{notebook_helpers.model_label(kind, net)} ({run.name}/{path.stem})"
        nets[label] = net
    sets = load_sets(args.benchmark)  # after the generators: a bad file is refused before any scoring
    # one row per method: PSNR / SSIM per set, then NIQE and sharpness of all sets (README layout)
    hr = score_hr(sets)
    rows = [["HR (reference)"] + ["-"] * len(sets) + [" / ".join(f"{hr[s]['niqe']:.2f}" for s in sets), ""]]
    for label, net in {"Bicubic": None, **nets}.items():
        metrics = score(net, sets)
        rows.append([label] + [f"{metrics[s]['psnr']:.2f} / {metrics[s]['ssim']:.4f}" for s in sets]
                    + [" / ".join(f"{metrics[s][key]:.2f}" for s in sets) for key in ("niqe", "sharpness")])
    names = " / ".join(sets)
    print(notebook_helpers.markdown_table(["Method"] + [f"{s} PSNR / SSIM" for s in sets]
                               + [f"NIQE {names}", f"sharpness {names}"], rows))
    if args.crops and nets:
        crops_figure(sets, nets, Path(args.crops))


if __name__ == "__main__":
    main()
