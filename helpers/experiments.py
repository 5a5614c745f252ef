"""Measured experiments: one recipe in, one cached result out (chapter 10).

`run_experiment` trains a `helpers.recipe.Recipe` with the in-memory loop (`helpers.loop.fit`),
records its history and time, and stores the result as JSON under `root / "experiments"`, named
by the recipe's key: running the same recipe again loads the result instead of training. A
stored result is used only while the loop that made it computes the same numbers: its stamp
records the loop's version (`helpers.loop.LOOP_VERSION`, bumped when a change alters what the
loop computes; `helpers.provenance` checks that), and a result of another version trains again.
The results of the book's own full run of chapter 10 ship with the package (in
`helpers/shipped/results`, listed in its manifest), as chapter 07's model does, so the chapter
loads in seconds on a fresh machine too. Where results live and when one is stale is
`helpers.artifacts`'s business, as for every trained thing the book stores.

The protocol is the honest one. With `validation_size > 0` (5,000 images in this chapter's
recipes, the same split as `helpers.recipe.BOOK_RECIPE`), the model trains on the rest of the
training set and is scored on the validation images only; the test set is not touched.
`validation_size=0` trains on all 60,000 images and scores the test set, once, at the end: that
is for final models only.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from helpers import artifacts, data, models
from helpers.graph import flops_per_image
from helpers.loop import fit, loop_code
from helpers.recipe import BOOK_RECIPE, Recipe, build_model, stamp


def model_cost(model: nn.Module) -> dict[str, int]:
    """Parameters and measured FLOPs per image (forward; forward + backward), `helpers.graph`."""
    flops = flops_per_image(model)
    return {
        "params": models.count_parameters(model)[0],
        "flops_forward": flops["forward"],
        "flops_train": flops["train"],
    }


# ---------------------------------------------------------------------------------------------
# Training and the cache
# ---------------------------------------------------------------------------------------------


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Where results are kept: the data root's `experiments` folder."""
    return artifacts.folder("result", root)


def run_experiment(
    recipe: Recipe,
    quick: bool = False,
    root: str | os.PathLike | None = None,
    cache: bool = True,
    device: torch.device | str = "cpu",
    keep_model: bool = False,
) -> dict:
    """Train `recipe`, or load its result if this code already ran it; returns the result dict.

    With `quick` (the chapter passes `helpers.is_quick()`), the recipe is first `shortened()`,
    so it trains for a few dozen steps and is cached under its own key. The result holds the
    `recipe` that ran, its `key`, the per-epoch `history` (`helpers.recipe.HISTORY_KEYS`),
    `val_acc` (or `test_acc` for a final model), `seconds`, `params`, `flops_forward` and
    `flops_train` (per image), `made_by` (`helpers.recipe.stamp`) and `cached`. A recipe
    that trains does so on `device` (a stored result is used whatever device made it).

    With `keep_model`, the trained weights are kept too (`<key>.pt` beside the result) and the
    result gains `model`, in eval mode on the CPU; a stored result without its weights then
    trains again.
    """
    if quick:
        recipe = recipe.shortened()
    code = loop_code(recipe)
    for shipped in (False, True) if cache else ():
        stored = stored_run(recipe, code, root, shipped, keep_model)
        if stored is not None:
            return {**stored, "cached": True}
    splits = data.split_tensors(recipe.validation_size, root, device)
    model, result = fit(recipe, splits["train"], splits["held"])
    made_by = stamp(code)
    result = {**result, **model_cost(build_model(recipe)), "quick": quick, "made_by": made_by}
    if cache and keep_model:  # the weights first: a result without them is not yet complete
        state = {"key": recipe.key(), "made_by": made_by, "model": model.cpu().state_dict()}
        artifacts.write(artifacts.path("weights", recipe, root), state)
    if cache:
        artifacts.write(artifacts.path("result", recipe, root), result)
    kept = {"model": model.cpu().eval()} if keep_model else {}
    return {**result, "cached": False, **kept}


def stored_run(
    recipe: Recipe, code: str, root: str | os.PathLike | None, shipped: bool, keep_model: bool
) -> dict | None:
    """The stored result of `recipe` made by `code` (and its `model`, if kept), or None.

    Kept weights count only if they come from the run the result reports (the same `made_by`
    stamp), so that the accuracy the result reports is the accuracy of these weights.
    """
    result = artifacts.current(artifacts.path("result", recipe, root, shipped), code)
    if result is None or not keep_model:
        return result
    file = artifacts.path("weights", recipe, root, shipped)
    weights = artifacts.current(file, code)
    if weights is None or weights["made_by"] != result["made_by"]:
        return None
    return {**result, "model": artifacts.model(recipe, weights["model"], file)}


def run_seeds(recipe: Recipe, seeds: tuple[int, ...] = (0, 1, 2), **kwargs: object) -> list:
    """`run_experiment` for each seed: the spread over seeds tells a real gain from noise."""
    return [run_experiment(replace(recipe, seed=s), **kwargs) for s in seeds]


# ---------------------------------------------------------------------------------------------
# The chapter's recipes
# ---------------------------------------------------------------------------------------------

# The seed's recipe on a 4-epoch budget: its schedule halves the rate halfway, as over 10 epochs.
ABLATION_BASE = replace(BOOK_RECIPE, epochs=4, step_size=2)


def ablation_variants(base: Recipe = ABLATION_BASE) -> dict[str, Recipe]:
    """The seed's suggestions, each applied on its own to `base` (everything else unchanged)."""
    mlp = {"model": "MLP"}
    return {
        "seed's recipe (baseline)": base,
        "wider MLP (512-256)": replace(base, **mlp, model_kwargs={"hidden": [512, 256]}),
        "deeper MLP (128-128-128-64)": replace(
            base, **mlp, model_kwargs={"hidden": [128, 128, 128, 64]}
        ),
        "residual MLP (128, 2 blocks)": replace(
            base, model="ResidualMLP", model_kwargs={"width": 128, "blocks": 2, "dropout": 0.5}
        ),
        "CNN (SmallCNN)": replace(base, model="SmallCNN"),
        "warm-up + cosine decay": replace(base, schedule="cosine", warmup_epochs=1),
        "one-cycle schedule": replace(base, schedule="onecycle"),
        "SGD + momentum (lr 0.05)": replace(base, optimizer="sgd", lr=0.05),
        "RMSprop": replace(base, optimizer="rmsprop"),
        "weight decay (AdamW 0.05)": replace(base, optimizer="adamw", weight_decay=0.05),
        "label smoothing 0.1": replace(base, label_smoothing=0.1),
        "dropout 0.7 (higher)": replace(base, dropout=0.7),
        "dropout 0.2 (lower)": replace(base, dropout=0.2),
        "augmentation (shift, rotate)": replace(base, augment=True),
    }


# The final MLP's recipe: LeCun's 784-800-10 shape, AdamW with a one-cycle schedule to 3e-3,
# batch 256, dropout 0.2, label smoothing 0.1, weight decay 0.01 and augmentation, 20 epochs;
# fixed in advance, then checked whole on the 5,000 validation images (section 10.6).
MLP_RECIPE = Recipe(
    model="MLP",
    model_kwargs={"hidden": [800]},
    optimizer="adamw",
    lr=3e-3,
    schedule="onecycle",
    epochs=20,
    batch_size=256,
    weight_decay=0.01,
    label_smoothing=0.1,
    dropout=0.2,
    augment=True,
    validation_size=5000,
)

# Both searches tune the MLP recipe's optimizer and regularization on short, 2-epoch runs.
SEARCH_BASE = replace(MLP_RECIPE, epochs=2, augment=False)

# The final CNN's recipe: LeNetLike, the same optimizer (AdamW, one-cycle to 5e-3, batch
# 256), label smoothing, weight decay and augmentation, on a budget of 12 epochs.
CNN_RECIPE = Recipe(
    model="LeNetLike",
    optimizer="adamw",
    lr=5e-3,
    schedule="onecycle",
    epochs=12,
    batch_size=256,
    weight_decay=0.01,
    label_smoothing=0.1,
    augment=True,
    validation_size=5000,
)


def on_full_training_set(recipe: Recipe) -> Recipe:
    """The same recipe on all 60,000 training images, scored once on the test set."""
    return replace(recipe, validation_size=0)


# ---------------------------------------------------------------------------------------------
# Searching
# ---------------------------------------------------------------------------------------------

# The space both searches explore, around the MLP recipe: (low, high, log scale?) or choices.
SEARCH_SPACE: dict[str, object] = {
    "lr": (3e-4, 1e-2, True),
    "weight_decay": (1e-5, 1e-1, True),
    "dropout": (0.0, 0.6, False),
    "label_smoothing": (0.0, 0.2, False),
}


def apply_params(base: Recipe, params: dict) -> Recipe:
    """The recipe `base` with the searched values put in."""
    return replace(base, **params)


def sample_params(rng: random.Random, space: dict = SEARCH_SPACE) -> dict:
    """One random point of `space`: uniform, or log-uniform where the third entry is True."""
    params = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            params[name] = rng.choice(spec)
        else:
            low, high, log = spec
            if log:
                params[name] = math.exp(rng.uniform(math.log(low), math.log(high)))
            else:
                params[name] = rng.uniform(low, high)
    return params


def random_search(base: Recipe, trials: int, seed: int = 0, **kwargs: object) -> list:
    """`trials` random recipes around `base`, each run (or loaded) with `run_experiment`.

    Each result also holds `hparams`, the sampled values.
    """
    rng = random.Random(seed)
    results = []
    for _ in range(trials):
        params = sample_params(rng)
        results.append({**run_experiment(apply_params(base, params), **kwargs), "hparams": params})
    return results


def optuna_search(base: Recipe, trials: int, seed: int = 0, **kwargs: object) -> list:
    """Bayesian search (Optuna's TPE sampler) over the same space, with the same budget.

    Optuna's log is quiet (warnings only) during the search, and as it was afterwards.
    """
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = []

    def objective(trial: optuna.Trial) -> float:
        params = {}
        for name, spec in SEARCH_SPACE.items():
            if isinstance(spec, list):
                params[name] = trial.suggest_categorical(name, spec)
            else:
                low, high, log = spec
                params[name] = trial.suggest_float(name, low, high, log=log)
        result = run_experiment(apply_params(base, params), **kwargs)
        results.append({**result, "hparams": params})
        return result["val_acc"]

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(3, trials))
    try:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(objective, n_trials=trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return results
