"""A reader's Run All in a real JupyterLab, in a real browser: chapters run clean and read right.

JupyterLab 4 serves a copy of book/ (outputs stripped, so every output shown is this run's) in
quick mode, with its own empty settings, on 127.0.0.1. Debian's Chromium, driven by Playwright,
opens a chapter and clicks Run > Run All Cells in the menu bar, as a reader would. After the run:
every code cell ran and none shows an error, every check cell (`jupyter.source_hidden`) shows only
its collapsed placeholder, every exercise's Solution is a folded `<details>`, and no file was
written beside the notebooks. A screenshot of each chapter is kept in `_build/artifacts/`.
Skipped, with the reason, only where no Chromium or no Playwright is installed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
ARTIFACTS = ROOT / "_build" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHAPTERS = ["01_data", "07_training"]
RUN_TIMEOUT_MS = 8 * 60_000  # one chapter's Run All, quick mode, 2 cores
playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium"),
    pytest.mark.xdist_group("jupyterlab"),  # under xdist, one worker: one server, one browser
]

# User settings (the lab's own, empty otherwise) that keep dialogs and the network out of the run.
SETTINGS = {
    # Every cell in the DOM (the default virtualizes cells out of view); no "Select Kernel" dialog.
    "@jupyterlab/notebook-extension/tracker": {
        "windowingMode": "none",
        "autoStartDefaultKernel": True,
    },
    # No "official Jupyter news?" toast, no update check.
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    # The run never writes the notebook back (the copy stays as it was opened).
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
}

# True once the notebook at `path` is the open tab and its kernel has started and is idle.
OPENED = """(path) => {
  const w = window.jupyterapp?.shell.currentWidget;
  return w?.context?.path === path && w.sessionContext.session?.kernel?.status === "idle";
}"""

# True once Run All has started and ended: the kernel idle, some cell run, no cell queued ([*]).
# An error stops Run All, leaving later cells unrun, so this does not wait for every cell.
RUN_ENDED = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const code = [...w.content.model.cells].filter((c) => c.type === "code");
  return w.sessionContext.session?.kernel?.status === "idle"
    && code.some((c) => c.executionCount !== null)
    && code.every((c) => c.executionState !== "running");
}"""

# What the reader's notebook holds after the run: per cell, from JupyterLab's model and its DOM.
# (An error's traceback and a stderr stream render alike, `application/vnd.jupyter.stderr`, so
# errors are read from the output models.)
OBSERVE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const cells = [...w.content.model.cells].map((c) => ({
    type: c.type,
    count: c.type === "code" ? c.executionCount : null,
    errors: c.type === "code"
      ? [...Array(c.outputs.length).keys()].map((i) => c.outputs.get(i).toJSON())
          .filter((o) => o.output_type === "error").map((o) => `${o.ename}: ${o.evalue}`)
      : [],
  }));
  const dom = w.content.widgets.map((cell) => cell.node);
  return {
    cells,
    domCells: dom.length,
    placeholders: dom.flatMap((c, i) => c.querySelector(".jp-InputPlaceholder") ? [i] : []),
    prompts: [...w.content.node.querySelectorAll(".jp-CodeCell .jp-InputArea-prompt")]
      .map((p) => p.textContent.trim()),
    details: [...w.content.node.querySelectorAll(".jp-MarkdownCell .jp-RenderedMarkdown details")]
      .map((d) => ({open: d.open, summary: d.querySelector("summary")?.textContent.trim()})),
  };
}"""


@dataclass
class Lab:
    """A running JupyterLab: its address, token and root folder (a copy of book/)."""

    url: str
    token: str
    root: Path

    def api(self, method: str, path: str) -> object:
        """Call the server's REST API; the JSON reply, or None if it had no body."""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            body = reply.read()
        return json.loads(body) if body else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strip_outputs(notebook: Path) -> None:
    """Clear a notebook's outputs and execution counts, as a fresh clone a reader runs."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    notebook.write_text(json.dumps(nb, indent=1), encoding="utf-8")


def write_settings(folder: Path) -> None:
    """Write SETTINGS as JupyterLab user settings in `folder`."""
    for plugin, values in SETTINGS.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")


def wait_for_server(lab: Lab, process: subprocess.Popen, log: Path, seconds: float = 60) -> None:
    """Return once the server answers its status API; fail with its log if it does not."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            lab.api("GET", "/api/status")
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"JupyterLab did not answer:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab on a copy of book/, quick mode, its Jupyter folders and settings temporary."""
    tmp = tmp_path_factory.mktemp("jupyterlab")
    root = tmp / "book"
    # What a clone has: no caches, nor what a run may have left there (git ignores *.pt, *.pth).
    ignore = shutil.ignore_patterns(
        ".ipynb_checkpoints", "__pycache__", "_build", "data", "*.pt", "*.pth"
    )
    shutil.copytree(BOOK, root, ignore=ignore)
    for notebook in root.glob("*.ipynb"):
        strip_outputs(notebook)
    write_settings(tmp / "settings")
    lab = Lab(f"http://127.0.0.1:{free_port()}", secrets.token_hex(24), root)
    env = {
        **os.environ,
        "MNIST_BOOK_QUICK": "1",
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",  # CI containers run as root
        "--ip=127.0.0.1",
        f"--port={lab.url.rsplit(':', 1)[1]}",
        "--port-retries=0",
        f"--IdentityProvider.token={lab.token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        f"--LabApp.user_settings_dir={tmp / 'settings'}",
        f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # no requests to PyPI
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: the cells' model, read below
    ]
    log = tmp / "jupyterlab.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_server(lab, process, log)
        yield lab
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def files_in(folder: Path) -> dict[str, int]:
    """Every file under `folder` but JupyterLab's own checkpoints: its last change, by path."""
    return {
        p.relative_to(folder).as_posix(): p.stat().st_mtime_ns
        for p in folder.rglob("*")
        if p.is_file() and ".ipynb_checkpoints" not in p.parts
    }


def run_all(browser: object, lab: Lab, notebook: str, shot: str) -> dict:
    """Open the notebook, click Run > Run All Cells, wait for the end; what the page then shows."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{lab.url}/lab/tree/{notebook}?reset&token={lab.token}")
        page.wait_for_function(OPENED, arg=notebook, timeout=120_000)
        page.locator(".lm-MenuBar").get_by_role("menuitem", name="Run", exact=True).click()
        page.locator(".lm-Menu").get_by_role("menuitem", name="Run All Cells", exact=True).click()
        page.wait_for_function(RUN_ENDED, timeout=RUN_TIMEOUT_MS, polling=500)
        seen = page.evaluate(OBSERVE)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"jupyterlab-{shot}.png"), full_page=True)
        return seen
    finally:
        page.close()
        for session in lab.api("GET", "/api/sessions"):
            lab.api("DELETE", f"/api/sessions/{session['id']}")


def errors_of(seen: dict) -> dict[int, list[str]]:
    """The error outputs, by cell index."""
    return {i: c["errors"] for i, c in enumerate(seen["cells"]) if c["errors"]}


def unrun(seen: dict) -> list[int]:
    """The indices of code cells with no execution count."""
    return [i for i, c in enumerate(seen["cells"]) if c["type"] == "code" and c["count"] is None]


def hidden_code_cells(nb: dict) -> list[int]:
    """The indices of check cells: code cells whose input the notebook keeps collapsed."""
    return [
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and c["metadata"].get("jupyter", {}).get("source_hidden")
    ]


def solutions_in(nb: dict) -> int:
    """How many `<summary>Solution</summary>` the markdown cells hold."""
    return sum(
        "".join(c["source"]).count("<summary>Solution</summary>")
        for c in nb["cells"]
        if c["cell_type"] == "markdown"
    )


def synthetic_notebook() -> dict:
    """A plain cell, a check cell, a folded Solution, stderr, then an error and a cell after it."""

    def cell(kind: str, source: str, **metadata: object) -> dict:
        made = {"cell_type": kind, "id": secrets.token_hex(4), "metadata": metadata}
        run = {"outputs": [], "execution_count": None} if kind == "code" else {}
        return {**made, "source": source, **run}

    solution = "\n\nsome *markdown*\n\n"
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "cells": [
            cell("code", "x = 1\nx"),
            cell("code", "assert x == 1", jupyter={"source_hidden": True}),
            cell("markdown", f"<details><summary>Solution</summary>{solution}</details>"),
            cell("code", "import sys\nprint('a warning', file=sys.stderr)"),
            cell("code", "1 / 0"),
            cell("code", "x + 1"),
        ],
    }


def test_the_checks_see_what_a_reader_sees(browser, lab):
    """The selectors, on a small notebook: hidden input, folded Solution, an error that stops."""
    (lab.root / "synthetic.ipynb").write_text(json.dumps(synthetic_notebook()), encoding="utf-8")
    seen = run_all(browser, lab, "synthetic.ipynb", "synthetic")
    assert seen["domCells"] == 6, seen
    assert errors_of(seen) == {4: ["ZeroDivisionError: division by zero"]}, seen  # not stderr
    assert unrun(seen) == [5], seen  # Run All stops at the error, and the wait ends there
    assert seen["placeholders"] == [1], seen
    assert seen["details"] == [{"open": False, "summary": "Solution"}], seen
    assert "[*]:" not in seen["prompts"] and seen["prompts"][-1] == "[ ]:", seen


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_run_all_in_jupyterlab(browser, lab, chapter):
    """Run > Run All Cells runs the whole chapter clean, checks folded, nothing written beside."""
    notebook = f"{chapter}.ipynb"
    nb = json.loads((lab.root / notebook).read_text(encoding="utf-8"))
    before = files_in(lab.root)
    seen = run_all(browser, lab, notebook, chapter)
    assert not errors_of(seen), errors_of(seen)
    assert not unrun(seen), f"cells not run: {unrun(seen)}"
    assert all(p not in ("[*]:", "[ ]:") for p in seen["prompts"]), seen["prompts"]
    assert seen["domCells"] == len(nb["cells"])
    hidden = hidden_code_cells(nb)
    assert seen["placeholders"] == hidden and len(hidden) >= 3, (seen["placeholders"], hidden)
    opened = [d for d in seen["details"] if d["open"]]
    assert not opened, f"unfolded <details>: {opened}"
    solutions = sum(d["summary"] == "Solution" for d in seen["details"])
    assert solutions == solutions_in(nb) and solutions >= 2, (solutions, solutions_in(nb))
    written = sorted(p for p, changed in files_in(lab.root).items() if before.get(p) != changed)
    assert not written, f"the chapter wrote beside the notebooks: {written}"  # the notebook too
