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

import notebook_helpers  # noqa: E402


def read_log(path: Path) -> list[dict[str, float]]:
    """Stage-2 rows of a ``log.csv`` as floats (empty cells dropped)."""
    with open(path, newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    return [row for row in rows if row.get("stage") == 2]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("logs", nargs="+", type=Path, help="log.csv files of stage-2 runs")
    p.add_argument("--labels", nargs="*", default=None, help="one label per log (default: file names)")
    p.add_argument("--mark", default=None, help="RUN_INDEX:EPOCH of the shipped epoch")
    p.add_argument("--out", type=Path, default=Path("results/stage2_curves.png"))
    args = p.parse_args(argv)
    labels = args.labels or [path.stem for path in args.logs]
    if len(labels) != len(args.logs):
        p.error(f"{len(args.logs)} logs but {len(labels)} labels")
    runs = []
    for path in args.logs:
        if not path.is_file():
            p.error(f"{path}: no such file")
        rows = read_log(path)
        if not rows or any(key not in rows[0] for key in ("step", "psnr", "niqe")):
            p.error(f"{path}: no stage-2 rows with step, psnr and niqe (a solver.py log.csv of a stage-2 run?)")
        runs.append(rows)
    mark = None
    if args.mark:
        run, _, epoch = args.mark.partition(":")
        if not (run.isdigit() and epoch.isdigit() and int(run) < len(runs)):
            p.error(f"--mark {args.mark}: expected RUN_INDEX:EPOCH with RUN_INDEX < {len(runs)}")
        mark = next((row for row in runs[int(run)] if row["epoch"] == int(epoch)), None)
        if mark is None:
            p.error(f"--mark {args.mark}: {args.logs[int(run)]} has no stage-2 epoch {epoch}")
        mark_run = int(run)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, (rows, label) in enumerate(zip(runs, labels)):
        steps = [row["step"] for row in rows]
        for ax, key in zip(axes, ("psnr", "niqe")):
            line, = ax.plot(steps, [row[key] for row in rows], marker=".", label=label)
            if mark is not None and k == mark_run:
                ax.plot(mark["step"], mark[key], "o", ms=11, mfc="none", color=line.get_color(),
                        label=f"shipped (epoch {int(mark['epoch'])})")
    for ax, title in zip(axes, ("PSNR (dB, Y channel), higher = closer to HR", "NIQE, lower = more natural")):
        ax.set_xlabel("stage-2 step")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("stage 2 on the validation images (the validated generator: the EMA when the run keeps one)",
                 fontsize=10)
    fig.tight_layout()
    notebook_helpers.save_figure(fig, args.out, dpi=100)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
