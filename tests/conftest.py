"""Shared fixtures, and markers that let a developer run the fast part of the suite alone.

Plain `pytest` runs everything, every chapter in quick mode (`MNIST_BOOK_QUICK=1`, set here unless
the environment sets it: `MNIST_BOOK_QUICK=0 pytest` re-runs the chapters in full). Under
pytest-xdist (`-n 2 --dist loadgroup`, as `.ci/run` does) each chapter's cells stay together on one
worker, in order, and so do the tests that share the built book.

- `book`: a chapter under nbval, or the HTML build (minutes): `pytest -m "not book"` skips them.
- `network`: reaches the package index (the real data fetch).
- `slow`: a unit test that runs a whole benchmark or training (tens of seconds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MNIST_BOOK_QUICK", "1")  # before any kernel starts: they inherit it

from helpers.data import mnist_tensors  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NETWORK = {"test_real_fetch_through_the_package_index"}
SLOW_FIXTURES = {"quick_rows", "built_book", "script_run"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's loadgroup reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each collected test by what it costs, so `-m` can select, and group what must share."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.xdist_group(item.path.name))  # one kernel, cells in order
        if "built_book" in fixtures:
            item.add_marker(pytest.mark.xdist_group("built_book"))  # built once
        if item.path.suffix == ".ipynb" or "built_book" in fixtures:
            item.add_marker(pytest.mark.book)
        if item.name.split("[")[0] in NETWORK:
            item.add_marker(pytest.mark.network)
        if fixtures & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def subset() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """2,048 training and 1,000 test images of MNIST, normalized (the loops' tests train on it)."""
    (x, y), (tx, ty) = mnist_tensors(True), mnist_tensors(False)
    return (x[:2048], y[:2048]), (tx[:1000], ty[:1000])


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """The HTML book, both editions (the Chinese in zh/), built once per session with warnings as
    errors (test_book, test_browser)."""
    out = tmp_path_factory.mktemp("book")
    tools = str(ROOT / "scripts" / "book_tools.py")
    done = subprocess.run(
        [sys.executable, tools, "build", "--path-output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out / "_build" / "html"


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Headless Debian Chromium driven by Playwright (test_browser, test_jupyterlab)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium: apt-get install chromium")
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=args)
        yield launched
        launched.close()


def book_files() -> set[str]:
    """Every file under book/, as a reader's clone has it (caches of tools left out)."""
    skip = {".ipynb_checkpoints", "__pycache__", "_build"}
    return {
        str(p.relative_to(ROOT))
        for p in (ROOT / "book").rglob("*")
        if p.is_file() and not skip & set(p.parts)
    }


def pytest_sessionstart(session: pytest.Session) -> None:
    """Note the files beside the chapters before any runs."""
    session.config.stash[BOOK_FILES] = book_files()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a chapter wrote a file beside the notebooks (a reader's run would too)."""
    before = session.config.stash.get(BOOK_FILES, None)
    if before is None or hasattr(session.config, "workerinput"):  # xdist: the controller checks
        return
    written = sorted(book_files() - before)
    if written:
        print(f"\nA chapter wrote files beside the notebooks: {written}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


BOOK_FILES = pytest.StashKey[set]()
