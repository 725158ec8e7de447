"""course/student_edition.py: the student edition made from this reference (not shipped to students).

One edition is built per test session (a subprocess, as staff run it); its task tests run in
subprocesses with ``-q -x`` and one thread, so the file takes about a minute.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "course"))

import student_edition as se  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def edition(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("edition") / "srgan-course"
    proc = _run([str(REPO / "course" / "student_edition.py"), str(out)], cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return out


def _reference_sources() -> dict[str, list[str]]:
    """Python sources of the reference with regions: ``{path: [source, ...]}`` (notebooks per cell)."""
    sources: dict[str, list[str]] = {}
    for name in se.listed_files(REPO):
        if not se.in_edition(name, False):
            continue
        path = REPO / name
        if name.endswith(".py"):
            sources[name] = [path.read_text(encoding="utf-8")]
        elif name.endswith(".ipynb"):
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
            sources[name] = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return sources


def _lines_outside_regions(text: str) -> set[str]:
    """Stripped lines of ``text`` that are not inside a region (those may appear in the edition)."""
    lines, inside = set(), False
    for line in text.splitlines():
        if line.strip() in (se.BEGIN, se.END):
            inside = line.strip() == se.BEGIN
        elif not inside:
            lines.add(line.strip())
    return lines


def _edition_text(edition: Path, name: str) -> str:
    path = edition / name
    if name.endswith(".ipynb"):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return path.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------ the converter


def test_a_region_becomes_a_not_implemented_error_with_its_task():
    src = ("def f(x):\n    \"\"\"Doc.\"\"\"\n    ### BEGIN SOLUTION\n    ### TASK: f - double x\n"
           "    ###   (paper, Eq. 1)\n    return 2 * x\n    ### END SOLUTION\n")
    out, n = se.strip_solutions(src, "f.py")
    assert n == 1
    assert out == ('def f(x):\n    """Doc."""\n    # YOUR CODE HERE\n'
                   '    raise NotImplementedError("f - double x (paper, Eq. 1)")\n')
    namespace: dict = {}
    exec(compile(out, "f.py", "exec"), namespace)
    with pytest.raises(NotImplementedError, match=r"^f - double x \(paper, Eq\. 1\)$"):
        namespace["f"](1)


def test_notebook_cells_lose_their_regions_outputs_and_counts():
    nb = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["### BEGIN SOLUTION is only text here"]},
        {"cell_type": "code", "execution_count": 3, "metadata": {"execution": {"shell.execute_reply": "t"}},
         "outputs": [{"output_type": "stream", "name": "stdout", "text": ["ok"]}],
         "source": ["config = 1\n", "### BEGIN SOLUTION\n", "### TASK: pre-train G\n", "result = train(config)\n",
                    "### END SOLUTION"]},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    text, n = se.convert_notebook(json.dumps(nb), "train.ipynb")
    cells = json.loads(text)["cells"]
    assert n == 1 and cells[0] == nb["cells"][0]
    assert cells[1]["source"] == 'config = 1\n# YOUR CODE HERE\nraise NotImplementedError("pre-train G")'
    assert (cells[1]["outputs"], cells[1]["execution_count"], cells[1]["metadata"]) == ([], None, {})
    nb["cells"][1]["source"] = ["### END SOLUTION\n"]
    with pytest.raises(se.EditionError, match=r"^train\.ipynb cell 1:1: ### END SOLUTION without"):
        se.convert_notebook(json.dumps(nb), "train.ipynb")


@pytest.mark.parametrize("src, line, what", [
    ("a = 1\n### END SOLUTION\n", 2, "without a"),
    ("### BEGIN SOLUTION\nx = 1\n    ### BEGIN SOLUTION\n### END SOLUTION\n", 3, "cannot nest"),
    ("x = 0\n### BEGIN SOLUTION\nx = 1\n", 2, "never closed"),
    ("### BEGIN SOLUTION (part a)\nx = 1\n### END SOLUTION\n", 1, "alone"),
])
def test_bad_delimiters_are_refused_with_file_and_line(src, line, what):
    with pytest.raises(se.EditionError, match=rf"^m\.py:{line}: .*{what}"):
        se.strip_solutions(src, "m.py")


def _mini_repo(tmp_path: Path, models_py: str) -> Path:
    """A git repository holding the edition tool, its two templates and a ``models.py``, all tracked."""
    repo = tmp_path / "repo"
    (repo / "course").mkdir(parents=True)
    for name in ("student_edition.py", "student_README.md", "report_template.md"):
        shutil.copy(REPO / "course" / name, repo / "course" / name)
    (repo / "models.py").write_text(models_py)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "models.py", "course"], cwd=repo, check=True)
    return repo


def test_the_cli_refuses_unbalanced_delimiters_in_one_line_and_writes_nothing(tmp_path):
    repo = _mini_repo(tmp_path, "class A:\n    ### BEGIN SOLUTION\n    pass\n")
    out = tmp_path / "edition"
    proc = _run([str(repo / "course" / "student_edition.py"), str(out)], cwd=repo)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: models.py:2: ### BEGIN SOLUTION is never closed by ### END SOLUTION"]
    assert not out.exists() and not list(tmp_path.glob(".edition.*"))


# ------------------------------------------------------------------------------ the edition


def test_the_edition_holds_no_delimiter_and_no_solution_line(edition):
    sources = _reference_sources()
    regions = 0
    for name, texts in sources.items():
        edited = _edition_text(edition, name)
        edited_lines = {line.strip() for line in edited.splitlines()}
        assert not edited_lines & {se.BEGIN, se.END}, f"{name} keeps a delimiter"
        for text in texts:
            inside = [line for region in se.solution_regions(text) for line in region]
            regions += len(se.solution_regions(text))
            outside = _lines_outside_regions(text)
            leaked = [line for line in inside
                      if line.strip() and not line.strip().startswith("###")
                      and line.strip() not in outside and line.strip() in edited_lines]
            assert not leaked, f"solution lines of {name} in the edition: {leaked[:3]}"
    assert regions >= 8  # models.py alone has 8 regions
    for path in edition.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".ipynb", ".md", ".txt", ".ini"):
            assert se.BEGIN not in path.read_text(encoding="utf-8"), path


def test_the_edition_has_no_outputs_no_weights_and_the_student_files(edition):
    for nb_path in edition.glob("*.ipynb"):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        assert set(nb["metadata"]) <= {"kernelspec", "language_info"}, (nb_path.name, list(nb["metadata"]))
        for cell in nb["cells"]:
            assert set(cell.get("metadata", {})) <= {"tags"}, (nb_path.name, cell.get("metadata"))
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, nb_path.name
    files = {p.relative_to(edition).as_posix() for p in edition.rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith(se.MODEL_SUFFIXES)]
    assert {"README.md", "README_kit.md", "REPORT.md", "course/check_submission.py", "course/report.py",
            "tests/conftest.py", "tests/tasks/test_task1_generator.py", "models.py", "solver.py"} <= files
    assert not {"course/student_edition.py", "tests/test_course.py", "tests/test_models.py", ".ci/run"} & files
    assert (edition / "README.md").read_text() == (REPO / "course" / "student_README.md").read_text()
    assert (edition / "REPORT.md").read_text() == (REPO / "course" / "report_template.md").read_text()
    assert "/REPORT.md" not in (edition / ".gitignore").read_text().splitlines()
    kit_readme = (edition / "README_kit.md").read_text()
    assert se.TEACHER_SECTION not in kit_readme and "## Layout" in kit_readme and "## For contributors" in kit_readme
    for readme in ("README.md", "README_kit.md"):  # no link to a file the students' kit leaves out
        text = (edition / readme).read_text()
        for target in re.findall(r"\]\(([^)\s#]+)", text):
            if "://" not in target:
                assert (edition / target).exists(), (readme, target)
    assert "teachers' README" in kit_readme and "(course/README.md)" not in kit_readme


def test_the_edition_speaks_of_no_shipped_weights(edition):
    """The notebooks' texts about the shipped weights say what the student uses instead."""
    for name in ("train.ipynb", "test.ipynb", "super_resolution.ipynb"):
        cells = json.loads((edition / name).read_text(encoding="utf-8"))["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        assert not re.search(r"shipped (weights|SRResNet|SRGAN|pair)|the kit ships|weights shipped", text,
                             re.IGNORECASE), (name, re.findall(r".{60}shipped.{60}", text, re.IGNORECASE))
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert "put the shipped weights" not in code, name
    train = "".join("".join(c["source"]) for c in json.loads((edition / "train.ipynb").read_text())["cells"])
    assert "No weights ship with this kit" in train and "## 7. Stage 2 from a full-size SRResNet" in train
    assert "No trained weights ship with this kit" in (edition / "README.md").read_text()


def test_the_edition_holds_only_what_git_tracks(tmp_path):
    repo = _mini_repo(tmp_path, "x = 1\n")
    (repo / "scratch.ipynb").write_text("{}")  # untracked, not ignored: a student kit must not get it
    files, _ = se.build_edition(repo)
    assert "models.py" in files and "scratch.ipynb" not in files


def test_the_edition_strips_widget_state_and_output_metadata():
    nb = {"cells": [{"cell_type": "code", "execution_count": 1, "source": "x = 1",
                     "metadata": {"scrolled": True, "tags": ["keep"], "execution": {"t": 1}},
                     "outputs": [{"output_type": "display_data", "metadata": {"w": 1},
                                  "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "m"}}}]}],
          "metadata": {"kernelspec": {"name": "python3"}, "language_info": {"name": "python"},
                       "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {"m": {"loss": 0.1}}}}},
          "nbformat": 4, "nbformat_minor": 5}
    out = json.loads(se.convert_notebook(json.dumps(nb), "n.ipynb")[0])
    assert out["metadata"] == {"kernelspec": {"name": "python3"}, "language_info": {"name": "python"}}
    assert out["cells"][0]["metadata"] == {"tags": ["keep"]} and out["cells"][0]["outputs"] == []


@pytest.mark.parametrize("where", ["through a file", "read-only"])
def test_an_unwritable_output_folder_is_one_line(tmp_path, where):
    if where == "through a file":
        (tmp_path / "a_file").write_text("x")
        out = tmp_path / "a_file" / "edition"
    else:
        out = Path("/proc/srgan-course-edition")  # read-only even for root
    proc = _run([str(REPO / "course" / "student_edition.py"), str(out)], cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {out}: ") and "Traceback" not in proc.stderr


def test_with_weights_adds_the_shipped_generators_only():
    files, _ = se.build_edition(REPO, with_weights=True)
    shipped = {n for n in se.listed_files(REPO) if n.startswith("checkpoints/") and n.endswith(".pth")
               and not n.startswith("checkpoints/resume/")}
    assert shipped and {n for n in files if n.endswith(se.MODEL_SUFFIXES)} == shipped


def test_the_edition_imports_and_its_task_tests_fail_at_the_todos(edition):
    proc = _run(["-c", "import models, solver, datasets, utils"], cwd=edition)
    assert proc.returncode == 0, proc.stderr
    proc = _run(["-m", "pytest", "tests/tasks", "-q", "-x", "-p", "no:cacheprovider"], cwd=edition)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "not implemented yet: ResidualBlock.__init__" in proc.stdout
    assert "Traceback" not in proc.stdout


def test_the_task_tests_pass_with_the_reference_code_copied_in(edition, tmp_path):
    solved = tmp_path / "solved"
    shutil.copytree(edition, solved)
    for name in ("models.py", "solver.py"):
        shutil.copy(REPO / name, solved / name)
    proc = _run(["-m", "pytest", "tests/tasks", "-q", "-x", "-p", "no:cacheprovider"], cwd=solved)
    assert proc.returncode == 0, proc.stdout[-3000:]


_RUN_CELLS = """
import json, sys, traceback
sys.path.insert(0, ".")
cells = [c for c in json.load(open(sys.argv[1]))["cells"] if c["cell_type"] == "code"]
namespace = {"__name__": "__main__"}
for k, cell in enumerate(cells):
    source = "".join(cell["source"])
    try:
        exec(compile(source, f"cell {k}", "exec"), namespace)
    except NotImplementedError as err:
        print(f"TODO at cell {k}: {err}")
        sys.exit(0)
    except BaseException as err:
        print(f"ERROR at cell {k}: {type(err).__name__}: {err}")
        sys.exit(1)
print("no TODO reached")
sys.exit(1)
"""


def test_train_notebook_runs_up_to_the_first_todo(edition):
    """The edition's train.ipynb, cell by cell, stops at a TODO's NotImplementedError, not elsewhere."""
    proc = _run(["-c", _RUN_CELLS, "train.ipynb"], cwd=edition, timeout=300)
    assert proc.returncode == 0 and "TODO at cell" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "SRResNet.__init__" in proc.stdout


def test_with_models_done_the_edition_runs_the_basic_mode_and_stops_at_pretraining(edition, tmp_path):
    """The case's provided training: basic mode runs on the students' networks; stage 1 is theirs."""
    kit = tmp_path / "kit"
    shutil.copytree(edition, kit)
    shutil.copy(REPO / "models.py", kit / "models.py")
    assert _run(["create_data_lists.py", "--sample"], cwd=kit).returncode == 0
    small = ["--profile", "quick", "--patches-per-image", "4", "--val-max-images", "1", "--workers", "0"]
    proc = _run(["solver.py", "--preset", "basic", "--stage2-epochs", "1", "--out", "runs/basic", *small], cwd=kit)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert (kit / "runs" / "basic" / "generator_stage2.pth").is_file()
    assert not (kit / "runs" / "basic" / "generator_stage1.pth").exists()
    proc = _run(["solver.py", "--preset", "srgan-mse", "--stage1-epochs", "1", "--stage2-epochs", "1",
                 "--out", "runs/two-stage", *small], cwd=kit)
    assert proc.returncode != 0 and "solver.pretrain_step - " in proc.stdout + proc.stderr
