"""The training loop, checkpoints and resuming, on a few hundred real MNIST images."""

from __future__ import annotations

import dataclasses
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from helpers import artifacts, data, runtime, training
from helpers.models import SimpleNN
from helpers.recipe import BOOK_RECIPE, Recipe
from helpers.training import CheckpointError

SMALL = Recipe(epochs=2, batch_size=32, train_subset=256, validation_size=64, step_size=1)
CPU = torch.device("cpu")


def local_checkpoint(root, recipe: Recipe):
    """Where `load_or_train(recipe, root=root)` keeps its checkpoint."""
    return root / "checkpoints" / f"{recipe.model}-{recipe.key()}.pt"


@pytest.fixture(scope="module")
def loaders():
    return training.recipe_loaders(SMALL)


def test_loaders_hold_out_a_validation_split_from_the_training_images(loaders):
    train_loader, val_loader, test_loader = loaders
    assert (len(train_loader.dataset), len(val_loader.dataset)) == (256, 64)
    assert len(test_loader.dataset) == 10_000
    train_idx = set(train_loader.dataset.indices)
    val_idx = set(val_loader.dataset.indices)
    assert not train_idx & val_idx
    assert val_idx == set(data.split_indices(60_000, 64)[1].tolist()), "the one split"


def test_seed_recipe_validates_on_the_test_set():
    _, val_loader, test_loader = training.recipe_loaders(Recipe(train_subset=64))
    assert val_loader.dataset is test_loader.dataset


def test_a_few_steps_reduce_the_loss(loaders):
    run = training.new_run(SMALL, torch.device("cpu"))
    batch = [next(iter(loaders[0]))]
    losses = [
        training.train_epoch(
            run.model,
            torch.device("cpu"),
            batch,
            run.optimizer,
            nn.CrossEntropyLoss(),
            epoch=1,
            progress=False,
        )[0]
        for _ in range(10)
    ]
    assert losses[-1] < 0.75 * losses[0]


def test_validate_matches_a_manual_count(loaders):
    model = SimpleNN().eval()
    loss, acc = training.validate(model, torch.device("cpu"), loaders[1], nn.CrossEntropyLoss())
    images = torch.cat([x for x, _ in loaders[1]])
    labels = torch.cat([y for _, y in loaders[1]])
    with torch.no_grad():
        logits = model(images)
    assert acc == pytest.approx(100.0 * (logits.argmax(1) == labels).float().mean().item())
    batch_losses = [
        nn.functional.cross_entropy(logits[i : i + 32], labels[i : i + 32]).item()
        for i in range(0, 64, 32)
    ]
    assert loss == pytest.approx(sum(batch_losses) / 2, rel=1e-6)
    assert not model.training


def test_scheduler_halves_the_learning_rate_every_step_size_epochs():
    run = training.new_run(Recipe(), torch.device("cpu"))
    rates = []
    for _ in range(11):
        rates.append(run.optimizer.param_groups[0]["lr"])
        run.optimizer.step()
        run.scheduler.step()
    assert rates[:5] == [1e-3] * 5 and rates[5:10] == [5e-4] * 5 and rates[10] == 2.5e-4


def test_best_epoch_is_the_one_whose_weights_are_kept_the_latest_on_a_tie():
    run = training.new_run(Recipe(), torch.device("cpu"))
    run.history["val_acc"] = [95.0, 97.0, 96.0, 97.0, 96.5]  # train_model keeps epoch 4's weights
    assert run.best_epoch == 4


def test_clipping_caps_the_gradient_norm(loaders, monkeypatch):
    norms = []
    original = nn.utils.clip_grad_norm_

    def spy(params, max_norm):
        params = list(params)
        original(params, max_norm)
        norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item())

    monkeypatch.setattr(training.nn.utils, "clip_grad_norm_", spy)
    run = training.new_run(SMALL, torch.device("cpu"))
    training.train_epoch(
        run.model,
        torch.device("cpu"),
        loaders[0],
        run.optimizer,
        nn.CrossEntropyLoss(),
        1,
        max_grad_norm=1.0,
        progress=False,
    )
    assert len(norms) == 8 and max(norms) <= 1.0 + 1e-5


def test_device_selection_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert runtime.pick_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.pick_device() == torch.device("cuda")


def test_training_is_reproducible_and_resuming_gives_the_same_history(tmp_path):
    def fresh():
        return training.recipe_loaders(SMALL)

    train_loader, val_loader, _ = fresh()
    straight = training.train_model(
        training.new_run(SMALL, torch.device("cpu")), train_loader, val_loader, progress=False
    )

    train_loader, val_loader, _ = fresh()
    path = tmp_path / "run.pt"
    first = training.train_model(
        training.new_run(SMALL, torch.device("cpu")),
        train_loader,
        val_loader,
        epochs=1,
        progress=False,
        checkpoint=path,
    )
    assert first.epoch == 1
    torch.manual_seed(1234)  # anything between the two halves must not matter
    train_loader, val_loader, _ = fresh()
    resumed = training.load_checkpoint(path, torch.device("cpu"), shuffle=train_loader.generator)
    assert resumed.epoch == 1
    training.train_model(resumed, train_loader, val_loader, progress=False)

    assert resumed.history == straight.history
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert straight.history["lr"] == [1e-3, 5e-4]


def draws(shuffle: torch.Generator) -> list:
    """One number from each generator a run draws from on the CPU."""
    return [
        random.random(),
        float(np.random.rand()),
        torch.rand(3).tolist(),
        torch.randint(10**9, (1,), generator=shuffle).item(),
    ]


def test_loading_restores_the_cpu_shuffle_python_and_numpy_generators(tmp_path):
    path, shuffle = tmp_path / "ckpt.pt", torch.Generator().manual_seed(7)
    training.save_checkpoint(training.new_run(SMALL, torch.device("cpu")), path, shuffle)
    expected = draws(shuffle)
    runtime.seed_everything(1234)
    shuffle.manual_seed(99)
    training.load_checkpoint(path, torch.device("cpu"), shuffle=shuffle)
    assert draws(shuffle) == expected
    rng = torch.load(path, weights_only=True)["rng"]
    assert {"torch", "shuffle", "cuda", "mps", "python", "numpy"} <= set(rng)


def test_loading_to_evaluate_leaves_every_generator_alone(tmp_path):
    path, shuffle = tmp_path / "ckpt.pt", torch.Generator().manual_seed(7)
    training.save_checkpoint(training.new_run(SMALL, torch.device("cpu")), path, shuffle)
    runtime.seed_everything(1234)
    expected = draws(torch.Generator().manual_seed(99))
    runtime.seed_everything(1234)
    run = training.load_checkpoint(path, torch.device("cpu"))
    assert draws(torch.Generator().manual_seed(99)) == expected and run.epoch == 0
    runtime.seed_everything(1234)
    artifacts.best_model(BOOK_RECIPE)
    assert draws(torch.Generator().manual_seed(99)) == expected


def test_a_checkpoint_from_a_newer_helpers_says_so(tmp_path):
    path = tmp_path / "ckpt.pt"
    training.save_checkpoint(training.new_run(SMALL, torch.device("cpu")), path)
    state = torch.load(path, weights_only=True)
    state["recipe"]["ema_decay"] = 0.999  # a field a later Recipe might have
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"fields \['ema_decay'\].*upgrade helpers"):
        training.load_checkpoint(path, CPU)


def test_a_saved_recipe_is_plain_data(tmp_path):
    recipe = dataclasses.replace(SMALL, model="MLP", model_kwargs={"hidden": [32]})
    path = tmp_path / "ckpt.pt"
    training.save_checkpoint(training.new_run(recipe, CPU), path)
    stored = torch.load(path, weights_only=True)["recipe"]
    assert stored["model_kwargs"] == {"hidden": [32]} and type(stored["model_kwargs"]) is dict
    assert training.load_checkpoint(path, CPU).recipe == recipe


CUDA_STATES = [torch.full((16,), 1, dtype=torch.uint8), torch.full((16,), 2, dtype=torch.uint8)]
MPS_STATE = torch.full((8,), 3, dtype=torch.uint8)


def save_on_a_fake_gpu(monkeypatch, path):
    """Save a checkpoint as a machine with two CUDA GPUs and MPS would (CUDA in use)."""
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_initialized", lambda: True)
        m.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in CUDA_STATES])
        m.setattr(torch.backends.mps, "is_available", lambda: True)
        m.setattr(torch.mps, "get_rng_state", lambda *a, **k: MPS_STATE.clone())
        training.save_checkpoint(training.new_run(SMALL, torch.device("cpu")), path)


@pytest.mark.parametrize("gpus", [2, 1])
def test_cuda_and_mps_generators_are_saved_and_restored(tmp_path, monkeypatch, gpus):
    path = tmp_path / "ckpt.pt"
    save_on_a_fake_gpu(monkeypatch, path)
    rng = torch.load(path, weights_only=True)["rng"]
    assert all(map(torch.equal, rng["cuda"], CUDA_STATES)) and len(rng["cuda"]) == 2
    assert torch.equal(rng["mps"], MPS_STATE)

    restored = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: restored.update(cuda=list(s)))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda s, *a, **k: restored.update(mps=s))
    training.load_checkpoint(path, torch.device("cpu"), resume=True)
    # A machine with fewer GPUs restores the ones it has; states are CPU byte tensors, as the
    # generators' setters require, whatever device the model is loaded onto.
    assert len(restored["cuda"]) == gpus
    assert all(map(torch.equal, restored["cuda"], CUDA_STATES[:gpus]))
    assert torch.equal(restored["mps"], MPS_STATE)
    for state in [*restored["cuda"], restored["mps"]]:
        assert state.device.type == "cpu" and state.dtype == torch.uint8


def test_a_checkpoint_from_a_gpu_loads_on_a_cpu_only_machine(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_on_a_fake_gpu(monkeypatch, path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: pytest.fail("set CUDA state"))
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda *a, **k: pytest.fail("set MPS state"))
    expected = torch.load(path, weights_only=True)
    run = training.load_checkpoint(path, torch.device("cpu"), resume=True)
    assert torch.equal(torch.get_rng_state(), expected["rng"]["torch"])
    for name, value in expected["model_state"].items():
        assert torch.equal(run.model.state_dict()[name], value), name


def test_an_old_checkpoint_without_the_newer_generators_still_loads(tmp_path):
    path, shuffle = tmp_path / "old.pt", torch.Generator().manual_seed(7)
    training.save_checkpoint(training.new_run(SMALL, torch.device("cpu")), path, shuffle)
    state = torch.load(path, weights_only=True)
    # The generators format 1 kept before CUDA, MPS, Python and NumPy were added.
    state["rng"] = {key: state["rng"][key] for key in ("torch", "shuffle")}
    torch.save(state, path)
    expected = torch.rand(3), torch.randint(10**9, (1,), generator=shuffle)
    shuffle.manual_seed(99)
    run = training.load_checkpoint(path, torch.device("cpu"), shuffle=shuffle)
    assert run.epoch == 0
    assert torch.equal(torch.rand(3), expected[0])
    assert torch.equal(torch.randint(10**9, (1,), generator=shuffle), expected[1])


def test_the_shipped_checkpoint_loads():
    run = training.load_checkpoint(training.shipped_checkpoint(BOOK_RECIPE), CPU)
    assert run.epoch == BOOK_RECIPE.epochs and run.recipe == BOOK_RECIPE


def test_checkpoint_round_trip_loads_with_weights_only(tmp_path, loaders):
    run = training.train_model(
        training.new_run(SMALL, torch.device("cpu")),
        loaders[0],
        loaders[1],
        epochs=1,
        progress=False,
    )
    path = tmp_path / "ckpt.pt"
    training.save_checkpoint(run, path)
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and state["recipe"]["train_subset"] == 256
    model = training.load_into(SimpleNN(), path)
    for name, value in run.model.state_dict().items():
        assert torch.equal(value, model.state_dict()[name])
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left


def test_loading_into_a_different_architecture_says_so(tmp_path, loaders):
    run = training.new_run(SMALL, torch.device("cpu"))
    path = tmp_path / "ckpt.pt"
    training.save_checkpoint(run, path)
    with pytest.raises(CheckpointError, match=r"saved from SimpleNN.*does not fit.*fc1\.weight"):
        training.load_into(SimpleNN(hidden_size=256), path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_or_truncated_checkpoint_gives_a_clear_error(tmp_path, damage):
    path = tmp_path / "ckpt.pt"
    training.save_checkpoint(training.new_run(SMALL, torch.device("cpu")), path)
    blob = path.read_bytes()
    path.write_bytes(
        {"truncate": blob[: len(blob) // 2], "garbage": b"not a checkpoint" * 100, "empty": b""}[
            damage
        ]
    )
    with pytest.raises(CheckpointError, match="not a readable checkpoint.*delete it"):
        training.read_checkpoint(path)


def test_a_checkpoint_with_code_in_it_is_refused(tmp_path):
    path = tmp_path / "evil.pt"

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": training.CHECKPOINT_FORMAT, "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        training.read_checkpoint(path)


def test_load_or_train_trains_once_then_loads(tmp_path, monkeypatch):
    recipe = dataclasses.replace(SMALL, epochs=1)
    run, _ = training.load_or_train(recipe, CPU, progress=False, root=tmp_path)
    assert local_checkpoint(tmp_path, recipe).exists() and run.epoch == 1

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although a checkpoint exists")

    monkeypatch.setattr(training, "train_model", no_training)
    again, _ = training.load_or_train(recipe, CPU, progress=False, root=tmp_path)
    assert again.history == run.history
    assert recipe.key() != SMALL.key()  # a different recipe never loads this checkpoint


def test_shipped_checkpoint_is_used_and_a_half_finished_one_is_resumed(tmp_path, monkeypatch):
    cache, shipped = tmp_path / "cache", tmp_path / "shipped"
    monkeypatch.setattr(artifacts, "SHIPPED", shipped)
    recipe = dataclasses.replace(SMALL, epochs=2)
    train_loader, val_loader, _ = training.recipe_loaders(recipe)
    half = training.train_model(
        training.new_run(recipe, torch.device("cpu")),
        train_loader,
        val_loader,
        epochs=1,
        progress=False,
    )
    name = local_checkpoint(cache, recipe).name
    training.save_checkpoint(half, shipped / "checkpoints" / name, train_loader.generator)

    assert training.checkpoint_plan(recipe, cache) == f"loading the book's own run {name}"
    resumed, _ = training.load_or_train(recipe, CPU, progress=False, root=cache)
    assert training.checkpoint_plan(recipe, cache) == f"loading your earlier run {name}"
    assert resumed.epoch == 2 and resumed.history["train_loss"][0] == half.history["train_loss"][0]
    assert local_checkpoint(cache, recipe).exists()  # the finished run is saved locally

    monkeypatch.setattr(training, "train_model", lambda *a, **k: pytest.fail("retrained"))
    local_checkpoint(cache, recipe).unlink()
    training.save_checkpoint(resumed, shipped / "checkpoints" / name)
    loaded, _ = training.load_or_train(recipe, CPU, progress=False, root=cache)
    assert loaded.history == resumed.history


def test_a_checkpoint_made_by_other_code_is_trained_again_and_replaced(tmp_path):
    recipe = dataclasses.replace(SMALL, epochs=1)
    run, _ = training.load_or_train(recipe, CPU, progress=False, root=tmp_path)
    path = local_checkpoint(tmp_path, recipe)
    state = torch.load(path, weights_only=True)
    state["made_by"]["code"] = "seed-loop/0"  # as if the loop had changed since
    torch.save(state, path)
    today = training.seed_loop_code()
    assert training.find_checkpoint(recipe, tmp_path) is None, "stale: as if absent"
    assert training.checkpoint_plan(recipe, tmp_path).endswith(": training it")
    again, _ = training.load_or_train(recipe, CPU, progress=False, root=tmp_path)
    assert again.history == run.history  # trained again, by today's (deterministic) code
    assert artifacts.is_current(training.read_checkpoint(path), today)


def test_the_seeds_loop_refuses_what_it_cannot_do():
    for recipe in (Recipe(augment=True), Recipe(schedule="onecycle")):
        with pytest.raises(ValueError, match=r"train this recipe with helpers\.loop\.fit"):
            training.new_run(recipe, CPU)


def test_an_unreadable_checkpoint_is_named_and_left_in_place(tmp_path, monkeypatch):
    recipe = dataclasses.replace(SMALL, epochs=1)
    bad = local_checkpoint(tmp_path, recipe)
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"garbage")
    monkeypatch.setattr(training, "train_model", lambda *a, **k: pytest.fail("trained over it"))
    with pytest.raises(artifacts.ArtifactError, match=f"{bad.name} is not a readable.*delete it"):
        training.load_or_train(recipe, CPU, progress=False, root=tmp_path)
    assert bad.read_bytes() == b"garbage"  # nothing lost


def test_shipped_checkpoint_is_the_book_model_and_says_when_there_is_none():
    path = training.shipped_checkpoint(BOOK_RECIPE)
    assert path.parent == artifacts.folder("checkpoint", shipped=True)
    state = training.read_checkpoint(path)
    assert Recipe(**state["recipe"]) == BOOK_RECIPE
    assert state["epoch"] == BOOK_RECIPE.epochs
    with pytest.raises(artifacts.ArtifactError, match="ships no checkpoint"):
        training.shipped_checkpoint(Recipe(epochs=1))
