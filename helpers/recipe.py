"""One recipe type for every training run in the book (chapters 07, 10, 11).

A `Recipe` names everything that decides a run: the model and its size, the optimizer, the
learning-rate schedule, regularization, augmentation, the batch size, the seed and the validation
split. Its defaults are the seed's recipe. `build_model`, `build_optimizer` and `build_schedule`
turn it into the objects a loop needs, so chapter 07's loop (`helpers.training`) and the
in-memory loop of chapters 10 and 11 (`helpers.loop`) build them the same way.

Every loop records its per-epoch history with the same names (`HISTORY_KEYS`), and accuracies
are percentages everywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace

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


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a training run. The defaults are the seed's recipe.

    `optimizer` is "adam", "adamw", "sgd" (Nesterov momentum 0.9) or "rmsprop"; `schedule` is
    "step" (the seed's StepLR: times `gamma` every `step_size` epochs), "onecycle" (warm-up then
    annealing, per batch), "cosine" (linear warm-up over `warmup_epochs`, then cosine decay to
    zero, per batch) or "constant". `dropout`, when set, overrides the model's own rate.

    `validation_size` images are held out of the 60,000 training images (always the same ones,
    `helpers.data.split_indices`); 0 holds none out, and the test set is then the only held-out
    set. `train_subset` trains on only the first N images of what remains (quick demos).
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
    validation_size: int = 0
    train_subset: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse a recipe no loop can run, naming the field, before any training starts."""
        if self.model not in MODELS:
            raise ValueError(f"model {self.model!r}: choose one of {sorted(MODELS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r}: choose one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r}: choose one of {SCHEDULES}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")

    def key(self) -> str:
        """A short hash of the recipe: cached results and checkpoints are named by it."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def shortened(self) -> Recipe:
        """The quick-mode version: `QUICK_EPOCHS` epochs on `QUICK_SUBSET` images."""
        return replace(self, epochs=QUICK_EPOCHS, train_subset=QUICK_SUBSET, step_size=1)


# The model chapters 07 to 10 train, evaluate, compare and improve on: the seed's recipe with 5,000
# training images held out for validation, so that the test set is used once, at the end.
BOOK_RECIPE = Recipe(validation_size=5000)

# Chapter 09's convolutional network, trained exactly as chapter 07 trains the seed's: the same
# recipe, loop, split and seed; only the model changes (`helpers.models.SmallCNN`).
BOOK_CNN_RECIPE = replace(BOOK_RECIPE, model="SmallCNN")


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
