"""Training and validation: the seed's loop, done right (chapter 07).

`train_epoch` and `validate` are the seed's functions with its defaults. `train_model` runs a whole
`helpers.recipe.Recipe` (Adam, StepLR, gradient clipping, history) and can resume from a checkpoint
so that the resumed run is identical to an uninterrupted one. A checkpoint records what made it
(`helpers.recipe.stamp`: this loop's `SEED_LOOP_VERSION`, torch's and helpers' versions);
`load_or_train` lets later chapters reuse a trained model instead of training it again, but never
one made by a version of this loop that computed other numbers. Where checkpoints are kept, and
when one is stale, is `helpers.artifacts`'s business, as for every trained thing the book stores.
"""

from __future__ import annotations

import copy
import io
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from helpers import artifacts, data
from helpers.recipe import Recipe, build_model, build_optimizer, build_schedule, new_history, stamp
from helpers.runtime import pick_device, seed_everything

CHECKPOINT_FORMAT = "mnist-book-checkpoint/1"

# The version of what this loop computes, which every checkpoint records. Bump it by hand, in
# review, when a change alters the numbers a run of a recipe produces (its data, split, model,
# loss, optimizer, schedule or their defaults); a refactor leaves it alone, and so keeps every
# stored checkpoint. tests/test_provenance.py replays a few short runs and compares them with
# those recorded for this version: a change of the numbers without a bump fails there.
SEED_LOOP_VERSION = 1

# What the seed's loop measures each epoch (names from `helpers.recipe.HISTORY_KEYS`).
SEED_HISTORY = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


@dataclass
class Run:
    """A model in training with everything needed to continue or evaluate it."""

    recipe: Recipe
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    history: dict[str, list[float]] = field(default_factory=lambda: new_history(*SEED_HISTORY))
    best_state: dict[str, torch.Tensor] | None = None

    @property
    def epoch(self) -> int:
        """Epochs completed so far."""
        return len(self.history["train_loss"])

    @property
    def best_epoch(self) -> int:
        """The epoch (1-based) of `best_state`: best validation accuracy, the latest on a tie."""
        accuracies = self.history["val_acc"]
        return len(accuracies) - int(np.argmax(accuracies[::-1]))


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
    # mininterval and refresh=False: the bar redraws twice a second, not once per batch. In a
    # notebook every redraw is a message to the front end, and thousands of them flood it.
    bar = tqdm(train_loader, desc=f"Epoch {epoch}", disable=not progress, mininterval=0.5)
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
        postfix = {"Loss": f"{loss.item():.4f}", "Acc": f"{100.0 * correct / total:.2f}%"}
        bar.set_postfix(postfix, refresh=False)
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
    """(train, validation, test) loaders for a recipe; validation is the test set if size is 0.

    The validation images are `helpers.data.split_indices`'s, the same for every seed.
    """
    train_set, test_set = data.mnist_datasets(root)
    train_idx, val_idx = data.split_indices(len(train_set), recipe.validation_size)
    val_set = Subset(train_set, val_idx.tolist()) if recipe.validation_size else test_set
    train_set = Subset(train_set, train_idx[: recipe.train_subset].tolist())
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
    """A fresh model, optimizer and schedule for `recipe` (the seed's: Adam and StepLR), seeded.

    This loop augments nothing and steps its schedule once per epoch: a recipe that asks for
    batch augmentation or a per-batch schedule belongs to `helpers.loop.fit`, and is refused.
    """
    if recipe.augment or recipe.schedule != "step":
        raise ValueError(
            "the seed's loop steps a StepLR schedule per epoch and does not augment: "
            "train this recipe with helpers.loop.fit (chapter 10)"
        )
    seed_everything(recipe.seed)
    model = build_model(recipe).to(device or pick_device())
    optimizer = build_optimizer(recipe, model)
    scheduler, _ = build_schedule(recipe, optimizer, steps_per_epoch=1)
    return Run(recipe, model, optimizer, scheduler)


def train_model(
    run: Run,
    train_loader: DataLoader,
    val_loader: DataLoader,
    epochs: int | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    val_name: str = "val",
) -> Run:
    """Train `run` up to `epochs` in total (default: the recipe's), validating after each epoch.

    Continues from `run.epoch`, so a run loaded from a checkpoint resumes where it stopped. With
    `checkpoint`, the run is saved after every epoch. `val_name` is what the log calls
    `val_loader`'s data ("test" where, as in the seed, it is the test set); it changes no number.
    """
    device = next(run.model.parameters()).device
    criterion = nn.CrossEntropyLoss(label_smoothing=run.recipe.label_smoothing)
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
            SEED_HISTORY, (train_loss, train_acc, val_loss, val_acc, lr), strict=True
        ):
            run.history[key].append(value)
        if val_acc >= max(run.history["val_acc"]):
            run.best_state = copy.deepcopy(run.model.state_dict())
        if progress:
            print(
                f"Epoch {epoch}/{run.recipe.epochs} lr {lr:.6f} | train loss {train_loss:.4f} "
                f"acc {train_acc:.2f}% | {val_name} loss {val_loss:.4f} acc {val_acc:.2f}%"
            )
        if checkpoint is not None:
            save_checkpoint(run, checkpoint, shuffle=train_loader.generator)
    return run


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


class CheckpointError(artifacts.ArtifactError):
    """A checkpoint that cannot be used: unreadable, or made for a different model or recipe."""


def rng_states(shuffle: torch.Generator | None = None) -> dict:
    """The states of every random number generator in use, as plain data and CPU tensors."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "shuffle": shuffle.get_state() if shuffle is not None else None,
        # CUDA's generators exist once CUDA is initialized (by a model or tensor on the GPU).
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "mps": torch.mps.get_rng_state() if torch.backends.mps.is_available() else None,
        "python": random.getstate(),
        # NumPy's key is an array, which `weights_only` loading refuses: store it as a list.
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
    }


def restore_rng_states(states: dict, shuffle: torch.Generator | None = None) -> None:
    """Set the generators to `rng_states`'s result; absent states and devices are skipped."""
    torch.set_rng_state(states["torch"])
    if shuffle is not None and states.get("shuffle") is not None:
        shuffle.set_state(states["shuffle"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"][: torch.cuda.device_count()])
    if states.get("mps") is not None and torch.backends.mps.is_available():
        torch.mps.set_rng_state(states["mps"])
    if states.get("python") is not None:
        random.setstate(states["python"])
    if states.get("numpy") is not None:
        name, key, *rest = states["numpy"]
        np.random.set_state((name, np.array(key, dtype=np.uint32), *rest))


def save_checkpoint(
    run: Run, path: str | os.PathLike, shuffle: torch.Generator | None = None
) -> None:
    """Save everything needed to evaluate or resume `run`, atomically.

    Besides the model, optimizer and scheduler (the seed saved its optimizer from outside the
    function that owned it, which fails), this keeps the states of every random number generator
    in use (`rng_states`), so a resumed run draws the same shuffles and Dropout masks as an
    uninterrupted one, on the CPU, a CUDA GPU or Apple's MPS.
    """
    state = {
        "format": CHECKPOINT_FORMAT,
        "recipe": run.recipe.to_dict(),
        "epoch": run.epoch,
        "model_state": run.model.state_dict(),
        "best_state": run.best_state,
        "optimizer_state": run.optimizer.state_dict(),
        "scheduler_state": run.scheduler.state_dict(),
        "history": run.history,
        "rng": rng_states(shuffle),
        "made_by": stamp(seed_loop_code(run.recipe)),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data.atomic_write(Path(path), buffer.getvalue())


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file safely (`weights_only=True`: tensors and plain data, no code)."""
    path = Path(path)
    try:
        state = artifacts.read(path)
    except artifacts.ArtifactError as e:
        raise CheckpointError(str(e)) from None
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path.name} is not a checkpoint written by helpers.training")
    return state


def _first_mismatch(error: RuntimeError) -> str:
    """The first specific line of a load_state_dict error (its first line is only a heading)."""
    lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
    return (lines[0] if lines else str(error))[:300]


def stored_recipe(state: dict, path: str | os.PathLike) -> Recipe:
    """The recipe a checkpoint records, or a CheckpointError that says why it cannot be used."""
    try:
        return Recipe.from_dict(state["recipe"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{Path(path).name} cannot be loaded: {e}") from None


def load_checkpoint(
    path: str | os.PathLike,
    device: torch.device | None = None,
    shuffle: torch.Generator | None = None,
    resume: bool = False,
) -> Run:
    """Rebuild a `Run` from a checkpoint, ready to evaluate or to resume with `train_model`.

    Loading leaves every random number generator as it was. To resume the run exactly, pass
    `shuffle` (the generator of the training loader it continues with) or `resume=True`: the
    generators are then set to the checkpoint's, those of devices this machine lacks excepted
    (a run saved on a CUDA GPU resumes on a CPU-only machine, but draws its Dropout masks from
    the CPU generator, so it is no longer identical to the original run).
    """
    state = read_checkpoint(path)
    recipe = stored_recipe(state, path)
    resuming = resume or shuffle is not None
    before = None if resuming else rng_states()
    run = new_run(recipe, device)  # seeds the generators, and draws initial weights from them
    try:
        run.model.load_state_dict(state["model_state"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{Path(path).name} holds weights for a different architecture than "
            f"{recipe.model}({dict(recipe.model_kwargs)}): {_first_mismatch(e)}"
        ) from None
    run.optimizer.load_state_dict(state["optimizer_state"])
    run.scheduler.load_state_dict(state["scheduler_state"])
    run.history = state["history"]
    run.best_state = state["best_state"]
    restore_rng_states(state["rng"] if resuming else before, shuffle)
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
            f"{type(model).__name__}: {_first_mismatch(e)}"
        ) from None
    return model


def seed_loop_code(recipe: Recipe | None = None) -> str:
    """What made a checkpoint of this loop, as its stamp records it: "seed-loop/<version>".

    The same for every recipe: a change to a model's numbers is a change to the loop's version.
    """
    return f"seed-loop/{SEED_LOOP_VERSION}"


def checkpoint_path(recipe: Recipe, root: str | os.PathLike | None = None) -> Path:
    """Where `load_or_train` saves the checkpoint of `recipe`: the data root's `checkpoints`."""
    return artifacts.path("checkpoint", recipe, root)


def shipped_checkpoint(recipe: Recipe) -> Path:
    """The checkpoint of `recipe` that ships with the book (its full run of chapter 07 or 09).

    Chapters 08 to 10 evaluate these by default, so their numbers are the book's on every
    machine, whatever a reader trained locally.
    """
    path = artifacts.path("checkpoint", recipe, shipped=True)
    if not path.is_file():
        raise artifacts.ArtifactError(
            f"The book ships no checkpoint {path.name} for this recipe: load_or_train(recipe) "
            "trains it (maintainers: run the chapter in full, then scripts/ship.py checkpoint)."
        )
    return path


def find_checkpoint(recipe: Recipe, root: str | os.PathLike | None = None) -> Path | None:
    """A current checkpoint of `recipe`: one trained on this machine, else one shipped, else None.

    One made by another version of this loop is stale, and left to be trained again.
    """
    return artifacts.find("checkpoint", recipe, seed_loop_code(recipe), root)


def checkpoint_plan(recipe: Recipe, root: str | os.PathLike | None = None) -> str:
    """What `load_or_train(recipe)` will do, in words: load which checkpoint, or train."""
    found = find_checkpoint(recipe, root)
    if found is None:
        return "no checkpoint of this recipe here: training it"
    whose = "the book's own run" if artifacts.is_shipped(found) else "your earlier run"
    return f"loading {whose} {found.name}"


def load_or_train(
    recipe: Recipe,
    device: torch.device | None = None,
    progress: bool = True,
    root: str | os.PathLike | None = None,
) -> tuple[Run, tuple[DataLoader, DataLoader, DataLoader]]:
    """The finished run of `recipe`: loaded if a current checkpoint exists, trained if not.

    Later chapters call this, so they stay independent of each other but never retrain a model
    an earlier chapter already trained. A half-finished checkpoint is resumed; one made by another
    version of this loop (`SEED_LOOP_VERSION`) is not used. Returns the run and its (train,
    validation, test) loaders.
    """
    loaders = recipe_loaders(recipe, root)
    path = find_checkpoint(recipe, root)
    run = None if path is None else load_checkpoint(path, device, shuffle=loaders[0].generator)
    if run is not None and run.epoch >= recipe.epochs:
        return run, loaders
    run = run or new_run(recipe, device)
    checkpoint = checkpoint_path(recipe, root)
    train_model(run, loaders[0], loaders[1], progress=progress, checkpoint=checkpoint)
    return run, loaders
