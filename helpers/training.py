"""Training and validation: the seed's loop, done right (chapter 07).

`train_epoch` and `validate` are the seed's functions with its defaults. `train_model` runs a whole
`Recipe` (Adam, StepLR, gradient clipping, history) and can resume from a checkpoint so that the
resumed run is identical to an uninterrupted one. `load_or_train` lets later chapters reuse a
trained model instead of training it again.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, random_split
from tqdm.auto import tqdm

from helpers import data
from helpers.models import SimpleNN
from helpers.runtime import pick_device, seed_everything

# The models a recipe can name; later chapters register theirs here.
MODELS: dict[str, type[nn.Module]] = {"SimpleNN": SimpleNN}

CHECKPOINT_FORMAT = "mnist-book-checkpoint/1"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a training run. The defaults are the seed's recipe.

    `validation_size=0` validates on the test set, as the seed does; a positive size holds that
    many training images out as a validation set instead, and leaves the test set alone.
    """

    model: str = "SimpleNN"
    model_kwargs: dict = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    step_size: int = 5
    gamma: float = 0.5
    max_grad_norm: float | None = 1.0
    validation_size: int = 0
    train_subset: int | None = None  # use only the first N training images (quick demos)
    seed: int = 0

    def key(self) -> str:
        """A short hash of the recipe: checkpoints are named by it."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Run:
    """A model in training with everything needed to continue or evaluate it."""

    recipe: Recipe
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    history: dict[str, list[float]] = field(default_factory=lambda: new_history())
    best_state: dict[str, torch.Tensor] | None = None

    @property
    def epoch(self) -> int:
        """Epochs completed so far."""
        return len(self.history["train_loss"])

    @property
    def best_epoch(self) -> int:
        """The epoch (1-based) with the highest validation accuracy."""
        return int(np.argmax(self.history["val_acc"])) + 1


def new_history() -> dict[str, list[float]]:
    """The seed's history: per-epoch losses, accuracies and learning rate."""
    return {"train_loss": [], "train_acc": [], "val_loss": [], "val_acc": [], "learning_rates": []}


# ---------------------------------------------------------------------------------------------
# The seed's two loops
# ---------------------------------------------------------------------------------------------


def train_epoch(
    model: nn.Module,
    device: torch.device,
    train_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    epoch: int,
    max_grad_norm: float | None = 1.0,
    progress: bool = True,
) -> tuple[float, float]:
    """Train for one epoch; return (mean batch loss, accuracy in %), as the seed does."""
    model.train()
    train_loss, correct, total = 0.0, 0, 0
    bar = tqdm(train_loader, desc=f"Epoch {epoch}", disable=not progress, leave=True)
    for data_batch, target in bar:
        data_batch, target = data_batch.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data_batch)  # forward: the graph is recorded
        loss = criterion(output, target)
        loss.backward()  # backpropagation through that graph
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_grad_norm)
        optimizer.step()  # one step of gradient descent
        train_loss += loss.item()
        correct += output.argmax(1).eq(target).sum().item()
        total += target.size(0)
        bar.set_postfix(Loss=f"{loss.item():.4f}", Acc=f"{100.0 * correct / total:.2f}%")
    return train_loss / len(train_loader), 100.0 * correct / total


@torch.no_grad()
def validate(
    model: nn.Module, device: torch.device, loader: DataLoader, criterion: nn.Module
) -> tuple[float, float]:
    """(mean batch loss, accuracy in %) on `loader`, in eval mode and without a graph."""
    model.eval()
    loss_sum, correct, total = 0.0, 0, 0
    for data_batch, target in loader:
        data_batch, target = data_batch.to(device), target.to(device)
        output = model(data_batch)
        loss_sum += criterion(output, target).item()
        correct += output.argmax(1).eq(target).sum().item()
        total += target.size(0)
    return loss_sum / len(loader), 100.0 * correct / total


# ---------------------------------------------------------------------------------------------
# Recipes: data, model, optimizer, the whole run
# ---------------------------------------------------------------------------------------------


def seed_worker(worker_id: int) -> None:
    """Seed NumPy and `random` in a DataLoader worker from its torch seed (PyTorch's recipe)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def recipe_loaders(
    recipe: Recipe, root: str | os.PathLike | None = None, num_workers: int = 0
) -> tuple[DataLoader, DataLoader, DataLoader]:
    """(train, validation, test) loaders for a recipe; validation is the test set if size is 0."""
    train_set, test_set = data.mnist_datasets(root)
    if recipe.train_subset is not None:
        train_set = Subset(train_set, range(recipe.train_subset))
    if recipe.validation_size:
        split = torch.Generator().manual_seed(recipe.seed)
        sizes = [len(train_set) - recipe.validation_size, recipe.validation_size]
        train_set, val_set = random_split(train_set, sizes, generator=split)
    else:
        val_set = test_set
    shuffle = torch.Generator().manual_seed(recipe.seed)
    train_loader = DataLoader(
        train_set,
        batch_size=recipe.batch_size,
        shuffle=True,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=shuffle,
    )
    val_loader = DataLoader(val_set, batch_size=recipe.batch_size, num_workers=num_workers)
    test_loader = DataLoader(test_set, batch_size=recipe.batch_size, num_workers=num_workers)
    return train_loader, val_loader, test_loader


def new_run(recipe: Recipe, device: torch.device | None = None) -> Run:
    """A fresh model, Adam optimizer and StepLR schedule for `recipe`, seeded."""
    seed_everything(recipe.seed)
    model = MODELS[recipe.model](**recipe.model_kwargs).to(device or pick_device())
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=recipe.step_size, gamma=recipe.gamma
    )
    return Run(recipe, model, optimizer, scheduler)


def train_model(
    run: Run,
    train_loader: DataLoader,
    val_loader: DataLoader,
    epochs: int | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
) -> Run:
    """Train `run` up to `epochs` in total (default: the recipe's), validating after each epoch.

    Continues from `run.epoch`, so a run loaded from a checkpoint resumes where it stopped. With
    `checkpoint`, the run is saved after every epoch.
    """
    device = next(run.model.parameters()).device
    criterion = nn.CrossEntropyLoss()
    for epoch in range(run.epoch + 1, (epochs or run.recipe.epochs) + 1):
        lr = run.optimizer.param_groups[0]["lr"]
        train_loss, train_acc = train_epoch(
            run.model,
            device,
            train_loader,
            run.optimizer,
            criterion,
            epoch,
            run.recipe.max_grad_norm,
            progress,
        )
        val_loss, val_acc = validate(run.model, device, val_loader, criterion)
        run.scheduler.step()
        for key, value in zip(
            new_history(), (train_loss, train_acc, val_loss, val_acc, lr), strict=True
        ):
            run.history[key].append(value)
        if val_acc >= max(run.history["val_acc"]):
            run.best_state = copy.deepcopy(run.model.state_dict())
        if progress:
            print(
                f"Epoch {epoch}/{run.recipe.epochs} lr {lr:.6f} | train loss {train_loss:.4f} "
                f"acc {train_acc:.2f}% | val loss {val_loss:.4f} acc {val_acc:.2f}%"
            )
        if checkpoint is not None:
            save_checkpoint(run, checkpoint, shuffle=train_loader.generator)
    return run


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, or made for a different model or recipe."""


def save_checkpoint(
    run: Run, path: str | os.PathLike, shuffle: torch.Generator | None = None
) -> None:
    """Save everything needed to evaluate or resume `run`, atomically.

    Besides the model, optimizer and scheduler (the seed saved its optimizer from outside the
    function that owned it, which fails), this keeps the random number generators' states, so a
    resumed run draws the same shuffles and Dropout masks as an uninterrupted one.
    """
    state = {
        "format": CHECKPOINT_FORMAT,
        "recipe": asdict(run.recipe),
        "epoch": run.epoch,
        "model_state": run.model.state_dict(),
        "best_state": run.best_state,
        "optimizer_state": run.optimizer.state_dict(),
        "scheduler_state": run.scheduler.state_dict(),
        "history": run.history,
        "rng": {
            "torch": torch.get_rng_state(),
            "shuffle": shuffle.get_state() if shuffle is not None else None,
        },
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data.atomic_write(Path(path), buffer.getvalue())


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file safely (`weights_only=True`: tensors and plain data, no code)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated zip, bad pickle, unsafe content: all mean "unusable"
        raise CheckpointError(
            f"{path.name} is not a readable checkpoint ({type(e).__name__}: {str(e)[:200]}). "
            "It may be truncated or corrupt: delete it and train again."
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path.name} is not a checkpoint written by helpers.training")
    return state


def load_checkpoint(
    path: str | os.PathLike,
    device: torch.device | None = None,
    shuffle: torch.Generator | None = None,
) -> Run:
    """Rebuild a `Run` from a checkpoint, ready to evaluate or to resume with `train_model`."""
    state = read_checkpoint(path)
    recipe = Recipe(**state["recipe"])
    run = new_run(recipe, device)
    try:
        run.model.load_state_dict(state["model_state"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{Path(path).name} holds weights for a different architecture than "
            f"{recipe.model}({recipe.model_kwargs}): {str(e).splitlines()[0]}"
        ) from None
    run.optimizer.load_state_dict(state["optimizer_state"])
    run.scheduler.load_state_dict(state["scheduler_state"])
    run.history = state["history"]
    run.best_state = state["best_state"]
    torch.set_rng_state(state["rng"]["torch"])
    if shuffle is not None and state["rng"]["shuffle"] is not None:
        shuffle.set_state(state["rng"]["shuffle"])
    return run


def load_into(model: nn.Module, path: str | os.PathLike, best: bool = False) -> nn.Module:
    """Load a checkpoint's weights into `model`, with a clear error if they don't fit."""
    state = read_checkpoint(path)
    weights = state["best_state"] if best and state["best_state"] else state["model_state"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(
            f"{Path(path).name} was saved from {state['recipe']['model']}"
            f"({state['recipe']['model_kwargs']}) and does not fit this "
            f"{type(model).__name__}: {str(e).splitlines()[0]}"
        ) from None
    return model


def checkpoint_path(recipe: Recipe, root: str | os.PathLike | None = None) -> Path:
    """Where `load_or_train` keeps the checkpoint of `recipe` (in the data folder)."""
    root = Path(root) if root is not None else data.default_root()
    return root / "checkpoints" / f"{recipe.model}-{recipe.key()}.pt"


def load_or_train(
    recipe: Recipe, device: torch.device | None = None, progress: bool = True
) -> tuple[Run, tuple[DataLoader, DataLoader, DataLoader]]:
    """The finished run of `recipe`: loaded if its checkpoint exists, trained (and saved) if not.

    Later chapters call this, so they stay independent of each other but never retrain a model
    an earlier chapter already trained. Returns the run and its (train, val, test) loaders.
    """
    loaders = recipe_loaders(recipe)
    path = checkpoint_path(recipe)
    if path.exists():
        try:
            run = load_checkpoint(path, device, shuffle=loaders[0].generator)
            if run.epoch >= recipe.epochs:
                return run, loaders
        except CheckpointError as e:
            print(f"Ignoring an unusable checkpoint ({e}); training again.")
            run = new_run(recipe, device)
    else:
        run = new_run(recipe, device)
    train_model(run, loaders[0], loaders[1], progress=progress, checkpoint=path)
    return run, loaders
