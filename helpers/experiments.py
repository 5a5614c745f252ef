"""Measured experiments: one recipe in, one cached result out (chapter 09).

An `Experiment` names everything that decides a training run: the model and its size, the
optimizer, the learning-rate schedule, the regularization (weight decay, label smoothing,
dropout), augmentation, the seed and the validation split. `run_experiment` trains it on the fast
tensor path (chapter 10), records the history and the time, and stores the result as JSON under
`helpers.data.default_root() / "experiments"`, named by a hash of the recipe: running the same
recipe again loads the result instead of training. The results of the book's own full run of
chapter 09 ship with the package (`SHIPPED_RESULTS`), as chapter 07's model does, so the chapter
loads in seconds on a fresh machine too.

The protocol is the honest one. With `validation_size > 0` (the default, 5,000 images, the same
split as `helpers.training.BOOK_RECIPE`), the model trains on the rest of the training set and is
scored on the validation images only; the test set is not touched. `validation_size=0` trains on
all 60,000 images and scores the test set, once, at the end: that is for final models only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from helpers import data, models
from helpers.fast import accuracy, make_adamw
from helpers.graph import training_step_flops
from helpers.runtime import is_quick

CACHE_VERSION = 1
SHIPPED_RESULTS = Path(__file__).parent / "experiment_results"
TRAIN_SIZE = 60_000
QUICK_SUBSET = 2_000  # quick mode: training images per experiment
QUICK_EPOCHS = 1

MODELS: dict[str, Callable[..., nn.Module]] = {
    "SimpleNN": models.SimpleNN,
    "MLP": models.MLP,
    "ResidualMLP": models.ResidualMLP,
    "SmallCNN": models.SmallCNN,
    "LeNetLike": models.LeNetLike,
}


@dataclass(frozen=True)
class Experiment:
    """One training recipe. The defaults are the seed's recipe, validated on held-out images.

    `optimizer` is "adam", "adamw", "sgd" (with momentum 0.9) or "rmsprop"; `schedule` is "step"
    (the seed's StepLR: times `gamma` every `step_size` epochs), "onecycle" (warm-up then
    annealing, per batch), "cosine" (linear warm-up over `warmup_epochs`, then cosine decay to
    zero, per batch) or "constant". `dropout`, when set, overrides the model's own rate.
    """

    model: str = "SimpleNN"
    model_kwargs: dict = field(default_factory=dict)
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "step"
    step_size: int = 5
    gamma: float = 0.5
    warmup_epochs: float = 0.0
    epochs: int = 10
    batch_size: int = 64
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    dropout: float | None = None
    augment: bool = False
    max_grad_norm: float | None = 1.0
    validation_size: int = 5000
    train_subset: int | None = None  # train on only the first N images of the training part
    seed: int = 0

    def key(self) -> str:
        """A short hash of the recipe (and of quick mode): the cache file's name."""
        text = json.dumps({"v": CACHE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def shortened(self) -> Experiment:
        """The quick-mode version: `QUICK_EPOCHS` epochs on `QUICK_SUBSET` images."""
        return replace(self, epochs=QUICK_EPOCHS, train_subset=QUICK_SUBSET, step_size=1)


# The seed's recipe (chapter 07) as an experiment: SimpleNN, Adam 1e-3, StepLR(5, 0.5), batch 64,
# gradients clipped to norm 1, 10 epochs, 5,000 training images held out for validation.
SEED_EXPERIMENT = Experiment()


# ---------------------------------------------------------------------------------------------
# Data: the training set split once, held in memory
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def split_tensors(validation_size: int = 5000) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The "train" and "eval" tensors: eval is the validation split, or the test set if size 0.

    The split is the one `torch.utils.data.random_split` makes with a generator seeded 0, as in
    `helpers.training.recipe_loaders` for `BOOK_RECIPE`: the same 5,000 held-out images.
    """
    images, labels = data.mnist_tensors(train=True)
    if validation_size == 0:
        return {"train": (images, labels), "eval": data.mnist_tensors(train=False)}
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    train, held = order[: len(images) - validation_size], order[len(images) - validation_size :]
    return {"train": (images[train], labels[train]), "eval": (images[held], labels[held])}


# ---------------------------------------------------------------------------------------------
# Augmentation on whole batches
# ---------------------------------------------------------------------------------------------


def augment_batch(
    images: torch.Tensor,
    max_shift: float = 2.0,
    max_degrees: float = 10.0,
    generator: torch.Generator | None = None,
    background: float | None = None,
) -> torch.Tensor:
    """Shift each image by up to `max_shift` pixels and rotate it by up to `max_degrees`.

    One random affine map per image, applied to the whole batch at once with `affine_grid` and
    `grid_sample` (bilinear): the seed's RandomRotation(10) + RandomAffine(translate=0.1) idea,
    without a PIL image per sample. Pixels that come in from outside are `background` (by default
    the batch's smallest value, the normalized black), so values stay within the input's range.
    """
    n, _, h, w = images.shape
    rand = torch.rand(n, 3, generator=generator).to(images.device)
    angle = (rand[:, 0] * 2 - 1) * math.radians(max_degrees)
    # affine_grid works in coordinates from -1 to 1 across the image: a pixel is 2 / size.
    shift_x = (rand[:, 1] * 2 - 1) * max_shift * 2 / w
    shift_y = (rand[:, 2] * 2 - 1) * max_shift * 2 / h
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    fill = images.min() if background is None else torch.tensor(background)
    moved = F.grid_sample(images - fill, grid, mode="bilinear", align_corners=False)
    return moved + fill


# ---------------------------------------------------------------------------------------------
# Building the pieces of a recipe
# ---------------------------------------------------------------------------------------------


def build_model(config: Experiment) -> nn.Module:
    """The recipe's model, its `dropout` applied (lists in `model_kwargs` become tuples)."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model_kwargs.items()}
    if config.dropout is not None:
        kwargs["dropout"] = config.dropout
    return MODELS[config.model](**kwargs)


def build_optimizer(config: Experiment, model: nn.Module) -> torch.optim.Optimizer:
    """Adam (weight decay as an L2 term), AdamW (decoupled), SGD with momentum, or RMSprop."""
    params, lr, wd = model.parameters(), config.lr, config.weight_decay
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if config.optimizer == "adamw":
        return make_adamw(params, lr, wd)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def build_schedule(
    config: Experiment, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """The recipe's schedule, and whether it steps after every batch (else after every epoch)."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "step":
        sched = torch.optim.lr_scheduler.StepLR(optimizer, config.step_size, config.gamma)
        return sched, False
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=total), True
    if config.schedule == "cosine":
        warmup = round(config.warmup_epochs * steps_per_epoch)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0), True
    raise ValueError(f"unknown schedule {config.schedule!r}")


def model_cost(model: nn.Module) -> dict[str, int]:
    """Parameters and measured FLOPs per image (forward; forward + backward), `helpers.graph`."""
    x, y = torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.int64)
    flops = training_step_flops(model, x, y)
    return {
        "params": models.count_parameters(model)[0],
        "flops_forward": flops["forward"] // 2,
        "flops_train": flops["forward+backward"] // 2,
    }


# ---------------------------------------------------------------------------------------------
# Training and the cache
# ---------------------------------------------------------------------------------------------


def train(config: Experiment) -> dict:
    """Train `config` once, from scratch (no cache): the history and the final scores.

    After every epoch, the accuracy on the evaluation images is recorded: the validation split,
    or, with `validation_size=0`, the test set, which is then measured only once, at the end.
    """
    splits = split_tensors(config.validation_size)
    images, labels = splits["train"]
    if config.train_subset is not None:
        images, labels = images[: config.train_subset], labels[: config.train_subset]
    held_images, held_labels = splits["eval"]
    final_only = config.validation_size == 0  # the test set: look once

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    model = build_model(config)
    cost = model_cost(model)
    optimizer = build_optimizer(config, model)
    steps_per_epoch = -(-len(images) // config.batch_size)
    schedule, per_batch = build_schedule(config, optimizer, steps_per_epoch)
    shuffle = torch.Generator().manual_seed(config.seed)
    augment = torch.Generator().manual_seed(config.seed + 1)
    history: dict[str, list[float]] = {"train_loss": [], "eval_acc": [], "seconds": []}
    start = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        loss_sum = torch.zeros(())
        for x, y in data.tensor_batches(images, labels, config.batch_size, generator=shuffle):
            if config.augment:
                x = augment_batch(x, generator=augment)
            loss = F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            if per_batch:
                schedule.step()
            loss_sum += loss.detach()
        if not per_batch:
            schedule.step()
        history["train_loss"].append(loss_sum.item() / steps_per_epoch)
        if not final_only or epoch == config.epochs - 1:
            history["eval_acc"].append(accuracy(model, held_images, held_labels))
        history["seconds"].append(time.perf_counter() - start)
    final = history["eval_acc"][-1]
    return {
        "key": config.key(),
        "config": asdict(config),
        "history": history,
        "val_acc": None if final_only else final,
        "test_acc": final if final_only else None,
        "seconds": history["seconds"][-1],
        "train_images": len(images),
        "threads": torch.get_num_threads(),
        **cost,
    }


def cache_dir() -> Path:
    """Where results are kept: `helpers.data.default_root() / "experiments"`."""
    return data.default_root() / "experiments"


def run_experiment(
    config: Experiment, quick: bool | None = None, cache: bool = True, root: Path | None = None
) -> dict:
    """Train `config`, or load its result if it ran before; returns the result dict.

    In quick mode (by default when `MNIST_BOOK_QUICK=1`) the recipe is first `shortened()`, so
    it trains for a few dozen steps and is cached under its own key. The result holds the
    `config` that ran, its `key`, the per-epoch `history` (train loss, accuracy on the held-out
    images, seconds), `val_acc` (or `test_acc` for a final model), `seconds`, `params`,
    `flops_forward` and `flops_train` (per image), and `cached` (whether it was loaded).
    """
    quick = is_quick() if quick is None else quick
    if quick:
        config = config.shortened()
    path = (root or cache_dir()) / f"{config.key()}.json"
    for stored in (path, SHIPPED_RESULTS / path.name) if cache else ():
        result = read_result(stored)
        if result is not None:
            return {**result, "cached": True}
    result = {**train(config), "quick": quick}
    if cache:
        data.atomic_write(path, json.dumps(result, indent=1).encode())
    return {**result, "cached": False}


def read_result(path: Path) -> dict | None:
    """The result stored at `path`, or None if there is none or it is unreadable.

    An unreadable file (cut short by a crash, edited by hand) is not an error: the recipe is
    trained again and the file replaced. A warning says so, since that may take minutes.
    """
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
        if result["key"] != path.stem:
            raise ValueError(f"it holds the result of recipe {result['key']}")
    except (ValueError, KeyError, TypeError) as error:
        warnings.warn(f"ignoring unreadable result {path} ({error}); training again", stacklevel=3)
        return None
    return result


def run_seeds(config: Experiment, seeds: tuple[int, ...] = (0, 1, 2), **kwargs: object) -> list:
    """`run_experiment` for each seed: the spread over seeds tells a real gain from noise."""
    return [run_experiment(replace(config, seed=s), **kwargs) for s in seeds]


# ---------------------------------------------------------------------------------------------
# The chapter's recipes
# ---------------------------------------------------------------------------------------------

# The seed's recipe on a 4-epoch budget: its schedule halves the rate halfway, as over 10 epochs.
ABLATION_BASE = replace(SEED_EXPERIMENT, epochs=4, step_size=2)


def ablation_variants(base: Experiment = ABLATION_BASE) -> dict[str, Experiment]:
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


# The final MLP's recipe: LeCun's 784-800-10 shape, chapter 10's optimizer (AdamW, one-cycle to
# 3e-3, batch 256), dropout 0.2, label smoothing 0.1, weight decay 0.01 and augmentation, 20 epochs.
MLP_RECIPE = Experiment(
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
)

# Both searches tune the MLP recipe's optimizer and regularization on short, 2-epoch runs.
SEARCH_BASE = replace(MLP_RECIPE, epochs=2, augment=False)

# The final CNN's recipe: LeNetLike, chapter 10's optimizer (AdamW, one-cycle to 5e-3, batch
# 256), label smoothing, weight decay and augmentation, on a budget of 12 epochs.
CNN_RECIPE = Experiment(
    model="LeNetLike",
    optimizer="adamw",
    lr=5e-3,
    schedule="onecycle",
    epochs=12,
    batch_size=256,
    weight_decay=0.01,
    label_smoothing=0.1,
    augment=True,
)


def on_full_training_set(config: Experiment) -> Experiment:
    """The same recipe on all 60,000 training images, scored once on the test set."""
    return replace(config, validation_size=0)


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


def apply_params(base: Experiment, params: dict) -> Experiment:
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


def random_search(base: Experiment, trials: int, seed: int = 0, **kwargs: object) -> list:
    """`trials` random recipes around `base`, each run (or loaded) with `run_experiment`.

    Each result also holds `hparams`, the sampled values.
    """
    rng = random.Random(seed)
    results = []
    for _ in range(trials):
        params = sample_params(rng)
        results.append({**run_experiment(apply_params(base, params), **kwargs), "hparams": params})
    return results


def optuna_search(base: Experiment, trials: int, seed: int = 0, **kwargs: object) -> list:
    """Bayesian search (Optuna's TPE sampler) over the same space, with the same budget."""
    import optuna

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
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=trials)
    return results
