"""One store for every trained thing: names, places, staleness, safe loading, atomic writes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from helpers import artifacts, experiments, training
from helpers.recipe import BOOK_CNN_RECIPE, BOOK_RECIPE, Recipe

FINAL_CNN = experiments.on_full_training_set(experiments.CNN_RECIPE)


def test_the_shipped_files_keep_their_names_and_places():
    for name in artifacts.manifest():
        assert (artifacts.SHIPPED / name).is_file(), name
    checkpoint = artifacts.path("checkpoint", BOOK_RECIPE, shipped=True)
    assert checkpoint.relative_to(artifacts.SHIPPED).as_posix() in artifacts.manifest()
    assert checkpoint.name == f"SimpleNN-{BOOK_RECIPE.key()}.pt"
    for kind, folder in (("result", "results"), ("weights", "models")):
        assert artifacts.path(kind, FINAL_CNN, shipped=True).parent.name == folder
    cached = {kind: artifacts.path(kind, BOOK_RECIPE, "/data") for kind in artifacts.KINDS}
    assert cached["checkpoint"] == Path("/data/checkpoints") / checkpoint.name
    assert cached["result"] == Path("/data/experiments") / f"{BOOK_RECIPE.key()}.json"
    assert cached["weights"] == Path("/data/experiments") / f"{BOOK_RECIPE.key()}.pt"


@pytest.mark.parametrize("suffix", [".json", ".pt"])
def test_written_atomically_and_read_back(tmp_path, suffix):
    file = tmp_path / "deep" / f"0123456789abcdef{suffix}"
    content = {"key": "0123456789abcdef", "made_by": {"code": "loop/1"}, "values": [1, 2]}
    artifacts.write(file, content)
    assert artifacts.read(file) == content and list(file.parent.iterdir()) == [file]
    assert artifacts.current(file, "loop/1") == content
    assert artifacts.current(file, "loop/2") is None, "stale: as if absent"
    assert artifacts.current(tmp_path / "missing.json", "loop/1") is None


@pytest.mark.parametrize(
    ("name", "damage"),
    [("a.pt", b"garbage"), ("a.pt", b""), ("a.json", b'{"cut'), ("a.json", b"[1]")],
)
def test_a_corrupt_file_is_named_with_what_to_do_and_left_alone(tmp_path, name, damage):
    file = tmp_path / name
    file.write_bytes(damage)
    with pytest.raises(artifacts.ArtifactError, match=rf"^{name} is not a readable .*delete it"):
        artifacts.read(file)
    assert file.read_bytes() == damage


def test_a_file_with_code_in_it_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"payload": Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(artifacts.ArtifactError, match="evil.pt is not a readable"):
        artifacts.read(tmp_path / "evil.pt")


def test_a_file_under_another_key_is_refused(tmp_path):
    artifacts.write(tmp_path / "0123456789abcdef.json", {"key": "fedcba9876543210"})
    with pytest.raises(artifacts.ArtifactError, match="holds the result of recipe fedcba98"):
        artifacts.read(tmp_path / "0123456789abcdef.json")


def test_a_missing_or_stale_file_is_an_error_where_nothing_can_train_it(tmp_path):
    with pytest.raises(artifacts.ArtifactError, match=r"There is no .*nothing\.json"):
        artifacts.require(tmp_path / "nothing.json", "loop/1")
    artifacts.write(tmp_path / "old.json", {"made_by": {"code": "loop/0"}})
    with pytest.raises(artifacts.ArtifactError, match="old.json was made by loop/0.*now loop/1"):
        artifacts.require(tmp_path / "old.json", "loop/1")


def test_find_prefers_a_current_cached_file_then_a_shipped_one(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "SHIPPED", tmp_path / "shipped")
    recipe, root = Recipe(epochs=1), tmp_path / "data"
    cached = artifacts.path("result", recipe, root)
    assert artifacts.find("result", recipe, "loop/1", root) is None
    artifacts.write(cached, {"made_by": {"code": "loop/0"}})
    shipped = artifacts.ship(cached, "result")
    assert shipped == artifacts.path("result", recipe, shipped=True)
    assert artifacts.find("result", recipe, "loop/1", root) is None, "both stale"
    artifacts.write(shipped, {"made_by": {"code": "loop/1"}})
    assert artifacts.find("result", recipe, "loop/1", root) == shipped
    artifacts.write(cached, {"made_by": {"code": "loop/1"}})
    assert artifacts.find("result", recipe, "loop/1", root) == cached


@pytest.mark.parametrize("recipe", [BOOK_RECIPE, BOOK_CNN_RECIPE, FINAL_CNN], ids=str)
def test_best_model_loads_each_shipped_kind_on_the_cpu_in_eval_mode(recipe):
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    model = artifacts.best_model(recipe)
    assert torch.equal(torch.rand(2), expected), "the generators are left alone"
    assert not model.training and next(model.parameters()).device.type == "cpu"
    if recipe is BOOK_RECIPE:  # the checkpoint's best epoch, as chapter 08 loads it by hand
        run = training.load_checkpoint(training.shipped_checkpoint(recipe), torch.device("cpu"))
        for name, tensor in run.best_state.items():
            assert torch.equal(model.state_dict()[name], tensor), name


def test_best_model_says_when_the_book_ships_none():
    with pytest.raises(artifacts.ArtifactError, match=r"ships no model of recipe .*load_or_train"):
        artifacts.best_model(Recipe(epochs=1))


def test_best_model_refuses_a_shipped_file_the_manifest_does_not_list(tmp_path, monkeypatch):
    shutil.copytree(artifacts.SHIPPED, tmp_path / "shipped")
    monkeypatch.setattr(artifacts, "SHIPPED", tmp_path / "shipped")
    file = artifacts.path("checkpoint", BOOK_RECIPE, shipped=True)
    state = torch.load(file, weights_only=True)
    state["best_state"]["fc1.bias"] += 1
    torch.save(state, file)
    with pytest.raises(artifacts.ArtifactError, match=f"checkpoints/{file.name} differs.*restore"):
        artifacts.best_model(BOOK_RECIPE)


def test_the_manifest_is_written_sorted_and_atomically(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "SHIPPED", tmp_path)
    artifacts.write_manifest({"b": {"sha256": "2"}, "a": {"sha256": "1"}})
    assert list(json.loads((tmp_path / "manifest.json").read_text())) == ["a", "b"]
    assert artifacts.manifest() == {"a": {"sha256": "1"}, "b": {"sha256": "2"}}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
