"""Validation curves of stage-2 runs: PSNR and NIQE of the validated generator by step.

Reads the ``log.csv`` of ``solver.py`` runs (one row per epoch; with ``stage2.ema_decay`` the
validated generator is the EMA) and draws PSNR and NIQE against the step, one line per run,
with a marker on the shipped epoch when ``--mark RUN_INDEX:EPOCH`` is given.

    python benchmarks/stage2_curves.py benchmarks/stage2/srgan_adv1e-3.csv \\
        benchmarks/stage2/srgan_adv5e-3.csv --labels "adversarial 1e-3" "adversarial 5e-3" \\
        --mark 0:37 --out benchmarks/stage2_val20.png
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import utils  # noqa: E402


def read_log(path: Path) -> list[dict[str, float]]:
    """Stage-2 rows of a ``log.csv`` as floats (empty cells dropped)."""
    with open(path, newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    return [row for row in rows if row.get("stage") == 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("logs", nargs="+", type=Path, help="log.csv files of stage-2 runs")
    p.add_argument("--labels", nargs="*", default=None, help="one label per log (default: file names)")
    p.add_argument("--mark", default=None, help="RUN_INDEX:EPOCH of the shipped epoch")
    p.add_argument("--out", type=Path, default=Path("results/stage2_curves.png"))
    args = p.parse_args()
    labels = args.labels or [path.stem for path in args.logs]
    if len(labels) != len(args.logs):
        p.error(f"{len(args.logs)} logs but {len(labels)} labels")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, (path, label) in enumerate(zip(args.logs, labels)):
        rows = read_log(path)
        steps = [row["step"] for row in rows]
        for ax, key in zip(axes, ("psnr", "niqe")):
            line, = ax.plot(steps, [row[key] for row in rows], marker=".", label=label)
            if args.mark and int(args.mark.split(":")[0]) == k:
                shipped = next(row for row in rows if row["epoch"] == int(args.mark.split(":")[1]))
                ax.plot(shipped["step"], shipped[key], "o", ms=11, mfc="none", color=line.get_color(),
                        label=f"shipped (epoch {int(shipped['epoch'])})")
    for ax, title in zip(axes, ("PSNR (dB, Y channel), higher = closer to HR", "NIQE, lower = more natural")):
        ax.set_xlabel("stage-2 step")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("stage 2 on the validation images (the validated generator: the EMA when the run keeps one)",
                 fontsize=10)
    fig.tight_layout()
    utils.save_figure(fig, args.out, dpi=100)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
