"""The shift suite: MNIST's digits as other pens, scanners and pages would give them (chapter 13).

In the spirit of MNIST-C (Mu and Gilmer, 2019): each shift is one plain change that keeps every
digit readable to a person, applied to a set of MNIST images in [0, 1], deterministically (the
same seed gives the same images). The families:

- `SHIFTS`: the pen and the scanner, on 28 x 28 images (stroke width, blur, contrast and gamma,
  rotation, scale, shear, translation, elastic distortion, noise, lower resolution);
- `PAGE_SHIFTS`: the digit re-rendered at another resolution and read through the page's own
  preprocessing (`helpers.inference.mnist_style`, chapter 12), as the Draw-a-digit page reads it;
- `HELD_OUT`: changes that no ingredient of `helpers.robust` imitates (a dotted pen, motion
  blur, a scratch), kept apart to test what augmentation taught beyond what it showed;
- `typed_digits` and `drawn_digits`: digits no MNIST writer made, from the DejaVu fonts that
  ship with matplotlib and from the browser test's strokes at several brush widths.

Every function here takes and returns images of shape (N, 1, 28, 28), ink 1 on paper 0.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from helpers.augment import (
    SIZE,
    affine,
    affine_maps,
    blur,
    elastic,
    thicker,
    thinner,
)
from helpers.inference import _overlaps

Shift = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Building blocks, on whole batches
# ---------------------------------------------------------------------------------------------


def signs(n: int, generator: torch.Generator) -> torch.Tensor:
    """n random signs, +1 or -1."""
    return torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1


def resample(x: torch.Tensor, size: int, up: str) -> torch.Tensor:
    """Down to size x size (area mean), then back up to 28 x 28 with `up` interpolation."""
    small = F.interpolate(x, size=(size, size), mode="area")
    if up == "nearest":
        return F.interpolate(small, size=(SIZE, SIZE), mode="nearest")
    return F.interpolate(small, size=(SIZE, SIZE), mode=up, align_corners=False).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# The pen and the scanner
# ---------------------------------------------------------------------------------------------


def _rotate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return affine(x, affine_maps(len(x), degrees=20 * signs(len(x), g)))


def _shear(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return affine(x, affine_maps(len(x), shear=0.35 * signs(len(x), g)))


def _translate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each digit moved 3 pixels along each axis, each way at random, but never out of the frame."""
    n = len(x)
    ink = x[:, 0] > 0
    rows, cols = ink.any(2), ink.any(1)  # (n, 28): which rows and columns hold ink
    index = torch.arange(SIZE)
    moves = []
    for lines, sign in ((cols, signs(n, g)), (rows, signs(n, g))):
        first = torch.where(lines, index, SIZE).amin(1)
        last = torch.where(lines, index, -1).amax(1)
        moves.append(torch.minimum(torch.maximum(3 * sign, -first), SIZE - 1 - last).float())
    return affine(x, affine_maps(n, shift=(moves[0], moves[1])))


def largest_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Per image, `scale` or less: the largest that keeps the digit's ink inside the frame."""
    index = torch.arange(SIZE, dtype=torch.float32)
    ink = x[:, 0] > 0
    # the farthest edge of an inked pixel from the centre (14, 14), along either axis
    reach = (index - (SIZE - 1) / 2).abs() + 0.5
    rows = torch.where(ink.any(2), reach, 0.0).amax(1)
    cols = torch.where(ink.any(1), reach, 0.0).amax(1)
    return torch.clamp(SIZE / 2 / torch.maximum(rows, cols), max=scale)


def _noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return (x + 0.25 * torch.randn(x.shape, generator=g).to(x)).clamp(0, 1)


# name -> what it does to a batch, with the generator for its random choices. Each keeps the
# digit inside the frame (MNIST's digits fit a 20 x 20 box centred in 28 x 28; tests check it).
SHIFTS: dict[str, Shift] = {
    "thin strokes": lambda x, g: thinner(x),
    "thick strokes": lambda x, g: thicker(x),
    "blur": lambda x, g: blur(x, 1.0),
    "faint ink": lambda x, g: 0.35 * x,
    "gamma 3 (faint edges)": lambda x, g: x**3,
    "saturated ink": lambda x, g: (3 * x).clamp(0, 1),
    "rotate 20°": _rotate,
    "smaller (0.7)": lambda x, g: affine(x, affine_maps(len(x), scale=0.7)),
    "larger (up to 1.2)": lambda x, g: affine(x, affine_maps(len(x), scale=largest_scale(x, 1.2))),
    "shear 0.35": _shear,
    "translate 3 px": _translate,
    "elastic": lambda x, g: elastic(x, alpha=34.0, sigma=4.0, generator=g),
    "noise": _noise,
    "low resolution (14 px)": lambda x, g: resample(x, 14, "bilinear"),
}


# ---------------------------------------------------------------------------------------------
# The page: a digit at another resolution, read through the page's preprocessing
# ---------------------------------------------------------------------------------------------


@cache
def area_matrix(old: int, new: int) -> np.ndarray:
    """The (new, old) matrix of `helpers.inference.area_resize`: its weights, as one product."""
    m = np.zeros((new, old))
    for i, r, w in _overlaps(old, new):
        m[i, r] += w
    return m


def page_view(ink: np.ndarray, box: int = 20) -> np.ndarray:
    """`helpers.inference.mnist_style`, with its resizing done as two matrix products (fast).

    The same steps: crop to the ink, scale into a 20 x 20 box, centre by the centre of mass. Sums
    run in another order, so a pixel can differ in the last bits; tests check it agrees.
    """
    rows, cols = np.nonzero(ink > 0)
    if len(rows) == 0:
        raise ValueError("the drawing is blank: there is no ink to centre")
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = box / max(crop.shape)
    h = max(1, math.floor(crop.shape[0] * scale + 0.5))
    w = max(1, math.floor(crop.shape[1] * scale + 0.5))
    small = np.clip(area_matrix(crop.shape[0], h) @ crop @ area_matrix(crop.shape[1], w).T, 0, 1)
    out = np.zeros((SIZE, SIZE))
    top, left = (SIZE - h) // 2, (SIZE - w) // 2
    out[top : top + h, left : left + w] = small
    mass = out.sum()
    cy = (out.sum(1) * np.arange(SIZE)).sum() / mass
    cx = (out.sum(0) * np.arange(SIZE)).sum() / mass
    dy = int(np.clip(math.floor(SIZE / 2 - cy + 0.5), -top, SIZE - top - h))
    dx = int(np.clip(math.floor(SIZE / 2 - cx + 0.5), -left, SIZE - left - w))
    return np.roll(out, (dy, dx), axis=(0, 1))


def page_views(drawings: torch.Tensor | np.ndarray) -> torch.Tensor:
    """`page_view` of each drawing in a batch (N, H, W) or (N, 1, H, W): (N, 1, 28, 28)."""
    arrays = np.asarray(drawings, dtype=np.float64).reshape(len(drawings), *drawings.shape[-2:])
    return torch.tensor(np.stack([page_view(a) for a in arrays]), dtype=torch.float32)[:, None]


def rerendered(
    x: torch.Tensor, source: int, size: int, mode: str, chunk: int = 500
) -> torch.Tensor:
    """Each digit at `source` pixels (area mean), drawn at `size` with `mode`, read by the page.

    `chunk` digits at a time: 10,000 drawings at 280 x 280 would hold gigabytes at once.
    """
    views = []
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        small = F.interpolate(part, size=(source, source), mode="area") if source != SIZE else part
        if mode == "nearest":
            big = F.interpolate(small, size=(size, size), mode="nearest")
        else:
            big = F.interpolate(small, size=(size, size), mode=mode, align_corners=False)
            big = big.clamp(0, 1)
        views.append(page_views(big))
    return torch.cat(views)


PAGE_SHIFTS: dict[str, Shift] = {
    "page: 28 px drawn at 280, bilinear": lambda x, g: rerendered(x, 28, 280, "bilinear"),
    "page: 14 px drawn at 140, bilinear": lambda x, g: rerendered(x, 14, 140, "bilinear"),
    "page: 14 px drawn at 140, nearest": lambda x, g: rerendered(x, 14, 140, "nearest"),
}

ALL_SHIFTS: dict[str, Shift] = {**SHIFTS, **PAGE_SHIFTS}


# ---------------------------------------------------------------------------------------------
# Held out: changes that no ingredient of `helpers.robust` imitates (in the spirit of MNIST-C)
# ---------------------------------------------------------------------------------------------


def dotted(x: torch.Tensor) -> torch.Tensor:
    """A dotted pen: the ink of every other pixel removed, in a checkerboard."""
    keep = (torch.arange(SIZE)[:, None] + torch.arange(SIZE)) % 2 == 1
    return x * keep


def motion_blur(x: torch.Tensor, length: int = 7) -> torch.Tensor:
    """Each pixel the mean of `length` pixels along its row: the page moved while it was scanned."""
    kernel = torch.full((1, 1, 1, length), 1.0 / length)
    return F.conv2d(F.pad(x, (length // 2, length // 2, 0, 0)), kernel)


def _scratch(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A line of ink about 2 pixels wide across the frame, within 30 degrees of horizontal."""
    n = len(x)
    # the direction of the line's normal: pi / 2 is a horizontal line
    angle = (math.pi / 2 + (torch.rand(n, generator=g) * 2 - 1) * math.pi / 6).view(n, 1, 1, 1)
    offset = ((torch.rand(n, generator=g) * 2 - 1) * 5).view(n, 1, 1, 1)
    centre = torch.arange(SIZE, dtype=torch.float32) - (SIZE - 1) / 2
    rows, cols = centre.view(1, 1, SIZE, 1), centre.view(1, 1, 1, SIZE)
    distance = (cols * torch.cos(angle) + rows * torch.sin(angle) - offset).abs()
    return torch.maximum(x, (1.5 - distance).clamp(0, 1))


# Evaluated, never trained on nor chosen on: the honest test of what augmentation taught.
HELD_OUT: dict[str, Shift] = {
    "held out: dotted pen": lambda x, g: dotted(x),
    "held out: motion blur (7 px)": lambda x, g: motion_blur(x),
    "held out: scratch": _scratch,
}


def generator_for(name: str, seed: int) -> torch.Generator:
    """A generator seeded by the shift's name and `seed`: each shift draws its own numbers."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))


def apply(name: str, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Shift `name` applied to images in [0, 1], shape (N, 1, 28, 28); deterministic in `seed`."""
    known = {**ALL_SHIFTS, **HELD_OUT}
    if name not in known:
        raise KeyError(f"no shift {name!r}: choose one of {list(known)}")
    if images.ndim != 4 or images.shape[1:] != (1, SIZE, SIZE):
        raise ValueError(f"expected images of shape (N, 1, 28, 28); got {tuple(images.shape)}")
    if images.min() < 0 or images.max() > 1:
        raise ValueError("expected ink in [0, 1], not normalized pixels: pass raw images / 255")
    return known[name](images.float().cpu(), generator_for(name, seed)).contiguous()


def suite(images: torch.Tensor, seed: int = 0, names: list[str] | None = None) -> dict:
    """Every shift (or those in `names`) of `images`, by name, with "clean" first."""
    names = list(ALL_SHIFTS) if names is None else names
    return {"clean": images.float(), **{name: apply(name, images, seed) for name in names}}


# ---------------------------------------------------------------------------------------------
# Digits no MNIST writer made
# ---------------------------------------------------------------------------------------------


def font_files() -> list[Path]:
    """The DejaVu fonts that matplotlib ships (Sans, Serif, Mono; 12 faces): on every machine."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return sorted(p for p in folder.glob("DejaVu*.ttf") if "Display" not in p.name)


def typed_digits(
    degrees: tuple[float, ...] = (-6, -3, 0, 3, 6),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits 0-9 typed in each DejaVu face, tilted by each of `degrees`, read as the page reads.

    Drawn white on black at 200 px in a 280 x 280 square (PIL), then `page_views`.
    """
    from PIL import Image, ImageDraw, ImageFont

    drawings, labels = [], []
    for file in font_files():
        font = ImageFont.truetype(str(file), 200)
        for digit in range(10):
            for angle in degrees:
                canvas = Image.new("L", (280, 280), 0)
                ImageDraw.Draw(canvas).text(
                    (140, 140), str(digit), fill=255, font=font, anchor="mm"
                )
                canvas = canvas.rotate(angle, resample=Image.BILINEAR)
                drawings.append(np.asarray(canvas, dtype=np.float64) / 255)
                labels.append(digit)
    return page_views(np.stack(drawings)), torch.tensor(labels)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40) -> list:
    return [
        (cx + rx * math.sin(2 * math.pi * k / n), cy - ry * math.cos(2 * math.pi * k / n))
        for k in range(n + 1)
    ]


# Digits as a person might draw them on the page's 280 x 280 canvas: strokes of (x, y) points.
# The browser test (tests/test_browser.py) draws the same strokes with the mouse.
STROKES: dict[int, list] = {
    0: [_ellipse(140, 140, 60, 95)],
    1: [[(140, 40), (140, 240)]],
    2: [[(80, 90), (110, 50), (170, 50), (195, 95), (160, 150), (80, 230), (210, 230)]],
    3: [[(80, 60), (140, 40), (195, 80), (140, 135), (200, 180), (140, 240), (75, 215)]],
    4: [[(120, 40), (80, 165), (210, 165)], [(175, 90), (175, 250)]],
    5: [[(200, 45), (95, 45), (85, 130), (150, 115), (200, 165), (160, 235), (80, 220)]],
    6: [[(180, 40), (110, 110), (85, 190), (120, 240), (180, 220), (185, 170), (140, 150)]],
    7: [[(60, 50), (210, 50), (110, 240)]],
    8: [_ellipse(140, 95, 45, 55), _ellipse(140, 190, 55, 55)],
    9: [_ellipse(140, 95, 50, 55), [(190, 95), (175, 250)]],
}

# The page's pens (book/draw.md): brush width in canvas pixels and ink (1 white, less is grey).
PENS: dict[str, tuple[float, float]] = {
    "thin": (8, 1.0),
    "normal": (20, 1.0),
    "thick": (34, 1.0),
    "faint": (20, 0.4),
}


def draw_strokes(strokes: list, width: float, ink: float = 1.0, size: int = 280) -> np.ndarray:
    """The strokes drawn with a round brush, anti-aliased (drawn at 4x, then area-averaged)."""
    from PIL import Image, ImageDraw

    k = 4
    canvas = Image.new("L", (size * k, size * k), 0)
    pen = ImageDraw.Draw(canvas)
    r = width * k / 2
    for stroke in strokes:
        points = [(x * k, y * k) for x, y in stroke]
        pen.line(points, fill=255, width=round(width * k), joint="curve")
        for x, y in points:
            pen.ellipse((x - r, y - r, x + r, y + r), fill=255)
    big = np.asarray(canvas, dtype=np.float64) / 255
    return ink * big.reshape(size, k, size, k).mean(axis=(1, 3))


def drawn_digits(pens: dict[str, tuple[float, float]] = PENS) -> dict:
    """`STROKES` drawn with each pen, read as the page reads them: {pen: (images, labels)}."""
    labels = torch.tensor(list(STROKES))
    return {
        pen: (page_views(np.stack([draw_strokes(s, w, ink) for s in STROKES.values()])), labels)
        for pen, (w, ink) in pens.items()
    }


# ---------------------------------------------------------------------------------------------
# Measuring a model on the suite
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """The model's logits for images in [0, 1] (normalized here as chapter 01 does), on the CPU."""
    from helpers.data import SEED_MEAN, SEED_STD

    model.eval()
    device = next(model.parameters()).device
    out = [
        model(((images[i : i + batch_size] - SEED_MEAN) / SEED_STD).to(device)).float().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out)


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy in % of the model on images in [0, 1]."""
    return 100.0 * logits(model, images).argmax(1).eq(labels).float().mean().item()


Sets = dict[str, tuple[torch.Tensor, torch.Tensor]]


def evaluate(models: dict[str, torch.nn.Module], sets: Sets) -> dict[str, dict[str, torch.Tensor]]:
    """The logits of every model on every set of (images in [0, 1], labels): {model: {set: ...}}."""
    return {
        name: {key: logits(model, images) for key, (images, _) in sets.items()}
        for name, model in models.items()
    }


def accuracy_table(outputs: dict[str, dict[str, torch.Tensor]], sets: Sets) -> dict[str, dict]:
    """{model: {set: accuracy %}} from `evaluate`'s logits."""
    return {
        name: {
            key: 100.0 * out.argmax(1).eq(sets[key][1]).float().mean().item()
            for key, out in by_set.items()
        }
        for name, by_set in outputs.items()
    }
