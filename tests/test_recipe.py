"""One recipe type: its defaults, its key, its checks, and what it builds (chapters 07, 10, 11)."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest
import torch
from torch import nn

from helpers import recipe as rc
from helpers.models import MODELS, SimpleNN
from helpers.recipe import (
    BOOK_RECIPE,
    Recipe,
    build_model,
    build_optimizer,
    build_schedule,
    make_adamw,
    new_history,
    steps_per_epoch,
)

TINY = Recipe(epochs=1, train_subset=512, batch_size=64)


def test_the_defaults_are_the_seeds_recipe():
    seed = Recipe()
    assert (seed.model, seed.optimizer, seed.schedule) == ("SimpleNN", "adam", "step")
    assert seed.lr == 1e-3
    assert (seed.step_size, seed.gamma, seed.max_grad_norm) == (5, 0.5, 1.0)
    assert (seed.batch_size, seed.epochs, seed.validation_size) == (64, 10, 0)
    assert replace(seed, validation_size=5000) == BOOK_RECIPE


def test_keys_name_recipes():
    assert len(TINY.key()) == 16 and TINY.key() == replace(TINY).key()
    assert TINY.key() != replace(TINY, seed=1).key()
    assert TINY.key() != replace(TINY, lr=TINY.lr * 1.0001).key()
    assert TINY.key() != TINY.shortened().key()


def test_shortened_recipes_are_quick():
    short = BOOK_RECIPE.shortened()
    assert (short.epochs, short.train_subset) == (rc.QUICK_EPOCHS, rc.QUICK_SUBSET)
    assert short.validation_size == BOOK_RECIPE.validation_size


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"model": "Transformer"}, ValueError, r"model 'Transformer': choose one of"),
        ({"optimizer": "adagrad"}, ValueError, r"optimizer 'adagrad'"),
        ({"schedule": "linear"}, ValueError, r"schedule 'linear'"),
        ({"epochs": 0}, ValueError, r"Recipe epochs=0 is out of range: pass at least 1$"),
        ({"epochs": "10"}, TypeError, r"Recipe epochs='10': pass a whole number, such as .*=10$"),
        ({"epochs": 10.0}, TypeError, r"Recipe epochs=10.0: pass a whole number"),
        ({"augment": 1}, TypeError, r"Recipe augment=1: pass True or False"),
        ({"lr": "1e-3"}, TypeError, r"Recipe lr='1e-3': pass a number, such as .*lr=0.001$"),
        ({"dropout": "0.2"}, TypeError, r"Recipe dropout='0.2': pass a number or None"),
        ({"model_kwargs": [128]}, TypeError, r"model_kwargs=\[128\]: pass a dict"),
        (
            {"model": "SmallCNN", "dropout": 0.2},
            ValueError,
            r"Recipe dropout=0.2: SmallCNN has no Dropout to set; leave dropout=None, or "
            r"choose a model that has one: \['LeNetLike', 'MLP', 'ResidualMLP', 'SimpleNN'\]$",
        ),
        (
            {"model": "SmallCNN", "model_kwargs": {"hidden": 64}},
            ValueError,
            r"Recipe model_kwargs \['hidden'\]: SmallCNN takes no such argument; pass only",
        ),
        ({"train_subset": 0}, ValueError, r"train_subset=0 is out of range: pass at least 1, or"),
        ({"validation_size": 60_000}, ValueError, r"validation_size=60000 .* pass 0 to 59,999$"),
        ({"validation_size": -1}, ValueError, r"validation_size=-1 is out of range"),
        ({"dropout": 1.5}, ValueError, r"Recipe dropout=1.5 is out of range: pass 0 to 1, or None"),
    ],
)
def test_a_recipe_no_loop_can_run_is_refused_at_once_naming_the_field(fields, error, message):
    with pytest.raises(error, match=message):
        Recipe(**fields)


def test_every_recipe_the_book_names_passes_the_checks():
    from helpers import bench, distributed, experiments

    recipes = [rc.BOOK_RECIPE, rc.BOOK_CNN_RECIPE, distributed.DDP_RECIPE, experiments.MLP_RECIPE]
    recipes += [
        experiments.CNN_RECIPE,
        experiments.SEARCH_BASE,
        *experiments.ablation_variants().values(),
    ]
    recipes += [bench.FAST_MLP, bench.FAST_CNN, bench.SPEEDRUN_MLP, bench.SPEEDRUN_CNN]
    for recipe in recipes:
        assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_a_recipe_cannot_change_and_can_be_hashed():
    recipe = replace(BOOK_RECIPE, model="MLP", model_kwargs={"hidden": [64, 32]})
    key = recipe.key()
    with pytest.raises(TypeError, match="model_kwargs cannot change"):
        recipe.model_kwargs["hidden"] = [128]
    with pytest.raises(TypeError, match="model_kwargs cannot change"):
        recipe.model_kwargs.update(dropout=0.1)
    with pytest.raises(AttributeError):
        recipe.model_kwargs["hidden"].append(16)  # a tuple now
    assert recipe.key() == key and recipe.model_kwargs == {"hidden": (64, 32)}
    assert len({recipe, replace(recipe), BOOK_RECIPE}) == 2
    assert {recipe: 1}[replace(recipe, model_kwargs={"hidden": (64, 32)})] == 1


def test_freezing_model_kwargs_keeps_the_keys_that_name_files():
    from helpers import artifacts, experiments

    wider = experiments.ablation_variants()["wider MLP (512-256)"]
    assert wider.model_kwargs == {"hidden": (512, 256)}
    assert wider.to_dict()["model_kwargs"] == {"hidden": [512, 256]}
    assert artifacts.path("result", wider, shipped=True).is_file(), "its shipped name"
    assert wider.key() == replace(wider, model_kwargs={"hidden": [512, 256]}).key()


def test_a_stored_recipe_with_a_field_this_version_lacks_is_named():
    stored = {**BOOK_RECIPE.to_dict(), "ema_decay": 0.999}
    with pytest.raises(ValueError, match=r"fields \['ema_decay'\] .* upgrade helpers"):
        Recipe.from_dict(stored)


def test_every_registered_model_builds_and_dropout_overrides():
    for name in MODELS:
        model = build_model(Recipe(model=name))
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10), name
    lowered = build_model(Recipe(dropout=0.2))
    assert isinstance(lowered, SimpleNN) and lowered.dropout.p == 0.2
    mlp = build_model(Recipe(model="MLP", model_kwargs={"hidden": [32, 16]}))
    assert [m.out_features for m in mlp.modules() if isinstance(m, nn.Linear)] == [32, 16, 10]


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
@pytest.mark.parametrize("schedule", ["step", "onecycle", "cosine", "constant"])
def test_every_optimizer_and_schedule_builds(optimizer, schedule):
    recipe = replace(TINY, optimizer=optimizer, schedule=schedule, warmup_epochs=0.5)
    model = build_model(recipe)
    opt = build_optimizer(recipe, model)
    sched, per_batch = build_schedule(recipe, opt, steps_per_epoch=10)
    assert per_batch == (schedule != "step")
    opt.step()
    sched.step()


def test_the_seeds_optimizer_and_schedule():
    model = build_model(Recipe())
    opt = build_optimizer(Recipe(), model)
    sched, per_batch = build_schedule(Recipe(), opt, steps_per_epoch=100)
    assert type(opt) is torch.optim.Adam and not per_batch
    rates = []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == [1e-3] * 5 + [5e-4] * 5


def test_make_adamw_is_plain_adam_without_weight_decay():
    params = [nn.Parameter(torch.ones(3))]
    optimizer = make_adamw(params, lr=0.1)
    assert optimizer.defaults["weight_decay"] == 0.0 and optimizer.defaults["lr"] == 0.1


def test_histories_share_one_vocabulary():
    assert new_history("train_loss", "val_acc") == {"train_loss": [], "val_acc": []}
    with pytest.raises(ValueError, match="unknown history keys"):
        new_history("learning_rates")


def test_steps_per_epoch_counts_the_last_partial_batch():
    assert [steps_per_epoch(n, 64) for n in (1, 64, 65, 60_000)] == [1, 1, 2, 938]


def test_a_recipe_round_trips_through_plain_data():
    recipe = replace(BOOK_RECIPE, model="MLP", model_kwargs={"hidden": [64]})
    assert Recipe(**asdict(recipe)) == recipe == Recipe.from_dict(recipe.to_dict())
    assert recipe.to_dict() == {**asdict(recipe), "model_kwargs": {"hidden": [64]}}
