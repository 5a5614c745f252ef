"""The checks that scripts/git_install.py runs with the fresh environment's Python.

python git_install_checks.py fresh                         # torch and torchvision only, no helpers
python git_install_checks.py installed SRC VERSION COMMIT  # helpers from the tag, with their data
python git_install_checks.py chapter NOTEBOOK SETUP CELLS  # the setup cell, then the chapter's

Each runs from the notebook's folder, with that folder (not this one) first on sys.path, as
`python -` there would. At the top only the standard library: the fresh environment starts with
torch and torchvision alone, and IPython and helpers come with the install.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import sys
import sysconfig
from pathlib import Path


def fresh() -> None:
    """Before the install: no helpers, and none of what helpers brings."""
    assert importlib.util.find_spec("helpers") is None, "helpers is importable before the install"
    assert not list(md.distributions(name="mnist-book-helpers")), "helpers is installed already"
    for name in ("matplotlib", "optuna", "IPython"):
        assert importlib.util.find_spec(name) is None, f"{name} is in the fresh environment"
    print("fresh: torch and torchvision only, no helpers")


def installed(src: str, version: str, commit: str) -> None:
    """helpers: from this environment, at the tag's version and commit, with what it ships."""
    import helpers

    package = Path(helpers.__file__).resolve().parent
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert package.parent == site, f"helpers imported from {package}, not from {site}"
    assert helpers.__version__ == version == md.version("mnist-book-helpers"), helpers.__version__
    vcs = json.loads(md.distribution("mnist-book-helpers").read_text("direct_url.json") or "{}")
    assert vcs["vcs_info"]["requested_revision"] == f"v{version}", vcs
    assert vcs["vcs_info"]["commit_id"] == commit, vcs
    print(f"helpers {helpers.__version__} from {package}, commit {commit[:12]}")
    for pattern in ("shipped/manifest.json", "shipped/checkpoints/*.pt", "shipped/results/*.json"):
        in_git = {p.name: p.stat().st_size for p in (Path(src) / "helpers").glob(pattern)}
        here = {p.name: p.stat().st_size for p in package.glob(pattern)}
        assert in_git, f"the checkout ships no helpers/{pattern}"
        assert here == in_git, f"helpers/{pattern}: {len(here)} installed, {len(in_git)} in git"
        print(f"helpers/{pattern}: {len(here)} files, as in git")
    shipped_model_loads(package)


def shipped_model_loads(package: Path) -> None:
    """The installed code made the shipped model and results; the model loads and predicts."""
    import torch

    from helpers import training
    from helpers.loop import loop_code
    from helpers.recipe import BOOK_RECIPE, Recipe

    shipped = training.shipped_checkpoint(BOOK_RECIPE)
    made_by = training.read_checkpoint(shipped)["made_by"]["code"]
    assert made_by == training.seed_loop_code(BOOK_RECIPE), f"{shipped.name}: made by {made_by}"
    run = training.load_checkpoint(shipped, torch.device("cpu"))
    assert run.epoch == BOOK_RECIPE.epochs
    run.model.eval()
    with torch.no_grad():
        assert run.model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    results = sorted(package.glob("shipped/results/*.json"))
    for path in results:
        result = json.loads(path.read_text())
        assert result["made_by"]["code"] == loop_code(Recipe(**result["recipe"])), path.name
    print(f"the shipped model ({shipped.name}) loads and predicts; {len(results)} results read")


def chapter(notebook: str, setup: str, cells: str = "0") -> None:
    """The setup cell, then the chapter's code cells after its own two, under IPython."""
    from IPython.core.interactiveshell import InteractiveShell

    code = [c for c in json.loads(Path(notebook).read_text())["cells"] if c["cell_type"] == "code"]
    # The chapter's own first two cells install and set up: the canonical ones replace them.
    sources = [Path(setup).read_text()] + ["".join(c["source"]) for c in code[2:]]
    sources = sources[: int(cells) or None]
    shell = InteractiveShell.instance()
    for number, source in enumerate(sources, 1):
        if not shell.run_cell(source, store_history=True).success:
            sys.exit(f"chapter {Path(notebook).stem}, code cell {number} failed:\n{source}")
    print(f"chapter {Path(notebook).stem}: {len(sources)} code cells ran")


CHECKS = {"fresh": fresh, "installed": installed, "chapter": chapter}

if __name__ == "__main__":
    sys.path[0] = os.getcwd()  # the notebook's folder, not scripts/
    CHECKS[sys.argv[1]](*sys.argv[2:])
