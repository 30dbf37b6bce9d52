"""Intermediate bounds by CROWN: the box of every node, with the inputs of nonlinear operations refined by a
backward pass from each of them (as auto_LiRPA's CROWN does).

One sweep in topological order: every node first gets its interval box from its inputs' current boxes (IBP from
the tightest bounds known so far); a node that feeds a nonlinear operation is then refined by CROWN, for the
neurons that need it only (auto_LiRPA's sparse intermediate bounds: a ReLU input whose box straddles a
breakpoint in some example; every neuron before max pooling or an L∞-dist layer), and the result is intersected
with the box (auto_LiRPA's ``compare_crown_with_ibp``; it also makes the bounds independent of which other
examples share the batch). Nodes whose interval box is already exact are not refined: an affine chain with at
most one mixing operation (linear, convolution) after the input box (L∞ only) or after an L∞-dist layer.

Memory is bounded by chunking the refined neurons: a chunk of ``k`` neurons propagates ``2k`` forms (lower and
upper bound), so that no form tensor holds more than about ``max_elements`` values; peak memory is a few such
tensors. Forms from a neuron of a convolutional layer are windowed to its receptive field (:mod:`.forms`). Any
chunk size, windowed or not, gives the same bounds.

The relaxation choices are auto_LiRPA's default CROWN (``method="CROWN"``, ReLU ``"adaptive"``, sparse
intermediate bounds with IBP references) with ``bound_opts={"compare_crown_with_ibp": True}``; the interval boxes
of nodes that CROWN does not refine equal its bounds there (IBP being exact on them), so the two should agree to
rounding (BatchNorm is folded here, not there).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol

import torch
from torch.utils.checkpoint import checkpoint

from ..graph import ops
from ..graph.graph import BoundGraph, Node
from .backward import backward_lower
from .forms import Form
from .input_set import InputSet
from .interval import Bounds, Box, interval
from .relaxations import AdaptiveSlopes, Slopes

__all__ = ["crown_bounds", "SlopeSource", "DEFAULT_MAX_ELEMENTS", "refined_nodes"]

#: Default largest number of values in one chunk's form tensor (2**22 floats = 16 MiB in float32): measured faster
#: than larger chunks on CPU (they stay in cache and need no fresh pages), as well as smaller in memory.
DEFAULT_MAX_ELEMENTS = 1 << 22

_PASS_THROUGH = (ops.Affine, ops.Reshape, ops.Permute)  # elementwise or selections: interval boxes stay exact
_MIXING = (ops.Linear, ops.Conv2d, ops.ConvTranspose2d, ops.Unfold)


class SlopeSource(Protocol):
    """Gives the ReLU lower slopes of a backward pass from ``start`` for the specification rows ``rows``."""

    def bind(self, start: str, rows: torch.Tensor) -> Slopes: ...


def refined_nodes(graph: BoundGraph, box_input: bool) -> list[str]:
    """The nodes CROWN refines: inputs of nonlinear operations whose interval box is not already exact
    (``box_input``: the input set is a box, i.e. the L∞ norm)."""
    mixing: dict[str, int | None] = {}
    for node in graph:
        before = mixing.get(node.inputs[0]) if len(node.inputs) == 1 else None
        if isinstance(node.op, ops.Input):
            mixing[node.name] = 0 if box_input else None
        elif isinstance(node.op, ops.LinfDist):
            mixing[node.name] = 0  # relaxed by its own box, which IBP computes exactly
        elif isinstance(node.op, _PASS_THROUGH):
            mixing[node.name] = before
        elif isinstance(node.op, _MIXING):
            mixing[node.name] = 1 if before == 0 else None
        else:
            mixing[node.name] = None
    inputs = {n.inputs[0] for n in graph if isinstance(n.op, ops.NONLINEAR)}
    return [n.name for n in graph if n.name in inputs and mixing[n.name] is None]


def _rows_to_refine(graph: BoundGraph, node: Node, box: Box) -> torch.Tensor:
    """Flat indices of ``node``'s neurons some consumer's relaxation depends on (union over the batch)."""
    lo, hi = box[0].flatten(1), box[1].flatten(1)
    mask = torch.zeros(lo.shape[1], dtype=torch.bool, device=lo.device)
    for name in graph.consumers(node.name):
        op = graph[name].op
        if isinstance(op, ops.PiecewiseLinear):
            for t in op.breaks:
                mask |= ((lo < t) & (hi > t)).any(dim=0)
        elif isinstance(op, ops.NONLINEAR):
            mask[:] = True
    return mask.nonzero().flatten()


def _chunk_bound(graph: BoundGraph, node: Node, chunk: torch.Tensor, boxes: Bounds, input_set: InputSet,
                 slopes: Slopes, stats: dict | None = None) -> torch.Tensor:
    """``(2k, B)``: CROWN lower bounds of ``+z_i`` then ``-z_i`` for the ``k`` neurons ``chunk`` of ``node``."""
    spec = Form.units(chunk, input_set.batch, node.shape, input_set.lower)
    return backward_lower(graph, node.name, spec, boxes, input_set, slopes, stats=stats)


def _refine(graph: BoundGraph, node: Node, box: Box, rows: torch.Tensor, boxes: Bounds, input_set: InputSet,
            source: SlopeSource, max_elements: int) -> Box:
    """``box`` with the neurons ``rows`` tightened by CROWN, chunk by chunk.

    The first chunk is sized as if every form were dense; the next ones by the largest form the previous chunk
    really held (windowed forms are much smaller), so that none holds more than about ``max_elements`` values.
    """
    lo, hi = box[0].flatten(1), box[1].flatten(1)
    batch, n = lo.shape[0], rows.numel()
    widest = max(graph[a].numel for a in graph.ancestors(node.name))
    step = max(1, max_elements // (2 * batch * widest))
    lows, highs, s = [], [], 0
    while s < n:
        chunk = rows[s:s + step]
        k = chunk.numel()
        index = torch.cat([torch.arange(s, s + k), torch.arange(n + s, n + s + k)]).to(rows.device)
        stats: dict = {}
        run = partial(_chunk_bound, graph, node, chunk, boxes, input_set, source.bind(node.name, index), stats)
        # Under autograd (α-CROWN's intermediate slopes) a chunk keeps nothing for the backward but is recomputed.
        bound = checkpoint(run, use_reentrant=False) if torch.is_grad_enabled() else run()
        lows.append(bound[:k].T)
        highs.append(-bound[k:].T)
        s += k
        step = max(1, min(4 * step, int(k * max_elements / max(1, stats.get("largest", 1)))))
    where = rows.expand(batch, -1)
    lo = lo.scatter(1, where, torch.maximum(lo.gather(1, where), torch.cat(lows, dim=1)))
    hi = hi.scatter(1, where, torch.minimum(hi.gather(1, where), torch.cat(highs, dim=1)))
    return lo.reshape(box[0].shape), hi.reshape(box[1].shape)


def crown_bounds(graph: BoundGraph, input_set: InputSet, source: SlopeSource | None = None,
                 max_elements: int = DEFAULT_MAX_ELEMENTS, rows: dict[str, torch.Tensor] | None = None,
                 tighten: Callable[[str, Box], Box] | None = None) -> Bounds:
    """Boxes ``{node: (lower, upper)}`` ``(B, *shape)`` of every node over ``input_set``, CROWN-refined where a
    relaxation needs them.

    Args:
        source: the ReLU lower slopes of each backward pass (default CROWN's adaptive ones; α-CROWN passes its
            optimised ones).
        max_elements: bound on the values of one chunk's forms (memory), see the module docstring.
        rows: per refined node, the flat neuron indices to refine; a node missing from it gets the neurons whose
            relaxation depends on its bounds, and the indices are stored in it (so that α-CROWN's iterations
            refine the same neurons).
        tighten: if given, ``tighten(node, box)`` replaces every node's interval box before CROWN refines it
            (refinement only intersects, so the result stays within it): branch and bound intersects with a
            subdomain's known boxes and clamps split ReLU inputs at their breakpoint. It must return valid bounds
            over the input set (or ``lower > upper`` where the set is empty).
    """
    source = source or AdaptiveSlopes()
    rows = {} if rows is None else rows
    refined = set(refined_nodes(graph, input_set.norm == "linf"))
    boxes: Bounds = {graph.input.name: (input_set.lower, input_set.upper)}
    for node in graph.nodes[1:]:
        box = interval(node, [boxes[i] for i in node.inputs])
        if tighten is not None:
            box = tighten(node.name, box)
        if node.name in refined:
            if node.name not in rows:
                rows[node.name] = _rows_to_refine(graph, node, box)
            if rows[node.name].numel():
                box = _refine(graph, node, box, rows[node.name], boxes, input_set, source, max_elements)
        boxes[node.name] = box
    return boxes
