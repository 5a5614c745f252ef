"""A refactor keeps every stored result current; a change to the numbers is caught (issue 26).

A result's stamp names its loop's version (`helpers.training.SEED_LOOP_VERSION`,
`helpers.loop.LOOP_VERSION`), bumped by hand. `tests/fingerprints.json` records what each loop
computes at today's versions (short runs of every kind of recipe the book ships); these tests
replay them. If `test_todays_numbers_are_the_recorded_ones` fails after a change you meant to
alter the numbers, bump the loop's version, run
`python -m helpers.provenance record tests/fingerprints.json` and re-ship what that loop trains
(`scripts/book_tools.py`); if you meant a refactor, the change is not one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import artifacts, data, experiments, loop, provenance, training
from helpers.models import SimpleNN
from helpers.recipe import BOOK_RECIPE, stamp

ROOT = Path(__file__).resolve().parents[1]
RECORD = Path(__file__).parent / "fingerprints.json"
SHIPPED = ROOT / "helpers" / "shipped"

# One run of each loop: what the tests of a change replay (a few seconds).
PROBES = ["seed-loop: BOOK_RECIPE", "loop: seed's recipe (baseline)"]


@pytest.fixture(scope="module")
def record() -> dict:
    return provenance.read_record(RECORD)


@pytest.fixture
def today() -> dict:
    """Every fingerprint, measured now (about 15 seconds on 2 cores)."""
    return provenance.fingerprints()


# ---------------------------------------------------------------------------------------------
# Today's code computes the recorded numbers
# ---------------------------------------------------------------------------------------------


def test_todays_numbers_are_the_recorded_ones(record, today):
    """Bit for bit on the machine that recorded them, within the tolerance elsewhere."""
    found = provenance.differences(record, today)
    assert not found, "\n".join(found)
    if record["machine"] == today["machine"]:
        assert today == record
    else:
        warnings.warn(
            f"fingerprints recorded on {record['machine']}, measured on {today['machine']}: "
            "training is deterministic per CPU kind and torch, so they were compared within "
            "the tolerance, not bit for bit",
            stacklevel=1,
        )


def test_the_record_covers_every_loop_and_model_that_ships(record):
    assert set(record["runs"]) == set(provenance.fingerprint_runs())
    models = {(path, r.model) for path, r in provenance.fingerprint_runs().values()}
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    for name in manifest:
        if name.startswith("checkpoints/"):
            shipped = ("seed-loop", training.read_checkpoint(SHIPPED / name)["recipe"]["model"])
        else:
            result = artifacts.read(SHIPPED / "results" / f"{Path(name).stem}.json")
            shipped = ("loop", result["recipe"]["model"])
        assert shipped in models, f"{name}: no fingerprint replays {shipped}"


def test_every_shipped_artifact_names_a_recorded_version(record):
    recorded = {run["code"] for run in record["runs"].values()}
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    assert {entry["made_by"]["code"] for entry in manifest.values()} <= recorded


def test_a_stamp_names_the_versions_not_the_source():
    import helpers

    assert training.seed_loop_code() == f"seed-loop/{training.SEED_LOOP_VERSION}"
    assert loop.loop_code(BOOK_RECIPE) == loop.loop_code() == f"loop/{loop.LOOP_VERSION}"
    assert stamp(loop.loop_code()) == {
        "code": loop.loop_code(),
        "torch": torch.__version__,
        "helpers": helpers.__version__,
    }


def test_measuring_leaves_threads_and_generators_alone():
    threads = torch.get_num_threads()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    provenance.fingerprints(PROBES[1:])
    assert torch.get_num_threads() == threads and torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------------------------------------
# (a) A refactor keeps every shipped artifact current, and the numbers
# ---------------------------------------------------------------------------------------------

# Edits a maintainer makes without meaning to change a number: (file, old, new). If one no longer
# applies, update it to an equivalent refactor of today's code.
REFACTORS = [
    # a validation line in Recipe.__post_init__
    (
        "recipe.py",
        "        check_recipe(self)\n",
        "        check_recipe(self)\n"
        "        if self.seed < 0:\n"
        '            raise ValueError(f"Recipe seed={self.seed}: pass 0 or more")\n',
    ),
    # a reworded error message, and a docstring
    (
        "artifacts.py",
        'RETRAIN = "delete it and train again"',
        'RETRAIN = "train again, once you have deleted it"',
    ),
    ("loop.py", '"""One step of gradient descent', '"""A single step of gradient descent'),
    # a function extracted from the seed's loop (and a local variable renamed)
    (
        "training.py",
        "        output = model(data_batch)  # forward: the graph is recorded\n"
        "        loss = criterion(output, target)\n",
        "        output, loss = forward_and_loss(model, criterion, data_batch, target)\n",
    ),
    (
        "training.py",
        "def train_epoch(",
        "def forward_and_loss(model, criterion, x, y):\n"
        '    """The forward pass and the loss."""\n'
        "    output = model(x)\n"
        "    return output, criterion(output, y)\n\n\n"
        "def train_epoch(",
    ),
    ("loop.py", "loss_sum", "summed_loss"),
    # a function renamed, its old name kept
    ("recipe.py", "def build_optimizer(", "def make_optimizer("),
    (
        "recipe.py",
        "\ndef build_schedule(",
        "\nbuild_optimizer = make_optimizer\n\n\ndef build_schedule(",
    ),
]

# Run by a copy of helpers: what chapters 07 to 12 load, and every shipped file, must be current;
# then the copy's fingerprints of the runs named on the command line, as JSON.
CHECK_IN_THE_COPY = """
import json, sys
from pathlib import Path
import helpers
from helpers import artifacts, experiments, loop, provenance, training
from helpers.recipe import BOOK_CNN_RECIPE, BOOK_RECIPE, Recipe
assert Path(helpers.__file__).parent == Path(sys.argv[1]), helpers.__file__
for recipe in (BOOK_RECIPE, BOOK_CNN_RECIPE):
    artifacts.require(training.shipped_checkpoint(recipe), training.seed_loop_code(recipe))
    artifacts.best_model(recipe)
artifacts.best_model(experiments.on_full_training_set(experiments.CNN_RECIPE))
for name in artifacts.manifest():
    path = artifacts.SHIPPED / name
    if name.startswith("checkpoints/"):
        recipe = Recipe.from_dict(training.read_checkpoint(path)["recipe"])
        artifacts.require(path, training.seed_loop_code(recipe))
    elif name.startswith("results/"):
        recipe = Recipe.from_dict(artifacts.read(path)["recipe"])
        artifacts.require(path, loop.loop_code(recipe))
    else:
        result = artifacts.SHIPPED / "results" / (path.stem + ".json")
        recipe = Recipe.from_dict(artifacts.read(result)["recipe"])
        artifacts.require(path, loop.loop_code(recipe))
        artifacts.best_model(recipe)
names = sys.argv[2:]
print(json.dumps(provenance.fingerprints(names)))
"""


def helpers_copy(tmp_path: Path, edits: list[tuple[str, str, str]]) -> Path:
    """A copy of the helpers package (its shipped files included) with `edits` made to it."""
    package = tmp_path / "helpers"
    shutil.copytree(ROOT / "helpers", package, ignore=shutil.ignore_patterns("__pycache__"))
    for name, old, new in edits:
        source = (package / name).read_text()
        assert old in source, f"helpers/{name} no longer contains {old!r}: update this edit"
        (package / name).write_text(source.replace(old, new))
    return package


def run_in(folder: Path, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run a Python `script` that imports the helpers package found in `folder`."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(folder), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def fingerprints_of_a_copy(package: Path, names: list[str]) -> dict:
    """`provenance.fingerprints(names)` measured by the copy, after checking its shipped files."""
    done = run_in(package.parent, CHECK_IN_THE_COPY, str(package), *names)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_refactor_keeps_every_shipped_artifact_current_and_every_number(tmp_path, record):
    package = helpers_copy(tmp_path, REFACTORS)
    assert "forward_and_loss" in (package / "training.py").read_text()
    refactored = fingerprints_of_a_copy(package, PROBES)
    found = provenance.differences(record, refactored)
    assert not found, "\n".join(found)
    if refactored["machine"] == record["machine"]:
        assert all(refactored["runs"][n] == record["runs"][n] for n in PROBES)


# ---------------------------------------------------------------------------------------------
# (b) A change to the arithmetic is caught
# ---------------------------------------------------------------------------------------------


def with_label_smoothing(monkeypatch):
    """The loss: cross-entropy smoothed by 0.05 more than the recipe asks (both loops use it)."""
    original = F.cross_entropy

    def smoothed(logits, target, *args, label_smoothing=0.0, **kwargs):
        return original(logits, target, *args, label_smoothing=label_smoothing + 0.05, **kwargs)

    monkeypatch.setattr(F, "cross_entropy", smoothed)


def with_another_split(monkeypatch):
    """The validation split: another 5,000 images held out (a permutation seeded 1, not 0)."""

    def another(n, validation_size):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
        return order[: n - validation_size], order[n - validation_size :]

    monkeypatch.setattr(data, "split_indices", another)


def with_another_dropout_default(monkeypatch):
    """A model's default: the seed's network with Dropout 0.4 instead of 0.5."""
    monkeypatch.setattr(SimpleNN.__init__, "__defaults__", (784, 128, 10, 0.4))


def with_another_adam(monkeypatch):
    """The optimizer's defaults: Adam with betas (0.8, 0.999)."""
    original = torch.optim.Adam
    monkeypatch.setattr(torch.optim, "Adam", lambda *a, **k: original(*a, betas=(0.8, 0.999), **k))


@pytest.fixture(scope="module")
def here() -> dict:
    """The probes' fingerprints on this machine, unchanged: what a maintainer records.

    On another CPU the record is compared within tolerances, which a small change (Adam's beta1
    0.8 for 0.9 moves two short epochs' losses by 4e-4) can hide in; on the recording machine it
    is compared bit for bit, and that is where a maintainer's unbumped change is caught.
    """
    return provenance.fingerprints(PROBES)


@pytest.mark.parametrize(
    "change",
    [with_label_smoothing, with_another_split, with_another_dropout_default, with_another_adam],
)
def test_a_change_to_the_arithmetic_without_a_version_bump_is_caught(here, monkeypatch, change):
    change(monkeypatch)
    changed = provenance.fingerprints(PROBES)
    found = provenance.differences(here, changed)
    assert len(found) == 2, f"both loops' numbers moved: {found}"
    for line, version in zip(found, ("SEED_LOOP_VERSION", "LOOP_VERSION"), strict=True):
        assert f"bump {version}" in line and "is not one" in line


LR_DEFAULT_CHANGED = """
import json, sys
from helpers import artifacts, provenance, training
from helpers.recipe import BOOK_RECIPE
assert BOOK_RECIPE.lr == 2e-3
try:
    training.shipped_checkpoint(BOOK_RECIPE)
except artifacts.ArtifactError:
    print(json.dumps(provenance.fingerprints(sys.argv[1:])))
"""


def test_a_changed_learning_rate_default_is_caught_and_its_artifacts_are_not_used(tmp_path, record):
    helpers_copy(tmp_path, [("recipe.py", "lr: float = 1e-3", "lr: float = 2e-3")])
    done = run_in(tmp_path, LR_DEFAULT_CHANGED, *PROBES)
    assert done.returncode == 0 and done.stdout, f"the checkpoint was used: {done.stderr[-2000:]}"
    found = provenance.differences(record, json.loads(done.stdout.splitlines()[-1]))
    assert len(found) == 2 and all("recipe's key changed" in line for line in found), found


def test_a_version_bump_makes_stored_results_stale_until_the_record_is_made_again(
    record, monkeypatch
):
    monkeypatch.setattr(loop, "LOOP_VERSION", loop.LOOP_VERSION + 1)
    monkeypatch.setattr(training, "SEED_LOOP_VERSION", training.SEED_LOOP_VERSION + 1)
    path = training.shipped_checkpoint(BOOK_RECIPE)
    assert training.find_checkpoint(BOOK_RECIPE, Path("/nonexistent")) is None
    result = SHIPPED / "results" / f"{experiments.ABLATION_BASE.key()}.json"
    assert artifacts.current(result, loop.loop_code()) is None
    for stale, now in ((path, "seed-loop/2"), (result, "loop/2")):
        with pytest.raises(artifacts.ArtifactError, match=f"made by .*/1, .* now {now}: train"):
            artifacts.require(stale, now)
    bumped = copy.deepcopy(record)
    for run in bumped["runs"].values():
        run["code"] = run["code"].replace("/1", "/2")
    found = provenance.differences(record, bumped)
    assert len(found) == len(record["runs"])
    assert all("record the fingerprints of the new version" in line for line in found)


# ---------------------------------------------------------------------------------------------
# Comparing on another kind of CPU
# ---------------------------------------------------------------------------------------------


def test_another_kind_of_cpu_kernel_agrees_within_the_tolerance(record):
    code = "import json, sys; from helpers import provenance; " + (
        "print(json.dumps(provenance.fingerprints(sys.argv[1:])))"
    )
    done = run_in(ROOT, code, *PROBES, ATEN_CPU_CAPABILITY="default")
    assert done.returncode == 0, done.stderr[-2000:]
    portable = json.loads(done.stdout.splitlines()[-1])
    assert portable["machine"]["cpu"] == "DEFAULT"
    found = provenance.differences(record, portable)
    assert not found, "\n".join(found)


def test_within_the_tolerance_a_changed_loss_is_still_caught(record, monkeypatch):
    with_label_smoothing(monkeypatch)
    changed = provenance.fingerprints(PROBES[1:])
    changed["machine"] = {**changed["machine"], "cpu": "another kind"}  # compare approximately
    assert len(provenance.differences(record, changed)) == 1


def test_numbers_a_last_bit_apart_on_the_same_machine_are_named_as_such(record):
    nudged = copy.deepcopy(record)
    run = nudged["runs"][PROBES[0]]
    run["history"]["train_loss"][0] = math.nextafter(run["history"]["train_loss"][0], math.inf)
    (line,) = provenance.differences(record, nudged)
    assert line.startswith(f"{PROBES[0]}: train_loss differ from the record")
    assert "another order" in line and "bump SEED_LOOP_VERSION" in line
