"""IBP with memoised halved weights (``interval._halves``) gives the bounds of a plain interval propagation written
independently here (``W+ l + W- u`` form), is sound on every architecture family, and follows weights changed in
place and gradients to weights that require them."""

import pytest
import torch
import torch.nn.functional as F

from _bounds_models import ARCHITECTURES, SHAPE, build, images, project
from mistered.certify.bounds import InputSet, interval_bounds
from mistered.certify.graph import ops, trace_graph

TOL = 1e-9


def _plain_affine(op, lo, hi):
    """The output box of an affine op by positive and negative parts (no memo, no centre/radius form)."""
    pos, neg = op.weight.clamp(min=0), op.weight.clamp(max=0)
    if isinstance(op, ops.Linear):
        apply = lambda x, w, b: F.linear(x, w, b)  # noqa: E731
    elif isinstance(op, ops.Conv2d):
        apply = lambda x, w, b: F.conv2d(x, w, b, op.stride, op.padding, op.dilation, op.groups)  # noqa: E731
    else:
        apply = lambda x, w, b: F.conv_transpose2d(x, w, b, op.stride, op.padding, op.output_padding,  # noqa: E731
                                                   op.groups, op.dilation)
    return apply(lo, pos, op.bias) + apply(hi, neg, None), apply(hi, pos, op.bias) + apply(lo, neg, None)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_memoised_ibp_equals_plain_interval_propagation(name):
    graph = trace_graph(build(name), SHAPE)
    input_set = InputSet.ball(images(3), 0.05)
    with torch.no_grad():
        first = interval_bounds(graph, input_set)
        again = interval_bounds(graph, input_set)  # served from the memo
    for node in graph.nodes[1:]:
        assert torch.equal(first[node.name][0], again[node.name][0]) and torch.equal(first[node.name][1],
                                                                                      again[node.name][1])
        if isinstance(node.op, (ops.Linear, ops.Conv2d, ops.ConvTranspose2d)):
            lo, hi = _plain_affine(node.op, *first[node.inputs[0]])
            torch.testing.assert_close(first[node.name][0], lo, rtol=0, atol=1e-12)
            torch.testing.assert_close(first[node.name][1], hi, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["cnn", "residual-bn", "pooling", "cat"])
def test_memoised_ibp_contains_every_sampled_activation(name):
    graph = trace_graph(build(name), SHAPE)
    x = images(3)
    boxes = interval_bounds(graph, InputSet.ball(x, 0.05))
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        delta = project(torch.rand(x.shape, generator=gen, dtype=x.dtype) * 0.1 - 0.05, x, 0.05, "linf")
        for node, value in graph.evaluate(x + delta).items():
            lo, hi = boxes[node]
            assert bool((lo - TOL <= value).all() and (value <= hi + TOL).all()), node


def test_a_weight_changed_in_place_is_seen_by_the_next_ibp():
    graph = trace_graph(build("mlp"), SHAPE)
    input_set = InputSet.ball(images(2), 0.05)
    before = interval_bounds(graph, input_set)[graph.output]
    linear = next(n.op for n in graph if isinstance(n.op, ops.Linear))
    with torch.no_grad():
        linear.weight.mul_(-2.0)
    after = interval_bounds(graph, input_set)
    assert not torch.equal(before[0], after[graph.output][0])
    node = next(n for n in graph if n.op is linear)
    lo, hi = _plain_affine(linear, *after[node.inputs[0]])
    torch.testing.assert_close(after[node.name][0], lo, rtol=0, atol=1e-12)
    torch.testing.assert_close(after[node.name][1], hi, rtol=0, atol=1e-12)


def test_ibp_is_differentiable_in_a_weight_that_requires_grad():
    graph = trace_graph(build("mlp"), SHAPE)
    linear = next(n.op for n in graph if isinstance(n.op, ops.Linear))
    interval_bounds(graph, InputSet.ball(images(2), 0.05))  # fills the memo
    linear.weight.requires_grad_(True)
    lo, hi = interval_bounds(graph, InputSet.ball(images(2), 0.05))[graph.output]
    (hi - lo).sum().backward()
    assert linear.weight.grad is not None and bool(linear.weight.grad.abs().sum() > 0)
