"""The in-memory training loop: chapters 10 and 11, and the benchmark, train with it.

Chapter 07 teaches the seed's loop (`helpers.training`), one DataLoader batch at a time. Once the
data is one tensor in memory (`helpers.data.mnist_tensors`), the same steps can run faster: `fit`
picks batches by index, augments them on the batch (`helpers.augment`), steps a per-batch
schedule where the recipe asks for one, and never copies a number to the host inside the loop
(`loss.item()` waits for a GPU to finish each step). A new way to train belongs here, as an
option of `fit`, not as another loop. Every result records `LOOP_VERSION`, the version of what
this loop computes (`helpers.recipe.stamp`).
"""

from __future__ import annotations

import random
import time

import torch
import torch.nn.functional as F
from torch import nn

from helpers.augment import augment_batch, augment_robust
from helpers.data import tensor_batches
from helpers.recipe import (
    Recipe,
    build_model,
    build_optimizer,
    build_schedule,
    new_history,
    steps_per_epoch,
)

Tensors = tuple[torch.Tensor, torch.Tensor]

# The version of what this loop computes, which every result records. Bump it by hand, in review,
# when a change alters the numbers a run of a recipe produces (its data, split, model, loss,
# optimizer, schedule, augmentation or their defaults); a refactor leaves it alone, and so keeps
# every stored result. tests/test_provenance.py replays a few short runs and compares them with
# those recorded for this version: a change of the numbers without a bump fails there.
LOOP_VERSION = 1


@torch.no_grad()
def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 2000
) -> float:
    """Accuracy in % of `model` (in eval mode) on tensors in memory, in large batches."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=labels.device)
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size])
        correct += logits.argmax(1).eq(labels[start : start + batch_size]).sum()
    return 100.0 * correct.item() / len(images)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    recipe: Recipe,
    x: torch.Tensor,
    y: torch.Tensor,
    augment: torch.Generator | None = None,
) -> torch.Tensor:
    """One step of gradient descent on a batch, as `recipe` says; the batch's loss, detached.

    Augment (drawing from `augment`) if the recipe asks, forward, loss, backward, clip, update.
    `model` may be a DDP wrapper (`helpers.distributed`): its backward then averages gradients.
    """
    if recipe.augment is True:
        x = augment_batch(x, generator=augment)
    elif recipe.augment:
        x = augment_robust(x, recipe.augment, generator=augment)
    loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if recipe.max_grad_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
    optimizer.step()
    return loss.detach()


def fit(
    recipe: Recipe,
    train: Tensors,
    held: Tensors,
    every_epoch: bool | None = None,
    target: float | None = None,
) -> tuple[nn.Module, dict]:
    """Train `recipe` from scratch on `train`; the model and a result with its history.

    `held` is the validation split when `recipe.validation_size > 0`, else the test set, and is
    then scored once, at the end, unless `every_epoch` says otherwise. With `target`, training
    stops after the first epoch whose score reaches it. The data's device is the model's.
    """
    images, labels = train
    if recipe.train_subset is not None:
        images, labels = images[: recipe.train_subset], labels[: recipe.train_subset]
    score = "val_acc" if recipe.validation_size else "test_acc"
    every_epoch = bool(recipe.validation_size) if every_epoch is None else every_epoch
    torch.manual_seed(recipe.seed)
    random.seed(recipe.seed)
    model = build_model(recipe).to(images.device)
    optimizer = build_optimizer(recipe, model)
    steps = steps_per_epoch(len(images), recipe.batch_size)
    schedule, per_batch = build_schedule(recipe, optimizer, steps)
    shuffle = torch.Generator().manual_seed(recipe.seed)
    augment = torch.Generator().manual_seed(recipe.seed + 1)
    history = new_history("train_loss", "lr", score, "seconds")
    start = time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        history["lr"].append(optimizer.param_groups[0]["lr"])
        model.train()
        loss_sum = torch.zeros((), device=images.device)
        for x, y in tensor_batches(images, labels, recipe.batch_size, generator=shuffle):
            loss_sum += train_step(model, optimizer, recipe, x, y, augment)
            if per_batch:
                schedule.step()
        if not per_batch:
            schedule.step()
        history["train_loss"].append(loss_sum.item() / steps)
        if every_epoch or epoch == recipe.epochs:
            history[score].append(accuracy(model, *held))
        history["seconds"].append(time.perf_counter() - start)
        if target is not None and history[score] and history[score][-1] >= target:
            break
    return model, {
        "key": recipe.key(),
        "recipe": recipe.to_dict(),
        "history": history,
        "val_acc": history[score][-1] if recipe.validation_size else None,
        "test_acc": None if recipe.validation_size else history[score][-1],
        "seconds": history["seconds"][-1],
        "train_images": len(images),
        "threads": torch.get_num_threads(),
        "device": images.device.type,
    }


def loop_code(recipe: Recipe | None = None) -> str:
    """What made a result of this loop, as its stamp records it: "loop/<version>".

    The same for every recipe: a change to a model's numbers is a change to the loop's version.
    """
    return f"loop/{LOOP_VERSION}"
