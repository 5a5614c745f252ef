"""What every chapter does first: seed, pick a device, say which (the setup cell)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

QUICK_ENV_VAR = "MNIST_BOOK_QUICK"


def is_quick() -> bool:
    """True when `MNIST_BOOK_QUICK=1`: chapters then shorten what is slow, and nothing else."""
    return os.environ.get(QUICK_ENV_VAR, "") == "1"


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


def in_colab() -> bool:
    """True inside Google Colab, where a GPU is one menu away."""
    return "COLAB_RELEASE_TAG" in os.environ or "COLAB_GPU" in os.environ


def setup(seed: int = 0) -> torch.device:
    """Seed everything, pick the device and print it; returns the device."""
    seed_everything(seed)
    device = pick_device()
    print(f"Device: {device.type}")
    if device.type == "cpu":
        if in_colab():
            print("Tip: Runtime > Change runtime type > T4 GPU makes training chapters faster.")
        else:
            print("No GPU found: every chapter runs on the CPU (on Colab, pick a GPU runtime).")
    return device
