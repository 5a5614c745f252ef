"""Augmentation on whole batches (chapter 10)."""

from __future__ import annotations

import pytest
import torch

from helpers.augment import augment_batch


def test_augmentation_keeps_shape_and_range_and_is_reproducible():
    images = torch.randn(16, 1, 28, 28)
    a = augment_batch(images, generator=torch.Generator().manual_seed(3))
    b = augment_batch(images, generator=torch.Generator().manual_seed(3))
    c = augment_batch(images, generator=torch.Generator().manual_seed(4))
    assert a.shape == images.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= images.min() - 1e-5 and a.max() <= images.max() + 1e-5


def test_augmentation_without_motion_is_the_identity():
    images = torch.randn(4, 1, 28, 28)
    same = augment_batch(images, max_shift=0, max_degrees=0)
    assert torch.allclose(same, images, atol=1e-5)


def test_augmentation_moves_a_pixel_by_at_most_the_shift():
    image = torch.zeros(8, 1, 28, 28)
    image[:, 0, 10, 10] = 1.0
    moved = augment_batch(image, max_shift=2, max_degrees=0, background=0.0)
    for one in moved[:, 0]:
        rows, cols = torch.nonzero(one > 0.01, as_tuple=True)
        assert (rows - 10).abs().max() <= 2 and (cols - 10).abs().max() <= 2
        assert one.sum().item() == pytest.approx(1.0, abs=0.05)  # interpolation keeps the mass
