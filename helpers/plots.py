"""Pictures of the data (02), the seed's network (03), training and evaluation (07, 08), a CNN (09).

Every function draws one figure with pyplot and returns it without showing it: a notebook shows
it (`plt.show()`), a test inspects it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import seaborn as sns
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle
from torch import nn
from torch.utils.data import Dataset

from helpers.data import DIGITS


def _as_array(image: object) -> np.ndarray:
    """A PIL image or a (1, 28, 28) / (28, 28) tensor as a 2-D numpy array."""
    if isinstance(image, torch.Tensor):
        return image.detach().squeeze().cpu().numpy()
    return np.asarray(image)


def show_samples(dataset: Dataset, n: int = 10) -> Figure:
    """The seed's `visualize_dataset`: the first `n` images of `dataset` in a row, with labels.

    Like the seed, it shows the *normalized* tensor: `imshow` maps each image's smallest value to
    black and its largest to white, so Normalize changes nothing you can see.
    """
    fig, axes = plt.subplots(1, n, figsize=(1.2 * n, 1.7), squeeze=False)
    for i, ax in enumerate(axes[0]):
        image, label = dataset[i]
        ax.imshow(_as_array(image), cmap="gray")
        ax.set_title(f"Label: {label}")
        ax.axis("off")
    fig.tight_layout()
    return fig


def sample_grid(images: torch.Tensor, labels: torch.Tensor, rows: int, cols: int) -> Figure:
    """The first `rows * cols` of `images` (N, 28, 28) in a grid, each titled with its label."""
    fig, axes = plt.subplots(rows, cols, figsize=(1.0 * cols, 1.1 * rows), squeeze=False)
    for ax, image, label in zip(axes.flat, images, labels, strict=False):
        ax.imshow(_as_array(image), cmap="gray")
        ax.set_title(str(int(label)), fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def class_counts(targets: torch.Tensor) -> list[int]:
    """How many examples of each digit 0-9 `targets` holds."""
    return torch.bincount(targets, minlength=10).tolist()


def class_balance(train_targets: torch.Tensor, test_targets: torch.Tensor) -> Figure:
    """Bar charts of the examples per digit in the training and the test set, counts labelled.

    Two panels, not one: the test set is six times smaller, and its bars would look flat.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for ax, targets, name, color in zip(
        axes, (train_targets, test_targets), ("Training", "Test"), ("C0", "C1"), strict=True
    ):
        bars = ax.bar(DIGITS, class_counts(targets), color=color)
        ax.bar_label(bars, fontsize=8, padding=2)
        ax.set(
            xticks=DIGITS,
            xlabel="Digit",
            ylabel="Examples",
            title=f"{name} set: {len(targets):,} images",
        )
        ax.margins(y=0.12)
    fig.tight_layout()
    return fig


def class_means(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean image of each digit, (10, 28, 28), with pixels scaled to [0, 1] (uint8 / 255)."""
    x = images.to(torch.float64) / 255.0 if images.dtype == torch.uint8 else images.double()
    return torch.stack([x[labels == d].mean(dim=0) for d in DIGITS]).float()


def mean_digits(images: torch.Tensor, labels: torch.Tensor) -> Figure:
    """The mean image of each digit 0-9 in a row, on one shared gray scale from 0 to 1.

    A shared scale keeps brightness comparable: a faint mean means writers disagree on where
    the ink goes.
    """
    means = class_means(images, labels)
    fig, axes = plt.subplots(1, 10, figsize=(12, 1.7))
    for ax, digit, mean in zip(axes, DIGITS, means, strict=True):
        ax.imshow(mean.numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(f"Mean {digit}")
        ax.axis("off")
    fig.tight_layout()
    return fig


def pixel_histogram(images: torch.Tensor) -> Figure:
    """Histogram of the pixel values of uint8 `images`, scaled to [0, 1], on a log count axis.

    One bin per byte value; the log scale is needed because most pixels are exactly 0.
    The mean and mean + std are marked (mean - std is below 0: the values are far from normal).
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"pixel_histogram expects uint8 images, got {images.dtype}")
    counts = torch.bincount(images.flatten(), minlength=256).numpy()
    edges = (np.arange(257) - 0.5) / 255.0
    x = images.to(torch.float64) / 255.0
    mean, std = x.mean().item(), x.std().item()
    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.stairs(counts, edges, fill=True, color="C0")
    ax.axvline(mean, color="C3", linestyle="--", label=f"mean = {mean:.4f}")
    ax.axvline(mean + std, color="C2", linestyle=":", label=f"mean + std = {mean + std:.4f}")
    ax.set(
        yscale="log",
        xlabel="Pixel value (byte / 255)",
        ylabel="Pixels (log scale)",
        title=f"Pixel values of {len(images):,} images",
    )
    ax.legend()
    fig.tight_layout()
    return fig


def network_diagram(model: nn.Module) -> Figure:
    """The seed's network (`SimpleNN`, chapter 03) as boxes, left to right, from its own sizes.

    Each box is a step of `forward`; the number after it is the values per image it hands on.
    """
    steps = []  # (layer, detail, values per image after it), in the order forward runs them
    for fc, bn in ((model.fc1, model.bn1), (model.fc2, model.bn2)):
        steps += [
            ("Linear", f"{fc.in_features} → {fc.out_features}", fc.out_features),
            ("Batch\nNorm", f"{bn.num_features} features", bn.num_features),
            ("ReLU", "max(0, x)", bn.num_features),
            ("Dropout", f"p = {model.dropout.p}", bn.num_features),
        ]
    fc = model.fc3
    steps.append(("Linear", f"{fc.in_features} → {fc.out_features}", fc.out_features))
    colors = {
        "Linear": "#4c72b0",
        "Batch\nNorm": "#dd8452",
        "ReLU": "#55a868",
        "Dropout": "#7f7f7f",
    }
    n = len(steps)
    fig, ax = plt.subplots(figsize=(13, 2.8))
    ax.set(xlim=(-1.2, n + 0.2), ylim=(-0.8, 1.0))
    ax.axis("off")
    ax.text(
        -0.85, 0, f"image\n{model.fc1.in_features}\npixels", ha="center", va="center", fontsize=9
    )
    ax.text(n - 0.15, 0, f"{fc.out_features}\nlogits", ha="center", va="center", fontsize=9)
    for i, (layer, detail, width) in enumerate(steps):
        box = FancyBboxPatch((i - 0.33, -0.4), 0.66, 0.8, boxstyle="round,pad=0.02")
        box.set_color(colors[layer])
        ax.add_patch(box)
        ax.text(i, 0.08, layer, ha="center", va="center", color="white", fontsize=9, weight="bold")
        ax.text(i, -0.28, detail, ha="center", va="center", color="white", fontsize=7)
        ax.annotate("", xy=(i - 0.36, 0), xytext=(i - 0.64, 0), arrowprops={"arrowstyle": "->"})
        ax.text(i + 0.5, 0.06, str(width), ha="center", fontsize=8)  # what flows to the next step
    ax.annotate("", xy=(n - 0.36, 0), xytext=(n - 0.64, 0), arrowprops={"arrowstyle": "->"})
    for first, last, label in ((0, 3, "block 1"), (4, 7, "block 2"), (8, 8, "output layer")):
        ax.plot([first - 0.35, last + 0.35], [0.55, 0.55], color="0.3")
        ax.text((first + last) / 2, 0.63, label, ha="center", fontsize=9)
    ax.text(
        4, -0.65, "numbers on the arrows: values per image", ha="center", fontsize=8, color="0.3"
    )
    sizes = [model.fc1.in_features] + [width for layer, _, width in steps if layer == "Linear"]
    title = "-".join(map(str, sizes))
    ax.set_title(f"SimpleNN, the seed's {title} network: one image flows left to right")
    fig.tight_layout()
    return fig


def augmentation_grid(
    dataset_raw: Dataset,
    transform: Callable,
    indices: Sequence[int],
    draws: int = 6,
    seed: int = 0,
) -> Figure:
    """Each image of `dataset_raw` at `indices` (a row), then `draws` outputs of `transform`.

    `dataset_raw` yields untransformed (PIL image, label) pairs and `transform` maps a PIL image
    to a PIL image (the seed's geometric part, before ToTensor). The draws are seeded with
    `torch.manual_seed(seed)` inside `torch.random.fork_rng`, so the picture is the same on
    every run and the caller's random state is left untouched.
    """
    fig, axes = plt.subplots(
        len(indices), draws + 1, figsize=(1.3 * (draws + 1), 1.4 * len(indices)), squeeze=False
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for row, index in zip(axes, indices, strict=True):
            image, label = dataset_raw[index]
            for col, ax in enumerate(row):
                shown = image if col == 0 else transform(image)
                ax.imshow(_as_array(shown), cmap="gray", vmin=0, vmax=255)
                ax.set(xticks=[], yticks=[])
            row[0].set_ylabel(f"Label: {label}")
    axes[0, 0].set_title("Original")
    for col in range(1, draws + 1):
        axes[0, col].set_title(f"Draw {col}")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Pictures of training and evaluation (chapters 07 and 08)
# ---------------------------------------------------------------------------------------------


def training_history(history: dict[str, list[float]], val_label: str = "validation") -> Figure:
    """The seed's three panels: loss, accuracy and learning rate per epoch."""
    epochs = range(1, len(history["train_loss"]) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = [("loss", "Loss", "Loss curves"), ("acc", "Accuracy (%)", "Accuracy curves")]
    for ax, (key, ylabel, title) in zip(axes, panels, strict=False):
        ax.plot(epochs, history[f"train_{key}"], "o-", label="training")
        ax.plot(epochs, history[f"val_{key}"], "o-", label=val_label)
        ax.set(xlabel="Epoch", ylabel=ylabel, title=title)
        ax.legend()
    axes[2].plot(epochs, history["lr"], "o-", color="C2")
    axes[2].set(xlabel="Epoch", ylabel="Learning rate", title="Learning rate schedule")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def confusion_heatmap(cm: np.ndarray, title: str = "Confusion matrix") -> Figure:
    """The confusion matrix as an annotated seaborn heatmap (rows: true digit)."""
    fig, ax = plt.subplots(figsize=(8, 6.5))
    sns.heatmap(
        cm,
        annot=True,
        fmt="d",
        cmap="Blues",
        cbar=False,
        ax=ax,
        norm=plt.matplotlib.colors.LogNorm(vmin=1, vmax=max(int(cm.max()), 2)),
    )
    ax.set(xlabel="Predicted label", ylabel="True label", title=title)
    fig.tight_layout()
    return fig


def error_gallery(
    images: torch.Tensor, preds: Sequence[int], targets: Sequence[int], cols: int = 5
) -> Figure:
    """The seed's error analysis: misclassified images titled with predicted and true labels."""
    rows = (len(images) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, pred, true in zip(axes.flat, images, preds, targets, strict=False):
        ax.imshow(_as_array(image), cmap="gray")
        ax.set_title(f"Predicted: {int(pred)}, True: {int(true)}", fontsize=10)
    fig.tight_layout()
    return fig


def confident_mistakes(images: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor) -> Figure:
    """Each mistake beside the probabilities the model gave every digit."""
    n = len(images)
    fig, axes = plt.subplots(
        n, 2, figsize=(7, 1.6 * n), squeeze=False, gridspec_kw={"width_ratios": [1, 3]}
    )
    for (ax_img, ax_bar), image, p, true in zip(axes, images, probs, targets, strict=True):
        ax_img.imshow(_as_array(image), cmap="gray")
        ax_img.axis("off")
        colors = [
            "C2" if d == int(true) else ("C3" if d == int(p.argmax()) else "0.7") for d in DIGITS
        ]
        ax_bar.bar(DIGITS, p.numpy(), color=colors)
        ax_bar.set(ylim=(0, 1), xticks=DIGITS, ylabel="probability")
        ax_bar.set_title(
            f"true {int(true)}, predicted {int(p.argmax())} with p = {p.max():.3f}", fontsize=10
        )
    axes[-1, 1].set_xlabel("digit (green: true, red: predicted)")
    fig.tight_layout()
    return fig


def weight_images(weights: torch.Tensor, cols: int = 16, title: str = "") -> Figure:
    """Each row of a weight matrix (or each filter) as a small image, on one symmetric scale.

    Red pixels push the unit's output up, blue pixels down; white ones do not matter. One scale
    for all, so that a faint image is a unit with small weights, not a rescaled one.
    """
    weights = weights.detach().cpu()
    side = int(round(weights[0].numel() ** 0.5))
    if side * side != weights[0].numel():
        raise ValueError(f"rows of {weights[0].numel()} values are not square images")
    images = weights.reshape(len(weights), side, side)
    rows = (len(images) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(0.75 * cols, 0.75 * rows + 0.5), squeeze=False)
    limit = float(images.abs().max())
    for ax in axes.flat:
        ax.axis("off")
    for ax, image in zip(axes.flat, images, strict=False):
        ax.imshow(image.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def feature_maps(maps: torch.Tensor, cols: int = 8, title: str = "") -> Figure:
    """Each channel of one image's activations (C, H, W) as a small grey image (chapter 09).

    One scale for all channels, black at zero: a dark map is a filter that found nothing here.
    """
    maps = maps.detach().cpu()
    if maps.dim() != 3:
        raise ValueError(f"expected the maps of one image, (C, H, W); got {tuple(maps.shape)}")
    rows = (len(maps) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.1 * rows + 0.5), squeeze=False)
    vmax = float(maps.max()) or 1.0
    for ax in axes.flat:
        ax.axis("off")
    for ax, image in zip(axes.flat, maps, strict=False):
        ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=vmax)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confidence_histogram(confidence: torch.Tensor, right: torch.Tensor) -> Figure:
    """Histograms of the predicted digit's probability, for right and for wrong answers."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    bins = np.linspace(0.1, 1.0, 37)
    for mask, name in ((right, "correct"), (~right, "wrong")):
        label = f"{name} ({int(mask.sum()):,})"
        ax.hist(confidence[mask].numpy(), bins=bins, alpha=0.7, label=label)
    ax.set_yscale("log")
    ax.set(
        xlabel="probability of the predicted digit",
        ylabel="test images (log scale)",
        title="How confident the model is, when right and when wrong",
    )
    ax.legend()
    fig.tight_layout()
    return fig


def units_by_digit(per_digit: torch.Tensor) -> Figure:
    """Mean activation per digit (rows) and unit (columns), units sorted by their top digit."""
    favourite, peak = per_digit.argmax(0).numpy(), per_digit.max(0).values.numpy()
    order = np.lexsort((-peak, favourite))  # by favourite digit, then strongest first
    fig, ax = plt.subplots(figsize=(10, 3))
    image = ax.imshow(per_digit[:, order].numpy(), cmap="viridis", aspect="auto")
    ax.set(xlabel="unit (sorted by the digit it responds to most)", ylabel="digit", yticks=DIGITS)
    fig.colorbar(image, ax=ax, label="mean activation")
    fig.tight_layout()
    return fig


def embedding_scatter(
    plane: np.ndarray, targets: torch.Tensor, circled: torch.Tensor, title: str = ""
) -> Figure:
    """A 2-D map of images coloured by digit, each digit named at its median, some circled."""
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.scatter(*plane.T, c=targets.numpy(), cmap="tab10", s=4)
    ring = {"facecolors": "none", "edgecolors": "black", "label": "misread"}
    ax.scatter(*plane[circled.numpy()].T, s=40, **ring)
    for d in DIGITS:
        centre = np.median(plane[(targets == d).numpy()], axis=0)
        ax.annotate(str(d), centre, fontsize=16, weight="bold")
    ax.set_title(title)
    ax.legend(loc="lower left")
    ax.axis("off")
    fig.tight_layout()
    return fig


def saliency_grid(
    images: torch.Tensor,
    grads: torch.Tensor,
    moved: torch.Tensor,
    titles: Sequence[tuple[str, str]],
    black_white: tuple[float, float],
) -> Figure:
    """One row per image: the image, its gradient (own scale), the image moved along it."""
    fig, axes = plt.subplots(len(images), 3, figsize=(7.5, 2.5 * len(images)), squeeze=False)
    black, white = black_white
    for row, (image, grad, after, (title, moved_title)) in enumerate(
        zip(images, grads, moved, titles, strict=True)
    ):
        limit = float(grad.abs().max())
        axes[row, 0].imshow(image[0], cmap="gray", vmin=black, vmax=white)
        axes[row, 1].imshow(grad[0], cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes[row, 2].imshow(after[0], cmap="gray", vmin=black, vmax=white)
        for ax, text in zip(axes[row], (title, "d loss / d pixel", moved_title), strict=True):
            ax.set_title(text)
            ax.axis("off")
    fig.tight_layout()
    return fig


def channel_sum(inputs: torch.Tensor, kernels: torch.Tensor, bias: float = 0.0) -> Figure:
    """One output map of a conv layer: each input channel filtered by its own kernel, summed."""
    channels, k = len(inputs), kernels.shape[-1]
    parts = nn.functional.conv2d(inputs[None], kernels[:, None], padding=k // 2, groups=channels)
    parts = parts[0]
    fig, axes = plt.subplots(3, channels + 1, figsize=(2.3 * (channels + 1), 7))
    in_limit, part_limit = float(inputs.abs().max()), float(parts.abs().max())
    k_limit = float(kernels.abs().max()) or 1.0
    total = parts.sum(0) + bias
    for c in range(channels):
        axes[0, c].imshow(inputs[c], cmap="RdBu_r", vmin=-in_limit, vmax=in_limit)
        axes[0, c].set_title(f"input channel {c}", fontsize=10)
        axes[1, c].imshow(kernels[c], cmap="RdBu_r", vmin=-k_limit, vmax=k_limit)
        axes[1, c].set_title(f"its {k} x {k} kernel", fontsize=10)
        axes[2, c].imshow(parts[c], cmap="RdBu_r", vmin=-part_limit, vmax=part_limit)
        axes[2, c].set_title(f"channel {c} * kernel {c}", fontsize=10)
    limit = float(total.abs().max()) or 1.0
    axes[2, channels].imshow(total, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[2, channels].set_title("sum + bias: one output map", fontsize=10)
    axes[1, channels].text(0.5, 0.5, "sum over the\ninput channels\n↓", ha="center", va="center")
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def padding_stride(n: int = 5, k: int = 3, padding: int = 1, stride: int = 2) -> Figure:
    """A k x k window on an n x n input framed by zeros, moving by stride; outputs numbered."""
    size, out = n + 2 * padding, (n + 2 * padding - k) // stride + 1
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(8, 4), gridspec_kw={"width_ratios": [size, out + 1]}
    )
    for r in range(size):
        for c in range(size):
            inside = padding <= r < padding + n and padding <= c < padding + n
            left.add_patch(Rectangle((c, r), 1, 1, fc="#d5e1ef" if inside else "white", ec="0.6"))
            if not inside:
                left.text(c + 0.5, r + 0.5, "0", ha="center", va="center", color="0.6", fontsize=9)
    colors = {0: "#dd8452", 1: "#55a868", out: "#c44e52"}  # outputs 1, 2 and the next row's 1st
    for number in range(out * out):
        i, j = divmod(number, out)
        top, left_edge = i * stride, j * stride
        centre = (left_edge + k / 2, top + k / 2)
        left.text(*centre, str(number + 1), ha="center", va="center", fontweight="bold")
        right.add_patch(
            Rectangle((j, i), 1, 1, fc=colors.get(number, "white"), ec="0.3", alpha=0.8)
        )
        right.text(j + 0.5, i + 0.5, str(number + 1), ha="center", va="center", fontweight="bold")
        if number in colors:
            inset = 0.08 * (1 + list(colors).index(number))
            left.add_patch(
                Rectangle(
                    (left_edge + inset, top + inset),
                    k - 2 * inset,
                    k - 2 * inset,
                    fill=False,
                    ec=colors[number],
                    lw=2.5,
                )
            )
    left.set_title(f"input {n} x {n}, padding {padding}, {k} x {k} window, stride {stride}")
    right.set_title(f"output {out} x {out}")
    for ax, extent in ((left, size), (right, out)):
        ax.set(xlim=(-0.1, extent + 0.1), ylim=(extent + 0.1, -0.1), aspect="equal")
        ax.axis("off")
    fig.tight_layout()
    return fig


def data_parallel_step(processes: int = 4) -> Figure:
    """A DDP step on 2 processes (left) and the first step of a ring all-reduce (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    box = {"boxstyle": "round,pad=0.4", "facecolor": "#e8eef7", "edgecolor": "#4c72b0"}
    arrow = {"arrowstyle": "->", "color": "0.3"}

    def node(xy: tuple[float, float], text: str, to: Sequence[tuple[float, float]] = ()) -> None:
        left.text(*xy, text, ha="center", va="center", bbox=box, fontsize=9)
        bottom = (xy[0], xy[1] - 0.04 - 0.025 * text.count("\n"))  # arrows leave from below
        for target in to:
            style = {**arrow, "shrinkA": 0, "shrinkB": 2}
            left.annotate("", xy=target, xytext=bottom, arrowprops=style)

    node((0.5, 0.93), "one batch of 64 images", [(0.22, 0.77), (0.78, 0.77)])
    for x, r in ((0.22, 0), (0.78, 1)):
        node((x, 0.73), f"rank {r}: its 32 images", [(x, 0.61)])
        model = f"its copy of the model:\nforward, backward\n→ gradients $g_{r}$"
        node((x, 0.52), model, [(0.5, 0.33)])
        node((x, 0.07), "the same optimizer step\n→ equal copies")
    node((0.5, 0.29), "all-reduce: both get $(g_0 + g_1)\\,/\\,2$", [(0.22, 0.13), (0.78, 0.13)])
    left.set_title("One data-parallel step, 2 processes")

    angles = np.pi / 2 - 2 * np.pi * np.arange(processes) / processes
    centres = np.stack([np.cos(angles), np.sin(angles)], 1) * 0.7
    for r, (x, y) in enumerate(centres):
        colours = ["#c44e52" if c == r else "#dddddd" for c in range(processes)]
        chunks = x - 0.15 + 0.1 * np.arange(processes)
        right.bar(chunks, 0.16, width=0.09, bottom=y - 0.08, color=colours, align="edge")
        right.text(x, y + 0.16, f"rank {r}", ha="center", fontsize=9)
        step = centres[(r + 1) % processes] - (x, y)
        right.annotate("", xy=(x, y) + 0.75 * step, xytext=(x, y) + 0.25 * step, arrowprops=arrow)
    steps = processes - 1
    caption = (
        f"Each step, every rank sends one chunk (red: 1/{processes} of its gradients) to the next."
        "\n"
        f"{steps} steps add the chunks up, {steps} more pass the sums on:\n"
        "each rank sends 2 (N − 1) / N of the gradients in all."
    )
    right.text(0, -1.2, caption, ha="center", fontsize=9)
    right.set(xlim=(-1.2, 1.2), ylim=(-1.25, 1.0), aspect="equal")
    right.set_title(f"A ring all-reduce, {processes} processes: its first step")
    for ax in (left, right):
        ax.axis("off")
    fig.tight_layout()
    return fig


def decision_boundaries(
    points: torch.Tensor,
    labels: torch.Tensor,
    scores: dict[str, Callable[[torch.Tensor], torch.Tensor]],
) -> Figure:
    """2-D points by label, and where each score is positive (shaded), one panel per score."""
    low, high = points.min(0).values.tolist(), points.max(0).values.tolist()
    gx, gy = torch.meshgrid(
        torch.linspace(low[0], high[0], 300), torch.linspace(low[1], high[1], 300), indexing="xy"
    )
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    fig, axes = plt.subplots(1, len(scores), figsize=(4.5 * len(scores), 3.4), squeeze=False)
    for ax, (name, score) in zip(axes[0], scores.items(), strict=True):
        positive = (score(grid) > 0).float().reshape(gx.shape)
        ax.contourf(gx, gy, positive, levels=[-0.5, 0.5, 1.5], colors=["#f2f2f2", "#cfe3f5"])
        ax.contour(gx, gy, positive, levels=[0.5], colors="k", linewidths=1.5)
        for value, colour in ((True, "tab:blue"), (False, "tab:orange")):
            chosen = points[labels == value]
            ax.scatter(chosen[:, 0], chosen[:, 1], s=8, color=colour)
        right = ((score(points) > 0) == labels).float().mean().item()
        ax.set(title=f"{name}: {right:.0%} right", xlabel="$x_1$", ylabel="$x_2$")
    fig.tight_layout()
    return fig
