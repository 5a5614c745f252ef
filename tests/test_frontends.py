"""The chapters as JupyterLab, VS Code and Colab show and run them, not only as the HTML book does.

- Run All goes on in every frontend: no cell relies on a tag (`raises-exception`, `nbval-skip`)
  that only some frontends honour, so nbval's run of a chapter, which stops no cell and fails on
  any error, is the run of a frontend that ignores tags. (`tests/conftest.py` also fails the
  session if a chapter wrote a file beside the notebooks.)
- What Jupyter shows is clean Markdown: CommonMark with HTML, no MyST role or directive.
- A chapter runs in its stated time, within the book's budget, and what it loads instead of
  measuring has a visible switch.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
BUDGET_S = 300  # every chapter's Run All, on the book's 2-core build machine (DESIGN.md)
ONLY_SOME_FRONTENDS = {"raises-exception", "nbval-skip", "skip-execution"}

# MyST that a CommonMark renderer leaves as raw text: directives (`:::{dropdown}`, ```{note}),
# roles ({cite:t}`key`, {ref}`label`, {doc}`page`), label targets "(name)=" and "% comments".
MYST_LEFT_OVER = re.compile(
    r"^:::|^```\{|(?<!`)\{[a-z]+(?::[a-z]+)?\}`|^\([\w-]+\)=\s*$|^% ", flags=re.M
)
RUN_ALL = re.compile(r"Run All: about (\d+) minutes? on a 2-core CPU\.")


def cells(path: Path, kind: str | None = None) -> list[dict]:
    found = json.loads(path.read_text())["cells"]
    return [c for c in found if kind is None or c["cell_type"] == kind]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def visible_text(markdown: str) -> str:
    """What JupyterLab shows of a Markdown cell: rendered as CommonMark, code spans left out."""
    html = MarkdownIt("commonmark", {"html": True}).render(markdown)
    return re.sub(r"<code>.*?</code>", "", html, flags=re.S)


def leftover_myst(markdown: str) -> list[str]:
    """The MyST constructs a reader of the notebook would see as raw text."""
    prose = re.sub(r"^```[^{\n]*\n.*?^```$", "", markdown, flags=re.M | re.S)  # code blocks
    raw = MYST_LEFT_OVER.findall(prose)
    html = MarkdownIt("commonmark", {"html": True}).render(markdown)
    roles = re.findall(r"\{[a-z]+(?::[a-z]+)?\}<code>", html)  # a role as JupyterLab shows it
    return raw + roles


def test_the_myst_scan_finds_what_a_reader_would_see_raw():
    assert leftover_myst(":::{dropdown} Solution\ntext\n:::") == [":::", ":::"]
    assert leftover_myst("see {cite:t}`kingma2015adam`") == ["{cite:t}`", "{cite:t}<code>"]
    assert leftover_myst("```{note}\nhi\n```") == ["```{"]
    assert leftover_myst("(my-label)=\n# Title") == ["(my-label)="]
    assert leftover_myst("`{cite:t}` in code, and\n```python\nd = {1: 2}\n```") == []
    fine = "<details>\n<summary>Solution</summary>\n\n*text*\n\n</details>"
    assert leftover_myst(fine) == [] and "<em>text</em>" in visible_text(fine)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_markdown_reads_as_plain_commonmark_in_jupyter(path):
    for cell in cells(path, "markdown"):
        assert not leftover_myst(source(cell)), (cell["id"], leftover_myst(source(cell)))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_cell_relies_on_a_tag_that_some_frontends_ignore(path):
    for cell in cells(path, "code"):
        tags = set(cell.get("metadata", {}).get("tags", []))
        assert not tags & ONLY_SOME_FRONTENDS, (cell["id"], tags & ONLY_SOME_FRONTENDS)
        assert "%xmode" not in source(cell), "a magic that stays on for the rest of the session"


def run_seconds(path: Path) -> float:
    """How long the committed run of a chapter took, from the times nbclient stored in it."""
    stamps = [
        c["metadata"]["execution"] for c in cells(path, "code") if c["metadata"].get("execution")
    ]
    first = stamps[0]["iopub.execute_input"].replace("Z", "+00:00")
    last = stamps[-1]["shell.execute_reply"].replace("Z", "+00:00")
    elapsed = datetime.datetime.fromisoformat(last) - datetime.datetime.fromisoformat(first)
    return elapsed.total_seconds()


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_states_its_run_all_time_and_keeps_to_the_budget(path):
    stated = RUN_ALL.search(source(cells(path)[0]))
    assert stated, "the opening says *... Run All: about N minutes on a 2-core CPU.*"
    seconds = run_seconds(path)
    assert seconds <= BUDGET_S, (
        f"the committed run took {seconds:.0f} s: load what is slow behind a `LIVE` switch"
    )
    assert int(stated.group(1)) == max(1, math.ceil(seconds / 60)), f"measured: {seconds:.0f} s"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_what_a_chapter_loads_instead_of_measuring_has_a_visible_live_switch(path):
    code = [source(c) for c in cells(path, "code")]
    loads = [i for i, s in enumerate(code) if "book_run.load_or_measure(" in s]
    switch = [i for i, s in enumerate(code) if re.search(r"^LIVE = False\b", s, re.M)]
    if not loads:
        assert not switch, "a switch that switches nothing"
        return
    assert len(switch) == 1 and switch[0] < loads[0], "one switch, before what it switches"
    assert all("live=LIVE" in code[i] for i in loads)
    hidden = cells(path, "code")[switch[0]]["metadata"].get("jupyter", {}).get("source_hidden")
    assert not hidden, "the switch is in plain sight"
