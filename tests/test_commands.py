"""Every shell command written in the READMEs (the kit's, the model card, the teachers', the
bundled data's) and in the notebooks' text works.

The commands are read from the files themselves (fenced code blocks, inline code spans that
start with a program, ``python X.py ...`` in notebook code), so a command added or changed
later is checked too, and one that stops working fails a test named after it. Cheap commands
run for real in a temporary copy of the kit (``create_data_lists.py --sample``, ``--help``,
``mkdir``/``cp``, the default lists, the 291-image list with small made-up folders); downloads
run against a local HTTP server on 127.0.0.1; training, benchmarks and installs are parsed by
their real argument parsers and their file arguments checked.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import create_data_lists as cdl
import solver
REPO = Path(__file__).resolve().parents[1]  # not from conftest: tests/tasks has a conftest.py too
from test_download import FileServer, make_tar, make_zip, md5, png_bytes

# --------------------------------------------------------------------------- finding the commands
PROGRAMS = ("python", "python3", "pip", "pytest", "jupyter", "mkdir", "cp", ".", "source")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`]+)`")
# in notebook code (strings, comments): "python [-m module ...] script.py args" up to a quote or "("
CODE_COMMAND = re.compile(r"\bpython3? (?:-m [\w.]+ [^\"'`(\n]*?)?[\w/.-]+\.py\b[^\"'`(\n]*")
PLACEHOLDER = re.compile(r"<[^<>\n]+>")


def _is_command(text: str) -> bool:
    words = text.split()
    if len(words) < 2 or words[0] not in PROGRAMS:
        return False
    return words[0] not in (".", "source") or words[1].endswith("activate")


def _from_markdown(text: str, where: str) -> list[tuple[str, str]]:
    found = []
    for lang, body in FENCE.findall(text):
        if lang in ("", "bash", "sh", "shell", "console"):
            body = body.replace("\\\n", " ")
            found += [(where, line.strip()) for line in body.splitlines()
                      if line.strip() and not line.strip().startswith("#")]
    for span in INLINE.findall(FENCE.sub("", text)):
        span = " ".join(span.split())  # a span may be wrapped over two lines
        if _is_command(span):
            found.append((where, span))
    return found


# the user-facing documents: the kit's README, the model card, the teachers' README, the data's README
DOCUMENTS = ("README.md", "checkpoints/README.md", "course/README.md", "benchmarks/data/README.md")


def documented_commands() -> list[tuple[str, str]]:
    """``(where, command line)`` for every command in the DOCUMENTS and the notebooks, in order."""
    found = []
    for doc in DOCUMENTS:
        found += _from_markdown((REPO / doc).read_text(encoding="utf-8"), doc)
    for nb in sorted(REPO.glob("*.ipynb")):
        for k, cell in enumerate(json.loads(nb.read_text())["cells"]):
            text, where = "".join(cell["source"]), f"{nb.name} cell {k}"
            if cell["cell_type"] == "markdown":
                found += _from_markdown(text, where)
            elif cell["cell_type"] == "code":
                found += [(where, m.strip()) for m in CODE_COMMAND.findall(text)]
    return found


COMMANDS = documented_commands()


def split_chain(line: str) -> list[list[str]]:
    """A command line as its ``&&``-separated commands (``#`` comments dropped); placeholders
    such as ``<T91 folder>`` become one word each, ``<...>`` kept."""
    protected = PLACEHOLDER.sub(lambda m: m.group(0).replace(" ", "\0"), line)
    words = [w.replace("\0", " ") for w in shlex.split(protected, comments=True)]
    chain, current = [], []
    for word in words:
        if word == "&&":
            chain.append(current)
            current = []
        else:
            current.append(word)
    return chain + [current]


def is_placeholder(word: str) -> bool:
    return word == "..." or bool(PLACEHOLDER.search(word))


# --------------------------------------------------------------------------- what the documents produce
def _documented_lists() -> set[str]:
    """Data lists that a documented create_data_lists.py command writes (paths as written)."""
    lists = set()
    for _, line in COMMANDS:
        for argv in split_chain(line):
            if argv[:2] == ["python", "create_data_lists.py"] and "--help" not in argv:
                args = cdl.build_parser().parse_args(argv[2:])
                out = args.output or f"{args.root}/lists"
                names = {"train", cdl.SAMPLE_TEST_NAME, *cdl.DEFAULT_TEST} | set(cdl._parse_test(args.test or []))
                lists |= {f"{out}/{name}.json" for name in names}
    return lists


def _documented_runs() -> set[str]:
    """Run folders a documented solver.py command trains into."""
    runs = set()
    for _, line in COMMANDS:
        for argv in split_chain(line):
            if "solver.py" in argv and "--out" in argv and "--resume" not in argv:
                runs.add(argv[argv.index("--out") + 1])
    return runs


# --------------------------------------------------------------------------- a copy of the kit to run in
@pytest.fixture
def kit(tmp_path, monkeypatch) -> Path:
    """A copy of the kit (code, requirements, bundled data; weights and notebooks linked)."""
    root = tmp_path / "kit"
    root.mkdir()
    for path in REPO.iterdir():
        if path.suffix in (".py", ".txt", ".ini", ".md") and path.is_file():
            shutil.copy(path, root / path.name)
        elif path.suffix == ".ipynb" or path.name == "checkpoints":
            (root / path.name).symlink_to(path)
    for folder in ("benchmarks", "course"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(root)
    return root


def run_cli(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@lru_cache(maxsize=None)
def script_help(script: str, subcommand: str | None = None) -> str:
    """The ``--help`` text of a kit script, or of one of its subcommands (run once each)."""
    argv = ["python", script] + ([subcommand] if subcommand else []) + ["--help"]
    done = run_cli(argv, REPO)
    assert done.returncode == 0, f"`{' '.join(argv)}` failed:\n{done.stderr[-2000:]}"
    return done.stdout


def parse(parser_call, argv: list[str], command: str):
    """Run an argparse parser on ``argv``; a usage error fails with the command and argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser_call(argv)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            pytest.fail(f"`{command}`: the argument parser refuses it:\n{err.getvalue()}")
        return None


def save_png(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


# --------------------------------------------------------------------------- one check per program
def check_create_data_lists(argv: list[str], command: str, kit: Path, server: FileServer, monkeypatch) -> None:
    args = parse(cdl.build_parser().parse_args, argv[2:], command)
    if args is None:  # --help
        done = run_cli(argv, kit)
        assert done.returncode == 0 and "--download" in done.stdout, f"`{command}`: {done.stderr[-2000:]}"
        return
    if args.sample:  # the quick start's own command: for real, as a user runs it
        done = run_cli(argv, kit)
        assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr, f"`{command}`:\n{done.stderr[-2000:]}"
        for name in ("train", cdl.SAMPLE_TEST_NAME):
            assert cdl.load_data_list(kit / "data/lists" / f"{name}.json")["images"], f"`{command}`: no {name} list"
        return
    if args.download:
        serve_fake_downloads(server, monkeypatch)
    # placeholders (<T91 folder>, ...) become small image folders made here
    real = []
    for k, word in enumerate(argv[2:]):
        if is_placeholder(word):
            folder = kit / "made-up" / f"folder{k}"
            for j in range(2):
                save_png(folder / f"{j}.png", 100, 104, seed=10 * k + j)
            word = str(folder)
        real.append(word)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cdl.main(real)
    assert code == 0, f"`{command}` exited {code}:\n{out.getvalue()[-2000:]}"
    args = cdl.build_parser().parse_args(real)
    lists = Path(args.output or f"{args.root}/lists")
    expected = set(cdl._parse_test(args.test or []))
    if args.train:
        expected.add("train")
    for name in args.download or []:
        expected |= {"train", "DIV2K-val"} if name == "div2k" else {"Set5", "Set14", "B100", "Urban100"}
    if not (args.train or args.test or args.download):
        expected |= set(cdl.BUNDLED_SETS)  # a fresh clone: the bundled Set5/Set14
    for name in sorted(expected):
        assert cdl.load_data_list(lists / f"{name}.json")["images"], f"`{command}`: no images in the {name} list"


def serve_fake_downloads(server: FileServer, monkeypatch) -> None:
    """The download table, pointed at small archives of the same layout on the local server."""
    files = {}
    for split in ("train", "valid"):
        for k in (1, 2):
            files[f"DIV2K_{split}_HR.zip/DIV2K_{split}_HR/{k:04d}.png"] = png_bytes(100, 104, k)
            files[f"DIV2K_{split}_LR_bicubic_X4.zip/DIV2K_{split}_LR_bicubic/X4/{k:04d}x4.png"] = png_bytes(25, 26, 9 + k)
    for k, name in enumerate(("Set5", "Set14", "B100", "Urban100")):
        files[f"benchmark.tar/benchmark/{name}/HR/img.png"] = png_bytes(40, 44, 20 + k)
        files[f"benchmark.tar/benchmark/{name}/LR_bicubic/X4/imgx4.png"] = png_bytes(10, 11, 30 + k)
    table = {}
    for name, items in cdl.DOWNLOADS.items():
        table[name] = []
        for item in items:
            archive = item["url"].rsplit("/", 1)[-1]
            members = {key.split("/", 1)[1]: data for key, data in files.items() if key.split("/", 1)[0] == archive}
            assert members, f"no fake content for {archive}: teach test_commands.py its layout"
            data = make_tar(members) if archive.endswith(".tar") else make_zip(members)
            server.files["/" + archive] = data
            table[name].append(dict(item, url=server.url("/" + archive), md5=md5(data)))
    monkeypatch.setattr(cdl, "DOWNLOADS", table)


def check_solver(argv: list[str], command: str, kit: Path, prepared: bool = False) -> None:
    """``prepared``: commands before it in the same line made its files (a resume must find them)."""
    args = parse(solver.parse_args, argv, command)
    if args is None:  # --help
        done = run_cli(["python", "solver.py", "--help"], kit)
        assert done.returncode == 0 and "--preset" in done.stdout, f"`{command}`: {done.stderr[-2000:]}"
        return
    assert args.preset is None or args.preset in solver.PRESETS, f"`{command}`: unknown preset {args.preset}"
    assert args.profile is None or args.profile in solver.PROFILES, f"`{command}`: unknown profile {args.profile}"
    for item in args.set:
        key, _, text = item.partition("=")
        try:
            solver.make_config(args.preset or "srgan-vgg54", args.profile or "full", **{key: json.loads(text)})
        except Exception as err:  # noqa: BLE001 - any refusal is the command's failure
            pytest.fail(f"`{command}`: --set {item} is refused: {err}")
    made_lists = _documented_lists()
    for value in (getattr(args, "data.train_list"), getattr(args, "data.val_list")):
        if value is not None and not is_placeholder(value):
            assert value in made_lists, f"`{command}`: no documented command writes {value}"
    if args.pretrained and not is_placeholder(args.pretrained):
        assert (kit / args.pretrained).is_file(), f"`{command}`: {args.pretrained} does not exist"
    if args.resume and args.out and not is_placeholder(args.out):
        checkpoint = kit / args.out / "checkpoint.pth"
        if prepared or checkpoint.is_file():  # the commands before it in the chain put it there
            assert checkpoint.is_file(), f"`{command}`: the commands before it leave no {args.out}/checkpoint.pth"
            config = solver.config_from_checkpoint(checkpoint)
            assert config.data.train_list in made_lists, (
                f"`{command}`: the checkpoint trains on {config.data.train_list}, which no documented command writes")
        else:
            assert args.out in _documented_runs(), f"`{command}`: nothing documented trains into {args.out}"


def check_python_script(argv: list[str], command: str, kit: Path) -> None:
    """A script without a parser function: it exists and its --help knows every option used."""
    script = argv[1]
    assert (kit / script).is_file(), f"`{command}`: {script} does not exist"
    text = script_help(script)
    subcommands = re.search(r"\{([\w,-]+)\}", text)  # argparse lists subcommands as {make,tally}
    if subcommands and len(argv) > 2 and argv[2] in subcommands.group(1).split(","):
        text = script_help(script, argv[2])
    for k, word in enumerate(argv[2:]):
        if word.startswith("--"):
            assert re.search(rf"(?<![\w-]){re.escape(word.split('=')[0])}(?![\w-])", text), (
                f"`{command}`: {script} has no option {word}")
        elif word.startswith("checkpoints/") and not is_placeholder(word) and argv[2 + k - 1] != "--to":
            assert (kit / word).is_file(), f"`{command}`: {word} does not exist"


def check_python(argv: list[str], command: str, kit: Path, server: FileServer, monkeypatch,
                 prepared: bool = False) -> None:
    if argv[1:3] == ["-m", "venv"]:
        assert len(argv) == 4, f"`{command}`: expected `python3 -m venv FOLDER`"
        return
    if argv[1:3] == ["-m", "torch.distributed.run"]:
        import torch.distributed.run as launcher

        k = next(i for i, w in enumerate(argv) if w.endswith(".py"))
        parse(launcher.get_args_parser().parse_args, argv[3:k + 1], command)
        check_solver([w for w in argv[k + 1:] if w != "..."], command, kit)
        return
    script = argv[1]
    assert (kit / script).is_file(), f"`{command}`: {script} does not exist in the kit"
    if script == "create_data_lists.py":
        check_create_data_lists(argv, command, kit, server, monkeypatch)
    elif script == "solver.py":
        check_solver(argv[2:], command, kit, prepared)
    else:
        check_python_script(argv, command, kit)


def check_pip(argv: list[str], command: str, kit: Path) -> None:
    assert argv[1] == "install", f"`{command}`: only `pip install` is expected"
    words = argv[2:]
    if words[:1] == ["-r"]:
        assert (kit / words[1]).is_file(), f"`{command}`: {words[1]} does not exist"
        return
    requirements = {re.split(r"[\s=<>#]", line.strip())[0] for line in (kit / "requirements.txt").read_text().splitlines()}
    if words and words[0] in requirements - {"torch"}:  # one of the requirements, installed on its own
        return
    assert words and re.fullmatch(r"torch(==[\d.]+)?", words[0]), f"`{command}`: expected torch or a requirement"
    if words[0] != "torch":  # the pinned version is the one CI installs
        assert words[0] in (REPO / ".ci" / "run").read_text(), f"`{command}`: .ci/run installs another torch"
    if "--index-url" in words:
        assert re.fullmatch(r"https://download\.pytorch\.org/whl/\w+", words[words.index("--index-url") + 1]), command


def check_step(argv: list[str], command: str, kit: Path, server: FileServer, monkeypatch,
               prepared: bool = False) -> None:
    """Check one command of a line; ``prepared``: a ``cp``/``mkdir`` ran before it in that line."""
    program = argv[0]
    if program in ("python", "python3"):
        check_python(argv, command, kit, server, monkeypatch, prepared)
    elif program == "pip":
        check_pip(argv, command, kit)
    elif program in (".", "source"):
        assert argv[1] == ".venv/bin/activate", f"`{command}`: activate the .venv made before"
    elif program == "pytest":
        if argv[1:] != ["--nbval"]:  # `pytest PATH`: a test folder or file of the kit
            assert len(argv) == 2 and (REPO / argv[1]).exists(), f"`{command}`: expected `pytest --nbval` or `pytest PATH`"
            return
        import nbval  # noqa: F401 - the plugin must be installed by requirements.txt
        # collected for real in the copy (pytest.ini, conftest.py, the notebooks; an empty tests/)
        (kit / "tests").mkdir(exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "--collect-only", "-q"], cwd=kit,
                              capture_output=True, text=True, timeout=120)
        for nb in ("train.ipynb", "test.ipynb", "super_resolution.ipynb"):
            assert f"{nb}::" in done.stdout, f"`{command}` does not collect {nb}:\n{done.stdout[-2000:]}"
    elif program == "jupyter":
        assert argv[1] == "nbconvert" and {"--execute", "--inplace"} <= set(argv), command
        import nbconvert  # noqa: F401
        for word in argv[2:]:
            if word.endswith(".ipynb"):
                assert (kit / word).is_file(), f"`{command}`: {word} does not exist"
    elif program in ("mkdir", "cp"):  # cheap: for real, in the copy
        done = subprocess.run(argv, cwd=kit, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"`{command}`: {done.stderr}"
    else:
        pytest.fail(f"`{command}`: no check for {program!r} commands; add one to tests/test_commands.py")


# --------------------------------------------------------------------------- the tests
def test_commands_are_found():
    """The extraction itself: the quick start, the continue-training and the teachers' commands."""
    lines = [line for _, line in COMMANDS]
    assert any("create_data_lists.py --sample" in line for line in lines)
    assert "pytest --nbval" in lines
    assert any(line.startswith("python create_data_lists.py --download div2k benchmark") for line in lines)
    assert ("checkpoints/README.md", "mkdir -p runs && cp -r checkpoints/resume/srresnet291 runs/ && "
            "python solver.py --out runs/srresnet291 --resume --lr 5e-5 --epochs 375") in COMMANDS
    assert any(where == "course/README.md" and "course/check_submission.py" in line for where, line in COMMANDS)
    assert sum(".ipynb" in where for where, _ in COMMANDS) >= 5


QUICK_START = ("pip install -r requirements.txt && python create_data_lists.py --sample && jupyter nbconvert "
               "--to notebook --execute --inplace train.ipynb test.ipynb super_resolution.ipynb")


def test_readme_is_short_and_gives_the_two_commands_first():
    """README.md: at most 12,000 characters, the two commands (whole lines of one fenced block)
    within its first 40 lines, with their duration on a 2-core CPU; the history is elsewhere."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text) <= 12_000, f"README.md has {len(text):,} characters; move detail to the model card or course/README.md"
    head = text.splitlines()[:40]
    assert QUICK_START in head and "pytest --nbval" in head, "README.md: the two commands must be in its first 40 lines"
    assert re.search(r"2-core CPU[^.]*\d+-\d+ minutes", " ".join(head)), "README.md: say how long the two commands take"
    assert text.count("```") // 2 <= 5, "README.md: keep the commands few; long recipes go to the model card"


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_documents_name_no_internal_matters(doc):
    """Users cannot look up tracker numbers, work sessions or the machines the kit was built on
    (a command-line option such as ``--session`` is a name, not a mention)."""
    text = (REPO / doc).read_text(encoding="utf-8")
    found = re.findall(r"(?<!-)\b(issues? \d+|these machines|the project's machines|sessions?(?: of \d)?|"
                       r"20\d\d-\d\d-\d\d)\b", text, flags=re.I)
    assert not found, f"{doc} mentions {sorted(set(found))}"


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_documents_link_to_files_that_exist(doc):
    """Relative links and images (``[text](path)``, ``![alt](path)``) point to files of the kit."""
    base = (REPO / doc).parent
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (REPO / doc).read_text(encoding="utf-8"))
    for link in links:
        if not re.match(r"\w+://", link):
            assert (base / link).exists(), f"{doc} links to {link}, which does not exist"


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


@pytest.mark.parametrize("where,command", COMMANDS, ids=[f"{w}: {c[:70]}" for w, c in COMMANDS])
def test_documented_command_works(where, command, kit, server, monkeypatch):
    chain = split_chain(command)
    for k, argv in enumerate(chain):
        prepared = any(step[0] in ("cp", "mkdir") for step in chain[:k])
        check_step(argv, command, kit, server, monkeypatch, prepared)


def test_a_broken_command_fails_with_the_command_in_the_message(kit, server, monkeypatch):
    """The checks do fail: wrong options, missing files, the old one-name --download."""
    broken = ["python create_data_lists.py --downlod div2k",
              # the old resume recipe: without runs/, cp makes runs/ the copy itself
              "cp -r checkpoints/resume/srresnet291 runs/ && python solver.py --out runs/srresnet291 --resume",
              "python solver.py --preset srgan-vgg99 --out runs/x",
              "python solver.py --pretrained checkpoints/nothing.pth --out runs/x",
              "cp -r checkpoints/resume/nothing runs/",
              "python benchmarks/quality.py --no-such-option",
              "pip install -r requirement.txt"]
    for command in broken:
        with pytest.raises((AssertionError, pytest.fail.Exception)) as info:
            chain = split_chain(command)
            for k, argv in enumerate(chain):
                check_step(argv, command, kit, server, monkeypatch, prepared=k > 0)
        assert command in str(info.value)
    # the notebooks' old `--download div2k benchmark` failed with one name per --download
    monkeypatch.setattr(cdl, "build_parser", _old_download_parser)
    with pytest.raises(pytest.fail.Exception, match="unrecognized arguments: benchmark"):
        check_step(split_chain("python create_data_lists.py --download div2k benchmark")[0],
                   "python create_data_lists.py --download div2k benchmark", kit, server, monkeypatch)


def _old_download_parser():
    parser = cdl.argparse.ArgumentParser()
    parser.add_argument("--download", choices=sorted(cdl.DOWNLOADS), action="append")
    return parser


def test_notebook_settings_named_in_the_readme_exist():
    """`PROFILE = "full"` in the README must be a setting of the notebook (it once said `profile`)."""
    readme = (REPO / "README.md").read_text()
    settings = re.findall(r"`([A-Za-z_]\w*) = ([^`]+)` in `(\w+\.ipynb)`", readme)
    assert settings, "the README names no notebook setting any more: drop this test"
    for name, value, notebook in settings:
        code = "\n".join("".join(c["source"]) for c in json.loads((REPO / notebook).read_text())["cells"]
                         if c["cell_type"] == "code")
        assert re.search(rf"^{re.escape(name)} = ", code, re.M), f"README: `{name} = {value}`: {notebook} has no {name}"
        assert value.strip('"') in code, f"README: `{name} = {value}`: {notebook} knows no {value}"
