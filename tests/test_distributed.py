"""DDP on two CPU processes (chapter 11): the gradients of one big batch, rank 0's files, bytes."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from helpers import distributed
from helpers.models import SimpleNN, SmallCNN

ROOT = Path(__file__).resolve().parents[1]

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="this torch build has no torch.distributed with the gloo backend",
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, str, Path]:
    """One quick run of both checks on 2 CPU processes: rank 0's JSON, stdout, the folder."""
    out = tmp_path_factory.mktemp("ddp")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "helpers.distributed", "--quick", "--check", "all",
        "--out", str(out / "results.json"), "--checkpoint", str(out / "model.pt"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    tail = f"\nstdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"torchrun failed ({done.returncode}){tail}"
    assert (out / "results.json").exists(), f"rank 0 wrote no results{tail}"
    return json.loads((out / "results.json").read_text()), done.stdout, out


@needs_gloo
def test_ddp_gradients_are_those_of_the_whole_batch(quick_run):
    gaps = quick_run[0]["gradients"]
    for variant in ("no batchnorm", "synced batchnorm"):
        relative = gaps[variant]["relative"]
        assert relative < distributed.GRADIENT_TOLERANCE, f"{variant}: {gaps[variant]}"
        assert gaps[variant]["max_abs_grad"] > 1e-3, "a gradient too small to compare"


@needs_gloo
def test_plain_batchnorm_makes_the_gradients_differ(quick_run):
    # Per-process statistics of 32 images are not those of 64: measured about 0.5.
    assert quick_run[0]["gradients"]["batchnorm"]["relative"] > 0.05


@needs_gloo
def test_only_rank_0_logs_and_writes(quick_run):
    results, stdout, out = quick_run
    tagged = [line for line in stdout.splitlines() if line.startswith("[rank ")]
    assert tagged and all(line.startswith("[rank 0] ") for line in tagged), stdout
    assert sum("test accuracy" in line for line in tagged) == 1, stdout
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "results.json"]
    SimpleNN().load_state_dict(torch.load(out / "model.pt"))  # a plain model's keys: no "module."
    assert results["train"]["checkpoint"] == str(out / "model.pt")


@needs_gloo
def test_quick_ddp_training_learns(quick_run):
    train = quick_run[0]["train"]
    assert (train["world_size"], train["backend"]) == (2, "gloo")
    assert (train["per_process_batch"], train["global_batch"]) == (32, 64)
    assert train["steps_per_epoch"] == 32  # 1,000 images a process, 32 at a time
    assert train["test_acc"] > 50.0, train  # measured about 75% after these 32 steps


def test_gradient_bytes_count_float32_parameters():
    assert distributed.gradient_bytes(SimpleNN()) == 4 * 109_770
    assert distributed.gradient_bytes(nn.Linear(10, 2), bytes_per_number=2) == 2 * 22
    frozen = nn.Linear(10, 2)
    frozen.bias.requires_grad_(False)
    assert distributed.gradient_bytes(frozen) == 4 * 20


def test_ring_allreduce_sends_twice_the_gradients_at_most():
    assert distributed.ring_allreduce_bytes(1000, 1) == 0
    assert distributed.ring_allreduce_bytes(1000, 2) == 1000
    assert distributed.ring_allreduce_bytes(1000, 8) == 1750
    assert 1999 < distributed.ring_allreduce_bytes(1000, 10_000) < 2000
    # 1.25 GB at 10 Gbit/s (1.25 GB/s) takes one second; two processes send the gradients once.
    assert distributed.allreduce_seconds(1.25e9, 2, 10) == pytest.approx(1.0)
    assert distributed.allreduce_seconds(1.25e9, 2, 100) == pytest.approx(0.1)


def test_cpu_sync_batchnorm_is_plain_batchnorm_in_one_process():
    torch.manual_seed(0)
    model, x = SmallCNN(), torch.randn(8, 1, 28, 28)
    model.features[1].running_mean.fill_(0.5)  # a state the swap must keep
    plain = copy.deepcopy(model)
    synced = distributed.sync_batchnorm(model, torch.device("cpu"))
    assert sum(isinstance(m, distributed.CPUSyncBatchNorm) for m in synced.modules()) == 2
    assert torch.equal(synced.features[1].running_mean, plain.features[1].running_mean)
    assert torch.equal(synced(x), plain(x))  # training mode, no process group: plain BatchNorm
    assert torch.equal(synced.features[1].running_var, plain.features[1].running_var)


def test_without_batchnorm_leaves_none():
    model = distributed.without_batchnorm(SimpleNN())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
