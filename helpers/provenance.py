"""Whether a stored result is still today's: versions kept by hand, checked by fingerprints (10).

A stored result (a chapter 10 experiment, a shipped checkpoint or model) records what made it,
`helpers.recipe.stamp`: the version of the loop that trained it (`helpers.training`'s
`SEED_LOOP_VERSION`, `helpers.loop`'s `LOOP_VERSION`), torch's and helpers'. A cache uses a result
while its loop's version is today's. A version is bumped by hand, in review, when a change alters
the numbers a loop computes; a refactor (a rename, a docstring, a new check, a function
extracted) leaves it, and so every stored result, alone.

A version kept by hand is only as good as the hand. `fingerprints` measures what each loop
computes: short runs (two epochs of three batches) of the kinds of recipe the book ships, each
summed up by its per-epoch history and its final weights. A record of them, made for today's
versions (`python -m helpers.provenance record tests/fingerprints.json`), is compared with the
code's numbers by the tests: `differences` names every run whose numbers moved while its loop's
version did not. Training is deterministic on one kind of CPU kernel with one torch, not across
them (`machine`): on another machine the numbers are compared within a tolerance, and the
weights' hashes not at all.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from helpers import data, experiments, loop, training
from helpers.recipe import BOOK_CNN_RECIPE, BOOK_RECIPE, INGREDIENTS, Recipe

# One thread: a sum split over threads is added up in another order, and ends bits apart.
THREADS = 1

# Where the machine differs from the record's, losses, rates and weight norms may differ by this
# fraction and accuracies by this many percentage points (50 of the 5,000 validation images).
# Measured between AVX2 and the portable kernels (ATEN_CPU_CAPABILITY=default), torch 2.14: losses
# 1.6e-4 apart, norms 4e-5, accuracies 0.3 points (after six steps many digits are near-ties).
RELATIVE_TOLERANCE = 1e-3
ACCURACY_TOLERANCE = 1.0

# Settings that make MKL and oneDNN pick other kernels (.ci/portable sets them), so other bits.
KERNEL_LIMITS = ("MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")

# Said of numbers that differ from the record only in their last bits, on the same kind of CPU.
LAST_BITS = (
    " (They agree within the tolerance: the same sums added in another order, or another CPU of"
    " the same kind, whose libraries chose other kernels. Shipped results then no longer"
    " reproduce bit for bit.)"
)

# Each loop's version, as its results' stamps record it, and where a maintainer bumps it.
VERSIONS: dict[str, tuple[Callable[[], str], str]] = {
    "seed-loop": (training.seed_loop_code, "SEED_LOOP_VERSION in helpers/training.py"),
    "loop": (loop.loop_code, "LOOP_VERSION in helpers/loop.py"),
}


def brief(recipe: Recipe) -> Recipe:
    """`recipe` cut to two epochs of three batches, its step schedule stepping every epoch."""
    return replace(recipe, epochs=2, train_subset=3 * recipe.batch_size, step_size=1)


def fingerprint_runs() -> dict[str, tuple[str, Recipe]]:
    """The runs a fingerprint replays, by name: (loop, brief recipe), every kind the book ships."""
    runs = {
        "BOOK_RECIPE": ("seed-loop", BOOK_RECIPE),
        "BOOK_CNN_RECIPE": ("seed-loop", BOOK_CNN_RECIPE),
    }
    runs |= {name: ("loop", r) for name, r in experiments.ablation_variants().items()}
    runs["MLP_RECIPE"] = ("loop", experiments.MLP_RECIPE)
    runs["CNN_RECIPE"] = ("loop", experiments.CNN_RECIPE)
    runs["final CNN"] = ("loop", experiments.on_full_training_set(experiments.CNN_RECIPE))
    # chapter 13's ingredients (helpers.augment), as its robust recipes use them all
    every = "+".join(INGREDIENTS)
    runs["robust CNN"] = ("loop", replace(experiments.CNN_RECIPE, augment=every))
    runs["robust MLP"] = ("loop", replace(experiments.CNN_RECIPE, model="SimpleNN", augment=every))
    return {f"{path}: {name}": (path, brief(recipe)) for name, (path, recipe) in runs.items()}


def seed_loop_run(recipe: Recipe) -> tuple[dict, nn.Module]:
    """History and model of `recipe` trained by chapter 07's loop, as `load_or_train` does."""
    train_loader, val_loader, _ = training.recipe_loaders(recipe)
    run = training.new_run(recipe, torch.device("cpu"))
    training.train_model(run, train_loader, val_loader, progress=False)
    return run.history, run.model


@functools.lru_cache(maxsize=2)
def splits(validation_size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """`helpers.data.split_tensors`, loaded once per split while fingerprints are measured."""
    return data.split_tensors(validation_size)


def in_memory_run(recipe: Recipe) -> tuple[dict, nn.Module]:
    """History (times left out) and model of `recipe` trained as `run_experiment` does."""
    split = splits(recipe.validation_size)
    model, result = loop.fit(recipe, split["train"], split["held"])
    history = {key: v for key, v in result["history"].items() if key != "seconds"}
    return history, model


RUNNERS: dict[str, Callable[[Recipe], tuple[dict, nn.Module]]] = {
    "seed-loop": seed_loop_run,
    "loop": in_memory_run,
}


def weights_digest(model: nn.Module) -> dict[str, object]:
    """A model's weights in brief: a hash of their bytes (exact) and their norm (approximate)."""
    digest, squares = hashlib.sha256(), 0.0
    for name, tensor in model.state_dict().items():
        values = tensor.detach().cpu().contiguous()
        digest.update(name.encode() + values.numpy().tobytes())
        if values.is_floating_point():
            squares += values.double().square().sum().item()
    return {"sha256": digest.hexdigest()[:16], "norm": math.sqrt(squares)}


def fingerprint(path: str, recipe: Recipe) -> dict[str, object]:
    """One run's fingerprint: its loop's version, its recipe's key, its history and weights."""
    history, model = RUNNERS[path](recipe)
    code = VERSIONS[path][0]()
    return {
        "code": code,
        "recipe": recipe.key(),
        "history": history,
        "weights": weights_digest(model),
    }


def machine() -> dict[str, object]:
    """What the exact numbers depend on besides the code: CPU kernels, torch, threads."""
    capability = torch.backends.cpu.get_cpu_capability()
    limits = {name: os.environ[name] for name in KERNEL_LIMITS if name in os.environ}
    return {"cpu": capability, "torch": str(torch.__version__), "threads": THREADS, **limits}


@contextlib.contextmanager
def reproducible() -> Iterator[None]:
    """Run the block on `THREADS` threads, then put the thread count and every generator back."""
    threads, states = torch.get_num_threads(), training.rng_states()
    torch.set_num_threads(THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        training.restore_rng_states(states)


def fingerprints(names: Iterable[str] | None = None) -> dict[str, object]:
    """Today's fingerprints of the runs `names` (default: every one), and the machine's."""
    runs = fingerprint_runs()
    with reproducible():
        measured = {name: fingerprint(*runs[name]) for name in (names or runs)}
    splits.cache_clear()  # 200 MB of images
    return {"machine": machine(), "runs": measured}


def agree(then: list[float] | None, now: list[float] | None, key: str, exact: bool) -> bool:
    """Whether two histories of `key` agree: bit for bit if `exact`, else within tolerance."""
    if then is None or now is None or len(then) != len(now):
        return then == now
    if exact:
        return then == now
    if key.endswith("acc"):
        return all(abs(a - b) <= ACCURACY_TOLERANCE for a, b in zip(then, now, strict=True))
    return all(
        math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE) for a, b in zip(then, now, strict=True)
    )


def moved(then: dict, now: dict, exact: bool) -> list[str]:
    """What differs between two fingerprints of one run: history keys, and "weights"."""
    keys = sorted(set(then["history"]) | set(now["history"]))
    found = [k for k in keys if not agree(then["history"].get(k), now["history"].get(k), k, exact)]
    norms = [then["weights"]["norm"]], [now["weights"]["norm"]]
    if not agree(*norms, "norm", exact) or (exact and then["weights"] != now["weights"]):
        found.append("weights")
    return found


def differences(recorded: dict, current: dict) -> list[str]:
    """One line for each run whose numbers or version differ between two `fingerprints`.

    Numbers are compared bit for bit where both were made on the same `machine`, else within
    `RELATIVE_TOLERANCE` and `ACCURACY_TOLERANCE`.
    """
    exact = recorded["machine"] == current["machine"]
    lines = []
    for name, now in current["runs"].items():
        then = recorded["runs"].get(name)
        path = name.split(":")[0]
        if then is None:
            lines.append(f"{name}: not in the record; record the fingerprints again")
        elif then["code"] != now["code"]:
            lines.append(
                f"{name}: recorded for {then['code']}, but the loop is now {now['code']}: "
                "record the fingerprints of the new version (and re-ship what it trains)"
            )
        elif then["recipe"] != now["recipe"]:
            lines.append(
                f"{name}: its recipe's key changed ({then['recipe']} -> {now['recipe']}): "
                "a Recipe default or a shipped recipe changed, so every stored result of it "
                "is no longer found; record the fingerprints again and re-ship"
            )
        elif changed := moved(then, now, exact):
            lines.append(
                f"{name}: {', '.join(changed)} differ from the record, but the loop is still "
                f"{now['code']}. If the numbers were meant to change, bump {VERSIONS[path][1]}, "
                "record the fingerprints again and re-ship what that loop trains; if the change "
                "was meant as a refactor, it is not one."
                + (LAST_BITS if exact and not moved(then, now, exact=False) else "")
            )
    return lines


def read_record(path: Path) -> dict[str, object]:
    """Fingerprints recorded with `record`."""
    return json.loads(Path(path).read_text())


def record(path: Path) -> dict[str, object]:
    """Measure today's fingerprints and write them to `path` (JSON, atomically)."""
    found = fingerprints()
    data.atomic_write(Path(path), (json.dumps(found, indent=1) + "\n").encode())
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """`record PATH` writes today's fingerprints; `check PATH` prints what moved (exit 1 if any)."""
    parser = argparse.ArgumentParser(prog="python -m helpers.provenance", description=__doc__)
    parser.add_argument("command", choices=("record", "check"))
    parser.add_argument("path", type=Path, help="the record, e.g. tests/fingerprints.json")
    args = parser.parse_args(argv)
    if args.command == "record":
        found = record(args.path)
        print(f"recorded {len(found['runs'])} fingerprints on {found['machine']} in {args.path}")
        return 0
    lines = differences(read_record(args.path), fingerprints())
    print("\n".join(lines) or "every fingerprint matches the record")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
