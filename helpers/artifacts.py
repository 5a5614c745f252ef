"""Trained artifacts: where they live, what they are called, when they are stale (chapter 07).

A trained thing is stored as one of three kinds (`KINDS`), each named by its recipe's key: a
*checkpoint* of chapter 07's loop (`helpers.training`: the whole run, to evaluate or resume), and
the *result* (history and scores, JSON) and *weights* of a chapter 10 experiment
(`helpers.experiments`). The book's own runs ship in `helpers/shipped/`, listed in its manifest
with their sha256 and what made them; a reader's runs are cached under the data root. Each file
records what made it (`helpers.recipe.stamp`) and is *current* while that training path's version
(e.g. "loop/1") is today's. Files are read safely (JSON, or `torch.load(weights_only=True)`:
tensors and plain data, never code) and written atomically, the manifest too.

One policy for a file that cannot be used. A cache, which can train (`training.load_or_train`,
`experiments.run_experiment`), treats a missing or stale file as absent: it trains, and the new
file replaces the stale one. Anything else is an `ArtifactError` whose sentence names the file and
what to do: a corrupt file (left in place), and a missing or stale one where nothing can train it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from helpers import data
from helpers.recipe import Recipe, build_model

# The artifacts that ship with the book, and their manifest.
SHIPPED = Path(__file__).parent / "shipped"
MANIFEST = "manifest.json"


class Kind(NamedTuple):
    """Where one kind of artifact lives, how it is named, and which entry holds its best weights."""

    shipped: str  # its folder in SHIPPED
    cached: str  # its folder under the data root
    name: str  # its file name, from the recipe's model and key
    weights: str  # the entry that holds the model's best weights ("" if none)


KINDS: dict[str, Kind] = {
    "checkpoint": Kind("checkpoints", "checkpoints", "{model}-{key}.pt", "best_state"),
    "result": Kind("results", "experiments", "{key}.json", ""),
    "weights": Kind("models", "experiments", "{key}.pt", "model"),
}

# What to do about a file that cannot be used, by where it is.
RESTORE = "restore helpers/shipped (git checkout helpers/shipped, or reinstall helpers)"
RETRAIN = "delete it and train again"


class ArtifactError(RuntimeError):
    """A stored artifact that cannot be used: missing, stale or corrupt; says what to do."""


def folder(kind: str, root: str | os.PathLike | None = None, shipped: bool = False) -> Path:
    """The folder of `kind` artifacts: under the data root (a reader's runs), or `shipped`."""
    return SHIPPED / KINDS[kind].shipped if shipped else data.data_root(root) / KINDS[kind].cached


def path(
    kind: str, recipe: Recipe, root: str | os.PathLike | None = None, shipped: bool = False
) -> Path:
    """Where the `kind` artifact of `recipe` lives: in the data root's cache, or `shipped`."""
    name = KINDS[kind].name.format(model=recipe.model, key=recipe.key())
    return folder(kind, root, shipped) / name


def is_shipped(file: Path) -> bool:
    """Whether `file` is one of the book's shipped artifacts (else a reader's)."""
    return Path(file).resolve().is_relative_to(SHIPPED.resolve())


def remedy(file: Path) -> str:
    """What to do about an unusable `file`: restore a shipped one, delete a cached one."""
    return RESTORE if is_shipped(file) else RETRAIN


def read(file: str | os.PathLike) -> dict:
    """A stored artifact: JSON, or a torch file loaded with `weights_only=True` (no code runs)."""
    file = Path(file)
    if not file.is_file():
        raise ArtifactError(f"There is no {file}: train the recipe that makes it, or fix the path.")
    noun = "result" if file.suffix == ".json" else "checkpoint"
    try:
        if file.suffix == ".json":
            content = json.loads(file.read_text())
        else:
            content = torch.load(file, map_location="cpu", weights_only=True)
        if not isinstance(content, dict):
            raise ValueError(f"it holds a {type(content).__name__}, not a dict")
    except Exception as e:  # truncated zip, bad pickle or JSON, unsafe content: all unusable
        raise ArtifactError(
            f"{file.name} is not a readable {noun} ({type(e).__name__}: {str(e)[:200]}). "
            f"It may be truncated or corrupt: {remedy(file)}."
        ) from None
    key = content.get("key")
    if key is not None and not file.stem.endswith(str(key)):
        raise ArtifactError(f"{file.name} holds the {noun} of recipe {key}: {remedy(file)}.")
    return content


def write(file: str | os.PathLike, content: Mapping) -> None:
    """Store `content` at `file` atomically: as JSON for a `.json` file, else as `torch.save`."""
    file = Path(file)
    if file.suffix == ".json":
        data.atomic_write(file, (json.dumps(content, indent=1)).encode())
        return
    buffer = io.BytesIO()
    torch.save(dict(content), buffer)
    data.atomic_write(file, buffer.getvalue())


def is_current(content: Mapping, code: str) -> bool:
    """Whether a stored artifact was made by `code`, today's version of its training path."""
    made_by = content.get("made_by")
    return isinstance(made_by, Mapping) and made_by.get("code") == code


def made_by(content: Mapping) -> str:
    """The training path's version a stored artifact records, e.g. "loop/1" ("none" if none)."""
    stamp = content.get("made_by")
    return str(stamp.get("code")) if isinstance(stamp, Mapping) else "none"


def current(file: Path, code: str) -> dict | None:
    """What `file` holds if it exists and `code` made it; None if it is missing or stale."""
    if not file.is_file():
        return None
    content = read(file)
    return content if is_current(content, code) else None


def require(file: Path, code: str) -> dict:
    """What `file` holds, made by `code`; else an ArtifactError that says what to do."""
    content = read(file)
    if not is_current(content, code):
        raise ArtifactError(
            f"{file.name} was made by {made_by(content)}, and its training path is now {code}: "
            f"{remedy(file) if not is_shipped(file) else 'train it again and re-ship it'}."
        )
    return content


def find(
    kind: str, recipe: Recipe, code: str, root: str | os.PathLike | None = None
) -> Path | None:
    """The current `kind` artifact of `recipe`: the cached one, else the shipped one, else None."""
    for shipped in (False, True):
        file = path(kind, recipe, root, shipped)
        if current(file, code) is not None:
            return file
    return None


def model(recipe: Recipe, weights: Mapping, file: Path) -> nn.Module:
    """`recipe`'s model holding `weights` (read from `file`), in eval mode, generators untouched."""
    with torch.random.fork_rng(devices=[]):  # building draws initial weights: not from yours
        net = build_model(recipe)
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise ArtifactError(
            f"{file.name} holds weights that do not fit {recipe.model} ({first[:200]}): "
            f"{remedy(file)}."
        ) from None
    return net.eval()


def shipped_model_file(recipe: Recipe) -> tuple[str, Path]:
    """The kind and file of the book's shipped model of `recipe`: its checkpoint or weights."""
    for kind in ("checkpoint", "weights"):
        file = path(kind, recipe, shipped=True)
        if file.is_file():
            return kind, file
    raise ArtifactError(
        f"The book ships no model of recipe {recipe.key()} ({recipe.model}) in {SHIPPED}: "
        "train it with helpers.training.load_or_train(recipe), or for chapter 10's recipes "
        "helpers.experiments.run_experiment(recipe, keep_model=True)."
    )


def best_model(recipe: Recipe) -> nn.Module:
    """The book's model of `recipe` at its best epoch, as shipped: in eval mode, on the CPU.

    The file must be the one the manifest lists (its sha256); that its training path is still
    today's is checked before it ships, by tests/test_shipped.py.
    """
    kind, file = shipped_model_file(recipe)
    verify(file)
    content = read(file)
    weights = content.get(KINDS[kind].weights) or content.get("model_state")
    return model(recipe, weights, file)


# ---------------------------------------------------------------------------------------------
# The manifest of the shipped artifacts
# ---------------------------------------------------------------------------------------------


def sha256(file: Path) -> str:
    """The sha256 of a file's bytes, in hex."""
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()


def manifest() -> dict[str, dict]:
    """The shipped artifacts by name ("checkpoints/…"), each with its sha256 and what made it."""
    file = SHIPPED / MANIFEST
    return json.loads(file.read_text()) if file.is_file() else {}


def write_manifest(entries: Mapping[str, dict]) -> None:
    """Replace the manifest with `entries`, sorted by name, atomically."""
    text = json.dumps(dict(sorted(entries.items())), indent=1) + "\n"
    data.atomic_write(SHIPPED / MANIFEST, text.encode())


def verify(file: Path) -> None:
    """Refuse a shipped `file` that the manifest does not list, or whose bytes it did not list."""
    name = Path(file).resolve().relative_to(SHIPPED.resolve()).as_posix()
    entry = manifest().get(name)
    if entry is None or entry.get("sha256") != sha256(file):
        state = "is not in" if entry is None else "differs from the file listed in"
        raise ArtifactError(f"{name} {state} helpers/shipped/{MANIFEST}: {RESTORE}.")


def ship(file: Path, kind: str) -> Path:
    """Copy a cached artifact of `kind` into the shipped folder, atomically; returns the copy."""
    shipped = folder(kind, shipped=True) / Path(file).name
    data.atomic_write(shipped, Path(file).read_bytes())
    return shipped
