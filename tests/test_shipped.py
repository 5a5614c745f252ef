"""The artifacts that ship with helpers: each listed, intact, and made by today's code.

The checkpoints of chapters 07 and 09, the results of chapter 10 and the weights of its final CNN
ship so that later chapters and the Draw-a-digit page show the book's numbers without training.
They are honest only while the loop that made them computes the same numbers today: each records
its loop's version (`helpers.training.SEED_LOOP_VERSION`, `helpers.loop.LOOP_VERSION`), which is
bumped when a change alters those numbers (tests/test_provenance.py catches a change that forgot
to). If this test fails after a bump, the artifacts must be made again
(`scripts/ship.py checkpoint 07` after a full run of chapter 07, `ship.py checkpoint 09`
after chapter 09, `ship.py experiments` for chapter 10, `ship.py model` for its final CNN), not the
test relaxed. A refactor changes no version, and so leaves them current.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from helpers import artifacts, data, experiments, loop, training
from helpers.loop import loop_code
from helpers.recipe import BOOK_CNN_RECIPE, BOOK_RECIPE, Recipe

SHIPPED = artifacts.SHIPPED
MANIFEST = json.loads((SHIPPED / "manifest.json").read_text())
FILES = sorted(
    str(p.relative_to(SHIPPED))
    for p in SHIPPED.rglob("*")
    if p.is_file() and p.name != "manifest.json"
)


def test_every_shipped_file_is_in_the_manifest_and_intact():
    assert sorted(MANIFEST) == FILES, "files and manifest entries differ"
    for name, entry in MANIFEST.items():
        digest = hashlib.sha256((SHIPPED / name).read_bytes()).hexdigest()
        assert digest == entry["sha256"], f"{name} changed since it was shipped"
        assert {"recipe", "made_by", "commit", "date", "chapter"} <= set(entry), name


@pytest.mark.parametrize("name", [n for n in FILES if n.startswith("checkpoints/")])
def test_the_shipped_checkpoint_was_made_by_todays_code(name):
    state = training.read_checkpoint(SHIPPED / name)
    recipe = Recipe.from_dict(state["recipe"])
    assert (
        state["made_by"] == MANIFEST[name]["made_by"] and recipe.key() == MANIFEST[name]["recipe"]
    )
    assert state["made_by"]["code"] == training.seed_loop_code(), (
        f"{name} was made by {state['made_by']['code']}, and the seed's loop is now "
        f"{training.seed_loop_code()}: run the chapter that trains it in full and "
        f"`python scripts/ship.py checkpoint {MANIFEST[name]['chapter']}`"
    )


@pytest.mark.parametrize(("chapter", "recipe"), [("07", BOOK_RECIPE), ("09", BOOK_CNN_RECIPE)])
def test_the_models_chapters_07_and_09_train_ship(chapter, recipe):
    path = training.shipped_checkpoint(recipe)
    assert artifacts.require(path, training.seed_loop_code(recipe))["epoch"] == recipe.epochs
    assert not artifacts.best_model(recipe).training
    assert MANIFEST[f"checkpoints/{path.name}"]["chapter"] == chapter


@pytest.mark.parametrize("name", [n for n in FILES if n.startswith("results/")])
def test_each_shipped_result_was_made_by_todays_code(name):
    result = artifacts.read(SHIPPED / name)
    recipe = Recipe.from_dict(result["recipe"])
    assert recipe.key() == Path(name).stem == MANIFEST[name]["recipe"]
    assert result["made_by"] == MANIFEST[name]["made_by"] and not result["quick"]
    assert result["made_by"]["code"] == loop_code(), (
        f"{name} was made by {result['made_by']['code']}, and the in-memory loop is now "
        f"{loop_code()}: run `python scripts/ship.py experiments` (chapter 10 in full)"
    )


@pytest.mark.parametrize("name", [n for n in FILES if n.startswith("models/")])
def test_each_shipped_model_is_the_run_its_result_reports(name):
    key = Path(name).stem
    result = artifacts.read(SHIPPED / "results" / f"{key}.json")
    recipe = Recipe.from_dict(result["recipe"])
    weights = artifacts.require(SHIPPED / name, loop_code(recipe))
    assert weights["made_by"] == result["made_by"], f"{name} is not the run of results/{key}.json"
    model = artifacts.best_model(recipe)
    assert MANIFEST[name]["made_by"] == result["made_by"] and MANIFEST[name]["recipe"] == key
    if recipe.validation_size:  # chapter 13's: scored on the validation split, as it trained
        images, labels = data.split_tensors(recipe.validation_size)["held"]
        expected = result["val_acc"]
    else:
        images, labels = data.mnist_tensors(train=False)
        expected = result["test_acc"]
    assert loop.accuracy(model, images, labels) == expected, "not the weights scored"


def test_chapter_10s_final_cnn_ships_with_its_weights():
    recipe = experiments.on_full_training_set(experiments.CNN_RECIPE)
    assert type(artifacts.best_model(recipe)).__name__ == "LeNetLike"
    assert MANIFEST[f"models/{recipe.key()}.pt"]["chapter"] == "10"


def test_chapter_10s_results_ship():
    assert sum(n.startswith("results/") for n in FILES) >= 50
