"""Convolutions by hand (chapter 09): the loops agree with PyTorch, the counts with measurement."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import conv, graph, models


@pytest.mark.parametrize(
    ("stride", "padding", "kernel"), [(1, 0, 3), (2, 1, 3), (1, 2, 5), (2, 2, 5)]
)
def test_conv_by_hand_matches_f_conv2d(stride, padding, kernel):
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(3, 11, 13, generator=gen)
    weight = torch.randn(4, 3, kernel, kernel, generator=gen)
    bias = torch.randn(4, generator=gen)
    mine = conv.conv2d_by_hand(image, weight, bias, stride, padding)
    torch_ = F.conv2d(image[None], weight, bias, stride=stride, padding=padding)[0]
    assert mine.shape == torch_.shape
    torch.testing.assert_close(mine, torch_, rtol=1e-5, atol=1e-5)


def test_conv_by_hand_does_not_flip_the_filter():
    image = torch.zeros(1, 3, 3)
    image[0, 0, 0] = 1.0  # a single lit pixel in the top-left corner
    weight = torch.arange(9.0).reshape(1, 1, 3, 3)
    # the one window that covers the whole image multiplies pixel (0, 0) by weight (0, 0)
    assert conv.conv2d_by_hand(image, weight).item() == weight[0, 0, 0, 0].item()


def test_conv_by_hand_names_the_shapes_it_needs():
    with pytest.raises(ValueError, match=r"\(C_in, H, W\).*\(2, 5, 5\).*\(1, 1, 3, 3\)"):
        conv.conv2d_by_hand(torch.zeros(2, 5, 5), torch.zeros(1, 1, 3, 3))


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding"),
    [(28, 5, 2, 2), (14, 3, 2, 1), (28, 3, 1, 1), (28, 5, 1, 0), (32, 5, 1, 0), (27, 4, 3, 1)],
)
def test_output_size_is_what_nn_conv2d_produces(size, kernel, stride, padding):
    layer = nn.Conv2d(1, 1, kernel, stride=stride, padding=padding)
    out = layer(torch.zeros(1, 1, size, size))
    assert out.shape[-1] == conv.output_size(size, kernel, stride, padding)


def test_parameters_and_flops_agree_with_pytorch_and_flop_counter():
    layer = nn.Conv2d(32, 64, 3, stride=2, padding=1)
    assert sum(p.numel() for p in layer.parameters()) == conv.conv_parameters(32, 64, 3)
    assert conv.conv_parameters(1, 32, 5, bias=False) == 800
    flops = graph.measure_flops(lambda: layer(torch.zeros(1, 32, 14, 14)))["Global"]
    assert sum(flops.values()) == conv.conv_flops(32, 64, 3, 7, 7) == 1_806_336


def test_receptive_field_of_small_cnn_by_formula_and_by_gradient():
    assert conv.receptive_field([(5, 2), (3, 2)]) == [(5, 2), (9, 4)]
    features = models.SmallCNN().features
    inner = conv.input_region(features, (0, 3, 3))  # a unit away from the border
    rows, cols = inner.nonzero().unbind(1)
    assert inner.sum() == 81 and rows.max() - rows.min() == 8 and cols.max() - cols.min() == 8
    assert (rows.min(), cols.min()) == (3 * 4 - 4, 3 * 4 - 4)  # centre 4 * 3, minus 9 // 2
    corner = conv.input_region(features, (5, 0, 0))  # the padding hides part of the field
    assert corner.sum() == 25


def test_input_region_leaves_the_model_alone():
    model = models.SmallCNN().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.features[1].running_mean.fill_(3.0)
    before["features.1.running_mean"].fill_(3.0)
    conv.input_region(model.features, (0, 2, 2))
    assert model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
