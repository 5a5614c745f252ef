"""`helpers.TAUGHT_IN` between helpers modules: a module imports only what its chapter or an
earlier one teaches, as the chapters do (tests/test_book.py), so every helper can be read in
the book's order."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import helpers

HELPERS = Path(helpers.__file__).parent


def helpers_imported(module: str) -> set[str]:
    """The helpers modules `module`'s source imports, anywhere in it (functions included)."""
    tree = ast.parse((HELPERS / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "helpers":
            found |= {alias.name for alias in node.names if alias.name in helpers.TAUGHT_IN}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("helpers.")}
    return found - {module}


@pytest.mark.parametrize("module", sorted(helpers.TAUGHT_IN))
def test_a_module_imports_only_what_its_chapter_or_an_earlier_one_teaches(module):
    chapter = helpers.TAUGHT_IN[module]
    later = {m: helpers.TAUGHT_IN.get(m) for m in helpers_imported(module)}
    later = {m: c for m, c in later.items() if c is None or c > chapter}
    assert not later, f"helpers.{module} (chapter {chapter}) imports later modules: {later}"


def test_the_check_sees_imports_inside_functions():
    assert "provenance" not in helpers_imported("training"), "chapter 07 imports chapter 10"
    assert "idx" in helpers_imported("data")
    assert {"training", "loop", "experiments", "data"} <= helpers_imported("provenance")
