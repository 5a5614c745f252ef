"""The prose agrees with the code: numbers traced to outputs, clean text, checks behind ignores."""

from __future__ import annotations

import ast
import bisect
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+)(?![\d])")

# Numbers the prose states that no output prints, each with the reason it needs none.
NOT_IN_OUTPUTS = {
    "01_data.ipynb": {
        "937.5": "60,000 / 64, worked out in the text",
        "156.25": "10,000 / 64, worked out in the text",
    },
    "04_graph.ipynb": {"7.5": "fc2's share of the FLOPs, worked out in exercise 3's solution"},
    "10_improving.ipynb": {
        "98.9": "LeCun's table: the 800-unit MLP trained on affinely distorted images",
        "99.3": "LeCun's table: the same MLP trained on elastic distortions (Simard et al.)",
        "99.2": "LeCun et al. (1998): LeNet-5 trained on distorted images (0.8% error)",
        "99.45": "a hypothetical accuracy in an explanation of noise",
        "99.65": "Ciresan et al.'s published MLP result, in Further reading",
    },
}


def cells(path: Path, kind: str) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == kind]


def prose_without_code_and_math(text: str) -> str:
    """Markdown with fenced code, inline code, math, headings and section numbers removed."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)
    text = re.sub(r"\$[^$]*\$", "", text)
    text = re.sub(r"`[^`]*`", "", text)
    text = re.sub(r"\]\((?:[^()\s]|\([^()\s]*\))+\)", "]", text)  # link targets (doi, arXiv ids)
    text = re.sub(r"^#+ .*$", "", text, flags=re.M)
    return re.sub(r"(?i)(sections?|chapters?)\s+\d+\.\d+((\s*(and|,|to|or)\s*)\d+\.\d+)*", "", text)


def printed_numbers(path: Path) -> list[float]:
    """Every number in the chapter's code and stored outputs, sorted (thousands commas dropped)."""
    parts = []
    for cell in cells(path, "code"):
        parts.append("".join(cell["source"]))
        for out in cell.get("outputs", []):
            parts += out.get("text", []) + out.get("data", {}).get("text/plain", [])
    return sorted(float(x) for x in re.findall(r"\d+\.\d+|\d+", "".join(parts).replace(",", "")))


def traceable(value: float, decimals: int, numbers: list[float]) -> bool:
    """Is `value` some printed number rounded to `decimals` (or that number as a percentage)?"""
    for scale in (1, 100, 0.01):  # 0.992 printed, "99.2%" written, and the other way round
        target, half = value / scale, 0.5 * 10**-decimals / scale + 1e-12
        i = bisect.bisect_left(numbers, target - half)
        if i < len(numbers) and numbers[i] <= target + half:
            return True
    return False


def untraceable_numbers(path: Path) -> list[str]:
    numbers = printed_numbers(path)
    chapter = int(path.name[:2])
    sections = {f"{chapter}.{k}" for k in range(1, 20)}  # "the rule of 5.1": a section number
    allowed = NOT_IN_OUTPUTS.get(path.name, {}).keys() | sections
    found = []
    for cell in cells(path, "markdown"):
        for text in NUMBER.findall(prose_without_code_and_math("".join(cell["source"]))):
            if text not in allowed and not traceable(float(text), len(text.split(".")[1]), numbers):
                found.append(text)
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_decimal_in_the_prose_is_a_printed_number(path):
    assert untraceable_numbers(path) == [], (
        "the prose states numbers that no code or output of the chapter shows: check them against "
        "the outputs, or list them in NOT_IN_OUTPUTS with the reason they need none"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_markdown_has_no_control_characters_or_unbalanced_math(path):
    for cell in cells(path, "markdown"):
        text = "".join(cell["source"])
        assert not CONTROL.search(text), f"control character in: {text[:80]!r}"
        outside_code = re.sub(r"`[^`]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
        dollars = len(re.findall(r"(?<!\\)\$", outside_code))
        assert dollars % 2 == 0, f"unbalanced $ in: {text[:80]!r}"


def has_assert(source: str) -> bool:
    """Does the cell's code (magics removed) hold an assert statement?"""
    lines = source.splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))
    return any(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(code)))


def ignored(cell: dict) -> bool:
    """Does nbval ignore this cell's output? (Its `nbval-ignore-output` tag: no comment marker.)"""
    return "nbval-ignore-output" in cell.get("metadata", {}).get("tags", [])


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_ignored_output_is_followed_by_an_assert(path):
    code = cells(path, "code")
    for cell, after in zip(code, code[1:] + [None], strict=True):
        if ignored(cell):
            source = "".join(cell["source"])
            assert after is not None and has_assert("".join(after["source"])), source[:80]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_nbval_instructions_are_tags_not_comments_a_reader_sees(path):
    for cell in cells(path, "code"):
        assert "NBVAL_" not in "".join(cell["source"]), "use the nbval-ignore-output cell tag"


def test_the_scans_catch_what_they_are_for():
    assert NUMBER.findall(prose_without_code_and_math("took 98.2 s, see section 4.5")) == ["98.2"]
    assert traceable(97.4, 1, [0.974]) and traceable(0.97, 2, [97.0])
    assert not traceable(98.2, 1, [84.8, 117.0, 140.0])
    assert CONTROL.search("\x07pprox") and not has_assert("# assert in a comment only\nx = 1")
    assert has_assert("%xmode Minimal\nassert x == 1")
    assert ignored({"metadata": {"tags": ["nbval-ignore-output"]}}) and not ignored(
        {"metadata": {}}
    )
