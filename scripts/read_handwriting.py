"""Measure the Draw-a-digit page's model on a folder of handwritten digits, as the page reads them.

For a held-back set of real handwriting (chapter 13 never tunes on one): each image is a file
named `<digit>_<anything>.png` (or any format Pillow reads), dark ink on light paper or light ink
on dark, any size. Each is read three plain ways, through the page's own JavaScript (Node runs
`_static/mnist-draw.js` on the page's weights: `scripts/read_digits.mjs`):

- "grey": the ink as scanned (its grey levels kept), at its own resolution;
- "binary": ink where the grey is past half-way, as a marker would draw it;
- "page": scaled onto the page's 280 x 280 canvas (its shape kept) with anti-aliasing, as if
  drawn there.

    python scripts/read_handwriting.py FOLDER [--model robust]

prints, per rendering, the share read right and the share the page calls "not sure".
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RENDERINGS = ("grey", "binary", "page")


def ink(file: Path) -> np.ndarray:
    """The image as ink in [0, 1] (1 = ink), whichever way round it was written."""
    from PIL import Image

    grey = np.asarray(Image.open(file).convert("L"), dtype=np.float64) / 255
    return 1 - grey if np.median(grey) > 0.5 else grey  # paper is the commonest shade


def rendered(image: np.ndarray, how: str) -> np.ndarray:
    """One of the three renderings of an ink image."""
    from PIL import Image

    if how == "grey":
        return image
    if how == "binary":
        return (image > 0.5).astype(np.float64)
    side = max(image.shape)  # a square of paper first, so the digit keeps its shape
    square = np.zeros((side, side))
    top, left = (side - image.shape[0]) // 2, (side - image.shape[1]) // 2
    square[top : top + image.shape[0], left : left + image.shape[1]] = image
    big = Image.fromarray(np.uint8(np.round(255 * square))).resize((280, 280), Image.LANCZOS)
    return np.asarray(big, dtype=np.float64) / 255


def labelled(folder: Path) -> list[tuple[Path, int]]:
    """(file, digit) for every image whose name starts with a digit and an underscore."""
    files = sorted(p for p in folder.iterdir() if p.name[:1].isdigit() and p.name[1:2] == "_")
    if not files:
        raise SystemExit(f"{folder} holds no files named <digit>_<anything>.png")
    return [(p, int(p.name[0])) for p in files]


def read(drawings: list[np.ndarray], model: str) -> list[dict]:
    """The page's answers ({digit, p, sure}) for the drawings, from Node."""
    request = {
        "model": model,
        "drawings": [
            {"ink": d.ravel().tolist(), "height": d.shape[0], "width": d.shape[1]} for d in drawings
        ],
    }
    done = subprocess.run(
        ["node", str(ROOT / "scripts" / "read_digits.mjs")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"Node could not read the drawings: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def measure(folder: Path, model: str = "robust") -> dict[str, dict[str, float]]:
    """Per rendering: % read right and sure, % "not sure", % wrong, and the number of images."""
    found = labelled(folder)
    images = [ink(file) for file, _ in found]
    labels = np.array([digit for _, digit in found])
    table = {}
    for how in RENDERINGS:
        answers = read([rendered(i, how) for i in images], model)
        digit = np.array([a["digit"] for a in answers])
        sure = np.array([a["sure"] for a in answers])
        table[how] = {
            "right": 100 * float(((digit == labels) & sure).mean()),
            "not sure": 100 * float((~sure).mean()),
            "wrong": 100 * float(((digit != labels) & sure).mean()),
            "images": len(labels),
        }
    return table


def main() -> None:
    """Print the table for the folder the command line names."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", default="robust", help="the page's model key (default: robust)")
    args = parser.parse_args()
    for how, row in measure(args.folder, args.model).items():
        print(
            f"{how:7s} right {row['right']:5.1f}%  not sure {row['not sure']:5.1f}%  "
            f"wrong {row['wrong']:5.1f}%  ({row['images']} images)"
        )


if __name__ == "__main__":
    main()
