"""Inference (chapter 12): folding BatchNorm, MNIST-style preprocessing, exported weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from helpers import artifacts, data, inference
from helpers.models import LeNetLike, SimpleNN, SmallCNN
from helpers.recipe import BOOK_CNN_RECIPE, BOOK_RECIPE


def _with_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """`model` in eval mode, with BatchNorm statistics and parameters far from the defaults."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen))
            m.running_var.copy_(torch.rand(n, generator=gen) * 3 + 0.1)
            with torch.no_grad():
                m.weight.copy_(torch.randn(n, generator=gen))
                m.bias.copy_(torch.randn(n, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def test_digits() -> np.ndarray:
    return data.mnist_datasets(raw=True)[1].data[:300].double().numpy() / 255


def test_fold_batchnorm_is_pytorchs_fusion_for_linear_and_conv():
    model = _with_statistics(SimpleNN())
    mine = inference.fold_batchnorm(model.fc1, model.bn1)
    theirs = fuse_linear_bn_eval(model.fc1, model.bn1)
    torch.testing.assert_close(mine.weight, theirs.weight)
    torch.testing.assert_close(mine.bias, theirs.bias)
    cnn = _with_statistics(SmallCNN())
    mine = inference.fold_batchnorm(cnn.features[0], cnn.features[1])  # a conv without bias
    theirs = fuse_conv_bn_eval(cnn.features[0], cnn.features[1])
    torch.testing.assert_close(mine.weight, theirs.weight)
    torch.testing.assert_close(mine.bias, theirs.bias)
    assert cnn.features[0].bias is None, "the original layer is left as it was"


@pytest.mark.parametrize("model_class", [SimpleNN, SmallCNN, LeNetLike])
def test_folded_network_computes_the_models_eval_logits(model_class):
    model = _with_statistics(model_class())
    net = inference.folded(model)
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-5)
    kinds = {type(m) for m in net.modules()}
    assert not kinds & {nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout}


def test_folded_refuses_a_model_it_does_not_know():
    with pytest.raises(TypeError, match="SmallCNN and LeNetLike, not Linear"):
        inference.folded(nn.Linear(2, 2))


def test_area_resize_averages_blocks_and_keeps_the_mean():
    image = np.arange(36.0).reshape(6, 6)
    half = inference.area_resize(image, 3, 3)
    np.testing.assert_allclose(half, image.reshape(3, 2, 3, 2).mean(axis=(1, 3)))
    np.testing.assert_allclose(inference.area_resize(image, 6, 6), image)
    odd = inference.area_resize(image, 4, 5)  # fractional overlaps
    assert odd.shape == (4, 5) and np.isclose(odd.mean(), image.mean())


def test_a_test_digit_comes_back_as_itself(test_digits):
    same = [np.array_equal(inference.mnist_style(x), x) for x in test_digits]
    assert np.mean(same) > 0.95, "MNIST's own digits are already fitted and centred"


def test_a_digit_drawn_twice_as_large_anywhere_on_a_canvas_becomes_the_digit(test_digits):
    for x in test_digits[:20]:
        canvas = np.zeros((90, 70))
        canvas[7:63, 11:67] = np.kron(x, np.ones((2, 2)))  # 56 x 56, off centre
        np.testing.assert_allclose(inference.mnist_style(canvas), inference.mnist_style(x))


def test_mnist_style_says_what_is_wrong_with_its_input():
    with pytest.raises(ValueError, match="blank"):
        inference.mnist_style(np.zeros((28, 28)))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        inference.mnist_style(np.zeros((1, 28, 28)))


@pytest.mark.parametrize("recipe", [BOOK_RECIPE, BOOK_CNN_RECIPE], ids=lambda r: r.model)
def test_exported_weights_reproduce_the_book_models_logits_without_torch(recipe, test_digits):
    model = artifacts.best_model(recipe)
    header, blob = inference.export_weights(inference.folded(model), recipe.model)
    images = inference.normalize(test_digits)
    with torch.no_grad():
        expected = model(torch.from_numpy(images).float().unsqueeze(1)).numpy()
    logits = inference.numpy_forward(header, blob, images)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
    assert (logits.argmax(1) == expected.argmax(1)).all()
    assert len(blob) == 4 * header["floats"]


def test_numpy_forward_refuses_broken_weights():
    header, blob = inference.export_weights(inference.folded(SimpleNN().eval()), "SimpleNN")
    # 109,770 parameters minus BatchNorm's 2 x (128 + 64) = 109,386 floats of 4 bytes
    with pytest.raises(ValueError, match="expected 437544 bytes"):
        inference.numpy_forward(header, blob[:-4], np.zeros((1, 28, 28)))
    with pytest.raises(ValueError, match="not a mnist-book-weights/1 header"):
        inference.numpy_forward({**header, "format": "other"}, blob, np.zeros((1, 28, 28)))


def test_latency_is_the_median_after_warmup():
    calls = []
    seconds = inference.latency(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7 and 0 <= seconds < 0.01


def test_latencies_take_turns_and_keep_the_best_round():
    order = []
    times = inference.latencies(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=2, repeats=1
    )
    assert set(times) == {"a", "b"} and all(t >= 0 for t in times.values())
    assert order == ["a"] * 4 + ["b"] * 4 + ["a"] * 4 + ["b"] * 4  # (3 warm-up + 1) per turn


def test_numpy_forward_takes_images_with_or_without_a_channel_axis_and_names_other_shapes():
    model = inference.folded(SmallCNN().eval())
    header, blob = inference.export_weights(model, "SmallCNN")
    images = np.random.default_rng(0).normal(size=(3, 28, 28)).astype(np.float32)
    plain = inference.numpy_forward(header, blob, images)
    np.testing.assert_array_equal(inference.numpy_forward(header, blob, images[:, None]), plain)
    for shape in [(28, 28), (3, 2, 28, 28), (3, 784)]:
        with pytest.raises(ValueError, match=r"images has shape .*: pass a batch of normalized"):
            inference.numpy_forward(header, blob, np.zeros(shape))


@pytest.mark.parametrize(
    ("ink", "message"),
    [
        (np.full((30, 30), 255, dtype=np.uint8), r"ink runs from 255 to 255: .* ink / 255"),
        (np.eye(30) * 200.0, r"ink runs from 0 to 200: pass 0 \(paper\) to 1 \(ink\)"),
        (inference.normalize(np.eye(28)), r"ink runs from -0.424.*not normalized pixels"),
    ],
)
def test_mnist_style_names_ink_outside_zero_to_one(ink, message):
    with pytest.raises(ValueError, match=message):
        inference.mnist_style(ink)
    if ink.min() >= 0:
        assert inference.mnist_style(ink / 255).max() > 0  # as the message says
