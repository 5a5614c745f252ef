"""The graph walk, the FLOP counts (analytic vs FlopCounterMode) and saved-activation memory."""

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from matplotlib.text import Annotation
from torch import nn

from helpers import graph
from helpers.models import SimpleNN

matplotlib.use("Agg")


def test_walk_of_a_tiny_expression_finds_ops_leaves_and_the_shared_input():
    a = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    c = torch.tensor(4.0)  # needs no gradient: not in the graph
    nodes, edges = graph.walk_graph(a * b + a * c, {"a": a, "b": b})
    labels = {n.id: n.label for n in nodes}
    assert labels[0] == "AddBackward0"
    assert sorted(labels.values()) == ["AddBackward0", "MulBackward0", "MulBackward0", "a", "b"]
    a_id = next(n.id for n in nodes if n.label == "a")
    into_a_consumers = [labels[dst] for src, dst in edges if src == a_id]
    assert into_a_consumers == ["MulBackward0", "MulBackward0"]  # used twice: grads accumulate
    assert [n.is_leaf for n in nodes if n.label in ("a", "b")] == [True, True]


def test_walk_refuses_a_tensor_with_no_graph():
    with pytest.raises(ValueError, match="no grad_fn"):
        graph.walk_graph(torch.ones(2) * 3)


def test_walk_of_the_network_names_every_parameter_once():
    model = SimpleNN()
    loss = F.cross_entropy(model(torch.randn(4, 784)), torch.tensor([0, 1, 2, 3]))
    nodes, edges = graph.walk_graph(loss, dict(model.named_parameters()))
    leaves = sorted(n.label for n in nodes if n.is_leaf)
    assert leaves == sorted(name for name, _ in model.named_parameters())
    ops = [n.label for n in nodes if not n.is_leaf]
    assert ops.count("AddmmBackward0") == 3 and ops.count("NativeBatchNormBackward0") == 2
    assert ops[:2] == ["NllLossBackward0", "LogSoftmaxBackward0"]
    depth = graph.graph_layers(nodes, edges)
    assert all(depth[a] > depth[b] for a, b in edges)  # every arrow points down the layers
    assert len(graph.draw_graph(nodes, edges).axes) == 1


def _arrows_crossing_boxes(nodes, edges, **kwargs):
    """(edge, node) pairs where the drawn arrow of an edge crosses a box other than its ends."""
    fig = graph.draw_graph(nodes, edges, **kwargs)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = fig.axes[0].texts
    arrows = [t.arrow_patch for t in texts if isinstance(t, Annotation)]
    boxes = [t for t in texts if not isinstance(t, Annotation)][: len(nodes)]  # in node order
    extent = {
        n.id: t.get_bbox_patch().get_window_extent(renderer)
        for n, t in zip(nodes, boxes, strict=True)
    }
    return [
        ((a, b), k)
        for (a, b), arrow in zip(edges, arrows, strict=True)
        for k, bbox in extent.items()
        if k not in (a, b) and arrow.get_path().intersects_bbox(bbox, filled=False)
    ]


def test_drawn_arrows_go_around_the_boxes_they_skip():
    a = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    nodes, edges = graph.walk_graph(a * b + a, {"a": a, "b": b})  # a -> Add skips a layer
    assert _arrows_crossing_boxes(nodes, edges, width=5) == []
    model = SimpleNN()
    loss = F.cross_entropy(model(torch.randn(4, 784)), torch.tensor([0, 1, 2, 3]))
    nodes, edges = graph.walk_graph(loss, dict(model.named_parameters()))
    assert _arrows_crossing_boxes(nodes, edges) == []


@pytest.mark.parametrize("batch, n_in, n_out", [(1, 3, 5), (7, 20, 4), (64, 784, 128)])
@pytest.mark.parametrize("input_grad", [True, False])
def test_linear_matmul_flops_match_flop_counter(batch, n_in, n_out, input_grad):
    layer = nn.Linear(n_in, n_out)
    x = torch.randn(batch, n_in, requires_grad=input_grad)
    forward, backward = graph.linear_matmul_flops(n_in, n_out, batch, input_grad)
    measured_fwd = graph.measure_flops(lambda: layer(x))["Global"]
    measured_all = graph.measure_flops(lambda: layer(x).sum().backward())["Global"]
    assert sum(measured_fwd.values()) == forward
    assert sum(measured_all.values()) == forward + backward


def test_network_flops_seed_estimate_complete_count_and_measurement():
    model = SimpleNN()
    assert graph.seed_flop_estimate(model) == 2 * (784 * 128 + 128 * 64 + 64 * 10) == 218_368
    complete = sum(n for _, _, n in graph.analytic_flops(model))
    assert complete > 218_368 and (complete - 218_368) / complete < 0.02  # matmuls dominate
    x, y = torch.randn(32, 784), torch.randint(0, 10, (32,))
    measured = graph.training_step_flops(model, x, y)
    assert measured["forward"] == 32 * 218_368
    assert measured["forward+backward"] == 32 * 454_400
    assert all(p.grad is None for p in model.parameters())


def test_saved_activation_bytes_grow_linearly_with_the_batch():
    model = SimpleNN().train()

    def saved(batch):
        return graph.saved_tensor_bytes(
            model, torch.randn(batch, 784), torch.randint(0, 10, (batch,))
        )

    per_sample = (saved(96) - saved(32)) / 64
    # input 784 + 4 x 128 + 4 x 64 float32 values (Linear inputs, BatchNorm inputs, ReLU
    # outputs, Dropout masks), 10 log-probabilities, and one int64 target
    assert per_sample == 4 * (784 + 4 * 128 + 4 * 64 + 10) + 8
