"""The in-memory loop every run of chapters 10 and 11 (and the benchmark) trains with."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from helpers import loop
from helpers.bench import FAST_MLP
from helpers.data import tensor_batches
from helpers.recipe import build_model, build_optimizer

# Chapter 11's MLP recipe, narrower and on small batches: a few seconds on a CPU.
FAST = replace(FAST_MLP, model_kwargs={"hidden_size": 64, "dropout": 0.1}, batch_size=64)


def test_fit_lowers_the_loss_and_scores_the_test_set_once(subset):
    train, test = subset
    model, result = loop.fit(FAST, train, test)
    h = result["history"]
    assert set(h) == {"train_loss", "lr", "test_acc", "seconds"}
    assert len(h["train_loss"]) == len(h["seconds"]) == 4 and len(h["test_acc"]) == 1
    assert h["train_loss"][-1] < 0.7 * h["train_loss"][0]
    assert result["test_acc"] == h["test_acc"][-1] > 80 and result["val_acc"] is None
    assert h["seconds"] == sorted(h["seconds"]) and h["seconds"][0] > 0
    assert result["train_images"] == 2048 and result["key"] == FAST.key()
    assert not model.training, "scored in eval mode"


def test_fit_on_a_validation_split_scores_every_epoch(subset):
    train, held = subset
    _, result = loop.fit(replace(FAST, epochs=2, validation_size=5000), train, held)
    assert len(result["history"]["val_acc"]) == 2 and result["test_acc"] is None


def test_fit_is_repeatable_and_the_seed_matters(subset):
    train, test = subset
    short = replace(FAST, epochs=1, train_subset=512)
    a, b = loop.fit(short, train, test)[1], loop.fit(short, train, test)[1]
    c = loop.fit(replace(short, seed=1), train, test)[1]
    assert a["history"]["train_loss"] == b["history"]["train_loss"]
    assert a["history"]["train_loss"] != c["history"]["train_loss"]
    assert a["train_images"] == 512


def test_fit_stops_at_the_target(subset):
    train, test = subset
    _, reached = loop.fit(FAST, train, test, every_epoch=True, target=50.0)
    assert len(reached["history"]["test_acc"]) < 4 and reached["test_acc"] >= 50
    _, never = loop.fit(replace(FAST, epochs=1), train, test, every_epoch=True, target=100.0)
    assert len(never["history"]["test_acc"]) == 1 and never["test_acc"] < 100


def test_fit_steps_a_per_epoch_schedule_once_an_epoch(subset):
    train, test = subset
    step = replace(FAST, optimizer="adam", lr=1e-3, schedule="step", step_size=1, gamma=0.5)
    _, result = loop.fit(replace(step, epochs=3, train_subset=256), train, test)
    assert result["history"]["lr"] == pytest.approx([1e-3, 5e-4, 2.5e-4])


def test_accuracy_counts_in_eval_mode():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(3, 4))
        model[1].bias.zero_()
    images = torch.eye(4)[:3].view(3, 1, 2, 2)
    assert loop.accuracy(model, images, torch.tensor([0, 1, 2]), batch_size=2) == 100.0
    assert loop.accuracy(model, images, torch.tensor([0, 1, 0])) == pytest.approx(200 / 3)
    assert not model.training


def test_the_stamp_names_the_loops_version_whatever_the_recipe():
    assert loop.loop_code(FAST) == loop.loop_code(replace(FAST, model="SmallCNN", model_kwargs={}))
    assert loop.loop_code() == f"loop/{loop.LOOP_VERSION}"


def test_one_train_step_is_the_step_fit_takes(subset):
    (images, labels), _ = subset
    recipe = replace(FAST, epochs=1, train_subset=128, batch_size=64, schedule="constant")
    torch.manual_seed(recipe.seed)
    model = build_model(recipe)
    optimizer = build_optimizer(recipe, model)
    shuffle = torch.Generator().manual_seed(recipe.seed)
    losses = [
        loop.train_step(model, optimizer, recipe, x, y)
        for x, y in tensor_batches(images[:128], labels[:128], 64, generator=shuffle)
    ]
    fitted, result = loop.fit(recipe, (images, labels), subset[1])
    assert result["history"]["train_loss"] == [torch.stack(losses).sum().item() / 2]
    for name, value in fitted.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name
