"""Ship what the book trained: the checkpoints of chapters 07 and 09, chapter 10's results and
its final CNN, and chapter 13's robust models, each recorded in helpers/shipped/manifest.json
(`python scripts/ship.py --help`).

Run after the chapter that trains them, in full (README, "Changing a chapter"); readers, CI and
Colab then load exactly those models without training.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import nbformat
from book_tools import ROOT, parser_for, run_notebook


def git_commit() -> str:
    """The commit the shipped files were made on, `-dirty` if the tree had uncommitted changes."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    return git("rev-parse", "--short", "HEAD").strip() + ("-dirty" if git("status", "-s") else "")


def update_manifest(
    folder: str, entries: dict[str, dict], prefix: str = "", chapter: str | None = None
) -> None:
    """Replace the manifest's entries for `folder` (checkpoints/ or results/) with `entries`.

    Only the entries whose file name starts with `prefix` (all, by default) and, if `chapter` is
    given, that this chapter made, are replaced.

    Each entry records the file's sha256, the recipe key and what made it (`made_by`: the
    training path's version, e.g. `loop/1`, and the torch and helpers versions), the commit and
    the date; `tests/test_shipped.py` checks that every file matches its entry and that its
    training path's version is still today's. Written atomically, like every shipped file.
    """
    import datetime

    from helpers import artifacts

    def replaced(name: str, entry: dict) -> bool:
        mine = chapter is None or entry.get("chapter") == chapter
        return name.startswith(f"{folder}/{prefix}") and mine

    manifest = {n: e for n, e in artifacts.manifest().items() if not replaced(n, e)}
    made = {"commit": git_commit(), "date": datetime.date.today().isoformat()}
    for name, entry in entries.items():
        path = artifacts.SHIPPED / folder / name
        manifest[f"{folder}/{name}"] = {"sha256": artifacts.sha256(path), **entry, **made}
    artifacts.write_manifest(manifest)


def shipped_recipes() -> dict[str, object]:
    """The recipes whose full-run checkpoints ship, by the chapter that trains them."""
    from helpers.recipe import BOOK_CNN_RECIPE, BOOK_RECIPE

    return {"07": BOOK_RECIPE, "09": BOOK_CNN_RECIPE}


def ship_checkpoint(chapter: str) -> Path:
    """Copy the full run of a chapter's recipe into the package, and record it in the manifest.

    Chapter 07 trains `BOOK_RECIPE`, which chapters 08 to 10 evaluate; chapter 09 trains
    `BOOK_CNN_RECIPE`. Readers, CI and Colab then load exactly those models, without training.
    """
    from helpers import artifacts, training

    recipe = shipped_recipes()[chapter]
    source = training.checkpoint_path(recipe)
    training.read_checkpoint(source)  # refuses a corrupt file, or one of another format
    state = artifacts.require(source, training.seed_loop_code(recipe))  # refuses a stale one
    if state["epoch"] != recipe.epochs:
        raise SystemExit(f"{source.name} is unfinished: run chapter {chapter} in full first")
    folder = artifacts.path("checkpoint", recipe, shipped=True).parent
    for old in folder.glob(f"{recipe.model}-*.pt"):  # this model's older runs
        old.unlink()
    shipped = artifacts.ship(source, "checkpoint")
    entry = {"recipe": recipe.key(), "made_by": state["made_by"], "chapter": chapter}
    update_manifest("checkpoints", {shipped.name: entry}, prefix=f"{recipe.model}-")
    return shipped


def ship_model(recipe: object = None, chapter: str = "10", calibrate: bool = False) -> list[Path]:
    """Ship a final model: its weights and its result, from one run, with helpers.

    By default chapter 10's final CNN. Loads the run from the cache if this code made it with its
    weights kept, else trains it (chapter 10's: about 7 minutes on 2 cores), with the chapter's
    thread count: a different count sums in a different order and ends a few test images apart.
    With `calibrate`, the result also records chapter 13's "not sure" rule
    (`helpers.calibration.page_rule`, fitted on the validation split), which the page uses.
    """
    import torch

    from helpers import artifacts, calibration, data, experiments, runtime

    torch.set_num_threads(runtime.book_threads())  # as the chapter runs: its numbers, exactly
    if recipe is None:
        recipe = experiments.on_full_training_set(experiments.CNN_RECIPE)
    result = experiments.run_experiment(recipe, keep_model=True)
    cached = {kind: artifacts.path(kind, recipe) for kind in ("result", "weights")}
    if result["cached"] and not cached["weights"].is_file():
        return []  # it already ships, weights and result together
    if calibrate:
        held = data.split_tensors(recipe.validation_size)["held"]
        stored = artifacts.read(cached["result"])
        stored["calibration"] = calibration.page_rule(result["model"], *held)
        artifacts.write(cached["result"], stored)
    shipped = [artifacts.ship(file, kind) for kind, file in cached.items()]
    entry = {"recipe": recipe.key(), "made_by": result["made_by"], "chapter": chapter}
    update_manifest("results", {cached["result"].name: entry}, prefix=cached["result"].name)
    update_manifest("models", {cached["weights"].name: entry}, prefix=cached["weights"].name)
    return shipped


def ship_robust() -> list[Path]:
    """Ship chapter 13's robust CNN and robust MLP, each with its "not sure" rule."""
    from helpers import robust

    recipes = (robust.ROBUST_CNN_RECIPE, robust.ROBUST_MLP_RECIPE)
    return [p for r in recipes for p in ship_model(r, chapter="13", calibrate=True)]


RECORD_RESULTS = """\
import helpers.experiments as _experiments

_used_keys, _run_experiment = [], _experiments.run_experiment


def _recording(*args, **kwargs):
    result = _run_experiment(*args, **kwargs)
    _used_keys.append(result["key"])
    return result


_experiments.run_experiment = _recording"""


def ship_experiments() -> list[str]:
    """Ship exactly the experiment results chapter 10 uses, from its full run.

    The chapter runs (not saved) with `run_experiment` wrapped to record every result it asks
    for: those in the cache or already shipped load in seconds, missing ones train. Then the
    shipped folder is replaced by just those results, so stale ones do not linger.
    """
    import json
    import tempfile

    from helpers import artifacts

    nb = nbformat.read(ROOT / "book" / "10_improving.ipynb", as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "keys.json"
        nb.cells.insert(0, nbformat.v4.new_code_cell(RECORD_RESULTS))
        save = f"open({str(record)!r}, 'w').write(__import__('json').dumps(_used_keys))"
        nb.cells.append(nbformat.v4.new_code_cell(save))
        run_notebook(nb, ROOT / "book")
        keys = sorted(set(json.loads(record.read_text())))
    results = {}
    for key in keys:  # read them all before the shipped folder is emptied
        files = [artifacts.folder("result", shipped=s) / f"{key}.json" for s in (False, True)]
        if (artifacts.folder("weights", shipped=True) / f"{key}.pt").is_file():
            files.reverse()  # keep the result of the run whose weights ship (ship.py model)
        stored = [artifacts.read(file) for file in files if file.is_file()]
        full = [r for r in stored if artifacts.is_current(r, loop_code(r)) and not r["quick"]]
        if not full:
            raise SystemExit(f"no current full-run result {key}: is MNIST_BOOK_QUICK set?")
        results[key] = full[0]
    shipped = artifacts.folder("result", shipped=True)
    others = {n for n, e in artifacts.manifest().items() if e.get("chapter") != "10"}
    for old in shipped.glob("*.json"):
        if f"results/{old.name}" not in others:  # other chapters' results stay
            old.unlink()
    entries = {}
    for key, result in results.items():
        artifacts.write(shipped / f"{key}.json", result)
        entries[f"{key}.json"] = {"recipe": key, "made_by": result["made_by"], "chapter": "10"}
    update_manifest("results", entries, chapter="10")
    return keys


def loop_code(result: dict) -> str:
    """The hash of today's code for the recipe a stored result ran."""
    from helpers.loop import loop_code
    from helpers.recipe import Recipe

    return loop_code(Recipe(**result["recipe"]))


COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], None], list]] = {
    "checkpoint": (
        "ship a chapter's full-run model (07: BOOK_RECIPE, 09: BOOK_CNN_RECIPE)",
        lambda args: print(f"shipped {ship_checkpoint(args.chapter).relative_to(ROOT)}"),
        [(("chapter",), {"choices": ["07", "09"]})],
    ),
    "experiments": (
        "ship the results chapter 10's full run uses",
        lambda args: print(f"shipped {len(ship_experiments())} results of chapter 10's full run"),
        [],
    ),
    "model": (
        "ship chapter 10's final CNN (weights and result)",
        lambda args: print(*(f"shipped {p.relative_to(ROOT)}" for p in ship_model()), sep="\n"),
        [],
    ),
    "robust": (
        'ship chapter 13\'s robust CNN and MLP (weights, result, "not sure" rule)',
        lambda args: print(*(f"shipped {p.relative_to(ROOT)}" for p in ship_robust()), sep="\n"),
        [],
    ),
}


def main() -> None:
    """Run the shipping command the command line names."""
    args = parser_for(COMMANDS, " ".join(__doc__.split("\n\n")[0].split())).parse_args()
    COMMANDS[args.command][1](args)


if __name__ == "__main__":
    main()
