"""The experiment runner of chapter 10: models, costs, the cache and the searches."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from helpers import artifacts, data, training
from helpers import experiments as ex
from helpers.loop import accuracy
from helpers.models import MLP, LeNetLike, ResidualMLP, SimpleNN, count_parameters
from helpers.recipe import BOOK_RECIPE, QUICK_EPOCHS, QUICK_SUBSET, Recipe

TINY = Recipe(epochs=1, train_subset=512, batch_size=64, validation_size=5000)


@pytest.mark.parametrize(
    ("model", "params"),
    [
        (MLP((128, 64), 0.5), count_parameters(SimpleNN())[0]),
        (MLP((800,)), 784 * 800 + 800 + 2 * 800 + 800 * 10 + 10),
        (ResidualMLP(128, 2), None),
        (LeNetLike(), None),
    ],
    ids=["mlp-as-seed", "mlp-800", "residual", "lenet-like"],
)
def test_new_models_output_shape_and_parameters(model, params):
    model.eval()
    out = model(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    total, trainable = count_parameters(model)
    assert total == trainable > 0
    if params is not None:
        assert total == params


def test_residual_mlp_parameter_count():
    w = 128
    block = 2 * (w * w + w) + 2 * (2 * w)  # two Linear layers and two BatchNorms
    expected = 784 * w + w + 2 * w + 2 * block + w * 10 + 10
    assert count_parameters(ResidualMLP(w, 2))[0] == expected


def test_model_cost_matches_the_seed_flops():
    cost = ex.model_cost(SimpleNN())
    assert cost["flops_forward"] == 218_368
    assert cost["flops_train"] == 454_400
    assert cost["params"] == count_parameters(SimpleNN())[0]


def test_runner_trains_and_the_loss_falls(tmp_path):
    config = replace(TINY, epochs=3, model="MLP", model_kwargs={"hidden": [64]}, augment=True)
    result = ex.run_experiment(config, quick=False, root=tmp_path)
    losses = result["history"]["train_loss"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert result["val_acc"] > 30  # well above chance (10%) after a few dozen steps
    assert result["test_acc"] is None
    assert result["params"] > 0 and result["flops_train"] > result["flops_forward"] > 0
    assert not result["cached"]


def test_cache_returns_the_same_result_without_training(tmp_path, monkeypatch):
    first = ex.run_experiment(TINY, quick=False, root=tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(ex, "fit", fail)
    second = ex.run_experiment(TINY, quick=False, root=tmp_path)
    assert second["cached"]
    assert {k: v for k, v in second.items() if k != "cached"} == {
        k: v for k, v in first.items() if k != "cached"
    }


def test_quick_mode_has_its_own_key(tmp_path):
    config = replace(TINY, train_subset=None, epochs=2)
    result = ex.run_experiment(config, quick=True, root=tmp_path)
    assert result["quick"] and result["train_images"] == QUICK_SUBSET
    assert result["key"] != config.key()
    assert result["recipe"]["epochs"] == QUICK_EPOCHS


def test_different_configs_get_different_keys():
    keys = {cfg.key() for cfg in ex.ablation_variants().values()}
    assert len(keys) == len(ex.ablation_variants())
    assert TINY.key() == replace(TINY).key()
    assert TINY.key() != replace(TINY, seed=1).key()
    assert TINY.key() != replace(TINY, lr=TINY.lr * 1.0001).key()


def test_validation_split_is_the_book_recipes():
    splits = data.split_tensors(5000)
    assert len(splits["train"][0]) == 55_000 and len(splits["held"][0]) == 5_000
    # the very images chapter 07 holds out: the in-memory and DataLoader paths share one split
    _, val_loader, _ = training.recipe_loaders(BOOK_RECIPE)
    held = torch.tensor(val_loader.dataset.indices)
    full_images, full_labels = data.mnist_tensors(train=True)
    assert torch.equal(splits["held"][1], full_labels[held])
    assert torch.equal(splits["held"][0], full_images[held])
    full = data.split_tensors(0)
    assert len(full["train"][0]) == 60_000 and len(full["held"][0]) == 10_000


def test_final_recipes_use_the_whole_training_set():
    final = ex.on_full_training_set(ex.CNN_RECIPE)
    assert final.validation_size == 0 and ex.CNN_RECIPE.validation_size == 5000
    assert ex.MLP_RECIPE.augment and not ex.SEARCH_BASE.augment
    searched = ex.apply_params(ex.SEARCH_BASE, {"lr": 1e-3, "dropout": 0.3})
    assert searched.lr == 1e-3 and searched.dropout == 0.3 and searched.model == "MLP"


def test_random_search_samples_the_space(tmp_path):
    base = replace(TINY, model="MLP", model_kwargs={"hidden": [32]}, train_subset=256)
    results = ex.random_search(base, trials=2, seed=0, quick=False, root=tmp_path)
    assert len(results) == 2
    for r in results:
        low, high, _ = ex.SEARCH_SPACE["lr"]
        assert low <= r["hparams"]["lr"] <= high
        assert r["recipe"]["lr"] == r["hparams"]["lr"]


def test_shipped_results_are_used_when_the_cache_has_none(tmp_path, monkeypatch):
    book, cache = tmp_path / "book", tmp_path / "cache"
    first = ex.run_experiment(TINY, quick=False, root=book)  # stands in for the book's run
    monkeypatch.setattr(artifacts, "SHIPPED", tmp_path / "shipped")
    shipped = artifacts.ship(artifacts.path("result", TINY, book), "result")
    assert shipped == artifacts.path("result", TINY, shipped=True)
    monkeypatch.setattr(ex, "fit", lambda *a, **k: pytest.fail("trained a shipped recipe"))
    loaded = ex.run_experiment(TINY, quick=False, root=cache)
    assert loaded["cached"] and loaded["history"] == first["history"]
    assert not (ex.cache_dir(cache) / f"{TINY.key()}.json").exists(), "the cache is left alone"


def test_an_unreadable_result_is_named_and_left_in_place(tmp_path, monkeypatch):
    path = ex.cache_dir(tmp_path) / f"{TINY.key()}.json"
    path.parent.mkdir()
    monkeypatch.setattr(ex, "fit", lambda *a, **k: pytest.fail("trained over it"))
    for bad in ('{"key": "cut short', '{"key": "0123456789abcdef"}', "[1, 2]"):
        path.write_text(bad)
        with pytest.raises(artifacts.ArtifactError, match=f"{path.name} .*: delete it"):
            ex.run_experiment(TINY, quick=False, root=tmp_path)
        assert path.read_text() == bad  # nothing lost


def test_a_result_made_by_other_code_is_trained_again_and_replaced(tmp_path):
    first = ex.run_experiment(TINY, quick=False, root=tmp_path)
    path = ex.cache_dir(tmp_path) / f"{TINY.key()}.json"
    for stale in ({**first, "made_by": {**first["made_by"], "code": "loop/0"}}, {}):
        path.write_text(json.dumps(stale))
        again = ex.run_experiment(TINY, quick=False, root=tmp_path)
        assert not again["cached"] and again["made_by"] == first["made_by"]
        assert artifacts.read(path)["made_by"] == first["made_by"]  # replaced by a current one


def test_kept_weights_are_the_run_the_result_reports(tmp_path, monkeypatch):
    first = ex.run_experiment(TINY, quick=False, root=tmp_path, keep_model=True)
    assert (ex.cache_dir(tmp_path) / f"{TINY.key()}.pt").is_file()
    held = data.split_tensors(TINY.validation_size, tmp_path)["held"]
    assert accuracy(first["model"], *held) == first["val_acc"]
    monkeypatch.setattr(ex, "fit", lambda *a, **k: pytest.fail("trained again"))
    again = ex.run_experiment(TINY, quick=False, root=tmp_path, keep_model=True)
    assert again["cached"] and not again["model"].training
    for name, tensor in first["model"].state_dict().items():
        assert torch.equal(again["model"].state_dict()[name], tensor), name


def test_a_result_without_its_own_weights_trains_again(tmp_path):
    plain = ex.run_experiment(TINY, quick=False, root=tmp_path)  # no weights kept
    kept = ex.run_experiment(TINY, quick=False, root=tmp_path, keep_model=True)
    assert not kept["cached"] and "model" not in plain
    weights = ex.cache_dir(tmp_path) / f"{TINY.key()}.pt"
    state = torch.load(weights, weights_only=True)
    other_run = {**state, "made_by": {**state["made_by"], "helpers": "0.0.0"}}
    torch.save(other_run, weights)
    assert not ex.run_experiment(TINY, quick=False, root=tmp_path, keep_model=True)["cached"]
    again = ex.run_experiment(TINY, quick=False, root=tmp_path, keep_model=True)
    assert again["cached"] and "model" in again  # the run just trained, and its weights
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(artifacts.ArtifactError, match=f"{weights.name} is not a readable"):
        ex.run_experiment(TINY, quick=False, root=tmp_path, keep_model=True)


def test_optuna_search_restores_optunas_log_level(tmp_path):
    optuna = pytest.importorskip("optuna")
    base = replace(TINY, model="MLP", model_kwargs={"hidden": [32]}, train_subset=256)
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    try:
        results = ex.optuna_search(base, trials=1, seed=0, quick=False, root=tmp_path)
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    finally:
        optuna.logging.set_verbosity(before)
    assert len(results) == 1 and results[0]["recipe"]["lr"] == results[0]["hparams"]["lr"]
