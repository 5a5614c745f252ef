"""The experiment runner of chapter 09: augmentation, models, training, cache."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from helpers import data, training
from helpers import experiments as ex
from helpers.models import MLP, LeNetLike, ResidualMLP, SimpleNN, count_parameters

TINY = ex.Experiment(epochs=1, train_subset=512, batch_size=64)


def test_augmentation_keeps_shape_and_range_and_is_reproducible():
    images = torch.randn(16, 1, 28, 28)
    a = ex.augment_batch(images, generator=torch.Generator().manual_seed(3))
    b = ex.augment_batch(images, generator=torch.Generator().manual_seed(3))
    c = ex.augment_batch(images, generator=torch.Generator().manual_seed(4))
    assert a.shape == images.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= images.min() - 1e-5 and a.max() <= images.max() + 1e-5


def test_augmentation_without_motion_is_the_identity():
    images = torch.randn(4, 1, 28, 28)
    same = ex.augment_batch(images, max_shift=0, max_degrees=0)
    assert torch.allclose(same, images, atol=1e-5)


def test_augmentation_moves_a_pixel_by_at_most_the_shift():
    image = torch.zeros(8, 1, 28, 28)
    image[:, 0, 10, 10] = 1.0
    moved = ex.augment_batch(image, max_shift=2, max_degrees=0, background=0.0)
    for one in moved[:, 0]:
        rows, cols = torch.nonzero(one > 0.01, as_tuple=True)
        assert (rows - 10).abs().max() <= 2 and (cols - 10).abs().max() <= 2
        assert one.sum().item() == pytest.approx(1.0, abs=0.05)  # interpolation keeps the mass


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


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
@pytest.mark.parametrize("schedule", ["step", "onecycle", "cosine", "constant"])
def test_every_optimizer_and_schedule_builds(optimizer, schedule):
    config = replace(TINY, optimizer=optimizer, schedule=schedule, warmup_epochs=0.5)
    model = ex.build_model(config)
    opt = ex.build_optimizer(config, model)
    sched, per_batch = ex.build_schedule(config, opt, steps_per_epoch=10)
    assert per_batch == (schedule != "step")
    opt.step()
    sched.step()


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

    def fail(config):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(ex, "train", fail)
    second = ex.run_experiment(TINY, quick=False, root=tmp_path)
    assert second["cached"]
    assert {k: v for k, v in second.items() if k != "cached"} == {
        k: v for k, v in first.items() if k != "cached"
    }


def test_quick_mode_has_its_own_key(tmp_path):
    config = replace(TINY, train_subset=None, epochs=2)
    result = ex.run_experiment(config, quick=True, root=tmp_path)
    assert result["quick"] and result["train_images"] == ex.QUICK_SUBSET
    assert result["key"] != config.key()
    assert result["config"]["epochs"] == ex.QUICK_EPOCHS


def test_different_configs_get_different_keys():
    keys = {cfg.key() for cfg in ex.ablation_variants().values()}
    assert len(keys) == len(ex.ablation_variants())
    assert TINY.key() == replace(TINY).key()
    assert TINY.key() != replace(TINY, seed=1).key()
    assert TINY.key() != replace(TINY, lr=TINY.lr * 1.0001).key()


def test_validation_split_is_the_book_recipes():
    splits = ex.split_tensors(5000)
    assert len(splits["train"][0]) == 55_000 and len(splits["eval"][0]) == 5_000
    # the very images chapter 07 held out: same indices as random_split's in recipe_loaders
    _, val_loader, _ = training.recipe_loaders(training.BOOK_RECIPE)
    held = torch.tensor(val_loader.dataset.indices)
    full_images, full_labels = data.mnist_tensors(train=True)
    assert torch.equal(splits["eval"][1], full_labels[held])
    assert torch.equal(splits["eval"][0], full_images[held])
    full = ex.split_tensors(0)
    assert len(full["train"][0]) == 60_000 and len(full["eval"][0]) == 10_000


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
        assert r["config"]["lr"] == r["hparams"]["lr"]


def test_shipped_results_are_used_when_the_cache_has_none(tmp_path, monkeypatch):
    shipped, cache = tmp_path / "shipped", tmp_path / "cache"
    first = ex.run_experiment(TINY, quick=False, root=shipped)  # stands in for the book's run
    monkeypatch.setattr(ex, "SHIPPED_RESULTS", shipped)
    monkeypatch.setattr(ex, "train", lambda config: pytest.fail("trained a shipped recipe"))
    loaded = ex.run_experiment(TINY, quick=False, root=cache)
    assert loaded["cached"] and loaded["history"] == first["history"]
    assert not (cache / f"{TINY.key()}.json").exists(), "the local cache is left alone"


def test_an_unreadable_result_is_trained_again_with_a_warning(tmp_path):
    path = tmp_path / f"{TINY.key()}.json"
    for bad in ('{"key": "cut short', '{"key": "0123456789abcdef"}', "[1, 2]"):
        path.write_text(bad)
        with pytest.warns(UserWarning, match="ignoring unreadable result"):
            result = ex.run_experiment(TINY, quick=False, root=tmp_path)
        assert not result["cached"] and result["key"] == TINY.key()
        assert ex.read_result(path)["key"] == TINY.key()  # replaced by a good one


def test_every_shipped_result_is_a_full_run_stored_under_its_key():
    paths = sorted(ex.SHIPPED_RESULTS.glob("*.json"))
    assert len(paths) >= 50, "chapter 09's full run ships its results"
    for path in paths:
        result = ex.read_result(path)
        assert result is not None and not result["quick"]
        config = ex.Experiment(**result["config"])
        assert config.key() == path.stem, f"{path.name}: recipe or CACHE_VERSION changed"
