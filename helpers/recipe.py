"""One recipe type for every training run in the book (chapters 07, 10, 11).

A `Recipe` names everything that decides a run: the model and its size, the optimizer, the
learning-rate schedule, regularization, augmentation, the batch size, the seed and the validation
split. Its defaults are the seed's recipe. `build_model`, `build_optimizer` and `build_schedule`
turn it into the objects a loop needs, so chapter 07's loop (`helpers.training`) and the
in-memory loop of chapters 10 and 11 (`helpers.loop`) build them the same way.

Every loop records its per-epoch history with the same names (`HISTORY_KEYS`), and accuracies
are percentages everywhere. A stored result records what made it with `stamp`: the version of
the loop that trained it (bumped by hand when what the loop computes changes), torch's and
helpers'.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import NoReturn, Union

import torch
from torch import nn

from helpers.models import MODELS

# Quick mode (`MNIST_BOOK_QUICK=1`, CI): a recipe is `shortened()` to this many epochs and images.
QUICK_EPOCHS = 1
QUICK_SUBSET = 2_000

# Per-epoch history, one vocabulary for every loop: each fills the keys it measures.
HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "lr", "seconds")

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("step", "onecycle", "cosine", "constant")

# MNIST's training set, from which `validation_size` images are held out.
TRAIN_IMAGES = 60_000


class FrozenDict(dict):
    """A dict that cannot change once made, so it can be hashed: a recipe's `model_kwargs`."""

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        """Every method that would change the dict: refused, saying what to do instead."""
        raise TypeError(
            "a recipe's model_kwargs cannot change after the recipe is made (its key names "
            "files): make a new recipe with dataclasses.replace(recipe, model_kwargs={...})"
        )

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self) -> int:
        """The hash of its (key, value) pairs, in key order."""
        return hash(tuple(sorted(self.items())))

    def __reduce__(self) -> tuple:
        """Copied and pickled as a new FrozenDict of the same items."""
        return (FrozenDict, (dict(self),))


def frozen(value: object) -> object:
    """`value` made immutable: dicts become FrozenDicts, lists and tuples tuples, all the way."""
    if isinstance(value, Mapping):
        return FrozenDict({k: frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(frozen(v) for v in value)
    return value


def plain(value: object) -> object:
    """`value` as plain data for JSON and `torch.load(weights_only=True)`: dicts and lists."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


# What each kind of field takes: (types, how an error describes them).
# What `Recipe.augment` takes: chapter 10's switch, or chapter 13's ingredients by name, joined
# by "+" (helpers.augment applies them, in this order).
Augmentation = Union[bool, str]  # noqa: UP007 (its name is what check_type reads)
INGREDIENTS = ("affine", "elastic", "width", "blur", "contrast", "noise")


def ingredients(spec: str) -> list[str]:
    """The ingredient names of a recipe's `augment` string, checked: "affine+noise" -> [...]."""
    names = [name for name in spec.split("+") if name]
    unknown = [name for name in names if name not in INGREDIENTS]
    if unknown or not names:
        raise ValueError(
            f"Recipe augment={spec!r}: unknown ingredient(s) {unknown or ['(none named)']}; "
            f"join some of {list(INGREDIENTS)} with '+', as in augment={'+'.join(INGREDIENTS)!r}"
        )
    return names


FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "a whole number"),
    "float": ((int, float), "a number"),
    "bool": ((bool,), "True or False"),
    "str": ((str,), "a string"),
    "Mapping": ((Mapping,), "a dict of the model's keyword arguments"),
    "Augmentation": (
        (bool, str),
        "True or False, or chapter 13's ingredients joined by '+' (helpers.recipe.INGREDIENTS)",
    ),
}

# The numbers a field admits, ends included (those torch itself admits, and MNIST's size).
FIELD_RANGES: dict[str, tuple[float, float]] = {
    "lr": (0, math.inf),
    "step_size": (1, math.inf),
    "gamma": (0, math.inf),
    "warmup_epochs": (0, math.inf),
    "epochs": (1, math.inf),
    "batch_size": (1, math.inf),
    "weight_decay": (0, math.inf),
    "label_smoothing": (0, 1),
    "dropout": (0, 1),
    "max_grad_norm": (0, math.inf),
    "validation_size": (0, TRAIN_IMAGES - 1),
    "train_subset": (1, math.inf),
}


def check_recipe(recipe: Recipe) -> None:
    """Raise a TypeError or ValueError that names the first field of `recipe` no loop can use."""
    annotations = {f.name: str(f.type) for f in fields(recipe)}
    for f in fields(recipe):
        check_type(f.name, getattr(recipe, f.name), annotations[f.name], f.default)
    for name, (low, high) in FIELD_RANGES.items():
        value = getattr(recipe, name)
        if value is not None and not low <= value <= high:
            admitted = f"at least {low}" if high == math.inf else f"{low} to {high:,}"
            optional = ", or None" if "None" in annotations[name] else ""
            raise ValueError(f"Recipe {name}={value!r} is out of range: pass {admitted}{optional}")
    for name, choices in (("model", MODELS), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        if getattr(recipe, name) not in choices:
            raise ValueError(f"{name} {getattr(recipe, name)!r}: choose one of {sorted(choices)}")
    check_model_arguments(recipe)
    if isinstance(recipe.augment, str):
        ingredients(recipe.augment)


def check_type(name: str, value: object, annotation: str, default: object) -> None:
    """Raise a TypeError naming field `name` unless `value` fits its annotation ("int | None")."""
    kind, _, none = annotation.partition(" | ")
    types, described = FIELD_TYPES[kind]
    if (value is None and none) or (
        isinstance(value, types) and (bool in types or not isinstance(value, bool))
    ):
        return
    allowed = f"{described} or None" if none else described
    example = "" if default is MISSING else f", such as the default {name}={default!r}"
    raise TypeError(f"Recipe {name}={value!r}: pass {allowed}{example}")


def takes_dropout(model: str) -> bool:
    """Whether the registered model `model` has a dropout rate a recipe can set."""
    return "dropout" in inspect.signature(MODELS[model]).parameters


def check_model_arguments(recipe: Recipe) -> None:
    """Raise a ValueError unless the recipe's model takes its `model_kwargs` and `dropout`."""
    accepted = set(inspect.signature(MODELS[recipe.model]).parameters)
    unknown = sorted(set(recipe.model_kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"Recipe model_kwargs {unknown}: {recipe.model} takes no such argument; "
            f"pass only some of {sorted(accepted)}"
        )
    if recipe.dropout is not None and not takes_dropout(recipe.model):
        raise ValueError(
            f"Recipe dropout={recipe.dropout!r}: {recipe.model} has no Dropout to set; leave "
            f"dropout=None, or choose a model that has one: {sorted(filter(takes_dropout, MODELS))}"
        )


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a training run. The defaults are the seed's recipe.

    `optimizer` is "adam", "adamw", "sgd" (Nesterov momentum 0.9) or "rmsprop"; `schedule` is
    "step" (the seed's StepLR: times `gamma` every `step_size` epochs), "onecycle" (warm-up then
    annealing, per batch), "cosine" (linear warm-up over `warmup_epochs`, then cosine decay to
    zero, per batch) or "constant". `dropout`, when set, overrides the model's own rate.
    `augment` is False, True (chapter 10's shifts and rotations, `helpers.augment`) or chapter
    13's ingredients joined by "+" (`helpers.robust`, e.g. "affine+elastic").

    `validation_size` images are held out of the 60,000 training images (always the same ones,
    `helpers.data.split_indices`); 0 holds none out, and the test set is then the only held-out
    set. `train_subset` trains on only the first N images of what remains (quick demos).

    A recipe cannot change once made (its `key` names files): `model_kwargs` is kept as a
    `FrozenDict`, its lists as tuples; `to_dict` gives it back as plain data.
    """

    model: str = "SimpleNN"
    model_kwargs: Mapping = field(default_factory=dict)
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
    augment: Augmentation = False
    max_grad_norm: float | None = 1.0
    validation_size: int = 0
    train_subset: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse a recipe no loop can run, naming the field, before any training starts."""
        check_recipe(self)
        object.__setattr__(self, "model_kwargs", frozen(self.model_kwargs))

    def key(self) -> str:
        """A short hash of the recipe: cached results and checkpoints are named by it."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """The recipe as plain data (dicts, lists, numbers, strings): what results store."""
        return plain(asdict(self))

    @classmethod
    def from_dict(cls, stored: Mapping) -> Recipe:
        """The recipe a result or checkpoint stored (`to_dict`), with its fields checked."""
        unknown = sorted(set(stored) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(
                f"the stored recipe has fields {unknown} that this helpers version's Recipe "
                "lacks: it was made by a newer helpers, so upgrade helpers to load it"
            )
        return cls(**stored)

    def shortened(self) -> Recipe:
        """The quick-mode version: `QUICK_EPOCHS` epochs on `QUICK_SUBSET` images."""
        return replace(self, epochs=QUICK_EPOCHS, train_subset=QUICK_SUBSET, step_size=1)


# The model chapters 07 to 10 train, evaluate, compare and improve on: the seed's recipe with 5,000
# training images held out for validation, so that the test set is used once, at the end.
BOOK_RECIPE = Recipe(validation_size=5000)

# Chapter 09's convolutional network, trained exactly as chapter 07 trains the seed's: the same
# recipe, loop, split and seed; only the model changes (`helpers.models.SmallCNN`).
BOOK_CNN_RECIPE = replace(BOOK_RECIPE, model="SmallCNN")


def stamp(code: str) -> dict[str, str]:
    """What made a result: its loop's version (`code`, e.g. "loop/1"), torch's and helpers'."""
    from helpers import __version__

    return {"code": code, "torch": str(torch.__version__), "helpers": __version__}


def new_history(*keys: str) -> dict[str, list[float]]:
    """An empty per-epoch history with the given `HISTORY_KEYS`."""
    unknown = set(keys) - set(HISTORY_KEYS)
    if unknown:
        raise ValueError(f"unknown history keys {sorted(unknown)}: use {HISTORY_KEYS}")
    return {key: [] for key in keys}


def build_model(recipe: Recipe) -> nn.Module:
    """The recipe's model, its `dropout` applied (lists in `model_kwargs` become tuples)."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in recipe.model_kwargs.items()}
    if recipe.dropout is not None:
        kwargs["dropout"] = recipe.dropout
    return MODELS[recipe.model](**kwargs)


def make_adamw(
    params: object, lr: float = 1e-3, weight_decay: float = 0.0, fused: bool = True
) -> torch.optim.Optimizer:
    """AdamW (plain Adam when weight_decay is 0), fused into one kernel where the device allows."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    except RuntimeError:  # a device without a fused implementation: the default one
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def build_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    """Adam (weight decay as an L2 term), AdamW (decoupled), SGD with momentum, or RMSprop."""
    params, lr, wd = model.parameters(), recipe.lr, recipe.weight_decay
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if recipe.optimizer == "adamw":
        return make_adamw(params, lr, wd)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)


def build_schedule(
    recipe: Recipe, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """The recipe's schedule, and whether it steps after every batch (else after every epoch)."""
    total = recipe.epochs * steps_per_epoch
    if recipe.schedule == "step":
        sched = torch.optim.lr_scheduler.StepLR(optimizer, recipe.step_size, recipe.gamma)
        return sched, False
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=total), True
    if recipe.schedule == "cosine":
        warmup = round(recipe.warmup_epochs * steps_per_epoch)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0), True


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Batches in one epoch, the last one possibly smaller (as a DataLoader's)."""
    return -(-images // batch_size)
