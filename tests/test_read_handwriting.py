"""scripts/read_handwriting.py: a folder of digit images, read by the page's own JavaScript."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import shifts

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location(
    "read_handwriting", ROOT / "scripts" / "read_handwriting.py"
)
pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


@pytest.fixture(scope="module")
def tool():
    module = importlib.util.module_from_spec(SPEC)
    SPEC.loader.exec_module(module)
    return module


def test_typed_digits_on_paper_are_read_in_every_rendering(tool, tmp_path):
    from PIL import Image, ImageDraw, ImageFont

    for n, file in enumerate(shifts.font_files()[:4]):  # dark ink on white paper, 90 x 120 px
        font = ImageFont.truetype(str(file), 90)
        for digit in range(10):
            sheet = Image.new("L", (90, 120), 255)
            ImageDraw.Draw(sheet).text((45, 60), str(digit), fill=0, font=font, anchor="mm")
            sheet.save(tmp_path / f"{digit}_{n}.png")
    (tmp_path / "notes.txt").write_text("not a digit: ignored")
    table = tool.measure(tmp_path, "robust")
    assert list(table) == list(tool.RENDERINGS)
    for how, row in table.items():
        assert row["images"] == 40
        assert row["right"] + row["not sure"] + row["wrong"] == pytest.approx(100)
        assert row["right"] >= 90, (how, row)  # typed digits: chapter 13 reads 99%+ of them


def test_paper_and_ink_either_way_round(tool, tmp_path):
    stroke = np.zeros((40, 30))
    stroke[5:35, 14:17] = 1.0
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.uint8(255 * stroke)).save(tmp_path / "1_light.png")
    Image.fromarray(np.uint8(255 * (1 - stroke))).save(tmp_path / "1_dark.png")
    inks = [tool.ink(p) for p in sorted(tmp_path.iterdir())]
    np.testing.assert_allclose(inks[0], inks[1])
    assert tool.rendered(inks[0], "page").shape == (280, 280)


def test_a_wrong_folder_or_model_is_named(tool, tmp_path):
    with pytest.raises(SystemExit, match="no files named"):
        tool.measure(tmp_path)
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "3_x.png")
    with pytest.raises(SystemExit, match="no model .*choose one of"):
        tool.measure(tmp_path, "lenet5")
