"""Augmentation on whole batches in memory: chapter 10's, and chapter 13's ingredients.

The seed augments with PIL transforms, one image at a time (`helpers.data.seed_augmentation`,
chapter 02). Once the data is one tensor, one random affine map per image can be applied to the
whole batch at once, on any device: `augment_batch` (chapter 10).

Chapter 13 models how people and pens vary, with six ingredients, each drawn at random per image
and applied to the whole batch with tensor operations (no PIL image per sample):

- "affine": rotation, scale, shear and translation (one map per image);
- "elastic": Simard et al.'s smooth random field, strokes that bend;
- "width": strokes a pixel thinner or thicker;
- "blur": a Gaussian blur, as from a soft pen or a low-resolution scan;
- "contrast": faint or saturated ink, and gamma;
- "noise": speckles on the paper.

A recipe names the ingredients it uses, `Recipe(augment="affine+elastic+...")`
(`helpers.recipe.INGREDIENTS`); `ROBUST` is all of them. The building blocks (erosion, dilation,
blur, affine maps, elastic fields) also make chapter 13's shift suite, `helpers.shifts`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from helpers.data import SEED_MEAN, SEED_STD
from helpers.recipe import INGREDIENTS, ingredients

SIZE = 28


def augment_batch(
    images: torch.Tensor,
    max_shift: float = 2.0,
    max_degrees: float = 10.0,
    generator: torch.Generator | None = None,
    background: float | None = None,
) -> torch.Tensor:
    """Shift each image by up to `max_shift` pixels and rotate it by up to `max_degrees`.

    One random affine map per image, applied to the whole batch at once with `affine_grid` and
    `grid_sample` (bilinear): the seed's RandomRotation(10) + RandomAffine(translate=0.1) idea,
    without a PIL image per sample. Pixels that come in from outside are `background` (by default
    the batch's smallest value, the normalized black), so values stay within the input's range.
    """
    n, _, h, w = images.shape
    rand = torch.rand(n, 3, generator=generator).to(images.device)
    angle = (rand[:, 0] * 2 - 1) * math.radians(max_degrees)
    # affine_grid works in coordinates from -1 to 1 across the image: a pixel is 2 / size.
    shift_x = (rand[:, 1] * 2 - 1) * max_shift * 2 / w
    shift_y = (rand[:, 2] * 2 - 1) * max_shift * 2 / h
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    fill = images.min() if background is None else torch.tensor(background)
    moved = F.grid_sample(images - fill, grid, mode="bilinear", align_corners=False)
    return moved + fill


# ---------------------------------------------------------------------------------------------
# Chapter 13: the building blocks, on whole batches of ink in [0, 1]
# ---------------------------------------------------------------------------------------------


def thinner(x: torch.Tensor) -> torch.Tensor:
    """Erosion: each pixel the darkest of its 2 x 2 window, so a stroke loses about a pixel."""
    return -F.max_pool2d(F.pad(-x, (0, 1, 0, 1), value=0.0), 2, stride=1)


def thicker(x: torch.Tensor, size: int = 3) -> torch.Tensor:
    """Dilation: each pixel the brightest of its size x size window; a stroke gains size - 1."""
    return F.max_pool2d(x, size, stride=1, padding=size // 2)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalized 1-D Gaussian, cut at three sigma."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of each image (separable: rows, then columns), zero beyond the edge."""
    k = gaussian_kernel(sigma).to(x)
    r = len(k) // 2
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, r), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(r, 0), groups=c)


def affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Each image moved by its own 2 x 3 affine map (in affine_grid's -1..1 coordinates)."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def affine_maps(
    n: int,
    degrees: torch.Tensor | float = 0.0,
    scale: torch.Tensor | float = 1.0,
    shear: torch.Tensor | float = 0.0,
    shift: tuple[torch.Tensor | float, torch.Tensor | float] = (0.0, 0.0),
) -> torch.Tensor:
    """(n, 2, 3) maps that rotate, scale, shear (x by y) and translate (in pixels) an image.

    affine_grid maps each output pixel to where it samples the input, so the matrix here is the
    inverse of the movement the image makes: a scale of 1.2 makes the digit 1.2 times larger.
    """

    def column(v: torch.Tensor | float) -> torch.Tensor:
        return torch.as_tensor(v, dtype=torch.float32).expand(n)

    a, s, sh = column(math.radians(1) * torch.as_tensor(degrees)), column(scale), column(shear)
    cos, sin = torch.cos(a), torch.sin(a)
    # The movement M = rotation @ shear @ scale; the grid needs M's inverse.
    m = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    m = m @ torch.stack(
        [torch.stack([torch.ones(n), sh], 1), torch.stack([torch.zeros(n), torch.ones(n)], 1)], 1
    )
    m = m * s.view(n, 1, 1)
    inverse = torch.linalg.inv(m)
    t = torch.stack([column(shift[0]), column(shift[1])], 1) * 2 / SIZE
    return torch.cat([inverse, -(inverse @ t.unsqueeze(2))], 2)


def elastic_field(n: int, alpha: float, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """(n, 28, 28, 2) moves in pixels: uniform noise in [-1, 1], Gaussian-smoothed, times alpha."""
    field = torch.rand(n, 2, SIZE, SIZE, generator=generator) * 2 - 1
    return (blur(field, sigma) * alpha).permute(0, 2, 3, 1)


def elastic(
    x: torch.Tensor, alpha: float, sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """Simard et al.'s (2003) elastic distortion: a random field of moves, smoothed by a Gaussian.

    Each pixel samples the image where `elastic_field` moves it; a large sigma makes the field
    smooth, so the strokes bend instead of breaking.
    """
    n = x.shape[0]
    moves = elastic_field(n, alpha, sigma, generator) * 2 / SIZE  # pixels to grid units
    base = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), [n, 1, SIZE, SIZE], align_corners=False)
    grid = base + moves.to(x.device)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ---------------------------------------------------------------------------------------------
# Chapter 13: the ingredients, each drawn at random per image
# ---------------------------------------------------------------------------------------------

ROBUST = "+".join(INGREDIENTS)


def uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    """n numbers drawn uniformly from [low, high)."""
    return low + (high - low) * torch.rand(n, generator=g)


def chosen(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    """A (n, 1, 1, 1) mask: True for each image with probability p."""
    return (torch.rand(n, generator=g) < p).view(n, 1, 1, 1)


def random_affine(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Rotate up to 25 degrees, scale 0.65 to 1.25, shear up to 0.4, move up to 3 pixels."""
    n = len(x)
    maps = affine_maps(
        n,
        degrees=uniform(n, -25, 25, g),
        scale=uniform(n, 0.65, 1.25, g),
        shear=uniform(n, -0.4, 0.4, g),
        shift=(uniform(n, -3, 3, g), uniform(n, -3, 3, g)),
    )
    return affine(x, maps.to(x.device))


def random_width(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A fifth of the strokes a pixel thinner, a fifth 1 or 2 pixels thicker."""
    pick = torch.rand(len(x), generator=g).view(-1, 1, 1, 1).to(x.device)
    thick = torch.where(pick < 0.3, thicker(x, 2)[..., : x.shape[-2], : x.shape[-1]], thicker(x))
    return torch.where(pick < 0.2, thinner(x), torch.where(pick < 0.4, thick, x))


def random_blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A fifth of the images blurred, with one sigma (0.5 to 1.5 pixels) drawn for the batch."""
    sigma = float(uniform(1, 0.5, 1.5, g))
    return torch.where(chosen(len(x), 0.2, g).to(x.device), blur(x, sigma), x)


def random_contrast(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Half the images: gamma from 1/3 to 3 and a gain from 0.3 to 3 (faint to saturated ink)."""
    n = len(x)
    gamma = torch.exp(uniform(n, -math.log(3), math.log(3), g)).view(n, 1, 1, 1).to(x.device)
    gain = torch.exp(uniform(n, math.log(0.3), math.log(3), g)).view(n, 1, 1, 1).to(x.device)
    changed = (x.clamp(min=0) ** gamma * gain).clamp(0, 1)
    return torch.where(chosen(n, 0.5, g).to(x.device), changed, x)


def random_noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A fifth of the images get Gaussian noise of standard deviation up to 0.3."""
    n = len(x)
    std = uniform(n, 0, 0.3, g).view(n, 1, 1, 1)
    noisy = (x + std * torch.randn(x.shape, generator=g)).to(x.device).clamp(0, 1)
    return torch.where(chosen(n, 0.2, g).to(x.device), noisy, x)


def some(x: torch.Tensor, p: float, change: Callable, g: torch.Generator) -> torch.Tensor:
    """`change` applied to each image with probability p, and computed only for those."""
    picked = torch.nonzero(torch.rand(len(x), generator=g) < p).flatten().to(x.device)
    out = x.clone()
    out[picked] = change(x[picked], g)
    return out


STEPS = {
    "affine": lambda x, g: some(x, 0.6, random_affine, g),
    "elastic": lambda x, g: some(x, 0.3, lambda y, g: elastic(y, 34.0, 4.0, g), g),
    "width": random_width,
    "blur": random_blur,
    "contrast": random_contrast,
    "noise": random_noise,
}


def augment_robust(
    images: torch.Tensor, spec: str = ROBUST, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The ingredients of `spec` applied, in `INGREDIENTS` order, to a normalized batch."""
    names = ingredients(spec)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    x = images * SEED_STD + SEED_MEAN  # back to ink in [0, 1]
    for name in INGREDIENTS:
        if name in names:
            x = STEPS[name](x, g)
    return (x - SEED_MEAN) / SEED_STD
