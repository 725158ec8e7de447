"""Validation curves of stage-2 runs: PSNR and NIQE of the validated generator by step.

Reads the ``log.csv`` of ``solver.py`` runs (one row per epoch; with ``stage2.ema_decay`` the
validated generator is the EMA) and draws PSNR and NIQE against the step, and NIQE against
PSNR (the perception-distortion plane: down and right is better on both), one line per run,
with a marker on each chosen epoch given by ``--mark RUN_INDEX:EPOCH`` (labelled by
``--mark-labels``, default "shipped (epoch N)").

    python benchmarks/stage2_curves.py benchmarks/stage2/srgan_adv1e-3.csv \\
        benchmarks/stage2/srgan_adv5e-3.csv --labels "adversarial 1e-3" "adversarial 5e-3" \\
        --mark 0:37 --out benchmarks/stage2_val20.png
"""
from __future__ import annotations

import argparse
import csv
import math
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
    p.add_argument("--mark", nargs="*", default=[], help="RUN_INDEX:EPOCH of each epoch to mark")
    p.add_argument("--mark-labels", nargs="*", default=None,
                   help="one legend label per --mark (default: 'shipped (epoch N)')")
    p.add_argument("--out", type=Path, default=Path("results/stage2_curves.png"))
    args = p.parse_args(argv)
    labels = args.labels or [path.stem for path in args.logs]
    if len(labels) != len(args.logs):
        p.error(f"{len(args.logs)} logs but {len(labels)} labels")
    if args.mark_labels is not None and len(args.mark_labels) != len(args.mark):
        p.error(f"{len(args.mark)} marks but {len(args.mark_labels)} mark labels")
    runs = []
    for path in args.logs:
        if not path.is_file():
            p.error(f"{path}: no such file")
        rows = read_log(path)
        if not rows or any(key not in rows[0] for key in ("step", "psnr", "niqe")):
            p.error(f"{path}: no stage-2 rows with step, psnr and niqe (a solver.py log.csv of a stage-2 run?)")
        runs.append(rows)
    marks = []  # (run index, row, label)
    for k, text in enumerate(args.mark):
        run, _, epoch = text.partition(":")
        if not (run.isdigit() and epoch.isdigit() and int(run) < len(runs)):
            p.error(f"--mark {text}: expected RUN_INDEX:EPOCH with RUN_INDEX < {len(runs)}")
        row = next((row for row in runs[int(run)] if row["epoch"] == int(epoch)), None)
        if row is None:
            p.error(f"--mark {text}: {args.logs[int(run)]} has no stage-2 epoch {epoch}")
        label = args.mark_labels[k] if args.mark_labels is not None else f"shipped (epoch {int(row['epoch'])})"
        marks.append((int(run), row, label))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    panels = (("step", "psnr"), ("step", "niqe"), ("psnr", "niqe"))
    for k, (rows, label) in enumerate(zip(runs, labels)):
        for ax, (x, y) in zip(axes, panels):
            line, = ax.plot([row[x] for row in rows], [row[y] for row in rows], marker=".", label=label)
            for m, (run, row, mark_label) in enumerate(marks):
                if run == k:  # the run's colour; a shape of its own, to tell two marks of one run apart
                    ax.plot(row[x], row[y], "osD^v"[m % 5], ms=11, mfc="none", color=line.get_color(),
                            label=mark_label)
    titles = ("PSNR (dB, Y channel), higher = closer to HR", "NIQE, lower = more natural",
              "NIQE against PSNR: lower right is better on both")
    for ax, title, (x, _) in zip(axes, titles, panels):
        ax.set_xlabel("stage-2 step" if x == "step" else "PSNR (dB)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[2].set_ylabel("NIQE")
    fig.suptitle("stage 2 on the validation images (the validated generator: the EMA when the run keeps one)",
                 fontsize=10)
    # one legend under the panels, where it covers no curve
    handles, names = axes[0].get_legend_handles_labels()
    rows = math.ceil(len(names) / 3)
    fig.tight_layout(rect=(0, 0.05 * rows, 1, 1))
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8, frameon=False)
    notebook_helpers.save_figure(fig, args.out, dpi=100)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
