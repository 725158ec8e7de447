"""Write the student edition of the kit from this reference repository (nbgrader style).

    python course/student_edition.py OUT_DIR [--with-weights]

The reference marks each part a student writes with two lines, as nbgrader does::

    def forward(self, x):
        ### BEGIN SOLUTION
        ### TASK: ResidualBlock.forward - return x plus self.body(x) (Ledig et al. 2017, Fig. 4)
        return x + self.body(x)
        ### END SOLUTION

In the edition every such region (in ``.py`` files and in notebook code cells) becomes::

        # YOUR CODE HERE
        raise NotImplementedError("ResidualBlock.forward - return x plus self.body(x) (...)")

The message is the region's ``### TASK:`` text (further ``###`` lines right after it continue
it); the signature and docstring around the region stay. Notebooks lose their outputs,
execution counts and all cell and notebook metadata but the kernel, the language and cell
tags (no widget state, no timings). The places in the notebooks that speak of the shipped
weights, which the edition does not hold unless ``--with-weights`` is given, are replaced by
what the student uses instead (``EDITION_TEXTS``; a place that is no longer found stops the tool).

What the edition holds (the same flat layout as the reference):

* every file git tracks (``git ls-files``; untracked files never go), except the
  reference-only ones: this script, the CI script, the reference
  tests (from ``tests/`` only ``conftest.py`` and ``tests/tasks/`` go: the other tests check
  the reference's internals and would fail on unfinished code), the SRResNet's training
  state in ``checkpoints/resume/``, and model files (``.pth``, ``.pt``, ``.ckpt``,
  ``.safetensors``) unless ``--with-weights`` adds the shipped ones in ``checkpoints/``;
* from ``course/`` only what students use: ``check_submission.py``, ``report.py``,
  ``report_template.md``, and the rating tool (``rating.py``, ``rating_page.html``), which
  ``super_resolution.ipynb`` calls to build the Set5 rating session;
* ``README.md`` for students (from ``course/student_README.md``); the reference README
  becomes ``README_kit.md`` (without its section for teachers); ``REPORT.md``, the report to fill in (from
  ``course/report_template.md``);
* ``.gitignore`` without each comment line starting ``# reference only`` and the pattern after it.

Unbalanced or nested delimiters stop the tool with the file and line (exit status 2), and
nothing is written. The edition is first written to a temporary folder beside OUT_DIR, then
renamed, so a failed run never leaves half an edition; an OUT_DIR that cannot be written (a
read-only place, a path through a file) is refused in one line.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
TASK = "### TASK:"
MODEL_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")

# Reference-only files and folders (paths relative to the repository root).
REFERENCE_ONLY_FILES = {"course/student_edition.py", "course/student_README.md", ".ci/run"}
REFERENCE_ONLY_DIRS = ("checkpoints/resume/", ".ci/")
# From course/ and tests/ only these go into the edition.
COURSE_FILES = {"course/check_submission.py", "course/report.py", "course/report_template.md",
                "course/rating.py", "course/rating_page.html"}
TEST_FILES = {"tests/conftest.py"}
TEST_DIRS = ("tests/tasks/",)
GITIGNORE_DROP = "# reference only"
TEACHER_SECTION = "## Course edition (for teachers)"  # of README.md, left out of README_kit.md
# Notebook metadata kept in the edition (the rest, e.g. widget state, goes); per cell only tags.
NOTEBOOK_METADATA = ("kernelspec", "language_info")
CELL_METADATA = ("tags",)

# Places in the notebooks that speak of the shipped weights, which the edition does not hold:
# {notebook: [(regular expression, replacement)]}; each must match once in the notebook's cells.
_NO_WEIGHTS = ("No weights ship with this kit: `test.ipynb` and `super_resolution.ipynb` use the generators "
               "that `train.ipynb` and `solver.py` write under `runs/`")
EDITION_TEXTS: dict[str, list[tuple[str, str]]] = {
    "train.ipynb": [
        (r"\* \*\*stage 2 from the shipped SRResNet\*\* \(section 7\):.*?(?=\n\n|\n\* |\Z)",
         "* **stage 2 from a full-size SRResNet** (section 7), when you have one: the GAN stage alone, "
         "started from\n  a full-size SRResNet you trained (this kit ships no weights; the section is skipped without one)."),
        (r"## 7\. Stage 2 from the shipped SRResNet\n.*\Z",
         "## 7. Stage 2 from a full-size SRResNet\n\n"
         "The quick networks above are small and have seen a few hundred patches: they do not beat\n"
         "bicubic yet. The paper starts SRGAN from an SRResNet trained for 10^6 steps. This kit ships no\n"
         "weights, so this section is skipped unless you put a full-size SRResNet of your own at\n"
         "`checkpoints/srresnet_x4.pth` (e.g. the `generator_stage1.pth` of a long `solver.py` run):\n"
         "stage 2 then starts from it with `pretrained=...`, which skips stage 1, with the quick\n"
         "profile's small discriminator trained from scratch."),
        (r"(a zoomed region of the first one: bicubic, the basic mode, the two stages), the shipped SRResNet\n"
         r"and stage 2 started from it(, next to the original\.).*\Z",
         "\\1 (and, when section 7 ran, the\nSRResNet it started from and its stage 2)\\2"),
        (r"\* \*\*The shipped weights\.\*\*.*?(?=\n\* |\Z)",
         "* **Weights.** " + _NO_WEIGHTS + " (a file you put at `checkpoints/srresnet_x4.pth` or\n"
         "  `checkpoints/srgan_x4.pth` is used first)."),
    ],
    "super_resolution.ipynb": [
        (r"\(the GAN\ngenerator starts from the PSNR one and is fine-tuned; the shipped SRGAN.*?with alpha\)\.",
         "(the GAN\ngenerator starts from the PSNR one and is fine-tuned: the two stages of one `train.ipynb` run)."),
        (r" The curves below give PSNR and\nNIQE for each alpha, for both\. On the shipped pair.*?as ESRGAN did\.",
         " The curves below give PSNR and\nNIQE for each alpha, for both; judge the panels by eye too, as ESRGAN did."),
        (r", or put the shipped weights into checkpoints/\. ", ". "),
    ],
}


class EditionError(ValueError):
    """A problem in the reference that stops the edition; the message is one line."""


def task_message(task_lines: list[str], where: str) -> str:
    """The ``NotImplementedError`` message of a region from its ``### TASK:`` lines."""
    if not task_lines:
        return f"not implemented yet: complete this part ({where})"
    text = " ".join(line.strip().lstrip("#").strip() for line in task_lines)
    return text[len("TASK:"):].strip() if text.startswith("TASK:") else text


def strip_solutions(text: str, where: str) -> tuple[str, int]:
    """Replace every solution region of ``text`` (Python source) by a ``NotImplementedError``.

    Args:
        text: a ``.py`` file or a notebook code cell's source.
        where: the file (and cell) named in error messages, e.g. ``models.py``.

    Returns:
        ``(new text, number of regions)``.

    Raises:
        EditionError: an END without BEGIN, a BEGIN inside a region, a region never closed,
            or a line that starts with a delimiter but has more text, each with ``where:line``.
    """
    out: list[str] = []
    lines = text.splitlines(keepends=True)
    region_start = None  # line number of the open region's BEGIN
    indent = ""
    body: list[str] = []
    count = 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        is_begin, is_end = stripped == BEGIN, stripped == END
        if not (is_begin or is_end) and (stripped.startswith(BEGIN) or stripped.startswith(END)):
            raise EditionError(f"{where}:{number}: a delimiter line must hold the delimiter alone, "
                               f"found {stripped!r}")
        if is_begin:
            if region_start is not None:
                raise EditionError(f"{where}:{number}: {BEGIN} inside the region opened at line "
                                   f"{region_start} (regions cannot nest; close it with {END} first)")
            region_start, indent, body = number, line[: len(line) - len(line.lstrip())], []
            continue
        if is_end:
            if region_start is None:
                raise EditionError(f"{where}:{number}: {END} without a {BEGIN} before it")
            task: list[str] = []
            for body_line in body:
                if body_line.strip().startswith(TASK) or (task and body_line.strip().startswith("###")):
                    task.append(body_line)
                else:
                    break
            message = task_message(task, f"{where}:{region_start}")
            newline = "\n" if line.endswith("\n") else ""
            out.append(f"{indent}# YOUR CODE HERE\n")
            out.append(f"{indent}raise NotImplementedError({json.dumps(message, ensure_ascii=False)}){newline}")
            region_start, count = None, count + 1
            continue
        if region_start is None:
            out.append(line)
        else:
            body.append(line)
    if region_start is not None:
        raise EditionError(f"{where}:{region_start}: {BEGIN} is never closed by {END}")
    return "".join(out), count


def solution_regions(text: str) -> list[list[str]]:
    """The lines inside each region of ``text`` (delimiters excluded; no checks)."""
    regions, current = [], None
    for line in text.splitlines():
        if line.strip() == BEGIN:
            current = []
        elif line.strip() == END and current is not None:
            regions.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return regions


def replace_texts(nb: dict, replacements: list[tuple[str, str]], where: str) -> None:
    """Apply ``[(regular expression, replacement)]`` to the cells of ``nb`` in place; each
    expression must match exactly once in the whole notebook (EditionError otherwise)."""
    for pattern, replacement in replacements:
        hits = 0
        for cell in nb.get("cells", []):
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else source
            new, n = re.subn(pattern, replacement, source, flags=re.DOTALL)
            if n:
                cell["source"], hits = new, hits + n
        if hits != 1:
            raise EditionError(f"{where}: the text {pattern[:60]!r} of EDITION_TEXTS matches {hits} times, not once; "
                               "update EDITION_TEXTS in course/student_edition.py to the notebook's text")


def convert_notebook(text: str, where: str, replacements: list[tuple[str, str]] | None = None) -> tuple[str, int]:
    """Strip the solution regions of every code cell; clear outputs, counts and all metadata
    but the kernel, the language and cell tags; apply ``replacements`` (see :func:`replace_texts`)."""
    nb = json.loads(text)
    count = 0
    nb["metadata"] = {k: v for k, v in nb.get("metadata", {}).items() if k in NOTEBOOK_METADATA}
    for index, cell in enumerate(nb.get("cells", [])):
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in CELL_METADATA}
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        new, n = strip_solutions(source, f"{where} cell {index}")
        count += n
        cell["source"] = new
        cell["outputs"] = []
        cell["execution_count"] = None
    if replacements:
        replace_texts(nb, replacements, where)
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n", count


def drop_section(markdown: str, heading: str) -> str:
    """``markdown`` without the section that starts with the line ``heading`` (up to the next ``## ``)."""
    out, skipping = [], False
    for line in markdown.splitlines(keepends=True):
        if line.rstrip() == heading:
            skipping = True
        elif skipping and line.startswith("## "):
            skipping = False
        if not skipping:
            out.append(line)
    return "".join(out)


_MD_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def unlink_missing(markdown: str, present: set[str]) -> str:
    """``markdown`` with each relative link to a file not in ``present`` (edition paths) reduced
    to its text, so a students' README points to nothing the kit leaves out."""
    def keep_or_text(m: re.Match) -> str:
        target = m.group(3).split("#")[0]
        if m.group(1) or "://" in target or target.startswith(("#", "mailto:")) or not target:
            return m.group(0)
        return m.group(0) if target.lstrip("./") in present else m.group(2)
    return _MD_LINK.sub(keep_or_text, markdown)


def drop_reference_lines(gitignore: str) -> str:
    """``.gitignore`` without each comment line starting ``# reference only`` and the line after it."""
    lines = gitignore.splitlines(keepends=True)
    kept, skip = [], False
    for line in lines:
        if line.startswith(GITIGNORE_DROP):
            skip = True
        elif skip:
            skip = False
        else:
            kept.append(line)
    return "".join(kept)


def listed_files(repo: Path) -> list[str]:
    """Files of ``repo`` that git tracks (``git ls-files``), that exist; untracked files never."""
    try:
        proc = subprocess.run(["git", "ls-files", "--cached", "-z"],
                              cwd=repo, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise EditionError(f"cannot list the files of {repo} with git ({err}); run this tool in a git "
                           "checkout of the reference") from None
    names = sorted({n for n in proc.stdout.decode().split("\0") if n})
    return [n for n in names if (repo / n).is_file()]


def in_edition(name: str, with_weights: bool) -> bool:
    """Whether the reference file ``name`` (relative POSIX path) goes into the edition."""
    if name in REFERENCE_ONLY_FILES or name.startswith(REFERENCE_ONLY_DIRS):
        return False
    if name.startswith("course/"):
        return name in COURSE_FILES
    if name.startswith("tests/"):
        return name in TEST_FILES or name.startswith(TEST_DIRS)
    if name.lower().endswith(MODEL_SUFFIXES):
        return with_weights and name.startswith("checkpoints/")
    return True


def build_edition(repo: Path, with_weights: bool = False) -> tuple[dict[str, bytes], int]:
    """The edition's files in memory: ``({relative path: content}, number of regions replaced)``.

    Raises:
        EditionError: a delimiter problem (file and line), or a ``.py`` file that is no
            valid Python once its regions are replaced.
    """
    files: dict[str, bytes] = {}
    regions = 0
    for name in listed_files(repo):
        if not in_edition(name, with_weights):
            continue
        data = (repo / name).read_bytes()
        if name.endswith(".py"):
            text, n = strip_solutions(data.decode("utf-8"), name)
            regions += n
            try:
                compile(text, name, "exec")
            except SyntaxError as err:
                raise EditionError(f"{name}:{err.lineno}: not valid Python once its regions are replaced "
                                   f"({err.msg}); a region must hold whole statements") from None
            data = text.encode("utf-8")
        elif name.endswith(".ipynb"):
            text, n = convert_notebook(data.decode("utf-8"), name, None if with_weights else EDITION_TEXTS.get(name))
            regions += n
            data = text.encode("utf-8")
        elif name == ".gitignore":
            data = drop_reference_lines(data.decode("utf-8")).encode("utf-8")
        if name == "README.md":
            name = "README_kit.md"
            data = drop_section(data.decode("utf-8"), TEACHER_SECTION).encode("utf-8")
        files[name] = data
    for source, target in (("course/student_README.md", "README.md"), ("course/report_template.md", "REPORT.md")):
        path = repo / source
        if not path.is_file():
            raise EditionError(f"{source} is missing from the reference; it becomes the edition's {target}")
        files[target] = path.read_bytes()
    for name in ("README_kit.md", "README.md"):
        if name in files:
            files[name] = unlink_missing(files[name].decode("utf-8"), set(files)).encode("utf-8")
    return files, regions


def write_edition(files: dict[str, bytes], out_dir: Path) -> None:
    """Write ``files`` into ``out_dir`` (which must not exist or be empty), all or nothing."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise EditionError(f"{out_dir} exists and is not an empty folder; choose a new output folder")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as err:
        raise EditionError(f"cannot write {out_dir}: {err.strerror or err}; choose a folder you can write "
                           "(e.g. in your home folder)") from None
    try:
        for name, data in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EditionError(f"cannot write {out_dir}: {err.strerror or err} ({err.filename or out_dir}); "
                           "free some space or choose another folder") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring); returns the exit status (2: refused)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("out_dir", type=Path, help="folder to create (must not exist, or be empty)")
    parser.add_argument("--with-weights", action="store_true",
                        help="also copy the shipped generator weights of checkpoints/ (for staff)")
    args = parser.parse_args(argv)
    out_dir = args.out_dir.resolve()
    try:
        if out_dir == REPO or REPO in out_dir.parents:
            raise EditionError(f"{args.out_dir} is inside the reference repository; choose a folder outside it")
        files, regions = build_edition(REPO, args.with_weights)
        write_edition(files, out_dir)
    except EditionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    weights = [n for n in files if n.endswith(MODEL_SUFFIXES)]
    print(f"student edition: {len(files)} files in {out_dir} ({regions} solution regions replaced"
          f"{'; weights: ' + ', '.join(weights) if weights else '; no weights'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
