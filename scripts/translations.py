"""The Chinese edition's translation files: made from the English pages, and checked against them.

Each English page has a file `i18n/zh/<stem>.json`:

    {"page": "book/01_data.ipynb",
     "cells": [{"id": <markdown cell id; "page" for a .md page, translated whole>,
                "en_sha256": <first 16 hex digits of the sha256 of the English text>,
                "en": <the English text it translates>,
                "zh": <its Chinese markdown>}, ...]}

A translation is *stale* when the English it was made from (`en`, `en_sha256`) is no longer the
page's text: the stored `en` beside the current one shows exactly what changed. Code, math, link
targets and MyST syntax must survive translation unchanged (`kept_tokens`); `problems` lists
every way a file falls short, naming the cell.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
ZH = ROOT / "i18n" / "zh"  # the translation files
ZH_BOOK = ROOT / "zh" / "book"  # the Chinese edition's pages, generated from them
COPIED = ("train_mnist.py", "references.bib")  # files the pages include (copy_shared)
CAPTIONS = {"Chapters": "章节", "Appendices": "附录"}  # the table of contents' part captions
GENERATED = "# Generated from ../_toc.yml by `python scripts/book_tools.py zh-generate`.\n"
CJK = re.compile(r"[\u4e00-\u9fff]")
# Code fences and {raw} blocks are kept whole; other directives ({glossary}, {bibliography}, ...)
# keep their opening line, and their content is translated.
CODE_FENCE = re.compile(r"```(?:[\w-]*|\{raw\}[^\n]*)\n.*?```", re.S)


def english_pages() -> list[Path]:
    """The English pages that have a Chinese counterpart: every chapter and every .md page."""
    return sorted((ROOT / "book").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.md"))


def translation_file(page: Path) -> Path:
    """Where a page's translation lives."""
    return ZH / f"{page.stem}.json"


def digest(text: str) -> str:
    """The first 16 hex digits of the text's sha256: enough to tell two versions apart."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def english_cells(page: Path) -> list[tuple[str, str]]:
    """(id, text) of each markdown cell of a notebook, or ("page", text) for a .md page."""
    if page.suffix == ".md":
        return [("page", page.read_text())]
    cells = json.loads(page.read_text())["cells"]
    return [(c["id"], "".join(c["source"])) for c in cells if c["cell_type"] == "markdown"]


def kept_tokens(markdown: str) -> dict[str, object]:
    """What a translation must keep as it is: code, math, link targets, directives, headings."""
    fences = CODE_FENCE.findall(markdown)
    rest = CODE_FENCE.sub("", markdown)
    display = re.findall(r"\$\$.*?\$\$", rest, flags=re.S)
    rest = re.sub(r"\$\$.*?\$\$", "", rest, flags=re.S)
    rest = re.sub(r"^```.*$", "", rest, flags=re.M)  # the directive fences' own lines
    return {
        "fenced code": Counter(fences),
        "display math": Counter(display),
        "inline math": Counter(re.findall(r"\$[^$\n]+\$", rest)),
        "inline code": Counter(re.findall(r"`[^`\n]+`", rest)),
        "link targets": Counter(re.findall(r"\]\(([^)\s]+)\)", rest)),
        "directives": Counter(
            line.strip()
            for line in markdown.splitlines()
            if line.strip().startswith((":::", "```{"))
        ),
        "heading levels": [len(h) for h in re.findall(r"^(#+) ", rest, flags=re.M)],
    }


def needs_words(text: str) -> bool:
    """Does the English have prose to translate (not only code, math, links or a directive)?"""
    bare = re.sub(r"```.*?```|`[^`]*`|\$[^$]*\$|\(.*?\)|\{.*?\}", "", text, flags=re.S)
    return bool(re.search(r"[A-Za-z]{3}", bare))


def skeleton(page: Path, old: dict | None = None) -> dict:
    """A translation file for `page`, keeping what `old` already holds for each cell id."""
    kept = {c["id"]: c for c in (old or {}).get("cells", [])}
    cells = []
    for cell_id, text in english_cells(page):
        fresh = {"id": cell_id, "en_sha256": digest(text), "en": text, "zh": ""}
        cells.append(kept.get(cell_id, fresh))
    name = page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else page.name
    return {"page": name, "cells": cells}


def problems(page: Path, translation: dict) -> list[str]:
    """Every way the translation falls short of the English page, each naming its cell."""
    found = []
    english = dict(english_cells(page))
    ids = [c["id"] for c in translation["cells"]]
    for cell_id in english.keys() - set(ids):
        found.append(f"{cell_id}: no translation (a new English cell)")
    for cell_id in set(ids) - english.keys():
        found.append(f"{cell_id}: translates a cell the English page no longer has")
    for cell in translation["cells"]:
        cell_id, zh, now = cell["id"], cell["zh"], english.get(cell["id"])
        if now is None:
            continue
        if cell["en_sha256"] != digest(now) or cell["en"] != now:
            changed = difflib.unified_diff(cell["en"].splitlines(), now.splitlines(), lineterm="")
            found.append(f"{cell_id}: stale, the English changed:\n" + "\n".join(list(changed)[2:]))
            continue
        if needs_words(now) and not CJK.search(zh):
            found.append(f"{cell_id}: no translation")
            continue
        want, got = kept_tokens(now), kept_tokens(zh)
        for kind in want:
            if want[kind] != got[kind]:
                found.append(f"{cell_id}: {kind} not kept as in the English")
    return found


def accept(translation: dict, cell_id: str, page: Path) -> None:
    """Record that a cell's Chinese now translates the page's current English (after editing it)."""
    english = dict(english_cells(page))
    for cell in translation["cells"]:
        if cell["id"] == cell_id:
            cell["en"], cell["en_sha256"] = english[cell_id], digest(english[cell_id])
            return
    raise KeyError(f"no cell {cell_id!r} in the translation of {page.name}")


def read(path: Path) -> dict | None:
    """A translation file's contents, or None if there is none yet."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def write(path: Path, translation: dict) -> None:
    """Write a translation file as the tools and translators expect it (UTF-8, one key a line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(translation, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def chinese_cells(page: Path) -> dict[str, str]:
    """Cell id -> Chinese markdown for a page (raises if its translation has problems)."""
    translation = read(translation_file(page)) or skeleton(page)
    wrong = problems(page, translation)
    if wrong:
        raise ValueError(f"{translation_file(page).name}: " + "\n".join(wrong[:5]))
    return {c["id"]: c["zh"] for c in translation["cells"]}


def chinese_notebook(page: Path) -> nbformat.NotebookNode:
    """The English notebook with each markdown cell's Chinese: same code, outputs and metadata."""
    notebook = nbformat.read(page, as_version=4)
    chinese = chinese_cells(page)
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = chinese[cell.id]
    return notebook


def generate(out: Path = ZH_BOOK) -> list[Path]:
    """Write the Chinese edition's pages into `out` (zh/book/), and its table of contents.

    Everything but the prose is the English edition's: code cells with their outputs and
    metadata are copied by cell id.
    """
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for page in english_pages():
        target = out / page.name
        if page.suffix == ".ipynb":
            nbformat.write(chinese_notebook(page), target)
        else:
            target.write_text(chinese_cells(page)["page"], encoding="utf-8")
        written.append(target)
    toc = (ROOT / "_toc.yml").read_text()
    for english, chinese in CAPTIONS.items():
        toc = toc.replace(f"caption: {english}\n", f"caption: {chinese}\n")
    (out.parent / "_toc.yml").write_text(GENERATED + toc, encoding="utf-8")
    written.append(out.parent / "_toc.yml")
    return written


def copy_shared(edition: Path) -> None:
    """Copy what both editions use into a build's copy of the Chinese edition: _static/ (the
    Draw-a-digit page's script and models, CSS), the appendix's script and the bibliography, so
    the English files stay the only ones (book_tools build)."""
    shutil.rmtree(edition / "_static", ignore_errors=True)
    shutil.copytree(ROOT / "_static", edition / "_static")
    for name in COPIED:
        shutil.copyfile(ROOT / "book" / name, edition / "book" / name)
