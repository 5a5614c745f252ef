"""The fast path (chapter 11): TensorLoader, FastDropout, SmallCNN and the benchmark's output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import bench, fast, loop
from helpers.models import SimpleNN, SmallCNN, count_parameters
from helpers.training import train_epoch

ROOT = Path(__file__).resolve().parents[1]


def test_tensor_loader_behaves_like_a_dataloader():
    images, labels = torch.arange(10).float().view(10, 1), torch.arange(10)
    loader = fast.TensorLoader(images, labels, 4, generator=torch.Generator().manual_seed(0))
    assert len(loader) == 3
    first, second = list(loader), list(loader)
    assert [len(y) for _, y in first] == [4, 4, 2]
    assert sorted(torch.cat([y for _, y in first]).tolist()) == list(range(10))
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in second]))
    ordered = fast.TensorLoader(images, labels, 4, shuffle=False)
    assert torch.equal(torch.cat([y for _, y in ordered]), labels)


def test_the_seeds_train_epoch_runs_on_a_tensor_loader(subset):
    (x, y), _ = subset
    torch.manual_seed(0)
    model = SimpleNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = fast.TensorLoader(x, y, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = nn.functional.cross_entropy(model.eval()(x), y).item()
    loss, acc = train_epoch(
        model, torch.device("cpu"), loader, optimizer, nn.CrossEntropyLoss(), 1, progress=False
    )
    with torch.no_grad():
        after = nn.functional.cross_entropy(model.eval()(x), y).item()
    assert abs(before - 2.3) < 0.2 and after < before - 0.5  # it learned from these batches
    assert 30 < acc < 100 and loss < before  # the epoch's running figures say the same


def test_speedrun_trains_each_seed_for_the_whole_recipe(subset):
    train, test = subset
    recipe = replace(bench.FAST_MLP, model_kwargs={"hidden_size": 64}, batch_size=128, epochs=2)
    result = fast.speedrun(recipe, train, test, target=50.0, seeds=(0, 1, 2))
    assert len(result["test_acc"]) == len(result["seconds"]) == 3
    assert len(set(result["test_acc"])) > 1, "the seeds give different runs"
    assert result["mean_acc"] == pytest.approx(sum(result["test_acc"]) / 3)
    assert result["min_acc"] <= result["mean_acc"] <= result["max_acc"] and result["reached"]
    _, alone = loop.fit(replace(recipe, seed=1), train, test)
    assert result["test_acc"][1] == alone["test_acc"], "seed 1's run is fit's, all its epochs"
    assert not fast.speedrun(recipe, train, test, target=100.0, seeds=(0,))["reached"]


def test_speedrun_recipes_are_fixed_and_planned():
    for name, (recipe, target, goal_s) in bench.SPEEDRUN_GOALS.items():
        assert recipe.validation_size == 0 and not recipe.augment, name
        assert (target, goal_s) == {"MLP": (98.0, 2.0), "CNN": (99.0, 15.0)}[name]


def test_small_cnn_shapes_and_parameters():
    model = SmallCNN()
    x = torch.randn(5, 1, 28, 28)
    assert model.features(x).shape == (5, 64, 7, 7)
    assert model(x).shape == (5, 10)
    # conv1 32*25, bn1 2*32, conv2 64*32*9, bn2 2*64, classifier 3136*10 + 10
    assert count_parameters(model) == (800 + 64 + 18_432 + 128 + 31_370,) * 2
    assert SmallCNN(channels=(8, 16))(x).shape == (5, 10)


def test_matmul_shapes_add_up_to_the_measured_training_flops():
    assert bench.train_flops_per_sample() == 454_400  # chapter 04's count
    for batch in (1, 64, 1024):
        flops = sum(2 * m * k * n for m, k, n in bench.matmul_shapes(batch))
        assert flops == bench.train_flops_per_sample() * batch
    wide = SimpleNN(hidden_size=256)
    flops = sum(2 * m * k * n for m, k, n in bench.matmul_shapes(8, wide))
    assert flops == bench.train_flops_per_sample(wide) * 8


def test_fast_dropout_keeps_half_and_scales_by_two():
    dropout = fast.FastDropout(0.5)
    x = torch.ones(1000, 1000, requires_grad=True)
    torch.manual_seed(0)
    y = dropout(x)
    assert set(y.unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - p)
    kept = y.detach() != 0
    assert abs(kept.float().mean().item() - 0.5) < 0.002  # 1e6 coin flips: sd 0.0005
    # every byte of a random 64-bit word decides one element: each must be a fair coin
    by_byte = kept.flatten().view(-1, 8).float().mean(0)
    assert (by_byte - 0.5).abs().max() < 0.005, by_byte
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient passes where the value does
    torch.manual_seed(0)
    assert torch.equal(dropout(x), y)  # the global seed makes it repeatable


def test_fast_dropout_is_nn_dropout_where_it_cannot_be_exact():
    x = torch.randn(64, 128)
    for p in (0.1, 0.0, 1.0):  # 256 p not a whole number, or nothing to draw
        torch.manual_seed(1)
        expected = nn.Dropout(p)(x)
        torch.manual_seed(1)
        assert torch.equal(fast.FastDropout(p)(x), expected)
    quarter = fast.FastDropout(0.25)(torch.ones(400_000))
    assert abs((quarter == 0).float().mean().item() - 0.25) < 0.004
    assert torch.equal(quarter.unique(), torch.tensor([0.0, 4 / 3]))  # scaled by 1 / (1 - p)
    dropout = fast.FastDropout(0.5).eval()
    assert dropout(x) is x  # evaluation: the identity, as nn.Dropout
    elsewhere = torch.empty(64, 128, device="meta")  # stands in for a GPU: not drawn on the CPU
    assert fast.FastDropout(0.5)(elsewhere).device == elsewhere.device


def test_use_fast_dropout_swaps_modules_and_keeps_the_state_dict():
    torch.manual_seed(0)
    model = SimpleNN()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert fast.use_fast_dropout(model) is model
    assert type(model.dropout) is fast.FastDropout and model.dropout.p == 0.5
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    nested = fast.use_fast_dropout(nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.25))))
    assert type(nested[1][0]) is fast.FastDropout and nested[1][0].p == 0.25


def test_fast_dropout_trains_like_nn_dropout(subset):
    (x, y), _ = subset
    losses = []
    for swap in (False, True):
        torch.manual_seed(0)
        model = fast.use_fast_dropout(SimpleNN()) if swap else SimpleNN()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loader = fast.TensorLoader(x, y, 64, generator=torch.Generator().manual_seed(0))
        for _ in range(3):
            loss, _ = train_epoch(
                model, torch.device("cpu"), loader, optimizer, nn.CrossEntropyLoss(), 1, 1.0, False
            )
        losses.append(loss)
    assert losses[1] == pytest.approx(losses[0], abs=0.1), losses  # other masks, same learning


def test_profiling_leaves_the_environment_as_it_was(monkeypatch):
    monkeypatch.delenv("KINETO_LOG_LEVEL", raising=False)
    fast.profile_operators(lambda: torch.ones(3).sum(), warmup=False)
    assert "KINETO_LOG_LEVEL" not in os.environ


def test_timed_epoch_applies_its_options_for_one_epoch_only(subset):
    (x, y), _ = subset
    before = torch.get_num_threads()
    loader = bench.tensor_loader(x, y, 64)
    run = bench.timed_epoch(loader, torch.device("cpu"), True, 3, fast_dropout=True, threads=1)
    assert torch.get_num_threads() == before
    assert type(run["model"].dropout) is fast.FastDropout
    assert run["seconds"] > 0 and 0 < run["train_loss"] < 3


def test_profile_operators_finds_dropouts_masks_in_a_big_batch_step():
    model, x = SimpleNN().train(), torch.randn(1024, 1, 28, 28)

    def steps() -> None:  # a few steps: one alone can be swamped by a busy machine's hiccup
        for _ in range(3):
            model(x).sum().backward()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the book's policy on 2 cores: on a busy machine 2 threads stall
    try:
        rows = fast.profile_operators(steps)
    finally:
        torch.set_num_threads(threads)
    names = [row["operator"] for row in rows]
    assert "aten::bernoulli_" in names[:5], names[:6]  # nn.Dropout's CPU masks: a top cost
    assert sum(row["share"] for row in rows) == pytest.approx(1.0)
    assert rows == sorted(rows, key=lambda row: row["self_ms"], reverse=True)
    fast.use_fast_dropout(model)
    names = [row["operator"] for row in fast.profile_operators(lambda: model(x).sum())]
    assert "aten::bernoulli_" not in names and "aten::randint" in names


def test_first_batches_limits_a_loader():
    loader = bench.FirstBatches(range(100), 7)
    assert len(loader) == 7 and list(loader) == list(range(7))


@pytest.fixture(scope="module")
def quick_rows() -> list[dict]:
    """The output of `python -m helpers.bench --quick`, parsed."""
    done = subprocess.run(
        [sys.executable, "-m", "helpers.bench", "--quick", "--device", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_quick_benchmark_prints_every_figure(quick_rows):
    by_figure: dict[str, list[dict]] = {}
    for row in quick_rows:
        by_figure.setdefault(row["figure"], []).append(row)
    env = by_figure["environment"][0]
    assert env["device"] == "cpu" and env["quick"] is True
    assert env["torch"] == torch.__version__ and env["threads"] >= 1
    fresh = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert env["default_threads"] == int(fresh.stdout) >= 1  # a fresh process's own default
    paths = {row["path"]: row for row in by_figure["epoch_time"]}
    assert list(paths) == list(bench.PATHS)
    assert {"seed pipeline as written", "seed pipeline", "fast"} <= set(paths)
    assert paths["seed pipeline as written"]["threads"] == env["default_threads"]
    assert paths["seed pipeline"]["threads"] == paths["fast"]["threads"] == env["threads"]
    assert [row["batch_size"] for row in by_figure["matmul_floor"]] == [64, 256, 1024]
    fast_64 = [p for p, row in paths.items() if row["batch_size"] == 64 and "seed" not in p]
    assert len(by_figure["speedup"]) == 2 * len(fast_64) == 6  # over both seed baselines
    assert len(by_figure["distance_from_floor"]) == len(paths)
    assert [row["model"] for row in by_figure["speedrun"]] == ["MLP", "CNN"]


def test_quick_benchmark_figures_are_consistent(quick_rows):
    epochs = {r["path"]: r for r in quick_rows if r["figure"] == "epoch_time"}
    floors = {r["batch_size"]: r for r in quick_rows if r["figure"] == "matmul_floor"}
    for row in epochs.values():
        assert row["median_s"] > 0 and all(t > 0 for t in row["runs_s"])
        assert 0 < row["train_loss"] < 3 and 0 <= row["test_acc"] <= 100
    for row in floors.values():
        assert row["gflops"] > 0 and row["flops_per_sample"] == 454_400
        expected = 454_400 * 60_000 / (row["gflops"] * 1e9)
        assert row["floor_s"] == pytest.approx(expected)
    for row in quick_rows:
        if row["figure"] == "speedup":
            seed, path = epochs[row["baseline"]], epochs[row["path"]]
            assert row["baseline_s"] == seed["median_s"] and row["path_s"] == path["median_s"]
            assert row["ratio"] == pytest.approx(seed["median_s"] / path["median_s"])
        elif row["figure"] == "distance_from_floor":
            epoch_s = epochs[row["path"]]["median_s"]
            floor_s = floors[row["batch_size"]]["floor_s"]
            assert row["ratio"] == pytest.approx(epoch_s / floor_s)
        elif row["figure"] == "speedrun":
            assert len(row["test_acc"]) == len(row["seconds"]) == 2  # quick: 2 seeds
            assert row["reached"] == (row["mean_acc"] >= row["target"])
            assert row["within_goal"] == (row["reached"] and row["median_s"] <= row["goal_s"])
            assert all(s > 0 for s in row["seconds"]) and row["recipe"]["epochs"] == 1
