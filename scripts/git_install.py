"""The Colab path, end to end: `pip install git+<repository>@v<version>`, and check the result.

`bash .ci/git-install` runs this (CI does, on a clean clone). From this checkout's HEAD (or, with
--worktree, its working tree, uncommitted changes included) it makes a bare git repository tagged
v<version> (the version in _config.yml), and a fresh virtual environment that holds only torch and
torchvision (linked from this Python's, with what they need; not the checkout's editable helpers).
There, from a folder outside the checkout, it runs the canonical setup cell with the repository
address swapped for the bare copy's file:// URL, and checks (scripts/git_install_checks.py, run by
that environment's Python): helpers comes from the environment at the book's version, with the
shipped checkpoint and chapter 10's results; chapter 01's code cells run; the setup cell reuses
those helpers without pip, refuses a reader's own helpers.py by name, and replaces an older version.

Downloads only from the package registries: helpers' other dependencies (pip's cache serves them
after the first run), and MNIST if ~/.cache/mnist-book (or $MNIST_BOOK_DATA) does not hold it.
KEEP=1 keeps the temporary folder, VERBOSE=1 prints every step's log, CELLS=N runs only the first
N of chapter 01's code cells.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as md
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import venv
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CHECKS = Path(__file__).with_name("git_install_checks.py")  # run by the fresh environment
# pip too, which the setup cell runs (linked rather than installed: faster than ensurepip).
LINKED = ("torch", "torchvision", "pip")
ENV = {
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_ROOT_USER_ACTION": "ignore",
    "PIP_NO_INPUT": "1",
    "MPLBACKEND": "Agg",
    "PYTHONNOUSERSITE": "1",
}
UNSET = ("PYTHONPATH", "PIP_USER", "VIRTUAL_ENV")


class StepFailed(Exception):
    """A check that did not hold: its message says which."""


def sh(*command: str | Path, cwd: Path | None = None) -> str:
    """Run a command, print its output into the step's log, and return it; raise if it fails."""
    result = subprocess.run(list(map(str, command)), cwd=cwd, capture_output=True, text=True)
    output = result.stdout + result.stderr
    print(output, end="")
    if result.returncode:
        raise StepFailed(f"exit status {result.returncode}: {shlex.join(map(str, command))}")
    return output


def git(*args: str | Path) -> str:
    """What a git command prints, stripped (it must succeed)."""
    command = ["git", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


@dataclass
class Steps:
    """Runs named steps with their output in a log, and records PASS or FAIL with their time."""

    log: Path
    verbose: bool = False
    results: list[str] = field(default_factory=list)
    failed: bool = False

    def __call__(self, name: str, action: Callable[[], object]) -> bool:
        """Run one step: its log is shown if it fails (or with VERBOSE=1); True if it passed."""
        print(f"== {name}", flush=True)
        start = time.monotonic()
        with self.log.open("w") as log, contextlib.redirect_stdout(log):
            try:
                action()
                passed = True
            except (StepFailed, subprocess.CalledProcessError) as failure:
                print(failure)
                passed = False
            except Exception:  # an unexpected error fails the step too; the run goes on
                traceback.print_exc(file=log)
                passed = False
        self.failed |= not passed
        if not passed or self.verbose:
            print(*(f"   | {line}" for line in self.text().splitlines()[-40:]), sep="\n")
        status = "PASS" if passed else "FAIL"
        self.results.append(f"{status}  {name:<62} {time.monotonic() - start:4.0f} s")
        return passed

    def text(self) -> str:
        """The last step's log."""
        return self.log.read_text()

    def summary(self, label: str, seconds: float) -> int:
        """Print every step's result and the verdict; return the exit status."""
        print(f"\ngit-install summary ({label}):")
        print(*(f"  {result}" for result in self.results), sep="\n")
        print(f"{'FAIL' if self.failed else 'PASS'}: git-install, {seconds:.0f} s")
        return int(self.failed)


@dataclass
class Run:
    """One run: its temporary folder, what it exports, and the versions it tags."""

    tmp: Path
    worktree: bool = False
    version: str = ""  # the exported book's, once read

    def __post_init__(self) -> None:
        self.mode = "worktree" if self.worktree else "head"
        self.src = self.tmp / "src"  # the exported book, committed and tagged
        self.bare = self.tmp / "book.git"  # its bare clone, which the setup cell installs from
        self.python = self.tmp / "venv" / "bin" / "python"  # the fresh environment's
        self.work = self.tmp / "work"  # the notebook's folder, outside the checkout
        self.cell = self.tmp / "setup_cell.py"  # the setup cell, installing from the bare clone
        self.cell_no_install = self.tmp / "setup_cell_no_install.py"  # from nowhere: it must not

    @property
    def url(self) -> str:
        """The bare clone, as pip names it."""
        return f"git+file://{self.bare}"

    @property
    def old(self) -> str:
        """The older version it tags too, to check that the setup cell replaces it."""
        return "0.0.0" if self.version == "0.0.1" else "0.0.1"


# --- 1. The source: HEAD (or the working tree), committed and tagged in a repository of its own.


def export_source(root: Path, src: Path, worktree: bool) -> None:
    """Copy the checkout's HEAD (or its working tree, less what git ignores) into `src`."""
    src.mkdir(parents=True, exist_ok=True)
    if not worktree:
        command = ["git", "-C", str(root), "archive", "--format=tar", "HEAD"]
        archive = subprocess.run(command, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(src, filter="tar")
        return
    listed = git("-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in sorted(set(listed.split("\0")) - {""}):
        source, target = root / name, src / name
        if source.is_file() or source.is_symlink():  # not a file deleted from the working tree
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)


def book_version(src: Path) -> str:
    """The exported book's version, as its tools read it from _config.yml ('' if none)."""
    command = [sys.executable, "scripts/book_tools.py", "version"]
    return subprocess.run(command, cwd=src, capture_output=True, text=True).stdout.strip()


def set_version(src: Path, old: str, new: str) -> None:
    """Change the version from `old` to `new` in pyproject.toml and helpers/__init__.py."""
    for name, key in (("pyproject.toml", "version"), ("helpers/__init__.py", "__version__")):
        path = src / name
        line = re.compile(rf'^{key} = "{re.escape(old)}"$', re.M)
        text, count = line.subn(f'{key} = "{new}"', path.read_text())
        if count != 1:
            raise StepFailed(f'{name}: expected one line {key} = "{old}", found {count}')
        path.write_text(text)


def export(run: Run) -> None:
    """Export the book, and read its version."""
    export_source(ROOT, run.src, run.worktree)
    run.version = book_version(run.src)
    if not run.version:
        raise StepFailed("no version in _config.yml")


def make_repositories(run: Run) -> None:
    """Commit the exported book tagged v<version>, a branch tagged v<old>, and clone it bare."""
    config = ["user.name=ci", "user.email=ci@localhost", "init.defaultBranch=main"]
    config += ["commit.gpgsign=false", "tag.gpgsign=false"]
    in_src = ["git", "-C", str(run.src), *(arg for item in config for arg in ("-c", item))]
    head = git("-C", ROOT, "rev-parse", "--short", "HEAD")
    sh(*in_src, "init", "-q")
    sh(*in_src, "add", "-A", "-f")
    sh(*in_src, "commit", "-q", "-m", f"The book at {head} ({run.mode})")
    sh(*in_src, "tag", f"v{run.version}")
    # An older version, on a branch of its own, to check that the setup cell replaces it.
    sh(*in_src, "checkout", "-q", "-b", "older")
    set_version(run.src, run.version, run.old)
    sh(*in_src, "commit", "-q", "-a", "-m", "An older version")
    sh(*in_src, "tag", f"v{run.old}")
    sh(*in_src, "checkout", "-q", "main")
    sh("git", "clone", "-q", "--bare", run.src, run.bare)
    sh("git", "-C", run.bare, "rev-parse", "-q", "--verify", f"refs/tags/v{run.version}")


def setup_cells(src: Path, *urls: str) -> list[str]:
    """The canonical install and setup cells as one program, installing from each of `urls`."""
    command = [sys.executable, "scripts/book_tools.py", "setup-cell"]
    cell = subprocess.run(command, cwd=src, capture_output=True, text=True, check=True).stdout
    config = yaml.safe_load((src / "_config.yml").read_text())
    address = f"git+{config['repository']['url']}@v"
    if cell.count(address) != 1:
        raise StepFailed("the setup cell no longer installs git+<repository.url>@v<version>")
    return [cell.replace(address, f"{url}@v") for url in urls]


def write_cells(run: Run) -> None:
    """Write the setup cell, and the same with an address that it cannot install from."""
    cells = setup_cells(run.src, run.url, f"git+file://{run.tmp / 'nowhere'}")
    run.cell.write_text(cells[0])
    run.cell_no_install.write_text(cells[1])


# --- 2. A virtual environment with torch and torchvision only.


def requirement_closure(names: Iterable[str]) -> dict[str, md.Distribution]:
    """The installed distributions that `names` need, themselves included, by canonical name."""
    found: dict[str, md.Distribution] = {}
    todo, seen = [Requirement(name) for name in names], set()
    while todo:
        requirement = todo.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(requirement.name)
        except md.PackageNotFoundError:
            print(f"not installed, pip may fetch it: {requirement.name}")
            continue
        found[key[0]] = dist
        extras = ("", *requirement.extras)
        for needed in map(Requirement, dist.requires or []):
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in extras):
                todo.append(needed)
    return found


def link_distributions(dists: Iterable[md.Distribution], target: Path) -> None:
    """Symlink each distribution's top-level files and its dist-info folder into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for dist in dists:
        tops = {f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] != ".."}
        if getattr(dist, "_path", None):  # the dist-info folder, if RECORD does not list it
            tops.add(Path(dist._path).name)  # type: ignore[attr-defined]
        for top in tops - {"__pycache__"}:
            source, link = Path(str(dist.locate_file(top))), target / top
            if source.exists() and not link.exists():
                link.symlink_to(source)


def make_venv(run: Run) -> None:
    """A fresh environment that sees torch, torchvision, pip and what they need, and no more."""
    venv.EnvBuilder(with_pip=False).create(run.tmp / "venv")
    dists = requirement_closure(LINKED)
    for name in ("torch", "torchvision"):
        if name not in dists:
            raise StepFailed(f"{name} is not installed in {sys.executable}")
    link_distributions(dists.values(), run.tmp / "torch-only")
    print(len(dists), "distributions:", " ".join(sorted(dists)))
    query = 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
    site = Path(sh(run.python, "-c", query).strip())
    (site / "torch-only.pth").write_text(f"{run.tmp / 'torch-only'}\n")
    sh(run.python, "-c", 'import torch, torchvision; print("torch", torch.__version__)')
    sh(run.python, CHECKS, "fresh", cwd=run.work)


# --- 3-6. The setup cell and the checks, run by the fresh environment's Python.


def run_cell(run: Run, cell: Path, folder: Path) -> None:
    """Run a cell file as a notebook does: with its folder first on sys.path (`-c`, not a path)."""
    sh(run.python, "-c", cell.read_text(), cwd=folder)


def install(run: Run) -> None:
    """The setup cell installs helpers from the bare clone's tag, in the notebook's folder."""
    run_cell(run, run.cell, run.work)


def check_install(run: Run) -> None:
    """helpers: from the environment, at the tag's version and commit, with the shipped data."""
    commit = git("-C", run.bare, "rev-parse", f"v{run.version}^{{commit}}")
    sh(run.python, CHECKS, "installed", run.src, run.version, commit, cwd=run.work)


def run_chapter(run: Run) -> None:
    """Chapter 01's code cells after the setup cell, which must not install (CELLS=N: N cells)."""
    chapter = run.src / "book" / "01_data.ipynb"
    cells = os.environ.get("CELLS", "0")
    sh(run.python, CHECKS, "chapter", chapter, run.cell_no_install, cells, cwd=run.work)


def check_shadow(run: Run) -> None:
    """The setup cell refuses a reader's own helpers.py in the notebook's folder, by name."""
    shadow = run.tmp / "shadow"
    shadow.mkdir(exist_ok=True)
    (shadow / "helpers.py").write_text("def tidy(text):\n    return text.strip()\n")
    command = [run.python, "-c", run.cell_no_install.read_text()]
    result = subprocess.run(command, cwd=shadow, capture_output=True, text=True)
    output = result.stdout + result.stderr
    print(*output.splitlines()[-3:], sep="\n")
    if result.returncode == 0:
        raise StepFailed(f"the setup cell used {shadow}/helpers.py")
    expected = (
        f"ImportError: {shadow}/helpers.py is not the book's helpers {run.version}: rename it"
    )
    if expected not in output:
        raise StepFailed(f"expected: {expected}")


def expect_helpers(run: Run, version: str) -> None:
    """The fresh environment imports helpers of this version."""
    found = sh(run.python, "-c", "import helpers; print(helpers.__version__)", cwd=run.work)
    if found.strip() != version:
        raise StepFailed(f"helpers {found.strip()} imported, expected {version}")


def check_upgrade(run: Run) -> None:
    """With helpers <old> installed from its tag, the setup cell replaces them with <version>."""
    pip = ["-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    sh(run.python, *pip, f"{run.url}@v{run.old}", cwd=run.work)
    expect_helpers(run, run.old)
    run_cell(run, run.cell, run.work)
    expect_helpers(run, run.version)


# Each step: its name, what it does, whether the later steps need it, and which lines of its log
# to print when it passes (those that hold this text; None: none).
STEPS: list[tuple[str, Callable[[Run], object], bool, str | None]] = [
    ("export {mode} and read its version", export, True, None),
    ("bare repository tagged v{version} (and v{old})", make_repositories, True, None),
    ("the setup cell, its repository address swapped", write_cells, True, None),
    ("fresh venv: torch and torchvision only, no helpers", make_venv, True, None),
    ("setup cell installs {url}@v{version}", install, True, "Device:"),
    ("installed: version, tag, checkpoint and chapter 10 results", check_install, False, ""),
    ("chapter 01's code cells run (setup cell without installing)", run_chapter, False, None),
    ("setup cell refuses a reader's own helpers.py, by name", check_shadow, False, None),
    ("setup cell replaces helpers {old} with {version}", check_upgrade, False, None),
]


def git_install(run: Run) -> int:
    """Every step in order, until one that later steps need fails; return the exit status."""
    start = time.monotonic()
    steps = Steps(run.tmp / "log", verbose=os.environ.get("VERBOSE") == "1")
    run.work.mkdir(parents=True, exist_ok=True)
    for name, action, needed, shown in STEPS:
        label = name.format(mode=run.mode, version=run.version, old=run.old, url=run.url)
        passed = steps(label, partial(action, run))
        if not passed and needed:
            break
        if passed and shown is not None and not steps.verbose:
            print(*(f"   {line}" for line in steps.text().splitlines() if shown in line), sep="\n")
    return steps.summary(f"{run.mode}, v{run.version or '?'}", time.monotonic() - start)


def main() -> None:
    """Parse --worktree, set the environment, run every step in a temporary folder, and exit."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worktree", action="store_true", help="the working tree, not HEAD")
    worktree = parser.parse_args().worktree
    os.environ.update(ENV)
    os.environ.setdefault("MNIST_BOOK_QUICK", "1")
    for name in UNSET:
        os.environ.pop(name, None)
    tmp = Path(tempfile.mkdtemp(prefix="git-install."))
    keep = os.environ.get("KEEP") == "1"
    if keep:
        print(f"keeping {tmp}")
    try:
        status = git_install(Run(tmp, worktree))
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
