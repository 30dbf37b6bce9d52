"""Graph simplification after tracing: drop what the output does not use, and fold elementwise affine maps
(a BatchNorm after a convolution, consecutive constant arithmetic) into the operation before them.

Folding is exact (the same function, one fewer node) and leaves interval and linear bounds unchanged: an
elementwise affine map after a linear layer commutes with both. A node is folded only into a producer that has
no other consumer, so every node whose bounds a relaxation needs survives.
"""

from __future__ import annotations

import dataclasses

import torch

from .graph import BoundGraph, Node
from .ops import Affine, Conv2d, Linear

__all__ = ["simplify"]


def _per_channel(c: torch.Tensor | None, channels: int, trailing: int) -> torch.Tensor | None:
    """``c`` as a ``(channels,)`` vector if it is constant apart from the channel dimension (``trailing``
    singleton dimensions after it), ``None`` if it varies along other dimensions."""
    if c is None or c.dim() == 0:
        return None if c is None else c.expand(channels)
    if c.dim() > trailing + 1 or any(s != 1 for s in c.shape[c.dim() - trailing:]) or c.numel() not in (1, channels):
        return None
    return c.reshape(-1).expand(channels)


def _fold(producer: Node, affine: Affine) -> object | None:
    """``affine ∘ producer.op`` as one operation, or ``None`` when it cannot be folded."""
    op = producer.op
    if isinstance(op, Affine):
        scale = op.scale if affine.scale is None else (affine.scale if op.scale is None else op.scale * affine.scale)
        shift = op.shift if op.shift is None or affine.scale is None else op.shift * affine.scale
        shift = affine.shift if shift is None else (shift if affine.shift is None else shift + affine.shift)
        return Affine(scale, shift)
    if isinstance(op, (Linear, Conv2d)):
        channels = op.weight.shape[0]
        trailing = 0 if isinstance(op, Linear) else 2
        ones = torch.ones(channels, dtype=op.weight.dtype, device=op.weight.device)
        scale = ones if affine.scale is None else _per_channel(affine.scale, channels, trailing)
        shift = torch.zeros_like(ones) if affine.shift is None else _per_channel(affine.shift, channels, trailing)
        if scale is None or shift is None:
            return None
        weight = op.weight * scale.reshape(-1, *([1] * (op.weight.dim() - 1)))
        bias = shift if op.bias is None else op.bias * scale + shift
        return dataclasses.replace(op, weight=weight, bias=bias)
    return None


def simplify(graph: BoundGraph) -> BoundGraph:
    """``graph`` without the nodes its output does not use, elementwise affine maps folded into their producer."""
    used = graph.ancestors(graph.output)
    nodes = {n.name: n for n in graph if n.name in used}
    consumers = {name: [m for m in graph.consumers(name) if m in used] for name in nodes}
    for name in list(nodes):
        node = nodes[name]
        if not isinstance(node.op, Affine) or len(node.inputs) != 1:
            continue
        producer = nodes[node.inputs[0]]
        if len(consumers[producer.name]) != 1 or producer.name == graph.output:
            continue
        folded = _fold(producer, node.op)
        if folded is None:
            continue
        nodes[name] = Node(name, folded, producer.inputs, node.shape, f"{producer.source}; {node.source}")
        for i in producer.inputs:
            consumers[i] = [name if c == producer.name else c for c in consumers[i]]
        del nodes[producer.name]
    return BoundGraph(list(nodes.values()), graph.output)
