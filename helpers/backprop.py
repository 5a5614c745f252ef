"""Backpropagation by hand, with plain tensor operations (chapter 05).

Every layer of the seed's network is a pair of functions, in the style of the CS231n assignments
(`affine_forward` / `affine_backward`):

- `<layer>_forward(...)` returns `(output, cache)`: the result, and what the backward pass needs;
- `<layer>_backward(upstream, cache)` takes the gradient of the loss with respect to the layer's
  output (the *upstream* gradient) and returns the gradients with respect to its inputs and
  parameters: local derivative times upstream gradient, which is the chain rule.

`network_forward_backward` chains them into a full training step of `SimpleNN` and returns the
loss and a gradient for every parameter, named as `model.named_parameters()` names them.
`functional_loss` computes the same loss with PyTorch's own operations, so that autograd can check
the hand-written gradients with the same Dropout masks. No forward or backward function here uses
autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from helpers.models import SimpleNN

Cache = tuple[torch.Tensor, ...]

# ---------------------------------------------------------------------------------------------
# One layer at a time
# ---------------------------------------------------------------------------------------------


def linear_forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, Cache]:
    """y = x W^T + b, as nn.Linear: x is (batch, in), W is (out, in), b is (out,)."""
    return x @ w.T + b, (x, w)


def linear_backward(dy: torch.Tensor, cache: Cache) -> tuple[torch.Tensor, ...]:
    """(dx, dW, db). Each output y[n, j] = sum_i x[n, i] W[j, i] + b[j] is used once per sample."""
    x, w = cache
    dx = dy @ w  # dy[n, j] flows back to x[n, i] through W[j, i]
    dw = dy.T @ x  # W[j, i] is used by every sample: sum over the batch
    db = dy.sum(dim=0)  # so is b[j]
    return dx, dw, db


def relu_forward(x: torch.Tensor) -> tuple[torch.Tensor, Cache]:
    """max(0, x)."""
    return x.clamp(min=0), (x,)


def relu_backward(dy: torch.Tensor, cache: Cache) -> torch.Tensor:
    """The local derivative is 1 where x > 0 and 0 elsewhere, including x == 0 (as PyTorch)."""
    (x,) = cache
    return dy * (x > 0)


def dropout_forward(x: torch.Tensor, keep: torch.Tensor, p: float) -> tuple[torch.Tensor, Cache]:
    """Dropout with a given mask (1 = keep, 0 = drop), scaled by 1/(1-p) as nn.Dropout does."""
    scale = keep / (1 - p)
    return x * scale, (scale,)


def dropout_backward(dy: torch.Tensor, cache: Cache) -> torch.Tensor:
    """A multiplication by a constant: dropped units pass back nothing, kept ones 1/(1-p)."""
    (scale,) = cache
    return dy * scale


def batchnorm_forward(
    x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, Cache]:
    """BatchNorm1d in training mode: normalize each feature with its batch mean and (biased)
    variance, then scale by gamma and shift by beta. (The running statistics nn.BatchNorm1d
    also updates take no part in the loss, so they have no gradient and are left out.)"""
    mean = x.mean(dim=0)
    var = x.var(dim=0, unbiased=False)
    inv_std = 1 / torch.sqrt(var + eps)
    x_hat = (x - mean) * inv_std
    return gamma * x_hat + beta, (x_hat, gamma, inv_std)


def batchnorm_backward(dy: torch.Tensor, cache: Cache) -> tuple[torch.Tensor, ...]:
    """(dx, dgamma, dbeta). Every x[n] also moves the batch mean and variance, which every other
    sample's x_hat depends on: those two paths are the two subtracted terms."""
    x_hat, gamma, inv_std = cache
    dgamma = (dy * x_hat).sum(dim=0)
    dbeta = dy.sum(dim=0)
    dx_hat = dy * gamma
    dx = inv_std * (dx_hat - dx_hat.mean(dim=0) - x_hat * (dx_hat * x_hat).mean(dim=0))
    return dx, dgamma, dbeta


def softmax_cross_entropy_forward(
    logits: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, Cache]:
    """Mean over the batch of -log softmax(logits)[y], as F.cross_entropy (no softmax in the
    model: the loss applies it)."""
    log_p = logits - logits.logsumexp(dim=1, keepdim=True)  # log-softmax, computed stably
    loss = -log_p[torch.arange(len(y)), y].mean()
    return loss, (log_p.exp(), y)


def softmax_cross_entropy_backward(dloss: torch.Tensor | float, cache: Cache) -> torch.Tensor:
    """d loss / d logits = (softmax - one_hot(y)) / batch, times the upstream gradient."""
    p, y = cache
    one_hot = F.one_hot(y, num_classes=p.shape[1]).to(p.dtype)
    return dloss * (p - one_hot) / len(y)


# ---------------------------------------------------------------------------------------------
# The whole network
# ---------------------------------------------------------------------------------------------


def network_forward_backward(
    model: SimpleNN,
    x: torch.Tensor,
    y: torch.Tensor,
    masks: Sequence[torch.Tensor],
    upstream: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training step of `model` by hand: (loss, gradients keyed like 'fc1.weight').

    `masks` are the two Dropout keep-masks, shapes (batch, hidden) and (batch, hidden // 2). The
    weights are read from `model` (in its dtype) and never changed. If `upstream` is a dict, it
    receives the gradient arriving at each layer's output, from 'fc3' back to 'fc1'.
    """
    P = {name: t.detach() for name, t in model.named_parameters()}
    p = model.dropout.p
    x = x.flatten(1)
    # forward: keep every cache
    h, c_fc1 = linear_forward(x, P["fc1.weight"], P["fc1.bias"])
    h, c_bn1 = batchnorm_forward(h, P["bn1.weight"], P["bn1.bias"], model.bn1.eps)
    h, c_relu1 = relu_forward(h)
    h, c_drop1 = dropout_forward(h, masks[0], p)
    h, c_fc2 = linear_forward(h, P["fc2.weight"], P["fc2.bias"])
    h, c_bn2 = batchnorm_forward(h, P["bn2.weight"], P["bn2.bias"], model.bn2.eps)
    h, c_relu2 = relu_forward(h)
    h, c_drop2 = dropout_forward(h, masks[1], p)
    logits, c_fc3 = linear_forward(h, P["fc3.weight"], P["fc3.bias"])
    loss, c_loss = softmax_cross_entropy_forward(logits, y)
    # backward: the same steps in reverse order, starting from d loss / d loss = 1
    g: dict[str, torch.Tensor] = {}
    flow = {} if upstream is None else upstream  # gradient arriving at each layer's output
    flow["fc3"] = d = softmax_cross_entropy_backward(1.0, c_loss)
    d, g["fc3.weight"], g["fc3.bias"] = linear_backward(d, c_fc3)
    flow["dropout2"] = d
    flow["relu2"] = d = dropout_backward(d, c_drop2)
    flow["bn2"] = d = relu_backward(d, c_relu2)
    d, g["bn2.weight"], g["bn2.bias"] = batchnorm_backward(d, c_bn2)
    flow["fc2"] = d
    d, g["fc2.weight"], g["fc2.bias"] = linear_backward(d, c_fc2)
    flow["dropout1"] = d
    flow["relu1"] = d = dropout_backward(d, c_drop1)
    flow["bn1"] = d = relu_backward(d, c_relu1)
    d, g["bn1.weight"], g["bn1.bias"] = batchnorm_backward(d, c_bn1)
    flow["fc1"] = d
    _, g["fc1.weight"], g["fc1.bias"] = linear_backward(d, c_fc1)  # d loss / d x: not needed
    return loss, {name: g[name] for name in P}


def functional_loss(
    model: SimpleNN, x: torch.Tensor, y: torch.Tensor, masks: Sequence[torch.Tensor]
) -> torch.Tensor:
    """The same loss with PyTorch's operations (autograd records it), using the given masks.

    It equals `F.cross_entropy(model(x), y)` in training mode whenever nn.Dropout happens to
    draw these masks, and leaves BatchNorm's running statistics alone.
    """
    p = model.dropout.p
    h = x.flatten(1)
    for fc, bn, keep in ((model.fc1, model.bn1, masks[0]), (model.fc2, model.bn2, masks[1])):
        h = F.linear(h, fc.weight, fc.bias)
        h = F.batch_norm(h, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
        h = F.relu(h) * keep / (1 - p)
    return F.cross_entropy(F.linear(h, model.fc3.weight, model.fc3.bias), y)


def draw_masks(model: SimpleNN, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two keep-masks drawn from the global RNG exactly as nn.Dropout draws them on the CPU.

    So `torch.manual_seed(s); masks = draw_masks(model, B)` followed by `torch.manual_seed(s);
    model(x)` gives the model the same masks (checked in chapter 05 and its tests).
    """
    keep = 1 - model.dropout.p
    dtype = model.fc1.weight.dtype
    return tuple(
        torch.empty(batch_size, fc.out_features, dtype=dtype).bernoulli_(keep)
        for fc in (model.fc1, model.fc2)
    )


# ---------------------------------------------------------------------------------------------
# Checking gradients
# ---------------------------------------------------------------------------------------------


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """max |a - b| for each name of a."""
    return {name: (a[name] - b[name]).abs().max().item() for name in a}


def central_difference(
    f: Callable[[], torch.Tensor], x: torch.Tensor, index: tuple[int, ...], h: float
) -> float:
    """(f(x + h e) - f(x - h e)) / 2h for the coordinate `index` of x, which f reads.

    x is changed in place and restored; f must compute a scalar from it.
    """
    with torch.no_grad():
        original = x[index].item()
        x[index] = original + h
        up = f().item()
        x[index] = original - h
        down = f().item()
        x[index] = original
    return (up - down) / (2 * h)


# ---------------------------------------------------------------------------------------------
# A picture of 5.1
# ---------------------------------------------------------------------------------------------


def circuit_figure(values: dict[str, float], grads: dict[str, float]) -> Figure:
    """z = a * b + a as a circuit: forward values (green) above the wires, gradients (red) below.

    `values` has a, b, u (= a * b) and z; `grads` has z, u, b, "a via +" and "a via *".
    """
    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    pos = {"a": (0, 1.6), "b": (0, 0.2), "*": (1.8, 0.6), "+": (3.6, 1.3), "z": (5.2, 1.3)}
    wires = [  # (from, to, forward value, gradient)
        ("a", "+", values["a"], grads["a via +"]),
        ("a", "*", values["a"], grads["a via *"]),
        ("b", "*", values["b"], grads["b"]),
        ("*", "+", values["u"], grads["u"]),
        ("+", "z", values["z"], grads["z"]),
    ]
    for start, end, value, grad in wires:
        (x0, y0), (x1, y1) = pos[start], pos[end]
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            arrowprops={
                "arrowstyle": "->",
                "lw": 1.2,
                "shrinkA": 14,
                "shrinkB": 14,
                "color": "0.35",
            },
        )
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        ax.text(xm, ym + 0.13, f"{value:g}", color="#2e7d32", ha="center", fontsize=11)
        ax.text(xm, ym - 0.22, f"{grad:g}", color="#c62828", ha="center", fontsize=11)
    for name, (x, y) in pos.items():
        gate = name in "*+"
        label = {"*": "×"}.get(name, name)
        style = {
            "boxstyle": "circle,pad=0.3",
            "facecolor": "#d6e6f7" if gate else "white",
            "edgecolor": "0.4" if gate else "none",
        }
        ax.text(x, y, label, ha="center", va="center", fontsize=13, bbox=style)
    total = grads["a via +"] + grads["a via *"]
    ax.text(
        -0.35,
        1.95,
        f"∂z/∂a = {grads['a via +']:g} + {grads['a via *']:g} = {total:g}",
        color="#c62828",
        fontsize=10,
    )
    ax.text(
        -0.35,
        -0.35,
        "green: forward value    red: gradient ∂z/∂(wire), flowing back",
        color="0.3",
        fontsize=9,
    )
    ax.set(xlim=(-0.5, 5.6), ylim=(-0.5, 2.2))
    ax.axis("off")
    ax.set_title("z = a · b + a, forward left to right, backward right to left")
    fig.tight_layout()
    return fig
