"""The computational graph autograd records, drawn and measured (chapter 04).

Three tools: a walk of the recorded graph (`walk_graph`) and a drawing of it (`draw_graph`); FLOP
counts three ways (the seed's estimate, a complete analytic count, and `FlopCounterMode`'s
measurement); and the memory autograd keeps for the backward pass (`saved_tensor_bytes`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# ---------------------------------------------------------------------------------------------
# The recorded graph
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One node of the backward graph: an operation, or a leaf tensor whose .grad it fills."""

    id: int
    label: str  # e.g. "AddmmBackward0", or a parameter's name for a leaf
    is_leaf: bool


def walk_graph(
    output: torch.Tensor, names: dict[str, torch.Tensor] | None = None
) -> tuple[list[Node], list[tuple[int, int]]]:
    """Nodes and edges of the graph autograd recorded for `output`, breadth first from it.

    An edge `(a, b)` means a's result was an input of b: the forward direction. Gradients flow
    the other way, along `grad_fn.next_functions`. Leaves are labelled with their name in
    `names` (e.g. `dict(model.named_parameters())`) or their shape.
    """
    if output.grad_fn is None:
        raise ValueError("output has no grad_fn: no input required grad, so nothing was recorded")
    leaf_names = {id(t): n for n, t in (names or {}).items()}
    ids: dict[object, int] = {}
    nodes: list[Node] = []
    edges: list[tuple[int, int]] = []
    queue = [output.grad_fn]
    ids[output.grad_fn] = 0
    while queue:
        fn = queue.pop(0)
        nodes.append(_node(fn, ids[fn], leaf_names))
        for parent, _ in fn.next_functions:
            if parent is None:  # an input that needs no gradient
                continue
            if parent not in ids:
                ids[parent] = len(ids)
                queue.append(parent)
            edges.append((ids[parent], ids[fn]))
    return nodes, edges


def _node(fn: object, node_id: int, leaf_names: dict[int, str]) -> Node:
    variable = getattr(fn, "variable", None)  # only AccumulateGrad nodes hold a leaf tensor
    if variable is None:
        return Node(node_id, type(fn).__name__, is_leaf=False)
    label = leaf_names.get(id(variable), f"tensor {tuple(variable.shape)}")
    return Node(node_id, label, is_leaf=True)


def graph_layers(nodes: list[Node], edges: list[tuple[int, int]]) -> dict[int, int]:
    """Each node's depth: the longest path from it to the output (the output is 0)."""
    consumers: dict[int, list[int]] = defaultdict(list)
    for a, b in edges:
        consumers[a].append(b)
    depth: dict[int, int] = {}

    def visit(n: int) -> int:
        if n not in depth:
            depth[n] = max((visit(c) + 1 for c in consumers[n]), default=0)
        return depth[n]

    for node in nodes:
        visit(node.id)
    return depth


def draw_graph(
    nodes: list[Node], edges: list[tuple[int, int]], title: str = "", width: float = 10
) -> plt.Figure:
    """Draw the graph in layers, inputs at the top and the output at the bottom.

    Operations are blue boxes, leaves (parameters) green; arrows follow the forward pass. An
    arrow that skips a layer bends outward, so that it does not run behind the boxes between.
    """
    depth = graph_layers(nodes, edges)
    rows: dict[int, list[Node]] = defaultdict(list)
    for node in nodes:
        rows[depth[node.id]].append(node)
    n_rows = max(depth.values()) + 1
    fig, ax = plt.subplots(figsize=(width, 0.75 * n_rows + 0.8))
    pos = {}
    for d, row in rows.items():
        for i, node in enumerate(row):
            pos[node.id] = ((i + 1) / (len(row) + 1), d)

    def box(node: Node, zorder: float) -> plt.Text:
        color = "#d8f0d2" if node.is_leaf else "#d6e6f7"
        style = {"boxstyle": "round,pad=0.3", "facecolor": color, "edgecolor": "0.5"}
        x, y = pos[node.id]
        return ax.text(
            x, y, node.label, ha="center", va="center", fontsize=8, bbox=style, zorder=zorder
        )

    # Each arrow is clipped to the outlines of its two boxes, so every head shows; a second copy
    # of the boxes, drawn over the arrows, hides any arrow that passes behind an unrelated box.
    # An arrow spanning several layers would pass through the layers between, so it is curved,
    # bulging away from the middle: to the left (rad > 0, as arrows point down) on the left half.
    outline = {node.id: box(node, zorder=3).get_bbox_patch() for node in nodes}
    for a, b in edges:
        rad = 0.0
        if depth[a] - depth[b] > 1:
            rad = 0.3 if pos[a][0] + pos[b][0] <= 1 else -0.3
        ax.annotate(
            "",
            xy=pos[b],
            xytext=pos[a],
            zorder=4,
            arrowprops={
                "arrowstyle": "->",
                "color": "0.4",
                "connectionstyle": f"arc3,rad={rad}",
                "patchA": outline[a],
                "patchB": outline[b],
                "shrinkA": 1,
                "shrinkB": 1,
            },
        )
    for node in nodes:
        box(node, zorder=5)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, n_rows - 0.4)
    ax.axis("off")
    ax.set_title(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------


def seed_flop_estimate(model: nn.Module) -> int:
    """The seed's estimate: 2 * in * out per Linear layer, per sample (multiply + add)."""
    return sum(
        2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear)
    )


# FLOPs per element for the element-wise layers, forward, in training mode. Conventions:
# BatchNorm: batch mean (1) and variance (3: subtract, square, add), then normalize, scale and
# shift (4); ReLU: one comparison; Dropout: mask multiply and rescale by 1/(1-p) (2).
PER_ELEMENT_FLOPS = {nn.BatchNorm1d: 8, nn.ReLU: 1, nn.Dropout: 2}


def analytic_flops(model: nn.Module, num_classes: int = 10) -> list[tuple[str, str, int]]:
    """A complete count of one sample's forward FLOPs in training mode, per operation.

    Rows are (layer, what, FLOPs). Besides the seed's matrix multiplies it counts biases,
    BatchNorm, ReLU, Dropout and the loss (log-softmax: max, subtract, exp, sum, log, pick: about
    5 per class; then the batch mean: 1).
    """
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            rows.append((name, "matrix multiply", 2 * m.in_features * m.out_features))
            if m.bias is not None:
                rows.append((name, "bias", m.out_features))
        elif isinstance(m, nn.BatchNorm1d):
            rows.append((name, "batch norm", PER_ELEMENT_FLOPS[nn.BatchNorm1d] * m.num_features))
    widths = [m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    for i, width in enumerate(widths, start=1):  # F.relu and one shared Dropout after each BN
        rows.append((f"relu{i}", "max(0, x)", PER_ELEMENT_FLOPS[nn.ReLU] * width))
        rows.append((f"dropout{i}", "mask and rescale", PER_ELEMENT_FLOPS[nn.Dropout] * width))
    rows.append(("loss", "log-softmax + mean", 5 * num_classes + 1))
    return rows


def linear_matmul_flops(
    in_features: int, out_features: int, batch: int, input_grad: bool = True
) -> tuple[int, int]:
    """(forward, backward) matrix-multiply FLOPs of a Linear layer on a batch.

    Forward is one (batch x in) @ (in x out) product: 2 * batch * in * out. Backward needs the
    weight's gradient (the same size of product) and, unless the input needs no gradient (the
    first layer), the input's gradient (another one): so backward costs one or two forwards.
    """
    forward = 2 * batch * in_features * out_features
    return forward, forward * (2 if input_grad else 1)


def measure_flops(fn: Callable[[], object]) -> dict[str, dict[str, int]]:
    """Run `fn` under `FlopCounterMode`; FLOPs per module and operation ("Global" = total)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return {
        module: {str(op).split(".")[-1]: n for op, n in ops.items()}
        for module, ops in counter.get_flop_counts().items()
    }


def training_step_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, int]:
    """Measured FLOPs of one forward and of one forward + backward pass on (x, y)."""
    forward = measure_flops(lambda: model(x))["Global"]
    both = measure_flops(lambda: F.cross_entropy(model(x), y).backward())["Global"]
    model.zero_grad(set_to_none=True)
    return {"forward": sum(forward.values()), "forward+backward": sum(both.values())}


def flops_per_image(model: nn.Module) -> dict[str, int]:
    """Measured FLOPs per MNIST image of a forward pass and of a training step (`"train"`).

    Measured on a batch of two blank images (BatchNorm needs more than one in training).
    """
    x, y = torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.int64)
    flops = training_step_flops(model, x, y)
    return {"forward": flops["forward"] // 2, "train": flops["forward+backward"] // 2}


# ---------------------------------------------------------------------------------------------
# Memory autograd keeps for the backward pass
# ---------------------------------------------------------------------------------------------


def saved_tensor_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the activations autograd saves for backward in one training forward pass.

    Counts each saved tensor's storage once, and leaves out the parameters (they exist anyway).
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(model(x), y)
    return sum(seen.values())
