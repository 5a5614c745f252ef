"""What every chapter does first (the setup cell): seed, threads, device, and say which."""

from __future__ import annotations

import os
import random
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

QUICK_ENV_VAR = "MNIST_BOOK_QUICK"
THREADS_ENV_VAR = "MNIST_BOOK_THREADS"
MAX_THREADS = 8  # the book's models are small: past this, more threads only add overhead


def is_quick() -> bool:
    """True when `MNIST_BOOK_QUICK=1`: chapters then shorten what is slow, and nothing else."""
    return os.environ.get(QUICK_ENV_VAR, "") == "1"


@contextmanager
def expect_error(*kinds: type[BaseException]) -> Iterator[None]:
    """Run the block, print the error it raises as Python would, and go on (chapter 3).

    A lesson about an error shows the error without stopping Run All, in any notebook frontend.
    If the block raises nothing, or an error that is not one of `kinds`, that is a failed check.
    """
    kinds = kinds or (Exception,)
    try:
        yield
    except kinds as error:
        print("".join(traceback.format_exception_only(error)), end="")
    else:
        names = " or ".join(kind.__name__ for kind in kinds)
        raise AssertionError(f"expected {names}, but the code ran without an error")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch so a chapter draws the same numbers on every run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device() -> torch.device:
    """The fastest device present: a CUDA GPU, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def available_cores() -> int:
    """The CPU cores this process may run on (a container's or Colab's share, not the host's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def book_threads(cores: int | None = None) -> int:
    """The book's torch thread count: `$MNIST_BOOK_THREADS`, else one core fewer than there are.

    Why one fewer: torch's default uses every core, and when another process holds one of them
    each step waits for the slowest thread; on 2 cores that made steps 10-60x slower. Leaving a
    core free costs little on these small models and cannot collapse.
    """
    env = os.environ.get(THREADS_ENV_VAR, "")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"{THREADS_ENV_VAR}={env!r}: set it to a whole number of threads >= 1")
        return int(env)
    cores = available_cores() if cores is None else cores
    return max(1, min(MAX_THREADS, cores - 1))


def in_colab() -> bool:
    """True inside Google Colab, where a GPU is one menu away."""
    return "COLAB_RELEASE_TAG" in os.environ or "COLAB_GPU" in os.environ


def setup(seed: int = 0, threads: int | None = None) -> torch.device:
    """Seed everything, set the thread count once, pick the device and print it; returns it.

    `threads` overrides `book_threads()`. Every chapter calls this first, so the thread policy
    is decided here and nowhere else.
    """
    seed_everything(seed)
    torch.set_num_threads(threads or book_threads())
    device = pick_device()
    print(f"Device: {device.type}")
    if device.type == "cpu":
        if in_colab():
            print("Tip: Runtime > Change runtime type > T4 GPU makes training chapters faster.")
        else:
            print("No GPU found: every chapter runs on the CPU (on Colab, pick a GPU runtime).")
    return device
