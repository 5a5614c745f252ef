"""Training at the speed of the arithmetic (chapter 11).

The data lives on the device as one normalized tensor (`helpers.data.mnist_tensors`) and batches
are picked by index (`helpers.data.tensor_batches`). `TensorLoader` wraps that as a drop-in for a
DataLoader, so the seed's own `helpers.training.train_epoch` runs on it unchanged. `FastDropout`
draws Dropout's random masks eight times more cheaply on a CPU, where they are a large part of a
big-batch step. `profile_operators` shows where a step's time goes; `speedrun` times a fixed
recipe of the in-memory loop (`helpers.loop.fit`) over several seeds, as public speedruns do.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import torch
from torch import nn

from helpers.data import tensor_batches
from helpers.loop import Tensors, fit
from helpers.recipe import Recipe, steps_per_epoch

CPU = torch.profiler.ProfilerActivity.CPU


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
        return steps_per_epoch(len(self.images), self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of batches (`helpers.data.tensor_batches`)."""
        return tensor_batches(
            self.images, self.labels, self.batch_size, self.shuffle, self.generator
        )


class FastDropout(nn.Dropout):
    """nn.Dropout that spends one random 64-bit number on eight elements, not one on each.

    On a CPU, nn.Dropout draws its mask with `bernoulli_`, one random number per element (about
    16 ns each on this book's machine): at batch 1024 the seed network's two masks take about a
    quarter of a training step (chapter 11). Here each random *byte* decides one element, kept
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


def swap_modules(
    model: nn.Module, matches: Callable[[nn.Module], bool], swap: Callable[[nn.Module], nn.Module]
) -> nn.Module:
    """Replace every submodule of `model` that `matches` by `swap(submodule)`; return the model.

    The one place that swaps layers in place (here for cheaper Dropout, in `helpers.distributed`
    for BatchNorm across processes): each replacement takes its old module's attribute name.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if matches(child):
                setattr(parent, name, swap(child))
    return model


def use_fast_dropout(model: nn.Module) -> nn.Module:
    """Swap every nn.Dropout in `model` for a FastDropout with the same p; return the model.

    Dropout holds no parameters, so the model's state_dict, and any checkpoint, is unchanged.
    """
    return swap_modules(
        model, lambda m: type(m) is nn.Dropout, lambda m: FastDropout(m.p, m.inplace)
    )


@contextlib.contextmanager
def quiet_kineto() -> Iterator[None]:
    """Silence kineto, the profiler's engine, while a profile starts; the environment is restored.

    Otherwise it prints start/stop lines (and, without a GPU, an error about it) into every
    notebook cell that profiles. It reads `KINETO_LOG_LEVEL` once, when first used.
    """
    before = os.environ.get("KINETO_LOG_LEVEL")
    os.environ["KINETO_LOG_LEVEL"] = before or "6"
    try:
        yield
    finally:
        if before is None:
            del os.environ["KINETO_LOG_LEVEL"]


def profile_operators(fn: Callable[[], object], warmup: bool = True) -> list[dict[str, object]]:
    """The PyTorch operators `fn()` runs, by their own CPU time (callees excluded), largest first.

    Python's cProfile sees a training step as a few calls; torch.profiler records every operator
    inside it. Each row: `operator`, `self_ms` (summed over its calls), `calls`, `share` of the
    total. With `warmup`, `fn` runs once unprofiled first, so one-off allocations are not counted.
    """
    if warmup:
        fn()
    with quiet_kineto(), torch.profiler.profile(activities=[CPU]) as profiler:
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


def speedrun(
    recipe: Recipe,
    train: Tensors,
    test: Tensors,
    target: float,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
) -> dict[str, object]:
    """Train `recipe` once per seed for its planned epochs; its test accuracy and time per seed.

    Jordan's speedrun protocol, with the book's own rule that the recipe is fixed in advance on
    the validation split: each run trains for all its planned steps and is scored once, at the end,
    and the time is the training plus that one evaluation (`helpers.loop.fit`). It counts when
    the *mean* accuracy over the seeds reaches `target`, so that neither a lucky seed nor a lucky
    epoch, picked by peeking at the test set, makes the number. Returns per-seed `test_acc` and
    `seconds`, their `mean_acc`, `min_acc`, `max_acc`, `std_acc`, `median_s`, and `reached`.
    """
    accs, seconds = [], []
    for seed in seeds:
        _, result = fit(replace(recipe, seed=seed), train, test)
        accs.append(result["test_acc"])
        seconds.append(result["seconds"])
    mean = statistics.mean(accs)
    return {
        "test_acc": accs,
        "seconds": seconds,
        "mean_acc": mean,
        "min_acc": min(accs),
        "max_acc": max(accs),
        "std_acc": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "median_s": statistics.median(seconds),
        "reached": mean >= target,
    }
