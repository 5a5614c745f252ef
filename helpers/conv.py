"""Convolutions by hand: the arithmetic of a conv layer and what one unit can see (chapter 09).

`conv2d_by_hand` is the definition written as loops, to be checked against `F.conv2d`;
`output_size`, `conv_parameters` and `conv_flops` count what a layer produces and costs;
`receptive_field` computes how much of the image a unit sees, and `input_region` measures it
with a backward pass.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def conv2d_by_hand(
    image: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    padding: int = 0,
) -> torch.Tensor:
    """A 2-D convolution as loops: (C_in, H, W) and (C_out, C_in, k, k) -> (C_out, H_out, W_out).

    Each output value is the sum of a k x k window of every input channel, multiplied element by
    element with one filter. The window moves `stride` pixels at a time over the image, framed
    by `padding` zeros. As in PyTorch, the filter is not flipped (strictly, a cross-correlation).
    """
    if image.dim() != 3 or weight.dim() != 4 or weight.shape[1] != image.shape[0]:
        raise ValueError(
            f"expected an image (C_in, H, W) and filters (C_out, C_in, k, k) with the same C_in; "
            f"got {tuple(image.shape)} and {tuple(weight.shape)}"
        )
    c_out, _, k, _ = weight.shape
    x = nn.functional.pad(image, (padding, padding, padding, padding))
    h_out = output_size(image.shape[1], k, stride, padding)
    w_out = output_size(image.shape[2], k, stride, padding)
    out = torch.zeros(c_out, h_out, w_out, dtype=image.dtype)
    for c in range(c_out):
        for i in range(h_out):
            for j in range(w_out):
                window = x[:, i * stride : i * stride + k, j * stride : j * stride + k]
                out[c, i, j] = (window * weight[c]).sum()
        if bias is not None:
            out[c] += bias[c]
    return out


def output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Positions a k-wide window takes along `size` pixels: floor((n + 2p - k) / s) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def conv_parameters(c_in: int, c_out: int, kernel: int, bias: bool = True) -> int:
    """Weights of a conv layer: one k x k filter per input and output channel, plus biases.

    It does not depend on the image's size: the same filters are used at every position.
    """
    return c_out * c_in * kernel * kernel + (c_out if bias else 0)


def conv_flops(c_in: int, c_out: int, kernel: int, h_out: int, w_out: int) -> int:
    """Forward FLOPs of a conv layer on one image: a multiply and an add per weight per position."""
    return 2 * c_out * c_in * kernel * kernel * h_out * w_out


def receptive_field(layers: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(receptive field, jump) after each of the (kernel, stride) layers, in input pixels.

    A layer with kernel k widens the field by k - 1 of its input's steps, and the step between
    neighbouring units (the jump) grows by its stride: r += (k - 1) * d, then d *= s.
    """
    field, jump, out = 1, 1, []
    for kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
        out.append((field, jump))
    return out


def input_region(features: nn.Module, unit: tuple[int, int, int], size: int = 28) -> torch.Tensor:
    """The input pixels that can change unit (channel, row, column) of `features`: a 0/1 mask.

    Measured with a backward pass: the gradient of that one unit with respect to the image is
    non-zero exactly where the unit looks. On a copy with positive weights, in eval mode, fed a
    blank image of ones (and BatchNorm's statistics reset), so that no ReLU switches a path off
    and no sum cancels by chance.
    """
    probe = copy.deepcopy(features).eval()
    with torch.no_grad():
        for p in probe.parameters():
            p.abs_()
    for m in probe.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()  # mean 0, variance 1: a positive input stays positive
    x = torch.ones(1, 1, size, size, requires_grad=True)
    c, i, j = unit
    probe(x)[0, c, i, j].backward()
    return (x.grad[0, 0] != 0).int()
