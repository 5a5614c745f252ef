"""The shift suite (chapter 13): deterministic, digits kept in the frame, the page's steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import augment, data, inference, shifts


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    raw = data.mnist_datasets(raw=True)[1]
    return raw.data[:500].float().div(255).unsqueeze(1), raw.targets[:500]


def test_the_suite_is_deterministic_and_pinned(digits):
    images, _ = digits
    a = shifts.suite(images[:50], seed=0)
    b = shifts.suite(images[:50], seed=0)
    c = shifts.suite(images[:50], seed=1)
    assert list(a) == ["clean", *shifts.ALL_SHIFTS]
    for name in shifts.ALL_SHIFTS:
        assert torch.equal(a[name], b[name]), name
        assert a[name].shape == (50, 1, 28, 28) and a[name].dtype == torch.float32
        assert a[name].min() >= 0 and a[name].max() <= 1, name
        assert not torch.equal(a[name], a["clean"]), f"{name} changes the images"
    random = ("rotate 20°", "shear 0.35", "translate 3 px", "elastic", "noise")
    assert all(not torch.equal(a[n], c[n]) for n in random), "the seed picks the random draws"
    # A few pixels, pinned: a change to a shift's definition shows here (any CPU: simple ops).
    assert a["thick strokes"][0, 0, 7:10, 6].tolist() == pytest.approx([0.9961] * 3, abs=1e-4)
    assert a["rotate 20°"][0, 0, 10, 8:11].tolist() == pytest.approx(
        [0.8484, 0.8274, 0.9224], abs=1e-4
    )
    assert a["faint ink"][0].max().item() == pytest.approx(0.35, abs=1e-6)
    assert (
        a["thin strokes"][0].sum().item()
        < a["clean"][0].sum().item()
        < a["thick strokes"][0].sum().item()
    )


def test_a_shift_keeps_the_digit_inside_the_frame(digits):
    images, _ = digits
    ink = images.sum((1, 2, 3))
    for name, area in (("rotate 20°", 1), ("shear 0.35", 1), ("translate 3 px", 1)):
        kept = shifts.apply(name, images).sum((1, 2, 3)) / ink / area
        # interpolation moves a little ink between pixels; leaving the frame would lose much more
        assert (kept < 0.97).float().mean() < 0.01 and kept.min() > 0.9, name
    scale = shifts.largest_scale(images, 1.2)
    assert scale.max().item() == pytest.approx(1.2, abs=1e-6) and (scale > 1.1).float().mean() > 0.8
    kept = shifts.apply("larger (up to 1.2)", images).sum((1, 2, 3)) / ink / scale**2
    assert kept.min() > 0.95, "a larger digit still fits"
    moves = augment.elastic_field(1000, 34.0, 4.0, torch.Generator().manual_seed(0))
    # MNIST's digits sit in a 20 x 20 box centred in 28 x 28: 99% of the moves are under the
    # 4-pixel margin, a pixel on average; the rare larger ones are as often inward as outward
    assert torch.quantile(moves.abs().flatten()[: 10**6], 0.99) < 3.5 and moves.abs().mean() > 0.5


def test_the_page_view_is_the_pages_preprocessing(digits):
    images, _ = digits
    for i in range(5):
        big = torch.nn.functional.interpolate(images[i : i + 1], size=(200, 170), mode="bilinear")
        ink = big.clamp(0, 1)[0, 0].double().numpy()
        np.testing.assert_allclose(shifts.page_view(ink), inference.mnist_style(ink), atol=1e-9)
    with pytest.raises(ValueError, match="blank"):
        shifts.page_view(np.zeros((30, 30)))


def test_apply_names_what_was_wrong(digits):
    images, _ = digits
    with pytest.raises(KeyError, match="choose one of"):
        shifts.apply("sideways", images)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        shifts.apply("blur", images[:, 0])
    with pytest.raises(ValueError, match="raw images / 255"):
        shifts.apply("blur", (images - 0.13) / 0.31)


def test_typed_and_drawn_digits_are_mnist_style_and_labelled():
    typed, labels = shifts.typed_digits(degrees=(0,))
    assert len(shifts.font_files()) == 12
    assert typed.shape == (120, 1, 28, 28) and labels.tolist() == list(range(10)) * 12
    drawn = shifts.drawn_digits()
    assert list(drawn) == list(shifts.PENS)
    for pen, (images, digit_labels) in drawn.items():
        assert images.shape == (10, 1, 28, 28) and digit_labels.tolist() == list(range(10))
        assert images.amax((1, 2, 3)).min() > 0.3, pen
    assert drawn["faint"][0].max() <= 0.41 < drawn["normal"][0].max()
    # the thick pen leaves more ink than the thin one, as MNIST-style 28 x 28 images
    assert drawn["thick"][0].sum() > drawn["normal"][0].sum() > drawn["thin"][0].sum()
    # every digit fills the 20 x 20 box along its longer side, as the page makes it
    boxes = [(img[0] > 0).any(1).sum().item() for img in typed]
    assert min(boxes) >= 19 and max(boxes) <= 22


def test_accuracy_table_from_logits():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    images = torch.rand(6, 1, 28, 28)
    labels = torch.arange(6)
    outputs = shifts.evaluate({"m": model}, {"a": (images, labels)})
    expected = 100 * (model((images - 0.1307) / 0.3081).argmax(1) == labels).float().mean().item()
    table = shifts.accuracy_table(outputs, {"a": (images, labels)})
    assert table["m"]["a"] == pytest.approx(expected)


def test_held_out_shifts_are_apart_deterministic_and_pinned(digits):
    images, _ = digits
    assert not set(shifts.HELD_OUT) & set(shifts.ALL_SHIFTS), "kept apart from the suite"
    a = shifts.suite(images[:50], seed=0, names=list(shifts.HELD_OUT))
    b = shifts.suite(images[:50], seed=0, names=list(shifts.HELD_OUT))
    for name in shifts.HELD_OUT:
        assert torch.equal(a[name], b[name]), name
        assert a[name].shape == (50, 1, 28, 28) and a[name].dtype == torch.float32
        assert a[name].min() >= 0 and a[name].max() <= 1, name
        assert not torch.equal(a[name], a["clean"]), f"{name} changes the images"
    dotted = a["held out: dotted pen"]
    assert dotted[:, 0, 0::2, 0::2].max() == 0 and dotted[:, 0, 0::2, 1::2].sum() > 0
    # motion blur moves ink along the rows: all of it stays, but what spills past the edge
    kept = a["held out: motion blur (7 px)"].sum((1, 2, 3)) / images[:50].sum((1, 2, 3))
    assert kept.max() < 1 + 1e-5 and kept.min() > 0.98 and (kept > 1 - 1e-5).float().mean() > 0.8
    scratch = a["held out: scratch"]
    assert (scratch >= a["clean"]).all() and ((scratch - a["clean"]).sum((1, 2, 3)) > 20).all()


def test_rerendering_in_chunks_changes_no_pixel(digits):
    images, _ = digits
    name = "page: 14 px drawn at 140, bilinear"
    whole = shifts.rerendered(images[:30], 14, 140, "bilinear", chunk=30)
    assert torch.equal(shifts.rerendered(images[:30], 14, 140, "bilinear", chunk=7), whole)
    assert torch.equal(shifts.apply(name, images[:30]), whole)
