"""The book's own run of a long measurement: loaded by default, measured live on request (ch. 11).

A chapter runs top to bottom in a few minutes. What would take longer (chapter 11 times whole
epochs and trains dozens of models) is measured once on the book's machine, stored with helpers,
and loaded; a chapter's visible `LIVE = True` switch measures it again on the reader's machine.

A maintainer re-records the stored values with `python scripts/book_tools.py record-live CHAPTER`,
which runs the chapter with `LIVE = True` and `MNIST_BOOK_RECORD=1`.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch

STORE = Path(__file__).parent / "book_runs.json"
RECORD_ENV_VAR = "MNIST_BOOK_RECORD"


def read_store(store: Path = STORE) -> dict[str, dict]:
    """Every stored measurement by name: {"value": ..., "machine": ...}."""
    return json.loads(store.read_text()) if store.is_file() else {}


def cpu_name() -> str:
    """The processor's model name where the system says it, else its architecture."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def machine() -> dict[str, Any]:
    """Where a measurement ran: enough to tell two machines' figures apart."""
    return {
        "date": date.today().isoformat(),
        "cpu": cpu_name(),
        "kernels": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__.split("+")[0],
    }


def record(name: str, value: Any, store: Path = STORE) -> None:
    """Store `value` (JSON-able) as the book's run of `name`, atomically."""
    runs = read_store(store)
    runs[name] = {"value": value, "machine": machine()}
    temporary = store.with_suffix(".tmp")
    temporary.write_text(json.dumps(dict(sorted(runs.items())), indent=1) + "\n")
    temporary.replace(store)


def load_or_measure(name: str, measure: Callable[[], Any], live: bool, store: Path = STORE) -> Any:
    """`measure()` if `live`, else the value the book's run of it stored; says which it is."""
    if live:
        value = json.loads(json.dumps(measure()))  # the same types as a stored value
        if os.environ.get(RECORD_ENV_VAR) == "1":
            record(name, value, store)
        print(f"[{name}: measured live on this machine]")
        return value
    runs = read_store(store)
    if name not in runs:
        raise KeyError(
            f"no stored run of {name!r} in {store.name}: set LIVE = True to measure it here"
        )
    print(f"[{name}: the book's run, loaded; set LIVE = True above and rerun to measure it here]")
    return runs[name]["value"]
