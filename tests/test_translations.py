"""The Chinese edition's translations keep step with the English pages (scripts/translations.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import translations  # noqa: E402

PAGES = translations.english_pages()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_english_cell_has_a_fresh_translation(page):
    translation = translations.read(translations.translation_file(page))
    assert translation is not None, (
        f"no i18n/zh/{page.stem}.json: python scripts/book_tools.py zh-update"
    )
    found = translations.problems(page, translation)
    assert not found, (
        f"i18n/zh/{page.stem}.json: translate or update these cells, then "
        f"`python scripts/book_tools.py zh-accept book/{page.name} <ids>`:\n" + "\n".join(found)
    )


def small_page(tmp_path: Path, *texts: str) -> Path:
    """A notebook of markdown cells with the given texts (and one code cell), and fixed ids."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(t, id=f"cell{i}") for i, t in enumerate(texts)]
    nb.cells.append(nbformat.v4.new_code_cell("print(1)", id="code"))
    path = tmp_path / "page.ipynb"
    nbformat.write(nb, path)
    return path


def translated(page: Path, *chinese: str) -> dict:
    """A translation of `page` with the given Chinese, one per markdown cell, all up to date."""
    translation = {"page": page.name, "cells": []}
    for (cell_id, text), zh in zip(translations.english_cells(page), chinese, strict=True):
        entry = {"id": cell_id, "en_sha256": translations.digest(text), "en": text, "zh": zh}
        translation["cells"].append(entry)
    return translation


ENGLISH = "## 3.1 The model\n\nThe network computes `x @ W.T + b`, that is $z = Wx + b$."
CHINESE = "## 3.1 模型\n\n网络计算 `x @ W.T + b`，即 $z = Wx + b$。"


def test_a_faithful_translation_has_no_problems(tmp_path):
    page = small_page(tmp_path, ENGLISH, "See [chapter 7](07_training.ipynb).")
    assert (
        translations.problems(page, translated(page, CHINESE, "见[第 7 章](07_training.ipynb)。"))
        == []
    )


def test_a_stale_translation_is_named_with_what_changed(tmp_path):
    page = small_page(tmp_path, ENGLISH)
    translation = translated(page, CHINESE)
    small_page(tmp_path, ENGLISH.replace("The network", "The seed's network"))
    found = translations.problems(page, translation)
    assert len(found) == 1 and found[0].startswith("cell0: stale"), found
    assert "+The network computes" not in found[0] and "seed's network" in found[0]
    translations.accept(translation, "cell0", page)  # after the Chinese is brought up to date
    assert translations.problems(page, translation) == []


def test_a_missing_translation_is_named(tmp_path):
    page = small_page(tmp_path, ENGLISH)
    translation = translated(page, CHINESE)
    small_page(tmp_path, ENGLISH, "A new paragraph.")  # the English grows a cell
    assert translations.problems(page, translation) == [
        "cell1: no translation (a new English cell)"
    ]
    updated = translations.skeleton(page, translation)  # what zh-update writes: the old kept
    assert updated["cells"][0] == translation["cells"][0] and updated["cells"][1]["zh"] == ""
    assert translations.problems(page, updated) == ["cell1: no translation"]


@pytest.mark.parametrize(
    "broken, kind",
    [
        (CHINESE.replace("`x @ W.T + b`", "`x @ W + b`"), "inline code"),
        (CHINESE.replace("$z = Wx + b$", "z = Wx + b"), "inline math"),
        (CHINESE.replace("## 3.1", "### 3.1"), "heading levels"),
        ("## 3.1 The model\n\nThe network computes `x @ W.T + b`, that is $z = Wx + b$.", None),
    ],
)
def test_code_math_and_structure_survive_translation(tmp_path, broken, kind):
    page = small_page(tmp_path, ENGLISH)
    found = translations.problems(page, translated(page, broken))
    expected = f"cell0: {kind} not kept as in the English" if kind else "cell0: no translation"
    assert found == [expected]


def test_directives_and_code_fences_are_kept_but_their_prose_is_translated():
    english = ":::{dropdown} Solution\nUse a loop:\n```python\nfor x in xs:\n    f(x)\n```\n:::"
    chinese = ":::{dropdown} Solution\n用一个循环：\n```python\nfor x in xs:\n    f(x)\n```\n:::"
    assert translations.kept_tokens(english) == translations.kept_tokens(chinese)
    edited_code = chinese.replace("f(x)", "g(x)")
    assert (
        translations.kept_tokens(edited_code)["fenced code"]
        != translations.kept_tokens(english)["fenced code"]
    )


def test_translation_files_are_written_as_they_are_read(tmp_path):
    page = small_page(tmp_path, ENGLISH)
    path = tmp_path / "zh" / "page.json"
    translations.write(path, translated(page, CHINESE))
    assert translations.read(path) == translated(page, CHINESE)
    assert "模型" in path.read_text(encoding="utf-8")  # UTF-8, not \\u escapes
    assert json.loads(path.read_text(encoding="utf-8"))["cells"][0]["id"] == "cell0"


NOTEBOOKS = [page for page in PAGES if page.suffix == ".ipynb"]


@pytest.mark.parametrize("page", NOTEBOOKS, ids=lambda p: p.name)
def test_a_chinese_notebook_has_the_english_code_outputs_and_metadata(page):
    english = nbformat.read(page, as_version=4)
    chinese = nbformat.read(translations.ZH_BOOK / page.name, as_version=4)
    assert [c.id for c in chinese.cells] == [c.id for c in english.cells]
    assert chinese.metadata == english.metadata
    text = translations.chinese_cells(page)
    for en, zh in zip(english.cells, chinese.cells, strict=True):
        if en.cell_type == "markdown":
            assert zh.source == text[en.id], f"{zh.id}: not the translation's text"
        else:
            assert zh == en, f"cell {en.id} differs from the English: zh-generate"


def test_the_chinese_edition_is_generated_from_the_current_translations(tmp_path):
    written = translations.generate(tmp_path / "book")
    stale = [
        p.relative_to(tmp_path).as_posix()
        for p in written
        if p.read_bytes() != (translations.ZH_BOOK.parent / p.relative_to(tmp_path)).read_bytes()
    ]
    assert not stale, f"zh/ is behind i18n/zh/: python scripts/book_tools.py zh-generate ({stale})"
    committed = {p.name for p in translations.ZH_BOOK.iterdir()} - set(translations.COPIED)
    assert committed == {p.name for p in written if p.parent.name == "book"}, "pages to remove"
