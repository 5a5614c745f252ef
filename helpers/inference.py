"""The trained model outside training: BatchNorm folded, exported, and fed a drawing (chapter 12).

`fold_batchnorm` merges an eval-mode BatchNorm into the Linear or conv layer before it, and
`folded` rebuilds the book's two networks that way, for inference only. `mnist_style` makes any
drawing look like an MNIST digit, as LeCun et al. made them; `export_weights` writes the folded
network as a header and plain float32 numbers, and `numpy_forward` runs those numbers again
without PyTorch, as the book's browser page does in JavaScript.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import nn

from helpers.data import SEED_MEAN, SEED_STD
from helpers.models import LeNetLike, SimpleNN, SmallCNN
from helpers.timing import side_by_side

FORMAT = "mnist-book-weights/1"

# ---------------------------------------------------------------------------------------------
# Folding BatchNorm
# ---------------------------------------------------------------------------------------------


def fold_batchnorm(
    layer: nn.Linear | nn.Conv2d, bn: nn.BatchNorm1d | nn.BatchNorm2d
) -> nn.Linear | nn.Conv2d:
    """`layer` then `bn` (in eval mode) as one layer: W' = γ/σ · W, b' = γ/σ · (b − μ) + β.

    In eval mode BatchNorm is a fixed affine map of each output feature, with σ = sqrt(var + ε)
    from its running statistics, so it can be multiplied into the weights once, after training.
    """
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(bn.running_mean)
    fused = copy.deepcopy(layer)
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)  # one scale per output row or filter
    fused.weight = nn.Parameter(layer.weight.detach() * scale.view(shape))
    fused.bias = nn.Parameter(scale * (bias - bn.running_mean) + bn.bias.detach())
    return fused


def folded(model: nn.Module) -> nn.Sequential:
    """An inference-only copy of one of the book's networks: BatchNorm folded in, Dropout gone.

    It knows `SimpleNN` (chapter 7), `SmallCNN` (chapter 9) and `LeNetLike` (chapter 10).

    Its logits equal the model's in eval mode, up to rounding; it cannot be trained further
    the same way (there is no BatchNorm left to normalize batches).
    """
    if isinstance(model, SimpleNN):
        return nn.Sequential(
            nn.Flatten(),
            fold_batchnorm(model.fc1, model.bn1),
            nn.ReLU(),
            fold_batchnorm(model.fc2, model.bn2),
            nn.ReLU(),
            copy.deepcopy(model.fc3),
        ).eval()
    if isinstance(model, (SmallCNN, LeNetLike)):
        f, c = model.features, model.classifier  # features: conv, BN, ReLU, twice, in both
        convolutions = [fold_batchnorm(f[0], f[1]), nn.ReLU()]
        convolutions += [fold_batchnorm(f[3], f[4]), nn.ReLU()]
        if isinstance(model, SmallCNN):
            head = [copy.deepcopy(c)]
        else:  # Linear, BN, ReLU, Dropout, Linear
            head = [fold_batchnorm(c[0], c[1]), nn.ReLU(), copy.deepcopy(c[4])]
        return nn.Sequential(*convolutions, nn.Flatten(), *head).eval()
    raise TypeError(f"folded() knows SimpleNN, SmallCNN and LeNetLike, not {type(model).__name__}")


# ---------------------------------------------------------------------------------------------
# A drawing, made to look like MNIST
# ---------------------------------------------------------------------------------------------


def area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resample `image` to height x width: each new pixel is the mean of the area it covers.

    Written out (no library), so that the browser's JavaScript can do exactly the same sums.
    """
    out = np.zeros((height, width))
    rows = _overlaps(image.shape[0], height)  # (new row, old row, share of the old row)
    cols = _overlaps(image.shape[1], width)
    for i, r, wr in rows:
        for j, c, wc in cols:
            out[i, j] += wr * wc * image[r, c]
    return out


def _overlaps(old: int, new: int) -> list[tuple[int, int, float]]:
    """(new index, old index, weight): how much of old pixel r falls into new pixel i, averaged."""
    step = old / new  # old pixels per new pixel
    pairs = []
    for i in range(new):
        start, end = i * step, (i + 1) * step
        for r in range(math.floor(start), min(old, math.ceil(end))):
            covered = min(end, r + 1) - max(start, r)
            if covered > 0:
                pairs.append((i, r, covered / step))
    return pairs


def mnist_style(ink: np.ndarray | torch.Tensor, box: int = 20, size: int = 28) -> np.ndarray:
    """A drawing as MNIST's digits were made: ink in [0, 1] -> a 28 x 28 image in [0, 1].

    LeCun et al.: the digit's bounding box is scaled to fit a 20 x 20 box, keeping its aspect
    ratio, then placed in the 28 x 28 field so that its centre of mass falls on the centre
    (pixel 14, 14, as in the data: the shift is a whole number of pixels, rounded).
    """
    ink = np.asarray(ink, dtype=np.float64)
    if ink.ndim != 2:
        raise ValueError(f"expected one grey image (H, W); got shape {ink.shape}")
    check_ink_range(ink)
    rows, cols = np.nonzero(ink > 0)
    if len(rows) == 0:
        raise ValueError("the drawing is blank: there is no ink to centre")
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = box / max(crop.shape)
    h, w = max(1, _round(crop.shape[0] * scale)), max(1, _round(crop.shape[1] * scale))
    small = np.clip(area_resize(crop, h, w), 0.0, 1.0)
    out = np.zeros((size, size))
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = small
    cy, cx = _centre_of_mass(out)
    dy, dx = _round(size / 2 - cy), _round(size / 2 - cx)
    dy = int(np.clip(dy, -top, size - top - h))  # never push ink out of the field
    dx = int(np.clip(dx, -left, size - left - w))
    return np.roll(out, (dy, dx), axis=(0, 1))


def check_ink_range(ink: np.ndarray) -> None:
    """Raise a ValueError unless every value of `ink` lies in [0, 1], as `mnist_style` needs."""
    low, high = (float(ink.min()), float(ink.max())) if ink.size else (0.0, 0.0)
    if low < 0 or high > 1:
        hint = "not normalized pixels" if low < 0 else "a drawing in bytes (0 to 255) as ink / 255"
        raise ValueError(f"ink runs from {low:g} to {high:g}: pass 0 (paper) to 1 (ink), {hint}")


def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) of the centre of mass, summed pixel by pixel in reading order.

    The order is the browser's: floating-point sums in another order (NumPy's are pairwise)
    can differ in the last bit, and a centre exactly between two pixels would round apart.
    """
    mass = rows = cols = 0.0
    for i, line in enumerate(image.tolist()):
        for j, value in enumerate(line):
            mass += value
            rows += i * value
            cols += j * value
    return rows / mass, cols / mass


def _round(value: float) -> int:
    """Halves rounded up, as JavaScript's Math.round (Python's round() sends them to even)."""
    return math.floor(value + 0.5)


def normalize(image: np.ndarray) -> np.ndarray:
    """The book's Normalize (chapter 01): (pixel - 0.1307) / 0.3081."""
    return (image - SEED_MEAN) / SEED_STD


# ---------------------------------------------------------------------------------------------
# The weights as plain numbers, and a forward pass without PyTorch
# ---------------------------------------------------------------------------------------------


def export_weights(network: nn.Sequential, name: str) -> tuple[dict, bytes]:
    """A folded network (`folded`) as a header (JSON-ready) and its numbers (float32 bytes).

    The header lists the layers in order; each Linear or conv layer names where its weight and
    bias lie in the bytes (`offset` and `length`, in floats). Little-endian float32, as a
    browser's `Float32Array` reads it: 4 bytes a number, a quarter of the size of JSON text.
    """
    layers, chunks, offset = [], [], 0
    for layer in network:
        if isinstance(layer, nn.ReLU | nn.Flatten):
            layers.append({"type": type(layer).__name__.lower()})
            continue
        if isinstance(layer, nn.Linear):
            entry = {"type": "linear", "in": layer.in_features, "out": layer.out_features}
        elif isinstance(layer, nn.Conv2d):
            entry = {
                "type": "conv2d",
                "in": layer.in_channels,
                "out": layer.out_channels,
                "kernel": layer.kernel_size[0],
                "stride": layer.stride[0],
                "padding": layer.padding[0],
            }
        else:
            raise TypeError(f"cannot export a {type(layer).__name__} layer")
        for part in ("weight", "bias"):
            values = getattr(layer, part).detach().cpu().numpy().astype("<f4").ravel()
            entry[part] = {"offset": offset, "length": len(values)}
            chunks.append(values.tobytes())
            offset += len(values)
        layers.append(entry)
    header = {"format": FORMAT, "name": name, "mean": SEED_MEAN, "std": SEED_STD}
    return {**header, "floats": offset, "layers": layers}, b"".join(chunks)


def _array(data: bytes, where: dict) -> np.ndarray:
    """The floats of one weight or bias, from the exported bytes."""
    return np.frombuffer(data, dtype="<f4", count=where["length"], offset=4 * where["offset"])


def numpy_forward(header: dict, data: bytes, images: np.ndarray) -> np.ndarray:
    """Logits for normalized images (N, 28, 28) from exported weights, in NumPy: no PyTorch.

    Linear is x W^T + b (chapter 05); a convolution is the sum over windows of section 9.1,
    computed as one matrix product over all windows (chapter 09, exercise 2).
    """
    if header.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} header (format: {header.get('format')!r})")
    if len(data) != 4 * header["floats"]:
        raise ValueError(f"expected {4 * header['floats']} bytes of weights, got {len(data)}")
    x = image_batch(images)[:, None]  # N x 1 x 28 x 28
    for layer in header["layers"]:
        kind = layer["type"]
        if kind == "flatten":
            x = x.reshape(len(x), -1)
        elif kind == "relu":
            x = np.maximum(x, 0)
        elif kind == "linear":
            w = _array(data, layer["weight"]).reshape(layer["out"], layer["in"])
            x = x.reshape(len(x), -1) @ w.T + _array(data, layer["bias"])
        elif kind == "conv2d":
            x = _conv2d(x, layer, data)
        else:
            raise ValueError(f"unknown layer type {kind!r}")
    return x


def image_batch(images: np.ndarray) -> np.ndarray:
    """`images` as float32 (N, 28, 28), from (N, 28, 28) or (N, 1, 28, 28); else a ValueError."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(
            f"images has shape {x.shape}: pass a batch of normalized images, (N, 28, 28) or "
            "(N, 1, 28, 28) (one image as images[None])"
        )
    return x


def _conv2d(x: np.ndarray, layer: dict, data: bytes) -> np.ndarray:
    """A convolution as windows times filters (im2col), on an (N, C, H, W) array."""
    k, s, p = layer["kernel"], layer["stride"], layer["padding"]
    w = _array(data, layer["weight"]).reshape(layer["out"], -1)  # C_out x (C_in k k)
    x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    n, c, h, width = x.shape
    h_out, w_out = (h - k) // s + 1, (width - k) // s + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n, h_out * w_out, c * k * k)
    out = cols @ w.T + _array(data, layer["bias"])  # N x positions x C_out
    return out.transpose(0, 2, 1).reshape(n, layer["out"], h_out, w_out)


# ---------------------------------------------------------------------------------------------
# Latency
# ---------------------------------------------------------------------------------------------


def latency(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of one call of `fn`, after `warmup` calls (the median shrugs off a busy
    moment of a shared machine; the first calls pay for allocation and caches)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# The browser's bundle
# ---------------------------------------------------------------------------------------------

WEB_GLOBAL = "MNIST_BOOK_WEIGHTS"


def web_bundle(models: dict[str, tuple[dict, bytes]], examples: np.ndarray, labels: list) -> str:
    """The models and some test digits as one plain script for the browser page.

    A script (not JSON fetched at run time) so that the page works from a copy of the built book
    opened from disk, where browsers refuse `fetch`. `models` maps a key to `export_weights`'s
    (header, bytes); `examples` are uint8 images (N, 28, 28) with their `labels`.
    """
    payload = {key: {**header, "data": _base64(blob)} for key, (header, blob) in models.items()}
    images = np.ascontiguousarray(examples, dtype=np.uint8)
    payload["examples"] = {"labels": [int(v) for v in labels], "images": _base64(images.tobytes())}
    text = json.dumps(payload, separators=(",", ":"))
    note = "// Written by `python scripts/book_tools.py export-web` (helpers.inference.web_bundle)."
    return f"{note}\nwindow.{WEB_GLOBAL} = {text};\n"


def read_web_bundle(text: str) -> dict:
    """The payload of a `web_bundle` script, with each model's bytes decoded (for tests)."""
    payload = json.loads(text.split(" = ", 1)[1].rstrip().rstrip(";"))
    for key, value in payload.items():
        if key != "examples":
            value["data"] = base64.b64decode(value["data"])
    return payload


def _base64(blob: bytes) -> str:
    return base64.b64encode(blob).decode("ascii")


def latencies(calls: dict[str, Callable[[], object]], rounds: int = 5, repeats: int = 30) -> dict:
    """Seconds per call of each of `calls`, measured side by side: the best of `rounds` medians.

    The rounds take turns (`helpers.timing.side_by_side`, chapter 11), so a busy moment of a
    shared machine slows one round of every call, not every round of one; the best round is the
    least disturbed.
    """
    timed = {name: partial(_median_call, fn, repeats) for name, fn in calls.items()}
    runs = side_by_side(timed, rounds, warmup=False)
    return {name: min(r["seconds"] for r in results) for name, results in runs.items()}


def _median_call(fn: Callable[[], object], repeats: int) -> dict:
    return {"seconds": latency(fn, repeats=repeats)}
