"""The hand-written backward pass against autograd: layer by layer, whole network, mutants."""

import pytest
import torch
import torch.nn.functional as F

from helpers import backprop
from helpers.models import SimpleNN

F64 = torch.float64
# the correct functions, kept before any test swaps in a broken one
LINEAR_BACKWARD = backprop.linear_backward
SOFTMAX_CE_BACKWARD = backprop.softmax_cross_entropy_backward


def autograd_grads(fn, *inputs):
    """d sum(fn(*inputs) * weights) / d inputs by autograd, with fixed random weights."""
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*inputs)
    upstream = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(9))
    grads = torch.autograd.grad(out, inputs, upstream)
    return upstream, grads


def close(a, b, tol=1e-10):
    return (a - b).abs().max().item() < tol


# ---------------------------------------------------------------------------------------------
# One layer at a time, random shapes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_linear_backward(seed):
    g = torch.Generator().manual_seed(seed)
    batch, n_in, n_out = (int(v) for v in torch.randint(1, 40, (3,), generator=g))
    x, w, b = (
        torch.randn(s, dtype=F64, generator=g) for s in [(batch, n_in), (n_out, n_in), n_out]
    )
    upstream, expected = autograd_grads(F.linear, x, w, b)
    got = backprop.linear_backward(upstream, backprop.linear_forward(x, w, b)[1])
    assert close(backprop.linear_forward(x, w, b)[0], F.linear(x, w, b))
    assert all(close(a, e) for a, e in zip(got, expected, strict=True))


@pytest.mark.parametrize("seed", range(4))
def test_batchnorm_backward_with_random_scale_and_shift(seed):
    g = torch.Generator().manual_seed(seed)
    batch, width = int(torch.randint(2, 70, (1,), generator=g)), int(torch.randint(1, 30, (1,)))
    x = 3 * torch.randn(batch, width, dtype=F64, generator=g) + 2
    gamma, beta = torch.randn(width, dtype=F64, generator=g), torch.randn(width, dtype=F64)

    def reference(x, gamma, beta):
        return F.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)

    upstream, expected = autograd_grads(reference, x, gamma, beta)
    out, cache = backprop.batchnorm_forward(x, gamma, beta)
    assert close(out, reference(x, gamma, beta))
    got = backprop.batchnorm_backward(upstream, cache)
    assert all(close(a, e) for a, e in zip(got, expected, strict=True))


def test_batchnorm_matches_the_module_in_training_mode_and_its_running_stats_do_not_matter():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(5).double()
    x = torch.randn(8, 5, dtype=F64)
    out, _ = backprop.batchnorm_forward(x, bn.weight.detach(), bn.bias.detach(), bn.eps)
    assert close(out, bn(x))


def test_relu_backward_passes_nothing_at_exactly_zero():
    x = torch.tensor([[-1.0, 0.0, 2.0], [0.0, 3.0, -0.5]], dtype=F64)
    upstream, (expected,) = autograd_grads(F.relu, x)
    got = backprop.relu_backward(upstream, backprop.relu_forward(x)[1])
    assert torch.equal(got, expected)
    assert got[0, 1] == 0 and got[1, 0] == 0  # PyTorch's convention: relu'(0) = 0


@pytest.mark.parametrize("p", [0.5, 0.2, 0.0])
def test_dropout_backward_with_a_fixed_mask_that_drops_a_whole_unit(p):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, dtype=F64, generator=g)
    keep = (torch.rand(6, 4, generator=g) > p).to(F64)
    keep[:, 2] = 0  # unit 2 is dropped for every sample
    upstream, (expected,) = autograd_grads(lambda x: x * keep / (1 - p), x)
    out, cache = backprop.dropout_forward(x, keep, p)
    got = backprop.dropout_backward(upstream, cache)
    assert close(got, expected)
    assert (got[:, 2] == 0).all() and (out[:, 2] == 0).all()


@pytest.mark.parametrize("batch, classes", [(1, 2), (7, 10), (64, 10), (33, 3)])
def test_softmax_cross_entropy(batch, classes):
    g = torch.Generator().manual_seed(batch)
    logits = 5 * torch.randn(batch, classes, dtype=F64, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    upstream, (expected,) = autograd_grads(lambda z: F.cross_entropy(z, y), logits)
    loss, cache = backprop.softmax_cross_entropy_forward(logits, y)
    assert close(loss, F.cross_entropy(logits, y))
    got = backprop.softmax_cross_entropy_backward(upstream, cache)
    assert close(got, expected)
    assert close(got.sum(dim=1), torch.zeros(batch, dtype=F64))  # softmax - one-hot sums to 0


# ---------------------------------------------------------------------------------------------
# The whole network
# ---------------------------------------------------------------------------------------------


def random_network(seed, batch, n_in, hidden, classes, dtype=F64, p=0.5):
    """SimpleNN with every parameter random (so gamma != 1 and beta != 0), data, and masks."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SimpleNN(n_in, hidden, classes, dropout=p).to(dtype)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=g))
    x = torch.randn(batch, n_in, dtype=dtype, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    masks = [
        (torch.rand(batch, width, generator=g) > p).to(dtype) for width in (hidden, hidden // 2)
    ]
    return model, x, y, masks


def autograd_network(model, x, y, masks):
    model.zero_grad(set_to_none=True)
    loss = backprop.functional_loss(model, x, y, masks)
    loss.backward()
    return loss, {name: p.grad for name, p in model.named_parameters()}


def network_error(model, x, y, masks):
    loss, grads = backprop.network_forward_backward(model, x, y, masks)
    ref_loss, ref = autograd_network(model, x, y, masks)
    assert list(grads) == [name for name, _ in model.named_parameters()]
    return max(abs(loss - ref_loss).item(), *backprop.max_abs_diff(grads, ref).values())


@pytest.mark.parametrize("seed", range(6))
def test_network_gradients_match_autograd_for_random_shapes(seed):
    g = torch.Generator().manual_seed(100 + seed)
    batch = int(torch.randint(2, 50, (1,), generator=g))
    n_in, hidden, classes = (int(v) for v in torch.randint(2, 30, (3,), generator=g))
    hidden += 2  # hidden // 2 >= 1
    model, x, y, masks = random_network(seed, batch, n_in, hidden, classes)
    assert network_error(model, x, y, masks) < 1e-10


def test_network_with_an_exactly_zero_relu_input_and_a_dropped_unit():
    model, x, y, masks = random_network(7, batch=16, n_in=20, hidden=12, classes=5)
    with torch.no_grad():
        # unit 3 of fc1: output 0 for every sample, so BatchNorm gives beta = 0 there: ReLU(0)
        model.fc1.weight[3] = 0
        model.fc1.bias[3] = 0
        model.bn1.bias[3] = 0
    masks[1][:, 4] = 0  # unit 4 of the second layer dropped for the whole batch
    pre_relu = backprop.batchnorm_forward(
        F.linear(x, model.fc1.weight, model.fc1.bias), model.bn1.weight, model.bn1.bias
    )[0]
    assert (pre_relu[:, 3] == 0).all()
    assert network_error(model, x, y, masks) < 1e-10
    _, grads = backprop.network_forward_backward(model, x, y, masks)
    assert grads["bn1.bias"][3] == 0 and grads["bn1.weight"][3] == 0
    assert (grads["fc2.weight"][4] == 0).all() and (grads["fc3.weight"][:, 4] == 0).all()


def test_the_real_model_on_real_dropout_masks_replayed_from_the_rng():
    model, x, y, _ = random_network(3, batch=32, n_in=50, hidden=16, classes=10)
    torch.manual_seed(42)
    masks = backprop.draw_masks(model, 32)
    torch.manual_seed(42)
    loss = F.cross_entropy(model(x), y)  # nn.Dropout draws its own masks: the same ones
    model.zero_grad(set_to_none=True)
    loss.backward()
    hand_loss, grads = backprop.network_forward_backward(model, x, y, masks)
    assert abs(hand_loss - loss).item() < 1e-10
    assert max(backprop.max_abs_diff(grads, dict(model.named_parameters())).values()) > 0
    ref = {name: p.grad for name, p in model.named_parameters()}
    assert max(backprop.max_abs_diff(grads, ref).values()) < 1e-10


def test_float32_within_the_stated_tolerance():
    model, x, y, masks = random_network(
        5, batch=64, n_in=784, hidden=128, classes=10, dtype=torch.float32
    )
    _, grads = backprop.network_forward_backward(model, x, y, masks)
    _, ref = autograd_network(model, x, y, masks)
    for layer in ("fc1", "fc2", "fc3", "bn1", "bn2"):
        scale = max(ref[f"{layer}.{k}"].abs().max() for k in ("weight", "bias"))
        for k in ("weight", "bias"):
            name = f"{layer}.{k}"
            assert (grads[name] - ref[name]).abs().max() / scale < 1e-5, name


def test_the_bias_before_batchnorm_has_zero_gradient():
    model, x, y, masks = random_network(2, batch=20, n_in=30, hidden=10, classes=4)
    _, grads = backprop.network_forward_backward(model, x, y, masks)
    assert grads["fc1.bias"].abs().max() < 1e-12 and grads["fc2.bias"].abs().max() < 1e-12
    assert grads["fc3.bias"].abs().max() > 1e-3


def test_upstream_gradients_are_reported_layer_by_layer():
    model, x, y, masks = random_network(4, batch=10, n_in=12, hidden=8, classes=3)
    flow = {}
    backprop.network_forward_backward(model, x, y, masks, upstream=flow)
    assert list(flow) == [
        "fc3",
        "dropout2",
        "relu2",
        "bn2",
        "fc2",
        "dropout1",
        "relu1",
        "bn1",
        "fc1",
    ]
    assert flow["fc3"].shape == (10, 3) and flow["fc1"].shape == (10, 8)


# ---------------------------------------------------------------------------------------------
# The checks have teeth: a wrong sign or a missing term is caught
# ---------------------------------------------------------------------------------------------


def bn_without_mean_term(dy, cache):
    x_hat, gamma, inv_std = cache
    dx_hat = dy * gamma
    dx = inv_std * (dx_hat - x_hat * (dx_hat * x_hat).mean(dim=0))
    return dx, (dy * x_hat).sum(dim=0), dy.sum(dim=0)


def bn_without_variance_term(dy, cache):
    x_hat, gamma, inv_std = cache
    dx_hat = dy * gamma
    dx = inv_std * (dx_hat - dx_hat.mean(dim=0))
    return dx, (dy * x_hat).sum(dim=0), dy.sum(dim=0)


def bn_as_if_constant_statistics(dy, cache):
    x_hat, gamma, inv_std = cache
    return inv_std * dy * gamma, (dy * x_hat).sum(dim=0), dy.sum(dim=0)


def linear_wrong_sign(dy, cache):
    dx, dw, db = LINEAR_BACKWARD(dy, cache)
    return -dx, dw, db


def relu_one_at_zero(dy, cache):
    (x,) = cache
    return dy * (x >= 0)


def dropout_unscaled(dy, cache):
    (scale,) = cache
    return dy * (scale > 0)


def ce_not_averaged(dloss, cache):
    p, y = cache
    return dloss * (p - F.one_hot(y, p.shape[1]).to(p.dtype))


def ce_wrong_sign(dloss, cache):
    return -SOFTMAX_CE_BACKWARD(dloss, cache)


MUTANTS = [
    ("batchnorm_backward", bn_without_mean_term),
    ("batchnorm_backward", bn_without_variance_term),
    ("batchnorm_backward", bn_as_if_constant_statistics),
    ("linear_backward", linear_wrong_sign),
    ("relu_backward", relu_one_at_zero),
    ("dropout_backward", dropout_unscaled),
    ("softmax_cross_entropy_backward", ce_not_averaged),
    ("softmax_cross_entropy_backward", ce_wrong_sign),
]


@pytest.mark.parametrize("name, mutant", MUTANTS, ids=[m.__name__ for _, m in MUTANTS])
def test_a_broken_backward_is_caught(monkeypatch, name, mutant):
    model, x, y, masks = random_network(7, batch=16, n_in=20, hidden=12, classes=5)
    with torch.no_grad():  # an exactly-zero ReLU input, so relu'(0) matters
        model.fc1.weight[3] = 0
        model.fc1.bias[3] = 0
        model.bn1.bias[3] = 0
    assert network_error(model, x, y, masks) < 1e-10
    monkeypatch.setattr(backprop, name, mutant)
    assert network_error(model, x, y, masks) > 1e-6


def test_central_difference_agrees_with_the_hand_gradient_in_float64():
    model, x, y, masks = random_network(8, batch=12, n_in=10, hidden=6, classes=4)
    _, grads = backprop.network_forward_backward(model, x, y, masks)
    params = dict(model.named_parameters())

    def loss():
        return backprop.functional_loss(model, x, y, masks)

    for name, index in [("fc1.weight", (2, 5)), ("bn2.weight", (1,)), ("fc3.bias", (0,))]:
        before = params[name].detach().clone()
        numeric = backprop.central_difference(loss, params[name], index, h=1e-6)
        assert torch.equal(params[name].detach(), before)  # restored
        assert abs(numeric - grads[name][index].item()) < 1e-7


def test_circuit_figure_writes_every_value_and_gradient_on_its_wire():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    values = {"a": 2, "b": 3, "u": 6, "z": 8}
    grads = {"z": 1, "u": 1, "b": 2, "a via +": 1, "a via *": 3}
    fig = backprop.circuit_figure(values, grads)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("1") == 3 and {"2", "3", "6", "8"} <= set(texts)
    assert "∂z/∂a = 1 + 3 = 4" in texts
    plt.close(fig)
