"""Maintainer tools for the chapters: the shared first cells, executing notebooks for commit,
the chapters' collapsed checks and displayed sources, the web page's models, both editions'
build and the Chinese translation files. `python scripts/book_tools.py --help` lists the
commands (generated from `COMMANDS`); shipping trained models is `scripts/ship.py`.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]

# Every chapter opens with two code cells. The first, collapsed in every frontend, makes sure the
# book's helpers are there at the chapter's version: it reuses them if installed (a clone: `pip
# install -e .`), else installs that version from its tag (Colab), and says in one sentence what to
# do if that fails. Another module named `helpers` (a reader's helpers.py in the notebook's folder)
# is refused, by file name, rather than used. The second, the one a reader sees, is the setup.
INSTALL_CELL = """\
# The book's helpers at this chapter's version: a clone of the book has them (`pip install -e .`);
# elsewhere, as on Colab, this installs them from the book's repository (about a minute).
import importlib
import subprocess
import sys
from importlib.metadata import distributions

VERSION = "{version}"
if VERSION not in [d.version for d in distributions(name="mnist-book-helpers")]:
    url = "git+{url}@v" + VERSION
    if subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", url]).returncode:
        raise SystemExit(
            f"Could not install the book's helpers {{VERSION}} from {{url}} (pip says why above): "
            "check the network, or clone the book and run `pip install -e .` in its folder."
        )
    importlib.invalidate_caches()
import helpers

if getattr(helpers, "__version__", None) != VERSION:  # another helpers, e.g. your own helpers.py
    where = helpers.__file__ or helpers.__path__[0]
    raise ImportError(f"{{where}} is not the book's helpers {{VERSION}}: rename it, then restart")
"""

SETUP_CELL = """\
import helpers

device = helpers.setup()  # seeds the random generators, sets the threads, finds the device"""


def repository_url() -> str:
    """The book's repository address, from `_config.yml` (its one home)."""
    match = re.search(r"^repository:\s*\n\s+url:\s*(\S+)", (ROOT / "_config.yml").read_text(), re.M)
    if not match:
        raise SystemExit("_config.yml has no repository.url")
    return match.group(1)


def book_version() -> str:
    """The book's version, from `_config.yml`: its helpers' too, and their tag is `v<version>`."""
    match = re.search(
        r"^version:\s*[\"']?([\w.+-]+)[\"']?\s*$", (ROOT / "_config.yml").read_text(), re.M
    )
    if not match:
        raise SystemExit("_config.yml has no version")
    return match.group(1)


def install_cell_source() -> str:
    """The collapsed cell every chapter opens with: the book's helpers, at the book's version."""
    return INSTALL_CELL.format(url=repository_url(), version=book_version()).rstrip("\n")


def setup_cells() -> tuple[str, str]:
    """The sources of the two code cells every chapter must start with: install, then setup."""
    return install_cell_source(), SETUP_CELL


def sync_setup_cell(folder: Path = ROOT / "book") -> list[Path]:
    """Make every chapter's first two code cells the canonical ones; return the chapters changed.

    Only their sources change (a chapter with one old setup cell gets the install cell in its
    place and the setup cell after it): outputs, execution counts, metadata and ids are kept, and
    the file is written as `execute` writes it, so the diff is just those lines.
    """
    install, setup = setup_cells()
    changed = []
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        if [c.source for c in code[:2]] == [install, setup]:
            continue
        if code[1].source.lstrip().startswith("import helpers"):
            code[1].source = setup
        elif code[1].source != setup:  # an older chapter: one setup cell that also installed
            cell = nbformat.v4.new_code_cell(setup)
            cell.id = (code[0].id[:-1] + "s") if code[0].id[-1] != "s" else code[0].id[:-1] + "t"
            nb.cells.insert(nb.cells.index(code[0]) + 1, cell)
        code[0].source = install
        nbformat.write(nb, path)
        changed.append(path)
    return changed


SOURCE_LINE = re.compile(r"^print\(inspect\.getsource\(([\w.]+)\)\)$")
IMPORT_LINE = re.compile(r"^(import|from) [\w.]+ ?")


def _import_lines(nb: nbformat.NotebookNode) -> str:
    """The chapter's top-level one-line imports: enough to name what its source cells print."""
    lines = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            lines += [
                line
                for line in cell.source.splitlines()
                if IMPORT_LINE.match(line) and not line.rstrip().endswith("(")
            ]
    return "\n".join(lines)


def displayed_sources(nb: nbformat.NotebookNode) -> list[tuple[int, bool, str, str]]:
    """(cell index, only_sources, shown, current) for every cell that opens by printing source.

    Such a cell starts (after its imports) with `print(inspect.getsource(...))` lines. `current`
    is what they print from the code as it is now, `shown` as much of the cell's stored output,
    and `only_sources` says whether the cell does nothing else (so its output can be refreshed
    without running the chapter).
    """
    import inspect

    namespace: dict = {}
    exec(_import_lines(nb), namespace)  # the chapter's own import lines
    found = []
    for index, cell in enumerate(nb.cells):
        code = cell.source if cell.cell_type == "code" else ""
        lines = [line.strip() for line in code.splitlines() if line.strip()]
        imports = [line for line in lines if IMPORT_LINE.match(line)]
        names = []
        for line in lines[len(imports) if lines[: len(imports)] == imports else 0 :]:
            match = SOURCE_LINE.match(line)
            if not match:
                break
            names.append(match[1])
        if names:
            current = "".join(inspect.getsource(eval(name, namespace)) + "\n" for name in names)
            stdout = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
            only_sources = len(imports) + len(names) == len(lines)
            found.append((index, only_sources, stdout[: len(current)], current))
    return found


def refresh_sources(path: Path) -> int:
    """Re-print the helper source a chapter shows, from the current code; return cells changed.

    Improving a helper (even its docstring) then costs seconds, not a re-run of the chapter.
    A cell that prints source and then computes more cannot be refreshed alone: that chapter
    must be executed again, and this says so.
    """
    nb = nbformat.read(path, as_version=4)
    changed = 0
    for index, only_sources, shown, current in displayed_sources(nb):
        if shown == current:
            continue
        if not only_sources:
            raise SystemExit(f"{path.name} cell {index} shows old source and does more: execute it")
        nb.cells[index].outputs = [nbformat.v4.new_output("stream", name="stdout", text=current)]
        changed += 1
    if changed:
        nbformat.write(nb, path)
    return changed


def is_collapsed_cell(cell: nbformat.NotebookNode) -> bool:
    """A cell every frontend shows collapsed: a check cell, or the install cell."""
    return is_check_cell(cell) or (
        cell.cell_type == "code" and cell.source == install_cell_source()
    )


def is_check_cell(cell: nbformat.NotebookNode) -> bool:
    """A code cell that asserts and prints nothing: a claim of the prose, turned into a test."""
    if cell.cell_type != "code" or cell.get("outputs"):
        return False
    try:
        tree = ast.parse(cell.source)
    except SyntaxError:  # IPython magics: not a check cell
        return False
    return any(isinstance(node, ast.Assert) for node in ast.walk(tree))


FOLDED = {"jupyter": {"source_hidden": True}, "cellView": "form"}  # JupyterLab, VS Code; Colab


def is_folded(cell: nbformat.NotebookNode) -> bool:
    """Is the cell's code collapsed in the HTML book, JupyterLab, VS Code and Colab alike?"""
    meta = cell.metadata
    return (
        "hide-input" in meta.get("tags", [])
        and meta.get("jupyter", {}).get("source_hidden") is True
        and meta.get("cellView") == "form"
    )


def fold_checks(path: Path) -> int:
    """Collapse every check cell (and the install cell) in every frontend; return cells changed.

    `hide-input` folds it in the HTML book, `jupyter.source_hidden` in JupyterLab, Notebook 7 and
    VS Code, `cellView: form` in Colab. The checks stay in the notebook and run under nbval and in
    a reader's Run All; collapsed, they no longer break up the prose after every paragraph.
    """
    nb = nbformat.read(path, as_version=4)
    changed = 0
    for cell in nb.cells:
        if is_collapsed_cell(cell) and not is_folded(cell):
            tags = cell.metadata.get("tags", [])
            cell.metadata["tags"] = [*tags, *(["hide-input"] if "hide-input" not in tags else [])]
            cell.metadata["jupyter"] = {**cell.metadata.get("jupyter", {}), **FOLDED["jupyter"]}
            cell.metadata["cellView"] = FOLDED["cellView"]
            changed += 1
    if changed:
        nbformat.write(nb, path)
    return changed


def run_notebook(nb: nbformat.NotebookNode, folder: Path, timeout: int = 3600) -> float:
    """Run `nb` top to bottom on a fresh kernel in `folder`, in full mode; the seconds it took."""
    if os.environ.get("MNIST_BOOK_QUICK") == "1":
        raise SystemExit("unset MNIST_BOOK_QUICK: committed outputs come from a full run")
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(folder)}},
    )
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


LIVE_SWITCH = "LIVE = False"


def record_live(path: Path, timeout: int = 3600) -> float:
    """Run a chapter with its `LIVE` switch on, recording what it measures as the book's run.

    The notebook itself is not saved: `execute` it afterwards, so that its committed outputs are
    those of a reader's default run, which loads what this recorded (helpers/book_runs.json).
    """
    nb = nbformat.read(path, as_version=4)
    switches = [c for c in nb.cells if c.cell_type == "code" and LIVE_SWITCH in c.source]
    if len(switches) != 1:
        raise SystemExit(f"{path.name} has no `{LIVE_SWITCH}` switch to turn on")
    switches[0].source = switches[0].source.replace(LIVE_SWITCH, "LIVE = True", 1)
    os.environ["MNIST_BOOK_RECORD"] = "1"  # the kernel inherits it: helpers.book_run records
    try:
        return run_notebook(nb, path.parent, timeout)
    finally:
        del os.environ["MNIST_BOOK_RECORD"]


def execute(path: Path, timeout: int = 3600) -> float:
    """Run a notebook top to bottom on a fresh kernel, storing outputs and widget state."""
    nb = nbformat.read(path, as_version=4)
    seconds = run_notebook(nb, path.parent, timeout)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    nbformat.write(nb, path)
    return seconds


WEB_BUNDLE = ROOT / "_static" / "mnist" / "weights.mjs"


def web_models() -> dict[str, tuple[str, object]]:
    """The page's models by key, default first, each with the title the page shows."""
    from helpers import artifacts, experiments, robust
    from helpers.recipe import BOOK_CNN_RECIPE, BOOK_RECIPE

    final_cnn = experiments.on_full_training_set(experiments.CNN_RECIPE)
    return {
        "robust": ("the robust CNN (chapter 13)", artifacts.best_model(robust.ROBUST_CNN_RECIPE)),
        "robust_mlp": (
            "the seed's network trained robustly (chapter 13)",
            artifacts.best_model(robust.ROBUST_MLP_RECIPE),
        ),
        "lenet": ("the book's final CNN (chapter 10)", artifacts.best_model(final_cnn)),
        "cnn": ("the CNN of chapter 9", artifacts.best_model(BOOK_CNN_RECIPE)),
        "mlp": ("the seed's MLP (chapter 7)", artifacts.best_model(BOOK_RECIPE)),
    }


def page_rules() -> dict[str, dict]:
    """Chapter 13's "not sure" rule of each robust model, as its shipped result records it."""
    from helpers import artifacts, robust

    recipes = {"robust": robust.ROBUST_CNN_RECIPE, "robust_mlp": robust.ROBUST_MLP_RECIPE}
    rules = {}
    for key, recipe in recipes.items():
        result = artifacts.read(artifacts.path("result", recipe, shipped=True))
        rules[key] = {k: result["calibration"][k] for k in ("temperature", "not_sure_below")}
    return rules


def web_bundle_text() -> str:
    """The browser page's script: the book's models, folded, and a row of test digits.

    The digits: the first test image of each class, then the first two that each model gets
    wrong, so that the page shows every model's mistakes. The robust models carry chapter 13's
    "not sure" rule (a temperature and a threshold).
    """
    import numpy as np
    import torch

    from helpers import data, inference

    raw = data.mnist_datasets(raw=True)[1]
    images = raw.data.numpy()
    labels = raw.targets.numpy()
    x = torch.from_numpy(inference.normalize(images / 255)).float().unsqueeze(1)
    rules = page_rules()
    models, wrong = {}, []
    for key, (title, model) in web_models().items():
        net = inference.folded(model)
        with torch.inference_mode():
            preds = net(x).argmax(1).numpy()
        accuracy = 100 * (preds == labels).mean()
        header, blob = inference.export_weights(net, f"{title}: {accuracy:.2f}% on the test set")
        models[key] = ({**header, **rules.get(key, {})}, blob)
        wrong += [int(i) for i in np.nonzero(preds != labels)[0][:2]]
    firsts = [int(np.nonzero(labels == d)[0][0]) for d in range(10)]
    chosen = firsts + [i for i in dict.fromkeys(wrong) if i not in firsts]
    return inference.web_bundle(models, images[chosen], labels[chosen].tolist())


def export_web() -> Path:
    """Write the page's script (`WEB_BUNDLE`); tests/test_web.py checks it is current."""
    WEB_BUNDLE.parent.mkdir(parents=True, exist_ok=True)
    WEB_BUNDLE.write_text(web_bundle_text())
    return WEB_BUNDLE


def build(out: Path = ROOT) -> Path:
    """Build both editions, warnings as errors: English in <out>/_build/html, Chinese in its zh/.

    The Chinese edition is built from zh/ (its generated pages) on its own, then copied into the
    English one, so that each page's language switch (_ext/book_html.py) finds its counterpart.
    """
    import shutil
    import subprocess

    import translations

    beside = Path(sys.executable).parent / "jupyter-book"  # a venv's, even when not activated
    exe = str(beside) if beside.is_file() else shutil.which("jupyter-book") or "jupyter-book"
    flags = ["-W", "-n", "--keep-going"]
    html, zh_out = out / "_build" / "html", out / "_build" / "zh"
    # The Chinese pages are built from a copy beside the output, with what they share copied in,
    # so the build writes nothing into the source tree (zh/_config.yml finds ../_ext there too).
    zh_source = out / "_build" / "zh-source" / "zh"
    for source, target in ((ROOT, out), (zh_source, zh_out)):
        if source != ROOT:
            shutil.rmtree(zh_source.parent, ignore_errors=True)
            shutil.copytree(ROOT / "zh", zh_source)
            shutil.copytree(ROOT / "_ext", zh_source.parent / "_ext")
            translations.copy_shared(zh_source)
            cache = out / "_build" / "npm-cache"  # the vendored scripts, fetched once for both
            shutil.copytree(cache, target / "_build" / "npm-cache", dirs_exist_ok=True)
        command = [exe, "build", str(source), *flags, "--path-output", str(target)]
        subprocess.run(command, check=True)
    shutil.rmtree(html / "zh", ignore_errors=True)
    shutil.copytree(zh_out / "_build" / "html", html / "zh")
    return html


def zh_command(args: argparse.Namespace) -> None:
    """zh-update: add new English cells to the translation files, drop removed ones, list what
    needs translating; zh-accept: after editing a stale cell's Chinese, record its new English."""
    import translations

    if args.command == "zh-generate":
        written = translations.generate()
        print(f"wrote {len(written)} files of the Chinese edition into zh/")
        return
    if args.command == "zh-accept":
        page = args.page.resolve()
        path = translations.translation_file(page)
        translation = translations.read(path)
        for cell_id in args.cells:
            translations.accept(translation, cell_id, page)
        translations.write(path, translation)
        print(f"{path.relative_to(ROOT)}: {len(args.cells)} cell(s) accepted")
        return
    for page in translations.english_pages():
        path = translations.translation_file(page)
        translation = translations.skeleton(page, translations.read(path))
        translations.write(path, translation)
        for problem in translations.problems(page, translation):
            print(f"{path.relative_to(ROOT)}: {problem}")


def execute_command(args: argparse.Namespace) -> None:
    """Run each notebook on a fresh kernel, store its outputs, collapse its checks."""
    for path in args.notebooks:
        seconds = execute(path)
        fold_checks(path)
        print(f"{path}: executed in {seconds:.1f} s", file=sys.stderr)


def each_chapter(action: Callable[[Path], int], done: str) -> None:
    """Run `action` on every chapter and say how many cells it changed in each."""
    for path in sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb")):
        print(f"{path.name}: {action(path)} {done}")


def sync_command(args: argparse.Namespace) -> None:
    """Write the canonical first cells into every chapter."""
    changed = sync_setup_cell(args.folder)
    print(f"setup cell written into {len(changed)} chapter(s)", *changed, sep="\n")


def record_live_command(args: argparse.Namespace) -> None:
    """Re-measure what a chapter loads, with its LIVE switch on."""
    seconds = record_live(args.notebook)
    print(f"recorded {args.notebook.name}'s measurements in {seconds:.0f} s: now execute it")


# name: (help, what it does, its arguments as (flags, add_argument's keywords))
COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], None], list]] = {
    "execute": (
        "run notebooks on a fresh kernel and store their outputs",
        execute_command,
        [(("notebooks",), {"nargs": "+", "type": Path})],
    ),
    "record-live": (
        "re-measure what a chapter loads (LIVE = True), then execute it",
        record_live_command,
        [(("notebook",), {"type": Path})],
    ),
    "setup-cell": (
        "print the canonical install and setup cells",
        lambda args: print(*setup_cells(), sep="\n\n# ---\n\n"),
        [],
    ),
    "sync-setup-cell": (
        "write the install and setup cells into every chapter",
        sync_command,
        [(("folder",), {"nargs": "?", "type": Path, "default": ROOT / "book", "help": "SUPPRESS"})],
    ),
    "version": (
        "print the book's version (tag v<version>)",
        lambda args: print(book_version()),
        [],
    ),
    "refresh-sources": (
        "re-print the helper source the chapters show",
        lambda args: each_chapter(refresh_sources, "source cell(s) refreshed"),
        [],
    ),
    "fold-checks": (
        "collapse every check cell in every frontend",
        lambda args: each_chapter(fold_checks, "check cell(s) folded"),
        [],
    ),
    "export-web": (
        "write the Draw-a-digit page's models (_static/mnist)",
        lambda args: print(f"wrote {export_web().relative_to(ROOT)}"),
        [],
    ),
    "build": (
        "build the English and the Chinese edition (-W)",
        lambda args: print(f"built {build(args.path_output.resolve())} (Chinese in its zh/)"),
        [(("--path-output",), {"type": Path, "default": ROOT, "help": "where _build/ goes"})],
    ),
    "zh-update": ("bring i18n/zh/ in step with the English cells; list gaps", zh_command, []),
    "zh-generate": ("write the Chinese edition (zh/) from the translations", zh_command, []),
    "zh-accept": (
        "mark a cell's edited Chinese as up to date",
        zh_command,
        [
            (("page",), {"type": Path, "help": "the English page, e.g. book/07_training.ipynb"}),
            (("cells",), {"nargs": "+", "help": "ids of the cells whose Chinese you updated"}),
        ],
    ),
}


def parser_for(commands: dict[str, tuple], description: str) -> argparse.ArgumentParser:
    """A command line whose subcommands and help come from a table like `COMMANDS`."""
    parser = argparse.ArgumentParser(description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (text, _, arguments) in commands.items():
        command = sub.add_parser(name, help=text, description=text)
        for flags, options in arguments:
            if options.get("help") == "SUPPRESS":
                options = {**options, "help": argparse.SUPPRESS}
            command.add_argument(*flags, **options)
    return parser


def main() -> None:
    """Run the command the command line names."""
    args = parser_for(COMMANDS, " ".join(__doc__.split("\n\n")[0].split())).parse_args()
    COMMANDS[args.command][1](args)


if __name__ == "__main__":
    main()
