"""Interval bound propagation (IBP): each operation's output box from its inputs' boxes.

Affine operations use the centre/radius form (``W c + b -/+ |W| r``: one product for the centre, one with ``|W|``
for the radius; ``W / 2`` and ``|W| / 2`` are made once per operation and reused, see :func:`_halves`); monotone
selections (reshape, permute, unfold, max pooling) map each end; a piecewise-linear activation takes the min and
max of its values at the ends and at the breakpoints inside (exact); an L∞-dist neuron's exact range over a box is
``[max_i dist(w_i, [l_i, u_i]), max_i max(|l_i - w_i|, |u_i - w_i|)]``.

Example:
    >>> boxes = interval_bounds(graph, InputSet.ball(x, 0.1))   # {node: (lower, upper)}, (B, *shape) each
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..graph import ops
from ..graph.graph import BoundGraph, Node
from ...models.linf_dist.layers import DEFAULT_CHUNK_ELEMENTS, linf_dist
from .input_set import InputSet

__all__ = ["Box", "Bounds", "interval", "interval_bounds"]

Box = tuple[torch.Tensor, torch.Tensor]
Bounds = dict[str, Box]


def _sum_difference(box: Box) -> Box:
    """``(u + l, u - l)``: twice the centre and twice the radius (the halves go into the weights, exactly)."""
    return box[1] + box[0], box[1] - box[0]


def _from_centre(mid: torch.Tensor, rad: torch.Tensor) -> Box:
    """``(mid - rad, mid + rad)``; ``mid`` must be a fresh tensor (it becomes the upper end, in place)."""
    return mid - rad, mid.add_(rad)


#: ``op -> ((version, data pointer) of its weight, (weight / 2, |weight| / 2))``: the halved weights of each affine
#: op, made once per op (a graph moved by ``.to`` has new ops, so once per dtype and device) and made again if the
#: weight changes in place. A memo only: the values are those computed afresh (halving is exact).
_HALVES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _halves(op: ops.Linear | ops.Conv2d | ops.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight / 2, |weight| / 2)`` of ``op``, from the memo when its weight is unchanged."""
    weight = op.weight
    if weight.requires_grad and torch.is_grad_enabled():  # keep the gradient path to the weight
        return weight * 0.5, weight.abs() * 0.5
    stamp = (weight._version, weight.data_ptr())
    hit = _HALVES.get(op)
    if hit is None or hit[0] != stamp:
        hit = (stamp, (weight.detach() * 0.5, weight.detach().abs() * 0.5))
        _HALVES[op] = hit
    return hit[1]


def _linear(op: ops.Linear, box: Box) -> Box:
    total, width = _sum_difference(box)
    half, half_abs = _halves(op)
    return _from_centre(F.linear(total, half, op.bias), F.linear(width, half_abs))


def _conv(op: ops.Conv2d, box: Box) -> Box:
    total, width = _sum_difference(box)
    half, half_abs = _halves(op)
    args = (op.stride, op.padding, op.dilation, op.groups)
    return _from_centre(F.conv2d(total, half, op.bias, *args), F.conv2d(width, half_abs, None, *args))


def _conv_transpose(op: ops.ConvTranspose2d, box: Box) -> Box:
    total, width = _sum_difference(box)
    half, half_abs = _halves(op)
    args = (op.stride, op.padding, op.output_padding, op.groups, op.dilation)
    return _from_centre(F.conv_transpose2d(total, half, op.bias, *args),
                        F.conv_transpose2d(width, half_abs, None, *args))


def _affine(op: ops.Affine, box: Box) -> Box:
    lo, hi = box
    if op.scale is None:
        return (lo, hi) if op.shift is None else (lo + op.shift, hi + op.shift)
    lo, hi = lo * op.scale, hi * op.scale
    if not bool((op.scale >= 0).all()):
        lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
    return (lo, hi) if op.shift is None else (lo.add_(op.shift), hi.add_(op.shift))  # fresh tensors: in place


def _sum(op: ops.Sum, *boxes: Box) -> Box:
    lo = hi = None
    for c, (l, u) in zip(op.coefficients, boxes):
        l, u = (l, u) if c >= 0 else (u, l)
        l, u = (l, u) if c == 1 else (c * l, c * u)
        lo, hi = (l, u) if lo is None else (lo + l, hi + u)
    return lo, hi


def _cat(op: ops.Cat, *boxes: Box) -> Box:
    return op.forward(*(b[0] for b in boxes)), op.forward(*(b[1] for b in boxes))


def _monotone(op: ops.Op, box: Box) -> Box:
    """Operations that map each end of the box to an end of the output box (selections, max pooling)."""
    return op.forward(box[0]), op.forward(box[1])


def _piecewise_linear(op: ops.PiecewiseLinear, box: Box) -> Box:
    lo, hi = box
    if op.monotone:
        return op.forward(lo), op.forward(hi)
    candidates = [op.forward(lo), op.forward(hi)]
    candidates += [op.forward(torch.clamp(torch.full_like(lo, t), lo, hi)) for t in op.breaks]
    stack = torch.stack(candidates)
    return stack.amin(0), stack.amax(0)


def _max_minus(x: torch.Tensor, w: torch.Tensor, sign: float) -> torch.Tensor:
    """``max_i sign * (x_ni - w_ji)`` ``(N, out)`` for ``x`` ``(N, in)``, ``w`` ``(out, in)``, in bounded chunks."""
    step = max(1, DEFAULT_CHUNK_ELEMENTS // max(1, x.shape[0] * x.shape[1]))
    parts = [(sign * (x[:, None, :] - w[None, s:s + step])).amax(-1) for s in range(0, w.shape[0], step)]
    return torch.cat(parts, dim=1)


def _linf_dist(op: ops.LinfDist, box: Box) -> Box:
    lo, hi = box
    lead = lo.shape[:-1]
    lo, hi = lo.reshape(-1, lo.shape[-1]), hi.reshape(-1, hi.shape[-1])
    upper = torch.maximum(linf_dist(lo, op.weight, math.inf), linf_dist(hi, op.weight, math.inf))
    lower = torch.maximum(_max_minus(lo, op.weight, 1.0), _max_minus(hi, op.weight, -1.0)).clamp_min(0)
    out = op.weight.shape[0]
    return lower.reshape(*lead, out), upper.reshape(*lead, out)


_RULES: dict[type, Callable[..., Box]] = {
    ops.Linear: _linear, ops.Conv2d: _conv, ops.ConvTranspose2d: _conv_transpose, ops.Affine: _affine,
    ops.Sum: _sum, ops.Cat: _cat, ops.Reshape: _monotone, ops.Permute: _monotone, ops.Unfold: _monotone,
    ops.MaxPool2d: _monotone, ops.PiecewiseLinear: _piecewise_linear, ops.LinfDist: _linf_dist,
}


def interval(node: Node, boxes: list[Box]) -> Box:
    """``node``'s output box ``(lower, upper)``, ``(B, *node.shape)`` each, from its inputs' boxes."""
    return _RULES[type(node.op)](node.op, *boxes)


def interval_bounds(graph: BoundGraph, input_set: InputSet) -> Bounds:
    """IBP boxes of every node of ``graph`` over ``input_set`` (the input's box first)."""
    bounds: Bounds = {graph.input.name: (input_set.lower, input_set.upper)}
    for node in graph.nodes[1:]:
        bounds[node.name] = interval(node, [bounds[i] for i in node.inputs])
    return bounds
