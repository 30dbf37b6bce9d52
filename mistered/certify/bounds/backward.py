"""One backward pass of linear bounds (CROWN): a lower bound of linear forms of one node over the input set.

Starting from ``spec`` on node ``start``, the forms travel backwards through the graph in reverse topological
order: through affine operations by their transpose (:mod:`.transpose`), through nonlinear ones by their linear
relaxation over the known boxes of their inputs (:mod:`.relaxations`); forms reaching a node from several
consumers add up. At the input the final form is minimised over the input set.

Example:
    >>> lower = backward_lower(graph, graph.output, spec, boxes, input_set, AdaptiveSlopes())  # (R, B)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..graph import ops
from ..graph.graph import BoundGraph
from .forms import Form
from .input_set import InputSet
from .interval import Bounds
from .relaxations import Slopes, relax, relax_constant
from .transpose import transpose

__all__ = ["backward_lower"]


def backward_lower(graph: BoundGraph, start: str, spec: Form | torch.Tensor, boxes: Bounds, input_set: InputSet,
                   slopes: Slopes | None, linear_only: bool = False, stats: dict | None = None,
                   visit: Callable[[str, Form], Form] | None = None) -> torch.Tensor:
    """``(R, B)`` lower bounds of ``<spec[r, b], value of start>`` over each example's input set.

    Args:
        graph: the network.
        start: the node whose value the forms apply to.
        spec: ``(R, B, *start_shape)`` the forms (``R`` per example), or a :class:`~.forms.Form`.
        boxes: ``{node: (lower, upper)}``, ``(B, *shape)`` each: at least the input box of every nonlinear
            ancestor of ``start`` and, for those relaxed by constants, its own output box.
        input_set: where the input ranges.
        slopes: lower-relaxation slopes of ReLU terms (ignored with ``linear_only``).
        linear_only: relax every nonlinear node by its output box (interval bounds with the affine operations
            after the last nonlinearity folded into the specification, as IBP's margin bounds).
        stats: if given, ``stats["largest"]`` is set to the most values one form held (for chunk sizing).
        visit: if given, ``visit(node, form)`` sees the complete form on every node's output before it travels on
            and returns the form to use (branch and bound reads the coefficients and adds its split terms).
    """
    relevant = graph.ancestors(start)
    pending: dict[str, Form] = {start: spec if isinstance(spec, Form) else Form(spec)}
    total = pending[start].coef.new_zeros(pending[start].coef.shape[:2])
    largest = 0
    for node in reversed(graph.nodes):
        form = pending.pop(node.name, None)
        if node.name not in relevant or form is None:
            continue
        if visit is not None:
            form = visit(node.name, form)
        largest = max(largest, form.coef.numel())
        if isinstance(node.op, ops.Input):
            total = total + input_set.lower_bound(form)
            continue
        if isinstance(node.op, ops.NONLINEAR):
            if linear_only:
                forms, const = [None], relax_constant(form, boxes[node.name])
            else:
                new, const = relax(node, form, boxes[node.inputs[0]], boxes.get(node.name), slopes)
                forms = [new]
        else:
            forms, const = transpose(node, form, [graph[i].shape for i in node.inputs])
        del form
        if const is not None:
            total = total + const
        for name, new in zip(node.inputs, forms):
            if new is not None:
                pending[name] = new if name not in pending else pending[name] + new
    if stats is not None:
        stats["largest"] = largest
    return total
