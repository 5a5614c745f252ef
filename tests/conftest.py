"""Shared fixtures, and markers that let a developer run the fast part of the suite alone.

Plain `pytest` runs everything.

- `book`: a chapter under nbval, or the HTML build (minutes): `pytest -m "not book"` skips them.
- `network`: reaches the package index (the real data fetch).
- `slow`: a unit test that runs a whole benchmark or training (tens of seconds).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.data import mnist_tensors

ROOT = Path(__file__).resolve().parents[1]
NETWORK = {"test_real_fetch_through_the_package_index"}
SLOW_FIXTURES = {"quick_rows", "built_book", "script_run"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each collected test by what it costs, so `-m` can select."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
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
