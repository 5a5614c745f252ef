"""Tests for helpers.plots: each picture shows what it claims, on small slices of real MNIST."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from helpers import plots
from helpers.data import SEED_MEAN, SEED_STD, mnist_datasets, seed_augmentation

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def data():
    return mnist_datasets()


@pytest.fixture(scope="module")
def raw_train():
    return mnist_datasets(raw=True)[0]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_show_samples_is_the_seeds_row_of_normalized_images(data):
    fig = plots.show_samples(data[0], n=10)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 10
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "Label: 5"
    assert titles == [f"Label: {int(y)}" for y in data[0].targets[:10]]
    shown = fig.axes[0].images[0]
    image, _ = data[0][0]
    np.testing.assert_allclose(shown.get_array(), image.squeeze().numpy())
    # The gray scale stretches from the image's own minimum to its maximum.
    assert shown.norm.vmin == pytest.approx((0 - SEED_MEAN) / SEED_STD, abs=1e-5)
    assert shown.norm.vmax == pytest.approx((1 - SEED_MEAN) / SEED_STD, abs=1e-5)


def test_sample_grid_has_rows_times_cols_images_titled_by_label(data):
    images, labels = data[0].data[:12], data[0].targets[:12]
    fig = plots.sample_grid(images, labels, rows=3, cols=4)
    assert len(fig.axes) == 12
    assert [ax.get_title() for ax in fig.axes] == [str(int(y)) for y in labels]
    np.testing.assert_array_equal(fig.axes[5].images[0].get_array(), images[5].numpy())


def test_sample_grid_leaves_spare_cells_empty(data):
    fig = plots.sample_grid(data[0].data[:5], data[0].targets[:5], rows=2, cols=4)
    assert len(fig.axes) == 8
    assert [len(ax.images) for ax in fig.axes] == [1] * 5 + [0] * 3


def test_class_counts_counts_every_digit_even_absent_ones():
    assert plots.class_counts(torch.tensor([3, 3, 0])) == [1, 0, 0, 2, 0, 0, 0, 0, 0, 0]


def test_class_balance_bar_heights_are_the_published_counts(data):
    train, test = data
    fig = plots.class_balance(train.targets, test.targets)
    assert len(fig.axes) == 2
    for ax, expected in zip(fig.axes, (TRAIN_COUNTS, TEST_COUNTS), strict=True):
        assert [round(bar.get_height()) for bar in ax.patches] == expected
        assert [text.get_text() for text in ax.texts] == [str(c) for c in expected]
    assert fig.axes[0].get_title() == "Training set: 60,000 images"
    assert fig.axes[1].get_title() == "Test set: 10,000 images"


def test_class_means_equal_a_manual_mean(data):
    images, labels = data[1].data[:500], data[1].targets[:500]
    means = plots.class_means(images, labels)
    assert means.shape == (10, 28, 28)
    manual = images[labels == 7].double().mean(dim=0) / 255
    torch.testing.assert_close(means[7], manual.float())
    assert means.min() >= 0.0 and means.max() <= 1.0


def test_mean_digits_shows_each_class_mean_on_one_scale(data):
    images, labels = data[1].data[:500], data[1].targets[:500]
    fig = plots.mean_digits(images, labels)
    assert len(fig.axes) == 10
    assert [ax.get_title() for ax in fig.axes] == [f"Mean {d}" for d in range(10)]
    manual = (images[labels == 3].double().mean(dim=0) / 255).numpy()
    np.testing.assert_allclose(fig.axes[3].images[0].get_array(), manual, rtol=1e-6)
    assert {(im.norm.vmin, im.norm.vmax) for ax in fig.axes for im in ax.images} == {(0.0, 1.0)}


def test_pixel_histogram_counts_every_pixel_and_marks_the_mean(data):
    images = data[1].data[:200]
    fig = plots.pixel_histogram(images)
    (ax,) = fig.axes
    counts = ax.patches[0].get_data().values
    assert len(counts) == 256 and counts.sum() == images.numel()
    assert counts[0] == (images == 0).sum().item()
    assert ax.get_yscale() == "log"
    mean = images.double().mean().item() / 255
    assert ax.lines[0].get_xdata()[0] == pytest.approx(mean)
    assert ax.get_legend().get_texts()[0].get_text() == f"mean = {mean:.4f}"


def test_pixel_histogram_refuses_normalized_images(data):
    with pytest.raises(TypeError, match="uint8"):
        plots.pixel_histogram(data[1].data[:2].float())


SEED_AUGMENTATION = seed_augmentation()


def test_network_diagram_draws_each_step_of_forward_with_the_models_sizes():
    from helpers.models import SimpleNN

    fig = plots.network_diagram(SimpleNN(hidden_size=32))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert [t for t in texts if "→" in t] == ["784 → 32", "32 → 16", "16 → 10"]
    assert texts.count("ReLU") == texts.count("Dropout") == 2
    assert "784-32-16-10" in fig.axes[0].get_title()


def _grid_arrays(fig: Figure) -> list[np.ndarray]:
    return [np.asarray(ax.images[0].get_array()) for ax in fig.axes]


def test_augmentation_grid_is_reproducible_and_differs_from_the_original(raw_train):
    indices = [0, 1]
    first = plots.augmentation_grid(raw_train, SEED_AUGMENTATION, indices, draws=3, seed=1)
    second = plots.augmentation_grid(raw_train, SEED_AUGMENTATION, indices, draws=3, seed=1)
    other = plots.augmentation_grid(raw_train, SEED_AUGMENTATION, indices, draws=3, seed=2)
    assert len(first.axes) == 2 * 4
    a, b, c = _grid_arrays(first), _grid_arrays(second), _grid_arrays(other)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c, strict=True))
    original = raw_train.data[0].numpy()
    np.testing.assert_array_equal(a[0], original)
    for draw in a[1:4]:
        assert draw.shape == (28, 28) and draw.dtype == np.uint8
        assert not np.array_equal(draw, original)
    assert [ax.get_ylabel() for ax in first.axes[::4]] == ["Label: 5", "Label: 0"]
    assert [ax.get_title() for ax in first.axes[:4]] == ["Original", "Draw 1", "Draw 2", "Draw 3"]


def test_augmentation_grid_leaves_the_callers_random_state_alone(raw_train):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    plots.augmentation_grid(raw_train, SEED_AUGMENTATION, [0], draws=2)
    torch.testing.assert_close(torch.rand(3), expected)


def test_training_history_has_the_seeds_three_panels():
    history = {
        "train_loss": [1.0, 0.5],
        "val_loss": [0.9, 0.6],
        "train_acc": [80.0, 90.0],
        "val_acc": [85.0, 88.0],
        "lr": [1e-3, 5e-4],
    }
    fig = plots.training_history(history)
    loss, acc, lr = fig.axes
    assert [ax.get_title() for ax in fig.axes] == [
        "Loss curves",
        "Accuracy curves",
        "Learning rate schedule",
    ]
    assert list(acc.lines[1].get_ydata()) == [85.0, 88.0]
    assert list(lr.lines[0].get_ydata()) == [1e-3, 5e-4]
    assert list(loss.lines[0].get_xdata()) == [1, 2]
    plt.close(fig)


def test_confusion_heatmap_annotates_every_cell():
    cm = np.arange(100).reshape(10, 10)
    fig = plots.confusion_heatmap(cm)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 100 and texts[:3] == ["0", "1", "2"] and texts[-1] == "99"
    assert fig.axes[0].get_xlabel() == "Predicted label"
    plt.close(fig)


def test_error_gallery_titles_and_mistake_bars():
    images = torch.zeros(3, 28, 28, dtype=torch.uint8)
    fig = plots.error_gallery(images, [1, 2, 3], [7, 8, 9], cols=2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["Predicted: 1, True: 7", "Predicted: 2, True: 8", "Predicted: 3, True: 9"]
    plt.close(fig)
    probs = torch.full((1, 10), 0.02)
    probs[0, 3] = 0.82
    fig = plots.confident_mistakes(images[:1], probs, torch.tensor([5]))
    bars = fig.axes[1].patches
    assert [round(b.get_height(), 2) for b in bars][3] == 0.82
    assert bars[5].get_facecolor() != bars[0].get_facecolor() != bars[3].get_facecolor()
    assert fig.axes[1].get_title() == "true 5, predicted 3 with p = 0.820"
    plt.close(fig)


def test_weight_images_draws_each_row_as_a_square_on_one_symmetric_scale():
    weights = torch.linspace(-2, 1, 3 * 16).reshape(3, 16)
    fig = plots.weight_images(weights, cols=2)
    shown = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(shown) == 3 and shown[0].get_array().shape == (4, 4)
    assert all(image.get_clim() == (-2.0, 2.0) for image in shown)
    with pytest.raises(ValueError, match="not square"):
        plots.weight_images(torch.zeros(2, 10))


def test_feature_maps_draws_each_channel_on_one_scale_from_zero():
    maps = torch.linspace(0, 3, 5 * 7 * 7).reshape(5, 7, 7)
    fig = plots.feature_maps(maps, cols=4, title="maps")
    shown = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(shown) == 5 and len(fig.axes) == 8 and shown[0].get_array().shape == (7, 7)
    assert all(image.get_clim() == (0.0, 3.0) for image in shown)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        plots.feature_maps(torch.zeros(2, 5, 7, 7))
    plt.close("all")


def test_evaluation_figures_of_chapter_8():
    right = torch.tensor([True, True, False])
    fig = plots.confidence_histogram(torch.tensor([0.99, 0.95, 0.6]), right)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "correct (2)",
        "wrong (1)",
    ]
    per_digit = torch.rand(10, 6)
    fig = plots.units_by_digit(per_digit)
    favourites = per_digit.argmax(0)
    shown = torch.from_numpy(np.asarray(fig.axes[0].images[0].get_array()))
    assert (shown.argmax(0) == favourites.sort().values).all(), "units sorted by favourite digit"
    plane, targets = np.random.rand(20, 2), torch.arange(20) % 10
    fig = plots.embedding_scatter(plane, targets, targets == 3, title="t")
    assert len(fig.axes[0].texts) == 10 and len(fig.axes[0].collections[1].get_offsets()) == 2
    images = torch.zeros(2, 1, 28, 28)
    fig = plots.saliency_grid(images, images + 1, images, [("a", "b"), ("c", "d")], (-1.0, 2.0))
    assert [ax.get_title() for ax in fig.axes[3:]] == ["c", "d loss / d pixel", "d"]


def test_channel_sum_draws_each_channels_part_and_their_sum():
    inputs, kernels = torch.rand(3, 8, 8), torch.rand(3, 3, 3)
    fig = plots.channel_sum(inputs, kernels, bias=0.5)
    total = torch.nn.functional.conv2d(
        inputs[None], kernels[None], bias=torch.tensor([0.5]), padding=1
    )
    shown = np.asarray(fig.axes[11].images[0].get_array())
    assert np.allclose(shown, total[0, 0].numpy(), atol=1e-5)


def test_padding_stride_numbers_each_output_on_its_windows_centre():
    fig = plots.padding_stride(n=5, k=3, padding=1, stride=2)
    left, right = fig.axes
    numbers = [t for t in right.texts]
    assert [t.get_text() for t in numbers] == [str(m) for m in range(1, 10)], "3 x 3 outputs"
    centres = {t.get_text(): t.get_position() for t in left.texts if t.get_text() != "0"}
    assert centres["1"] == (1.5, 1.5) and centres["2"] == (3.5, 1.5) and centres["4"] == (1.5, 3.5)
    assert sum(t.get_text() == "0" for t in left.texts) == 7 * 7 - 5 * 5, "the frame of zeros"
    assert sum(not p.get_fill() for p in left.patches) == 3, "three windows outlined"
    plt.close("all")


def test_data_parallel_step_draws_the_step_and_a_ring_of_the_given_size():
    fig = plots.data_parallel_step(processes=4)
    left, right = fig.axes
    assert left.get_title() == "One data-parallel step, 2 processes"
    assert [t.get_text() for t in right.texts if t.get_text().startswith("rank")] == [
        f"rank {r}" for r in range(4)
    ]
    assert len(right.patches) == 4 * 4, "each rank's gradients as 4 chunks"


def test_decision_boundaries_shades_where_each_score_is_positive_and_titles_its_accuracy():
    points = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    labels = points[:, 0] > 0
    scores = {"right": lambda p: p[:, 0], "wrong": lambda p: p[:, 1]}
    fig = plots.decision_boundaries(points, labels, scores)
    assert [ax.get_title() for ax in fig.axes] == ["right: 100% right", "wrong: 50% right"]
    assert all(len(ax.collections) >= 4 for ax in fig.axes), "shading, boundary, two classes"
