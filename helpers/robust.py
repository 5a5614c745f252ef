"""The robust models of chapter 13: their recipes, and the ablation of their ingredients.

The ingredients themselves (affine, elastic, width, blur, contrast, noise) are augmentation on
whole batches, so they live beside chapter 10's in `helpers.augment`, where the training loop
finds them; `Recipe(augment=ROBUST)` names them all. They are re-exported here for the chapter.
"""

from __future__ import annotations

from dataclasses import replace

from helpers import experiments
from helpers.augment import ROBUST, augment_robust, random_affine, random_contrast
from helpers.recipe import INGREDIENTS, Recipe

__all__ = [
    "INGREDIENTS",
    "ROBUST",
    "ROBUST_CNN_RECIPE",
    "ROBUST_MLP_RECIPE",
    "ablation",
    "augment_robust",
    "random_affine",
    "random_contrast",
]


# ---------------------------------------------------------------------------------------------
# The chapter's recipes
# ---------------------------------------------------------------------------------------------

# The robust CNN: chapter 10's final CNN recipe (LeNetLike, AdamW, one-cycle, label smoothing,
# weight decay) with every ingredient, longer, and with the 5,000 validation images held out:
# the choices, the temperature and the "not sure" threshold are all made on them.
ROBUST_CNN_RECIPE = replace(experiments.CNN_RECIPE, augment=ROBUST, epochs=30)

# The robust MLP: the seed's own network (784-128-64-10, chapter 03), trained the same way, for
# 20 epochs, so that the two runs together fit in 15 minutes on the book's 2-core machine.
ROBUST_MLP_RECIPE = replace(ROBUST_CNN_RECIPE, model="SimpleNN", lr=3e-3, epochs=20)


def ablation(base: Recipe, epochs: int) -> dict[str, Recipe]:
    """`base` on `epochs` epochs: with no augmentation, all ingredients, and all but each one."""
    short = replace(base, epochs=epochs)
    variants = {"no augmentation": replace(short, augment=False), "all ingredients": short}
    for name in INGREDIENTS:
        rest = "+".join(n for n in INGREDIENTS if n != name)
        variants[f"all but {name}"] = replace(short, augment=rest)
    return variants
