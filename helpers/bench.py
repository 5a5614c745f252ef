"""How fast the book trains, against the seed's pipeline (chapter 11).

    python -m helpers.bench [--quick] [--speedrun] [--device cpu|cuda|mps] [--threads N]
                            [--repeats N]


Everything runs in one process, side by side: after a warm-up, each repetition times every path
once, in turn, so a busy machine slows them all alike; the medians are printed. Output is one JSON
object per line (`figure` says what it holds). Every epoch starts from the same seeded model and
shuffle, so the paths' losses can be compared as well as their times.

The seed's pipeline is timed twice: "as written", with torch's default thread count (the seed never
sets one), and with the benchmark's `--threads`, as every other path. Speed-ups are given over both.

The speedrun (`--speedrun` runs only it) trains two fixed recipes to 98.0% (MLP) and 99.0% (CNN)
mean test accuracy over 5 seeds, each for its planned epochs (`helpers.fast.speedrun`), against
goals of 2 s and 15 s on the book's 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from itertools import islice

import torch
from torch import nn

from helpers.data import mnist_loaders, mnist_tensors
from helpers.fast import TensorLoader, speedrun, use_fast_dropout
from helpers.graph import flops_per_image
from helpers.loop import accuracy
from helpers.models import SimpleNN
from helpers.recipe import Recipe
from helpers.runtime import pick_device
from helpers.timing import side_by_side  # noqa: F401 - chapter 11 calls it as bench.side_by_side
from helpers.training import train_epoch

# Chapter 11's first fast recipes (found on this book's 2-core build machine): AdamW with a
# one-cycle schedule, no clipping. Section 11.4 starts from them.
FAST_MLP = Recipe(
    model="SimpleNN",
    model_kwargs={"hidden_size": 256, "dropout": 0.1},
    optimizer="adamw",
    lr=3e-3,
    schedule="onecycle",
    epochs=4,
    batch_size=256,
    max_grad_norm=None,
)
# The CNN: the same optimizer and schedule, peaking at 0.005.
FAST_CNN = replace(FAST_MLP, model="SmallCNN", model_kwargs={}, lr=5e-3)

# The speedrun's recipes (section 11.4), chosen on the validation split: two epochs, no Dropout
# (its masks cost time, and so short a run leaves nothing to regularize), label smoothing; for
# the MLP a larger batch and rate, for the CNN a narrower LeNetLike, whose hidden layer buys more
# accuracy than its FLOPs cost.
SPEEDRUN_MLP = replace(
    FAST_MLP,
    model_kwargs={"hidden_size": 256, "dropout": 0.0},
    epochs=2,
    batch_size=384,
    lr=7e-3,
    label_smoothing=0.1,
)
SPEEDRUN_CNN = replace(
    FAST_CNN,
    model="LeNetLike",
    model_kwargs={"channels": [16, 32], "hidden": 128, "dropout": 0.0},
    epochs=2,
    label_smoothing=0.1,
)
# name: (recipe, target test accuracy as a mean over 5 seeds, goal in seconds on 2 CPU cores)
SPEEDRUN_GOALS = {"MLP": (SPEEDRUN_MLP, 98.0, 2.0), "CNN": (SPEEDRUN_CNN, 99.0, 15.0)}


class FirstBatches:
    """The first `count` batches of a loader, with a length (for a partial, scaled epoch)."""

    def __init__(self, loader: Iterable, count: int) -> None:
        self.loader, self.count = loader, count

    def __len__(self) -> int:
        """How many batches an iteration yields."""
        return self.count

    def __iter__(self) -> Iterator:
        """The loader's first `count` batches."""
        return islice(iter(self.loader), self.count)


def seed_loader(batch_size: int = 64, num_workers: int = 2, seed: int = 0) -> Iterable:
    """The seed's training loader as written: PIL images, ToTensor + Normalize per sample."""
    return mnist_loaders(batch_size=batch_size, num_workers=num_workers, seed=seed)[0]


def tensor_loader(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int = 64, seed: int = 0
) -> TensorLoader:
    """The fast path: the split held as one normalized tensor, batches picked by index."""
    return TensorLoader(images, labels, batch_size, generator=torch.Generator().manual_seed(seed))


def timed_epoch(
    loader: Iterable,
    device: torch.device,
    fused: bool = False,
    max_batches: int | None = None,
    seed: int = 0,
    *,
    fast_dropout: bool = False,
    threads: int | None = None,
) -> dict[str, object]:
    """One epoch of the seed's training step with a fresh seeded SimpleNN, Adam 1e-3, clip 1.0.

    `fast_dropout` swaps in `helpers.fast.FastDropout`; `threads` sets torch's CPU threads for
    this epoch only. Returns the model, the epoch's `seconds` (scaled to a whole epoch if only
    `max_batches` were run), its mean `train_loss` and `train_acc` (%).
    """
    batches = len(loader)
    if max_batches is not None and max_batches < batches:
        loader = FirstBatches(loader, max_batches)
    torch.manual_seed(seed)
    model = SimpleNN().to(device)
    if fast_dropout:
        use_fast_dropout(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads or threads_before)
    try:
        start = time.perf_counter()
        loss, acc = train_epoch(
            model, device, loader, optimizer, nn.CrossEntropyLoss(), 1, 1.0, progress=False
        )
        synchronize(device)
        seconds = (time.perf_counter() - start) * batches / len(loader)
    finally:
        torch.set_num_threads(threads_before)
    return {"model": model, "seconds": seconds, "train_loss": loss, "train_acc": acc}


def synchronize(device: torch.device) -> None:
    """Wait for the device to finish queued work (GPUs run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_shapes(batch_size: int, model: nn.Module | None = None) -> list[tuple[int, int, int]]:
    """(m, k, n) of the matrix multiplies in one training step of `model` (the seed's network).

    Three per Linear layer (the forward product, the weight gradient, the input gradient), except
    that the first layer needs no input gradient: the pixels are not trained.
    """
    b = batch_size
    layers = [m for m in (model or SimpleNN()).modules() if isinstance(m, nn.Linear)]
    forward = [(b, m.in_features, m.out_features) for m in layers]
    weight_grads = [(m.out_features, b, m.in_features) for m in layers]
    input_grads = [(b, m.out_features, m.in_features) for m in layers[1:]]
    return forward + weight_grads + input_grads


def train_flops_per_sample(model: nn.Module | None = None) -> int:
    """Measured FLOPs of one training step per image (`helpers.graph`, chapter 04)."""
    return flops_per_image(model or SimpleNN())["train"]


def matmul_floor(
    batch_size: int,
    device: torch.device,
    repeats: int = 7,
    number: int = 20,
    train_images: int = 60_000,
) -> dict[str, float]:
    """The seed network's training FLOPs / the rate this device reaches on the same shapes.

    Returns `gflops` (the rate) and `floor_s`: the seconds an epoch would take if it did nothing
    but these matrix multiplies.
    """
    shapes = matmul_shapes(batch_size)
    pairs = [
        (torch.randn(m, k, device=device), torch.randn(k, n, device=device)) for m, k, n in shapes
    ]
    flops = sum(2 * m * k * n for m, k, n in shapes)
    per_sample = flops // batch_size

    def step() -> None:
        for a, b in pairs:
            torch.mm(a, b)

    step()
    runs = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(number):
            step()
        synchronize(device)
        runs.append((time.perf_counter() - start) / number)
    rate = flops / statistics.median(runs)
    return {"gflops": rate / 1e9, "floor_s": per_sample * train_images / rate}


def environment(
    device: torch.device, quick: bool, repeats: int, default_threads: int
) -> dict[str, object]:
    """What the figures were measured on."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {
        "figure": "environment",
        "device": device.type,
        "device_name": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "default_threads": default_threads,
        "cpu_count": os.cpu_count(),
        "quick": quick,
        "repeats": repeats,
    }


@dataclass(frozen=True)
class TimedPath:
    """One way to run the seed's training step, timed side by side with the others.

    `data` is "seed" (the seed's DataLoader with its 2 workers) or "tensor" (the fast path);
    `threads` is "default" for torch's default count (the seed's code never sets one), or None
    for the benchmark's `--threads`.
    """

    batch_size: int
    data: str
    fused: bool = False
    fast_dropout: bool = False
    threads: str | None = None


PATHS: dict[str, TimedPath] = {
    "seed pipeline as written": TimedPath(64, "seed", threads="default"),
    "seed pipeline": TimedPath(64, "seed"),
    "fast": TimedPath(64, "tensor"),
    "fast, fused Adam": TimedPath(64, "tensor", fused=True),
    "fast, fused Adam, fast dropout": TimedPath(64, "tensor", fused=True, fast_dropout=True),
    "fast, fused Adam, batch 1024": TimedPath(1024, "tensor", fused=True),
    "fast, fused Adam, fast dropout, batch 256": TimedPath(256, "tensor", True, True),
    "fast, fused Adam, fast dropout, batch 1024": TimedPath(1024, "tensor", True, True),
}
SEED_PATHS = ("seed pipeline as written", "seed pipeline")


FLOOR_BATCHES = (64, 256, 1024)


def epoch_figures(
    device: torch.device, repeats: int, max_batches: int | None, default_threads: int
) -> tuple[list[dict], dict[str, dict], dict[int, dict]]:
    """Median epoch times of every path and the matmul floors, all timed side by side.

    The floors take their turn in each repetition too, so a path and its floor see the same
    machine: their ratio is not skewed by a busy spell during one of them. Returns the rows,
    the rows by path name, and the floors by batch size.
    """
    images, labels = mnist_tensors(True, device=device)
    test = mnist_tensors(False, device=device)

    def threads(path: TimedPath) -> int:
        return default_threads if path.threads == "default" else torch.get_num_threads()

    def epoch(path: TimedPath) -> dict:
        b = path.batch_size
        loader = seed_loader(b) if path.data == "seed" else tensor_loader(images, labels, b)
        return timed_epoch(
            loader,
            device,
            path.fused,
            max_batches,
            fast_dropout=path.fast_dropout,
            threads=threads(path),
        )

    fns = {name: partial(epoch, path) for name, path in PATHS.items()}
    size = len(images)
    fns |= {
        f"floor {b}": partial(matmul_floor, b, device, repeats=3, train_images=size)
        for b in FLOOR_BATCHES
    }
    results = side_by_side(fns, repeats)
    floors = {}
    for b in FLOOR_BATCHES:
        runs = results.pop(f"floor {b}")
        floors[b] = {key: statistics.median(r[key] for r in runs) for key in ("gflops", "floor_s")}
    rows, summary = [], {}
    for name, runs in results.items():
        last = runs[-1]
        row = {
            "figure": "epoch_time",
            "path": name,
            "batch_size": PATHS[name].batch_size,
            "threads": threads(PATHS[name]),
            "median_s": statistics.median(r["seconds"] for r in runs),
            "runs_s": [round(r["seconds"], 4) for r in runs],
            "train_loss": last["train_loss"],
            "train_acc": last["train_acc"],
            "test_acc": accuracy(last["model"], *test),
        }
        rows.append(row)
        summary[name] = row
    return rows, summary, floors


def speed_rows(summary: dict[str, dict], floors: dict[int, dict]) -> list[dict]:
    """Speed-ups over both seed baselines at batch 64, and every path's distance from its floor."""
    rows = []
    fast_64 = [n for n, p in PATHS.items() if (p.batch_size, p.data) == (64, "tensor")]
    for baseline in SEED_PATHS:
        seed = summary[baseline]
        for name in fast_64:
            rows.append(
                {
                    "figure": "speedup",
                    "path": name,
                    "baseline": baseline,
                    "batch_size": 64,
                    "baseline_s": seed["median_s"],
                    "path_s": summary[name]["median_s"],
                    "ratio": seed["median_s"] / summary[name]["median_s"],
                    "train_loss_difference": abs(summary[name]["train_loss"] - seed["train_loss"]),
                    "test_acc_difference": abs(summary[name]["test_acc"] - seed["test_acc"]),
                }
            )
    for name, row in summary.items():
        floor = floors[row["batch_size"]]["floor_s"]
        rows.append(
            {
                "figure": "distance_from_floor",
                "path": name,
                "batch_size": row["batch_size"],
                "epoch_s": row["median_s"],
                "floor_s": floor,
                "ratio": row["median_s"] / floor,
            }
        )
    return rows


def speedrun_rows(device: torch.device, quick: bool) -> list[dict]:
    """The speedrun: each recipe over 5 seeds, mean test accuracy against its target and goal.

    Quick: 2 seeds of one epoch on a subset, against a low target; it checks the machinery.
    """
    train, test = mnist_tensors(True, device=device), mnist_tensors(False, device=device)
    seeds = (0, 1, 2, 3, 4)
    goals = SPEEDRUN_GOALS
    if quick:
        train = (train[0][:4096], train[1][:4096])
        test = (test[0][:2000], test[1][:2000])
        seeds = (0, 1)
        goals = {name: (replace(r, epochs=1), 80.0, g) for name, (r, _, g) in goals.items()}
    rows = []
    for name, (recipe, target, goal_s) in goals.items():
        result = speedrun(recipe, train, test, target, seeds)
        within = result["reached"] and result["median_s"] <= goal_s
        rows.append(
            {
                "figure": "speedrun",
                "model": name,
                "target": target,
                "goal_s": goal_s,
                **result,
                "within_goal": within,
                "recipe": recipe.to_dict(),
                "train_size": len(train[0]),
            }
        )
    return rows


def run(
    device: torch.device,
    quick: bool = False,
    repeats: int | None = None,
    default_threads: int | None = None,
    only_speedrun: bool = False,
) -> Iterator[dict[str, object]]:
    """All the benchmark's figures, one dict at a time (or the environment and the speedrun).

    `default_threads`: torch's thread count before anything set it (what the seed's code runs
    with); `main` passes it, and it defaults to the current count.
    """
    repeats = repeats or (1 if quick else 5)
    default_threads = default_threads or torch.get_num_threads()
    yield environment(device, quick, repeats, default_threads)
    if only_speedrun:
        yield from speedrun_rows(device, quick)
        return
    rows, summary, floors = epoch_figures(device, repeats, 40 if quick else None, default_threads)
    yield from rows
    flops = train_flops_per_sample()
    for b, floor in floors.items():
        yield {"figure": "matmul_floor", "batch_size": b, "flops_per_sample": flops, **floor}
    yield from speed_rows(summary, floors)
    yield from speedrun_rows(device, quick)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line: --quick, --speedrun, --device, --threads, --repeats."""
    parser = argparse.ArgumentParser(prog="python -m helpers.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run (CI): under a minute")
    parser.add_argument(
        "--speedrun", action="store_true", help="only the speedrun (5 seeds per recipe)"
    )
    parser.add_argument("--device", help="cpu, cuda or mps (default: the fastest present)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch's CPU threads (default 1: on a shared machine, more threads spin and collapse)",
    )
    parser.add_argument("--repeats", type=int, help="timed repetitions (default 5; quick 1)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the benchmark's figures as JSON lines."""
    args = parse_args(argv)
    default_threads = torch.get_num_threads()  # before anything sets it: the seed's count
    torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else pick_device()
    for row in run(device, args.quick, args.repeats, default_threads, args.speedrun):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
