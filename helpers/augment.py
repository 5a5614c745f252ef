"""Augmentation on whole batches in memory (chapter 10).

The seed augments with PIL transforms, one image at a time (`helpers.data.seed_augmentation`,
chapter 02). Once the data is one tensor, one random affine map per image can be applied to the
whole batch at once, on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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
