"""ESRGAN network interpolation, scanned: PSNR / SSIM / NIQE of blends of two generators.

Blends ``(1 - alpha) * PSNR network + alpha * GAN network`` (``models.interpolate_networks``)
for each ``alpha`` and scores every blend on one evaluation list (``inference.evaluate``, fp32,
the MATLAB protocol of ``metrics``). With ``--min-psnr`` it also names the blend that a rule
fixed in advance picks: the lowest NIQE among the alphas whose PSNR is at least that bound.
Choose on a validation list, never on the test sets you report.

    python benchmarks/interpolation_scan.py --psnr checkpoints/srresnet_x4.pth \\
        --gan runs/srgan/generators/stage2_epoch0077.pth --list data/lists-291/val20.json \\
        --alphas 0.5 0.6 0.7 0.8 0.9 1.0 --min-psnr 26.97 --csv results/interpolation_val20.csv
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import checkpoints  # noqa: E402
import inference  # noqa: E402
import metrics  # noqa: E402
import models  # noqa: E402
from datasets import EvalDataset  # noqa: E402


def scan(psnr_path: Path, gan_path: Path, data: EvalDataset, alphas: list[float]) -> list[dict[str, float]]:
    """One row per alpha: ``{"alpha", "psnr", "ssim", "niqe", "sharpness"}`` (means over ``data``)."""
    psnr_ckpt = checkpoints.load_state(psnr_path, what="generator checkpoint")
    gan_ckpt = checkpoints.load_state(gan_path, what="generator checkpoint")
    if psnr_ckpt["arch"] != gan_ckpt["arch"]:
        raise ValueError(f"{psnr_path} and {gan_path} are different architectures: they cannot be blended")
    rows = []
    for alpha in alphas:
        net = models.build_generator(gan_ckpt["arch"])
        net.load_state_dict(models.interpolate_networks(psnr_ckpt["generator"], gan_ckpt["generator"], alpha))
        scores = metrics.mean_metrics(inference.evaluate(net.eval(), data, inference.model_scale(net),
                                                         progress=False))
        rows.append({"alpha": alpha, **{key: scores[key] for key in ("psnr", "ssim", "niqe", "sharpness")}})
        print(f"alpha {alpha:.2f}: {scores['psnr']:.3f} dB / {scores['ssim']:.4f}, NIQE {scores['niqe']:.3f}, "
              f"sharpness {scores['sharpness']:.3f}", flush=True)
    return rows


def choose(rows: list[dict[str, float]], min_psnr: float) -> dict[str, float] | None:
    """The row with the lowest NIQE among those with PSNR >= ``min_psnr`` (None if none)."""
    allowed = [row for row in rows if row["psnr"] >= min_psnr]
    return min(allowed, key=lambda row: row["niqe"]) if allowed else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--psnr", type=Path, required=True, help="the PSNR-oriented generator (alpha = 0)")
    p.add_argument("--gan", type=Path, required=True, help="its GAN-fine-tuned generator (alpha = 1)")
    p.add_argument("--list", type=Path, required=True, help="evaluation list (create_data_lists.py)")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    p.add_argument("--min-psnr", type=float, default=None, help="the rule's PSNR bound (dB)")
    p.add_argument("--csv", type=Path, default=None, help="write the rows here")
    args = p.parse_args(argv)
    for path in (args.psnr, args.gan, args.list):
        if not path.is_file():
            p.error(f"{path}: no such file")
    if any(not 0.0 <= alpha <= 1.0 for alpha in args.alphas):
        p.error(f"--alphas must lie in [0, 1], got {args.alphas}")
    try:  # a file that is not a generator checkpoint or a list, or two architectures: one line
        data = EvalDataset(str(args.list))
        rows = scan(args.psnr, args.gan, data, args.alphas)
    except (ValueError, OSError) as err:  # CheckpointError is a ValueError
        p.error(" ".join(str(err).split()))
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, ["alpha", "psnr", "ssim", "niqe", "sharpness"])
            writer.writeheader()
            writer.writerows(rows)
        print(f"saved {args.csv}")
    if args.min_psnr is not None:
        best = choose(rows, args.min_psnr)
        if best is None:
            print(f"no alpha keeps PSNR >= {args.min_psnr} dB")
            return 1
        print(f"rule (lowest NIQE with PSNR >= {args.min_psnr} dB): alpha {best['alpha']:.2f} "
              f"({best['psnr']:.3f} dB, NIQE {best['niqe']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
