"""The book's run of a long measurement: loaded by default, measured and recorded on request."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers import book_run


def test_a_stored_run_is_loaded_without_measuring(tmp_path, capsys):
    store = tmp_path / "runs.json"
    book_run.record("speed", {"seconds": 1.5}, store)

    def never() -> None:
        raise AssertionError("measured although a stored run exists and LIVE is off")

    assert book_run.load_or_measure("speed", never, live=False, store=store) == {"seconds": 1.5}
    assert "the book's run, loaded; set LIVE = True" in capsys.readouterr().out


def test_live_measures_and_records_only_when_asked(tmp_path, monkeypatch):
    store = tmp_path / "runs.json"
    monkeypatch.delenv(book_run.RECORD_ENV_VAR, raising=False)
    assert book_run.load_or_measure("n", lambda: {"a": (1, 2)}, live=True, store=store) == {
        "a": [1, 2]  # the same types a stored value has
    }
    assert not store.exists(), "a reader's live run changes nothing"
    monkeypatch.setenv(book_run.RECORD_ENV_VAR, "1")
    book_run.load_or_measure("n", lambda: 3, live=True, store=store)
    stored = json.loads(store.read_text())["n"]
    assert stored["value"] == 3 and {"date", "cpu", "kernels", "threads", "torch"} <= set(
        stored["machine"]
    )


def test_a_missing_run_says_how_to_measure_it(tmp_path):
    with pytest.raises(KeyError, match="set LIVE = True to measure it here"):
        book_run.load_or_measure("absent", lambda: 0, live=False, store=tmp_path / "none.json")


def test_the_shipped_runs_hold_everything_a_chapter_loads():
    root = Path(__file__).resolve().parents[1]
    code = "".join(
        "".join(cell["source"])
        for chapter in sorted((root / "book").glob("[0-9][0-9]_*.ipynb"))
        for cell in json.loads(chapter.read_text())["cells"]
        if cell["cell_type"] == "code"
    )
    loaded = set(re.findall(r'book_run\.load_or_measure\(\s*"([^"]+)"', code))
    runs = book_run.read_store()
    assert len(loaded) >= 6 and loaded <= set(runs), loaded - set(runs)
    assert all("date" in run["machine"] for run in runs.values())
