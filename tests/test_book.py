"""The book as a whole: its table of contents, the chapter conventions, and the HTML build."""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import helpers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from book_tools import (  # noqa: E402
    book_version,
    displayed_sources,
    fold_checks,
    install_cell_source,
    is_collapsed_cell,
    is_folded,
    repository_url,
    setup_cells,
    sync_setup_cell,
)

CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
CJK = re.compile(r"[\u3400-\u9fff\uff00-\uffef]")
MACHINE_PATH = re.compile(r"(?<![\w:/.])/(?:[\w.-]+/){2,}[\w.-]+")


def toc_files() -> list[str]:
    return re.findall(r"^\s*(?:root|- file):\s*(\S+)", (ROOT / "_toc.yml").read_text(), re.M)


def code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def cell_text(cell: dict) -> str:
    return "".join(cell["source"])


def output_text(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts += out.get("text", [])
        parts += out.get("data", {}).get("text/plain", [])
    return "".join(parts)


def test_toc_and_book_folder_agree():
    pages = {
        p.relative_to(ROOT).with_suffix("").as_posix()
        for p in (ROOT / "book").iterdir()
        if p.suffix in (".md", ".ipynb")
    }
    assert sorted(toc_files()) == sorted(pages)
    in_toc_order = [f for f in toc_files() if re.fullmatch(r"book/\d\d_\w+", f)]
    assert in_toc_order == [p.relative_to(ROOT).with_suffix("").as_posix() for p in CHAPTERS]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_opens_with_title_and_the_shared_setup_cells(path):
    cells = json.loads(path.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown" and cell_text(cells[0]).startswith("# ")
    assert "You will learn" in cell_text(cells[0])
    install, setup = code_cells(path)[:2]
    assert (cell_text(install), cell_text(setup)) == setup_cells()
    assert install["metadata"]["jupyter"]["source_hidden"], "the install cell is collapsed"
    assert not setup["metadata"].get("jupyter", {}).get("source_hidden"), "the setup cell shows"
    assert len(cell_text(setup).splitlines()) <= 4, "a setup cell of a few lines, as d2l's"


def test_setup_cell_pins_the_book_version_that_helpers_and_pyproject_carry():
    pyproject = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert pyproject.group(1) == helpers.__version__ == book_version()
    install, setup = setup_cells()
    assert f'VERSION = "{book_version()}"' in install
    assert f'url = "git+{repository_url()}@v" + VERSION' in install
    assert setup.startswith("import helpers\n") and "device = helpers.setup()" in setup


# Run the setup cell in a fresh Python, in `folder`, with pip installs refused.
NO_PIP = """\
import subprocess
def refuse(*args, **kwargs):
    raise SystemExit(f"the setup cell tried to run {args[0]}")
subprocess.run = refuse
"""


def run_setup_cell(folder: Path, prelude: str = NO_PIP) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", prelude + "\n".join(setup_cells())],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_setup_cell_uses_the_installed_helpers_without_pip():
    done = run_setup_cell(ROOT / "book")
    assert done.returncode == 0, (
        done.stderr[-2000:] + "\n(after a version bump, run `pip install -e .` again)"
    )
    assert "Device:" in done.stdout


@pytest.mark.parametrize("shadow", ["helpers.py", "helpers/notes.py"])
def test_setup_cell_refuses_a_reader_s_own_helpers(tmp_path, shadow):
    (tmp_path / shadow).parent.mkdir(exist_ok=True)
    (tmp_path / shadow).write_text("def tidy(x):\n    return x\n")
    done = run_setup_cell(tmp_path)
    assert done.returncode != 0
    found = tmp_path / shadow if shadow == "helpers.py" else tmp_path / "helpers"
    message = f"ImportError: {found} is not the book's helpers {book_version()}: rename it"
    assert message in done.stderr, done.stderr[-2000:]


# pip is "run" and fails, as it does offline or before the version's tag exists.
PIP_FAILS = """\
import subprocess, importlib.metadata
class Done:
    returncode = 1
subprocess.run = lambda *args, **kwargs: Done()
importlib.metadata.distributions = lambda **kwargs: []
"""


def test_setup_cell_says_in_one_sentence_what_to_do_when_the_install_fails(tmp_path):
    done = run_setup_cell(tmp_path, PIP_FAILS)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Could not install the book's helpers"), done.stderr[-2000:]
    assert "check the network" in last and "pip install -e ." in last
    assert "Traceback" not in done.stderr, "one sentence, not a traceback"


def test_sync_setup_cell_rewrites_only_the_setup_cells_sources(tmp_path):
    chapters = CHAPTERS[:2]
    for path in chapters:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        code[0].source, code[1].source = "# an old install cell\nimport os", "import helpers\nx = 1"
        nbformat.write(nb, tmp_path / path.name)
    stale = {p.name: (tmp_path / p.name).read_text() for p in chapters}
    (tmp_path / "notes.ipynb").write_text("not a chapter, left alone")

    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "book_tools.py"), "sync-setup-cell", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "written into 2 chapter(s)" in done.stdout
    assert (tmp_path / "notes.ipynb").read_text() == "not a chapter, left alone"
    for path in chapters:
        before, after = json.loads(stale[path.name]), json.loads((tmp_path / path.name).read_text())
        indices = [i for i, c in enumerate(after["cells"]) if c["cell_type"] == "code"][:2]
        assert tuple(cell_text(after["cells"][i]) for i in indices) == setup_cells()
        for index in indices:
            before["cells"][index]["source"] = after["cells"][index]["source"]
        assert after == before, "outputs, counts, ids and metadata are kept"
        text = (tmp_path / path.name).read_text()
        lines = difflib.ndiff(stale[path.name].splitlines(), text.splitlines())
        changed = [line[2:] for line in lines if line[:2] in ("- ", "+ ")]
        assert changed and all(line.startswith('    "') for line in changed), "only source lines"
    written = {p.name: (tmp_path / p.name).stat().st_mtime_ns for p in chapters}
    assert sync_setup_cell(tmp_path) == []
    assert {p.name: (tmp_path / p.name).stat().st_mtime_ns for p in chapters} == written


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_committed_from_a_full_clean_run(path):
    nb = json.loads(path.read_text())
    cells = [c for c in code_cells(path) if cell_text(c).strip()]
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for cell in cells:
        errors = [o for o in cell["outputs"] if o["output_type"] == "error"]
        assert not errors, f"a reader's Run All stops at: {cell_text(cell)[:80]}"
        assert not MACHINE_PATH.search(output_text(cell)), (
            f"machine path in: {cell_text(cell)[:80]}"
        )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_has_checks_summary_and_folded_exercises(path):
    cells = json.loads(path.read_text())["cells"]
    text = "\n".join(cell_text(c) for c in cells if c["cell_type"] == "markdown")
    assert "## Summary" in text and "## Exercises" in text
    assert text.count("<details>\n<summary>Solution</summary>\n") >= 2
    assert text.count("<details>") == text.count("</details>")
    asserts = [c for c in code_cells(path) if re.search(r"^assert ", cell_text(c), re.M)]
    assert len(asserts) >= 3


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_code_and_outputs_are_in_english(path):
    for cell in code_cells(path):
        assert not CJK.search(cell_text(cell) + output_text(cell)), cell_text(cell)[:80]


def test_book_builds_without_warnings(built_book):
    assert (built_book / "index.html").is_file()
    assert (built_book / "book" / "intro.html").is_file()


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_page_shows_its_figures(built_book, path):
    page = built_book / "book" / f"{path.stem}.html"
    assert page.is_file()
    html = page.read_text()
    assert "colab.research.google.com" in html, "the launch button to open the chapter on Colab"
    figures = sum("image/png" in o.get("data", {}) for c in code_cells(path) for o in c["outputs"])
    images = re.findall(r'<img[^>]+src="([^"]*_images/[^"]+\.png)"', html)
    assert len(images) == figures
    for src in images:
        assert (page.parent / src).resolve().is_file(), src


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_displayed_helper_source_is_the_current_code(path):
    import nbformat

    shown = displayed_sources(nbformat.read(path, as_version=4))
    stale = [index for index, _, old, new in shown if old != new]
    assert not stale, (
        f"cells {stale} show old helper source: python scripts/book_tools.py refresh-sources"
    )


def test_setup_output_compares_equal_on_any_device():
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "tests" / "sanitize.cfg")

    def sanitized(text: str) -> str:
        for section in config.sections():
            text = re.sub(config[section]["regex"], config[section]["replace"], text)
        return text

    cpu = "Device: cpu\nNo GPU found: every chapter runs on the CPU (on Colab, pick a GPU).\n"
    colab_cpu = "Device: cpu\nTip: Runtime > Change runtime type > T4 GPU makes training faster.\n"
    assert sanitized(cpu) == sanitized("Device: cuda\n") == sanitized("Device: mps\n")
    assert sanitized(colab_cpu) == sanitized(cpu) != sanitized("Devices: cuda\n")


HELPER_IMPORT = re.compile(r"\bhelpers\.(\w+)|from helpers import ([\w, ]+)")


def helper_modules_used(path: Path) -> set[str]:
    """The helpers modules a chapter's code names (`helpers.x`, `from helpers import x, y`)."""
    used = set()
    for cell in code_cells(path)[1:]:  # the setup cell imports the package itself
        for dotted, listed in HELPER_IMPORT.findall(cell_text(cell)):
            names = [dotted] if dotted else [n.split(" as ")[0].strip() for n in listed.split(",")]
            used |= {n for n in names if n in helpers.TAUGHT_IN or not hasattr(helpers, n)}
    return used


def test_every_module_says_which_chapter_teaches_it():
    modules = {p.stem for p in (ROOT / "helpers").glob("*.py") if p.stem != "__init__"}
    assert set(helpers.TAUGHT_IN) == modules
    listed = set(re.findall(r"^- `helpers\.(\w+)`", helpers.__doc__, re.M))
    assert listed == modules, "the package docstring lists every module"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_imports_only_what_it_or_an_earlier_chapter_teaches(path):
    chapter = int(path.stem[:2])
    used = helper_modules_used(path)
    unknown = used - set(helpers.TAUGHT_IN)
    assert not unknown, f"not helpers modules: {unknown}"
    later = {m: helpers.TAUGHT_IN[m] for m in used if helpers.TAUGHT_IN[m] > chapter}
    assert not later, f"chapter {chapter} uses modules a later chapter teaches: {later}"


PREREQUISITES = re.compile(r"^\*Prerequisites: (.+?)\. Reading time: about (\d+) minutes\.", re.M)


def stated_prerequisites(path: Path) -> tuple[set[int], int]:
    """The chapters a chapter's opening names as prerequisites, and its stated reading time."""
    found = PREREQUISITES.search(cell_text(json.loads(path.read_text())["cells"][0]))
    assert found, (
        f"{path.name}: the opening says *Prerequisites: ... Reading time: about N minutes.*"
    )
    return {int(n) for n in re.findall(r"\d+", found.group(1))}, int(found.group(2))


def prose_words(path: Path) -> int:
    """Words of a chapter's markdown, code blocks left out (a reader reads code more slowly)."""
    cells = json.loads(path.read_text())["cells"]
    text = "\n".join(cell_text(c) for c in cells if c["cell_type"] == "markdown")
    return len(re.sub(r"```.*?```", "", text, flags=re.S).split())


def code_lines(path: Path) -> int:
    """Lines of code a reader sees: shown code cells, blank lines and comments left out."""
    cells = json.loads(path.read_text())["cells"]
    shown = [
        c
        for c in cells
        if c["cell_type"] == "code" and "hide-input" not in c["metadata"].get("tags", [])
    ]
    lines = "\n".join(cell_text(c) for c in shown).splitlines()
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def figures(path: Path) -> int:
    """Figures in a chapter's stored outputs."""
    cells = json.loads(path.read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    return sum("image/png" in o.get("data", {}) for o in outputs)


def reading_minutes(path: Path) -> int:
    """A chapter's reading time: prose at 150 words a minute, code at 20 lines, a minute a figure.

    Rounded to 5 minutes, at least 5. Readers of a first draft found the prose-only rule (200 words
    a minute) about half of what a newcomer needs for a chapter dense with code and figures.
    """
    minutes = prose_words(path) / 150 + code_lines(path) / 20 + figures(path)
    return max(5, 5 * round(minutes / 5))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_opens_with_prerequisites_that_cover_what_it_uses_and_its_reading_time(path):
    chapter = int(path.stem[:2])
    named = {int(p.stem[:2]): stated_prerequisites(p)[0] for p in CHAPTERS}
    closure, frontier = set(), set(named[chapter])
    while frontier:  # a prerequisite's prerequisites are prerequisites too
        closure |= frontier
        frontier = set().union(*(named[c] for c in frontier)) - closure
    assert all(c < chapter for c in named[chapter]), "a prerequisite comes earlier in the book"
    used = {helpers.TAUGHT_IN[m] for m in helper_modules_used(path)} - {0, chapter}
    assert used <= closure, f"uses helpers taught in chapters {sorted(used - closure)}: name them"
    # A guide, kept honest as the chapter grows (reading_minutes says how it is counted).
    minutes = stated_prerequisites(path)[1]
    assert minutes == reading_minutes(path), (prose_words(path), code_lines(path), figures(path))


# A citation is a Markdown link, "[Kingma and Ba (2015)](https://arxiv.org/abs/1412.6980)", to an
# entry of book/references.bib: every notebook frontend shows it as a link (a MyST role would show
# as raw text in JupyterLab, VS Code and Colab).
CITATION = re.compile(r"\[([^\]]*?(\d{4})\)?)\]\((https?://(?:[^()\s]|\([^()\s]*\))+)\)")


def bibliography() -> dict[str, tuple[str, str]]:
    """Each entry's link (its doi, url or arXiv eprint) -> (its key, its year)."""
    text = (ROOT / "book" / "references.bib").read_text()
    found = {}
    for key, body in re.findall(r"^@\w+\{([\w-]+),(.*?)^\}", text, re.M | re.S):
        fields = dict(re.findall(r"^\s*(\w+) = \{(.*)\},?$", body, re.M))
        if "doi" in fields:
            link = f"https://doi.org/{fields['doi']}"
        elif "url" in fields:
            link = fields["url"]
        else:
            link = f"https://arxiv.org/abs/{fields['eprint']}"
        found[link] = (key, fields["year"])
    return found


def citations(text: str) -> list[tuple[str, str, str]]:
    """(link text, year, target) of every link whose text ends in a year: "(2015)" or ", 2015"."""
    return [
        (label, year, target)
        for label, year, target in CITATION.findall(text)
        if re.search(r"(\(\d{4}\)|, \d{4})$", label)
    ]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_ends_with_further_reading_cited_from_the_bibliography(path):
    cells = json.loads(path.read_text())["cells"]
    last = cell_text(cells[-1])
    assert cells[-1]["cell_type"] == "markdown" and last.startswith("## Further reading")
    entries = bibliography()
    assert len({target for _, _, target in citations(last)} & entries.keys()) >= 2, (
        "the papers behind the chapter's ideas"
    )
    for cell in cells:
        for label, _, target in citations(cell_text(cell)):
            assert target in entries, f"{label}: {target} is no entry's link in references.bib"
            assert entries[target][1] in label, (
                f"{label}: {entries[target][0]} is from another year"
            )


def test_the_citation_scan_catches_a_wrong_year_and_a_stray_link():
    link = "https://arxiv.org/abs/1412.6980"
    assert bibliography()[link] == ("kingma2015adam", "2015")
    other = "https://example.org/x"
    assert citations(f"[Kingma and Ba (2015)]({link}) and ([He et al., 2016]({other}))") == [
        ("Kingma and Ba (2015)", "2015", link),
        ("He et al., 2016", "2016", other),
    ]
    assert [c[0] for c in citations(f"see [the docs]({link}), [Ba (2014)]({link})")] == [
        "Ba (2014)"
    ]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_check_cells_are_collapsed_in_every_frontend_and_nothing_else_is(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        hidden = "hide-input" in cell.metadata.get("tags", []) or cell.metadata.get("jupyter")
        assert bool(hidden) == is_collapsed_cell(cell), (
            f"{cell.source[:80]!r}: python scripts/book_tools.py fold-checks"
        )
        assert not is_collapsed_cell(cell) or is_folded(cell), cell.source[:80]
    assert sum(is_folded(c) for c in nb.cells) >= 3


def test_fold_checks_collapses_only_output_less_assert_cells_and_the_install_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("assert 1 + 1 == 2"),
        nbformat.v4.new_code_cell("print(2)\nassert True"),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_markdown_cell("assert in prose"),
    ]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="2\n")]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    nb.cells.append(nbformat.v4.new_code_cell(install_cell_source()))
    nbformat.write(nb, path)
    assert fold_checks(path) == 2 and fold_checks(path) == 0
    cells = nbformat.read(path, as_version=4).cells
    assert [is_folded(c) for c in cells] == [True, False, False, False, True]
    assert cells[0].metadata["jupyter"] == {"source_hidden": True}
    assert cells[0].metadata["cellView"] == "form"  # Colab's form view: the code folded


SWITCH = re.compile(r'<p class="language-switch"><a href="([^"]+)" hreflang="([^"]+)"')


def test_every_page_links_to_the_same_page_in_the_other_edition(built_book):
    english = sorted((built_book / "book").glob("*.html"))
    chinese = sorted((built_book / "zh" / "book").glob("*.html"))
    assert [p.name for p in chinese] == [p.name for p in english], "the editions' pages differ"
    for page in english + chinese:
        found = SWITCH.search(page.read_text())
        assert found, f"{page}: no language switch"
        other = (page.parent / found.group(1)).resolve()
        assert other.is_file() and other.name == page.name, (page, found.group(1))
        assert found.group(2) == ("en" if page in chinese else "zh-CN")
        back = SWITCH.search(other.read_text())
        assert (other.parent / back.group(1)).resolve() == page.resolve(), "and back"
    assert '<html lang="zh-CN"' in chinese[0].read_text()


def test_every_link_inside_either_edition_resolves(built_book):
    """Translated pages keep their links: every relative href of a page names an existing file."""
    broken = []
    pages = [*(built_book / "book").glob("*.html"), *(built_book / "zh" / "book").glob("*.html")]
    for page in pages:
        for href in re.findall(r'href="([^"#?]+)[^"]*"', page.read_text()):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", href) and not (page.parent / href).exists():
                broken.append(f"{page.relative_to(built_book)} -> {href}")
    assert len(pages) > 30 and not broken, broken[:10]
