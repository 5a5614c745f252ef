"""Measured experiments: one recipe in, one cached result out (chapter 10).

`run_experiment` trains a `helpers.recipe.Recipe` with the in-memory loop (`helpers.loop.fit`),
records its history and time, and stores the result as JSON under `root / "experiments"`, named
by the recipe's key: running the same recipe again loads the result instead of training. A
stored result is used only while the loop that made it computes the same numbers: its stamp
records the loop's version (`helpers.loop.LOOP_VERSION`, bumped when a change alters what the
loop computes; `helpers.provenance` checks that), and a result of another version trains again.
The results of the book's own full run of chapter 10 ship with the package (`SHIPPED_RESULTS`,
listed in `helpers/shipped/manifest.json`), as chapter 07's model does, so the chapter loads in
seconds on a fresh machine too.

The protocol is the honest one. With `validation_size > 0` (5,000 images in this chapter's
recipes, the same split as `helpers.recipe.BOOK_RECIPE`), the model trains on the rest of the
training set and is scored on the validation images only; the test set is not touched.
`validation_size=0` trains on all 60,000 images and scores the test set, once, at the end: that
is for final models only.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from helpers import data, models
from helpers.graph import flops_per_image
from helpers.loop import fit, loop_code
from helpers.recipe import BOOK_RECIPE, Recipe, build_model, stamp

SHIPPED_RESULTS = Path(__file__).parent / "shipped" / "results"
SHIPPED_MODELS = Path(__file__).parent / "shipped" / "models"


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
    return data.data_root(root) / "experiments"


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

    With `keep_model`, the trained weights are kept too (`<key>.pt` beside the result, see
    `read_model`) and the result gains `model`, in eval mode on the CPU; a stored result
    without its weights then trains again.
    """
    if quick:
        recipe = recipe.shortened()
    path = cache_dir(root) / f"{recipe.key()}.json"
    folders = (path.parent, SHIPPED_RESULTS) if cache else ()
    for folder in folders:
        result = read_result(folder / path.name, loop_code(recipe))
        model = read_model(recipe, result, folder) if keep_model and result else None
        if result is not None and (model is not None or not keep_model):
            return {**result, "cached": True, **({"model": model} if keep_model else {})}
    splits = data.split_tensors(recipe.validation_size, root, device)
    model, result = fit(recipe, splits["train"], splits["held"])
    made_by = stamp(loop_code(recipe))
    result = {**result, **model_cost(build_model(recipe)), "quick": quick, "made_by": made_by}
    if cache and keep_model:  # the weights first: a result without them is not yet complete
        state = {"key": recipe.key(), "made_by": made_by, "model": model.cpu().state_dict()}
        data.atomic_write(model_path(path), _torch_bytes(state))
    if cache:
        data.atomic_write(path, json.dumps(result, indent=1).encode())
    kept = {"model": model.cpu().eval()} if keep_model else {}
    return {**result, "cached": False, **kept}


def model_path(result_path: Path) -> Path:
    """Where the weights of the result stored at `result_path` are kept (`keep_model`)."""
    folder = SHIPPED_MODELS if result_path.parent == SHIPPED_RESULTS else result_path.parent
    return folder / f"{result_path.stem}.pt"


def read_model(recipe: Recipe, result: dict, folder: Path) -> nn.Module | None:
    """The model whose run is `result`, from its weights file; None if missing or not that run.

    The weights must come from the same run as the result (the same key and the same `made_by`
    stamp), so that the accuracy the result reports is the accuracy of these weights. The file
    is read with `weights_only=True`: tensors and plain data, never code.
    """
    path = model_path(folder / f"{recipe.key()}.json")
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(recipe)
        model.load_state_dict(state["model"])
        same_run = state["key"] == recipe.key() and state["made_by"] == result["made_by"]
    except (RuntimeError, KeyError, TypeError, ValueError, EOFError) as error:
        warnings.warn(f"ignoring unreadable weights {path} ({error}); training again", stacklevel=3)
        return None
    return model.eval() if same_run else None


def shipped_model(recipe: Recipe) -> nn.Module:
    """The model of a final recipe whose run ships with the book (chapter 10's final CNN).

    Never trains: a missing or stale shipped run is an error that says how to make it again.
    """
    result = read_result(SHIPPED_RESULTS / f"{recipe.key()}.json", loop_code(recipe))
    model = read_model(recipe, result, SHIPPED_RESULTS) if result is not None else None
    if model is None:
        raise FileNotFoundError(
            f"The book ships no current weights for recipe {recipe.key()} ({recipe.model}): "
            "run_experiment(recipe, keep_model=True) trains them (maintainers: "
            "python scripts/book_tools.py ship-model)."
        )
    return model


def _torch_bytes(state: dict) -> bytes:
    """`state` as `torch.save` writes it, in memory (for `helpers.data.atomic_write`)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def read_result(path: Path, code: str | None = None) -> dict | None:
    """The result stored at `path`, or None if there is none, it is unreadable or it is stale.

    Stale means made by another version of the loop than `code` (`helpers.loop.loop_code`).
    Neither is an error: the recipe is trained again and the file replaced. A warning says so,
    since that may take minutes.
    """
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
        if result["key"] != path.stem:
            raise ValueError(f"it holds the result of recipe {result['key']}")
        made_by = result["made_by"]["code"]
    except (ValueError, KeyError, TypeError) as error:
        warnings.warn(f"ignoring unreadable result {path} ({error}); training again", stacklevel=3)
        return None
    if code is not None and made_by != code:
        warnings.warn(
            f"ignoring {path.name}: made by training code {made_by}, now {code}; training again",
            stacklevel=3,
        )
        return None
    return result


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


# The final MLP's recipe: LeCun's 784-800-10 shape, chapter 11's optimizer (AdamW, one-cycle to
# 3e-3, batch 256), dropout 0.2, label smoothing 0.1, weight decay 0.01 and augmentation, 20
# epochs; chosen on the 5,000 validation images.
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

# The final CNN's recipe: LeNetLike, chapter 11's optimizer (AdamW, one-cycle to 5e-3, batch
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
