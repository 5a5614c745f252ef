"""The code hash that keeps cached and shipped results honest."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import pytest

from helpers import provenance

LOOP = '''
"""A stand-in for a training module."""

RATE = 0.5


def step(x):
    """One step."""
    return helper(x) * RATE


def helper(x):
    # a comment
    return x + 1


def unrelated(x):
    return x - 1
'''


def load(tmp_path, name, source):
    """Import `source` as the module `helpers._probe` (the hash follows helpers modules only)."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location("helpers._probe", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["helpers._probe"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _forget_probe():
    yield
    sys.modules.pop("helpers._probe", None)


def hash_of(tmp_path, name, source):
    return provenance.code_hash(load(tmp_path, name, source).step)


def test_docstrings_comments_and_layout_do_not_count(tmp_path):
    base = hash_of(tmp_path, "a", LOOP)
    edited = LOOP.replace('"""One step."""', '"""One step, better explained."""')
    edited = edited.replace("# a comment", "# another comment").replace("x + 1", "x+1")
    assert hash_of(tmp_path, "b", edited) == base


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("* RATE", "* RATE * 2"),  # the entry point's own code
        ("return x + 1", "return x + 2"),  # a function it calls
        ("RATE = 0.5", "RATE = 0.25"),  # a constant it reads
    ],
)
def test_a_change_to_the_code_a_result_ran_changes_the_hash(tmp_path, old, new):
    assert hash_of(tmp_path, "a", LOOP) != hash_of(tmp_path, "b", LOOP.replace(old, new))


def test_code_the_entry_point_never_reaches_does_not_count(tmp_path):
    edited = LOOP.replace("return x - 1", "return x - 2")
    assert hash_of(tmp_path, "a", LOOP) == hash_of(tmp_path, "b", edited)


def test_the_real_loops_reach_their_pieces():
    from helpers import loop, training
    from helpers.recipe import BOOK_RECIPE

    assert loop.loop_code(BOOK_RECIPE) != training.seed_loop_code(BOOK_RECIPE)
    assert len(loop.loop_code(BOOK_RECIPE)) == 16


def test_a_stamp_records_the_versions():
    import torch

    import helpers

    stamp = provenance.stamp("0123456789abcdef")
    assert stamp == {
        "code": "0123456789abcdef",
        "torch": torch.__version__,
        "helpers": helpers.__version__,
    }


def test_the_hash_is_the_same_in_every_process():
    import subprocess
    import sys

    from helpers import training
    from helpers.recipe import BOOK_RECIPE

    code = (
        "from helpers import training, recipe; print(training.seed_loop_code(recipe.BOOK_RECIPE))"
    )
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == training.seed_loop_code(BOOK_RECIPE)
