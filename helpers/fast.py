"""Training at the speed of the arithmetic (chapter 10).

The data lives on the device as one normalized tensor (`helpers.data.mnist_tensors`) and batches
are picked by index (`helpers.data.tensor_batches`). `TensorLoader` wraps that as a drop-in for a
DataLoader, so the seed's own `helpers.training.train_epoch` runs on it unchanged. `train_fast` is
the lean loop for time-to-accuracy runs: it steps a one-cycle learning-rate schedule after every
batch, which `train_epoch` (one schedule step per epoch) cannot, and it never copies a number to
the host inside the loop (`loss.item()` waits for a GPU to finish each step). `FastDropout`
draws Dropout's random masks eight times more cheaply on a CPU, where they are a large part of a
big-batch step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from helpers.data import tensor_batches


class TensorLoader:
    """A DataLoader look-alike over tensors in memory: the same batches, reshuffled every epoch."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.generator = batch_size, shuffle, generator

    def __len__(self) -> int:
        """Number of batches per epoch, the last one possibly smaller (as a DataLoader's)."""
        return -(-len(self.images) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of batches (`helpers.data.tensor_batches`)."""
        return tensor_batches(
            self.images, self.labels, self.batch_size, self.shuffle, self.generator
        )


class FastDropout(nn.Dropout):
    """nn.Dropout that spends one random 64-bit number on eight elements, not one on each.

    On a CPU, nn.Dropout draws its mask with `bernoulli_`, one random number per element (about
    16 ns each on this book's machine): at batch 1024 the seed network's two masks take about a
    quarter of a training step (chapter 10). Here each random *byte* decides one element, kept
    when it is at least 256 p: exactly probability 1 - p whenever 256 p is a whole number (p =
    0.5, 0.25, ...). Any other p, in-place dropout and other devices (a GPU's dropout is already
    one fused kernel) fall back to nn.Dropout unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zero each element with probability p and scale the rest by 1 / (1 - p), in training."""
        threshold = 256 * self.p
        if (
            not self.training
            or self.inplace
            or x.device.type != "cpu"
            or not 0 < threshold < 256
            or not threshold.is_integer()
        ):
            return super().forward(x)
        n = x.numel()
        # The whole int64 range: every bit, so every byte, is uniform (`random_()` would leave
        # the top bit 0 and bias one byte in eight).
        words = torch.randint(-(2**63), 2**63 - 1, (-(-n // 8),), dtype=torch.int64)
        keep = words.view(torch.uint8)[:n].view(x.shape) >= int(threshold)
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


def use_fast_dropout(model: nn.Module) -> nn.Module:
    """Swap every nn.Dropout in `model` for a FastDropout with the same p; return the model.

    Dropout holds no parameters, so the model's state_dict, and any checkpoint, is unchanged.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
    return model


def profile_operators(fn: Callable[[], object], warmup: bool = True) -> list[dict[str, object]]:
    """The PyTorch operators `fn()` runs, by their own CPU time (callees excluded), largest first.

    Python's cProfile sees a training step as a few calls; torch.profiler records every operator
    inside it. Each row: `operator`, `self_ms` (summed over its calls), `calls`, `share` of the
    total. With `warmup`, `fn` runs once unprofiled first, so one-off allocations are not counted.
    """
    # Level 6 silences kineto, the profiler's engine, which otherwise prints start/stop lines
    # (and, without a GPU, an error about it) into every notebook cell that profiles. It reads
    # the variable once, when first used.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    if warmup:
        fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        fn()
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {
            "operator": e.key,
            "self_ms": e.self_cpu_time_total / 1e3,
            "calls": e.count,
            "share": e.self_cpu_time_total / total,
        }
        for e in events
    ]


def make_adamw(
    params: object, lr: float = 1e-3, weight_decay: float = 0.0, fused: bool = True
) -> torch.optim.Optimizer:
    """AdamW (plain Adam when weight_decay is 0), fused into one kernel where the device allows."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    except RuntimeError:  # a device without a fused implementation: the default one
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


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


def train_fast(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    batch_size: int = 256,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    target: float | None = None,
    max_grad_norm: float | None = None,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Train with AdamW and a per-batch one-cycle schedule; test after every epoch.

    Returns per-epoch lists: `seconds` (wall time since the start, test evaluations included),
    `train_loss` (mean over the epoch's batches) and `test_acc` (%). With `target`, training
    stops after the first epoch whose test accuracy reaches it.
    """
    images, labels = train
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_adamw(model.parameters(), lr, weight_decay)
    steps = epochs * -(-len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    history: dict[str, list[float]] = {"seconds": [], "train_loss": [], "test_acc": []}
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        loss_sum = torch.zeros((), device=images.device)
        for x, y in tensor_batches(images, labels, batch_size, generator=generator):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach()
        history["train_loss"].append(loss_sum.item() / -(-len(images) // batch_size))
        history["test_acc"].append(accuracy(model, *test))
        history["seconds"].append(time.perf_counter() - start)
        if target is not None and history["test_acc"][-1] >= target:
            break
    return history


def time_to_accuracy(
    make_model: Callable[[], nn.Module],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    target: float,
    seed: int = 0,
    **recipe: object,
) -> dict[str, object]:
    """Seconds until `target` % test accuracy (None if never reached) and the run's history.

    The model is built after seeding, so a run is repeatable up to timing; `recipe` goes to
    `train_fast` (epochs, batch_size, lr, ...).
    """
    torch.manual_seed(seed)
    model = make_model().to(train[0].device)
    history = train_fast(model, train, test, target=target, seed=seed, **recipe)
    reached = history["test_acc"][-1] >= target
    return {
        "seconds": history["seconds"][-1] if reached else None,
        "epochs": len(history["test_acc"]),
        "test_acc": history["test_acc"][-1],
        "history": history,
    }
