"""benchmarks/stage2_curves.py: the validation curves of stage-2 runs drawn from solver.py logs."""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["stage", "epoch", "step", "lr", "loss_g", "psnr", "ssim", "niqe", "seconds"]


def load_script():
    spec = importlib.util.spec_from_file_location("stage2_curves", REPO / "benchmarks" / "stage2_curves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_log(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def two_stage_log(path: Path) -> Path:
    # a stage-1 row (no NIQE) then three stage-2 rows, as solver.py writes them
    rows = [{"stage": 1, "epoch": 1, "step": 10, "lr": 1e-4, "loss_g": 0.1, "psnr": 25.0, "ssim": 0.7, "niqe": "",
             "seconds": 1.0}]
    rows += [{"stage": 2, "epoch": e, "step": 10 + 5 * e, "lr": 1e-4, "loss_g": 0.02, "psnr": 27.0 - 0.1 * e,
              "ssim": 0.74, "niqe": 7.0 - 0.5 * e, "seconds": 2.0} for e in (1, 2, 3)]
    return write_log(path, rows)


def test_read_log_keeps_the_stage2_rows_as_numbers(tmp_path):
    rows = load_script().read_log(two_stage_log(tmp_path / "log.csv"))
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert rows[1]["step"] == 20 and rows[1]["niqe"] == pytest.approx(6.0)


def test_draws_the_figure_with_the_shipped_epoch_marked(tmp_path, monkeypatch):
    script = load_script()
    figures = []
    real_save = script.notebook_helpers.save_figure

    def keep(fig, path, dpi=100):
        figures.append(fig)
        return real_save(fig, path, dpi=dpi)

    monkeypatch.setattr(script.notebook_helpers, "save_figure", keep)
    out = tmp_path / "curves.png"
    a = two_stage_log(tmp_path / "a.csv")
    b = write_log(tmp_path / "b.csv", [{**row, "psnr": float(row["psnr"]) - 1} for row in _rows(a)])
    script.main([str(a), str(b), "--labels", "run a", "run b", "--mark", "1:2", "--out", str(out)])
    assert out.stat().st_size > 10_000  # a real 1600x440 figure, not an empty file
    (fig,) = figures
    psnr_ax, niqe_ax, plane_ax = fig.axes
    # run b's stage-2 epoch 2: step 20, PSNR 26.8 - 1, NIQE 6.0
    for ax, x, y in ((psnr_ax, 20, 26.8 - 1), (niqe_ax, 20, 6.0), (plane_ax, 26.8 - 1, 6.0)):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"run a", "run b", "shipped (epoch 2)"}
        marker = lines["shipped (epoch 2)"]
        assert list(marker.get_xdata()) == [pytest.approx(x)] and list(marker.get_ydata()) == [pytest.approx(y)]
        assert marker.get_color() == lines["run b"].get_color() != lines["run a"].get_color()
    (legend,) = fig.legends  # one legend for the three panels
    assert [t.get_text() for t in legend.get_texts()] == ["run a", "run b", "shipped (epoch 2)"]


def test_two_marks_with_their_own_labels(tmp_path, monkeypatch):
    script = load_script()
    figures = []
    monkeypatch.setattr(script.notebook_helpers, "save_figure", lambda fig, path, dpi=100: figures.append(fig))
    a = two_stage_log(tmp_path / "a.csv")
    b = write_log(tmp_path / "b.csv", [{**row, "niqe": float(row["niqe"]) - 1} for row in _rows(a) if row["niqe"]])
    script.main([str(a), str(b), "--mark", "0:1", "1:3", "--mark-labels", "before", "now", "--out", str(tmp_path / "x.png")])
    plane = figures[0].axes[2]
    lines = {line.get_label(): line for line in plane.get_lines()}
    assert (list(lines["before"].get_xdata()), list(lines["before"].get_ydata())) == ([pytest.approx(26.9)], [6.5])
    assert (list(lines["now"].get_xdata()), list(lines["now"].get_ydata())) == ([pytest.approx(26.7)], [4.5])
    assert lines["now"].get_color() == lines["b"].get_color() != lines["a"].get_color()
    assert lines["now"].get_marker() != lines["before"].get_marker()  # two marks, two shapes


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("extra, message", [
    (["--mark", "0:9"], "has no stage-2 epoch 9"),
    (["--mark", "3:1"], "RUN_INDEX < 1"),
    (["--labels", "x", "y"], "1 logs but 2 labels"),
    (["--mark", "0:1", "--mark-labels", "a", "b"], "1 marks but 2 mark labels"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_:
        load_script().main([str(two_stage_log(tmp_path / "a.csv")), *extra, "--out", str(tmp_path / "x.png")])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_a_log_without_stage2_is_refused(tmp_path, capsys):
    log = write_log(tmp_path / "stage1.csv", [{"stage": 1, "epoch": 1, "step": 10, "lr": 1e-4, "loss_g": 0.1,
                                               "psnr": 25.0, "ssim": 0.7, "niqe": "", "seconds": 1.0}])
    with pytest.raises(SystemExit):
        load_script().main([str(log), "--out", str(tmp_path / "x.png")])
    assert "no stage-2 rows" in capsys.readouterr().err
