"""Augmentation that models people and pens, and the robust recipes (chapter 13)."""

from __future__ import annotations

import pytest
import torch

from helpers import robust
from helpers.data import SEED_MEAN, SEED_STD
from helpers.recipe import BOOK_RECIPE, Recipe, ingredients

LOW, HIGH = (0 - SEED_MEAN) / SEED_STD, (1 - SEED_MEAN) / SEED_STD


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 6:22, 12:16] = 1.0  # a thick "1" in every image
    return (x - SEED_MEAN) / SEED_STD


def test_each_ingredient_is_reproducible_stays_in_range_and_leaves_some_images_alone(batch):
    for name in robust.INGREDIENTS:
        a = robust.augment_robust(batch, name, torch.Generator().manual_seed(1))
        b = robust.augment_robust(batch, name, torch.Generator().manual_seed(1))
        c = robust.augment_robust(batch, name, torch.Generator().manual_seed(2))
        assert torch.equal(a, b) and not torch.equal(a, c), name
        assert a.shape == batch.shape
        assert a.min() >= LOW - 1e-5 and a.max() <= HIGH + 1e-5, name
        changed = (a - batch).abs().amax((1, 2, 3)) > 1e-4
        assert 0.05 < changed.float().mean() < 1.0, f"{name} changes some images, not all"


def test_all_ingredients_together_change_nearly_every_image(batch):
    out = robust.augment_robust(batch, robust.ROBUST, torch.Generator().manual_seed(0))
    changed = (out - batch).abs().amax((1, 2, 3)) > 1e-4
    assert changed.float().mean() > 0.8


def test_a_recipe_names_its_ingredients_and_a_wrong_one_is_refused():
    assert Recipe(augment="affine+noise").augment == "affine+noise"
    with pytest.raises(ValueError, match=r"unknown ingredient.*pencil.*join some of"):
        Recipe(augment="affine+pencil")
    with pytest.raises(TypeError, match="augment=3"):
        Recipe(augment=3)
    # the keys of existing recipes, which name shipped files, are unchanged
    assert BOOK_RECIPE.key() == "d16661cde61f379e"


def test_the_robust_recipes_and_the_ablation():
    assert robust.ROBUST_CNN_RECIPE.augment == robust.ROBUST
    assert robust.ROBUST_MLP_RECIPE.model == "SimpleNN"
    assert robust.ROBUST_CNN_RECIPE.validation_size == 5000, "chosen and calibrated on validation"
    variants = robust.ablation(robust.ROBUST_MLP_RECIPE, epochs=3)
    assert len(variants) == 2 + len(robust.INGREDIENTS)
    assert variants["no augmentation"].augment is False
    for name in robust.INGREDIENTS:
        left = ingredients(variants[f"all but {name}"].augment)
        assert name not in left and len(left) == len(robust.INGREDIENTS) - 1
    assert {v.epochs for v in variants.values()} == {3}


def test_the_loop_trains_with_the_ingredients(subset):
    from helpers.loop import fit

    recipe = Recipe(augment=robust.ROBUST, epochs=1, batch_size=128, validation_size=5000)
    model, result = fit(recipe, subset[0], subset[1])
    assert result["val_acc"] > 30  # one epoch on a small subset, heavily augmented
