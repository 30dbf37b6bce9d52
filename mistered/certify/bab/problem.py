"""The property branch and bound decides: ``g(x) = min_k max_{i in group k} (<spec_i, f(x)> - rhs_i) > 0`` for
every ``x`` of an input box.

One group per row is a robustness margin spec (every row must stay positive); one group of several rows is one
VNNLIB conjunction ``C y <= d`` written as ``C y - d`` (violated only where every row is ``<= 0``). A point with
``g(x) <= 0`` is a counterexample. A lower bound of ``g`` over a subdomain is the same ``min``/``max`` of the
rows' lower bounds.

Example:
    >>> problem = BabProblem.build(graph, input_set, spec)          # spec (S, *out), one group per row
    >>> problem.value(x)                                             # (B,) g at the inputs x
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...errors import InvalidInputError
from ..bounds.input_set import InputSet
from ..graph import ops
from ..graph.graph import BoundGraph

__all__ = ["BabProblem"]


@dataclass(frozen=True)
class BabProblem:
    """A property over one input box.

    Attributes:
        graph: the network ``f``; input_set: one example's box (``batch == 1``, L∞), on the graph's device/dtype.
        spec: ``(S, *output_shape)`` the rows; rhs: ``(S,)``; groups: ``(S,)`` int64 group of each row (``0..K-1``).
        split_nodes: ``{input of a ReLU-like node: its breakpoint}``, the neurons branching may split.
        relu_of_input: that ReLU-like node's name per split node.
    """

    graph: BoundGraph
    input_set: InputSet
    spec: torch.Tensor
    rhs: torch.Tensor
    groups: torch.Tensor
    split_nodes: dict[str, float]
    relu_of_input: dict[str, str]

    @classmethod
    def build(cls, graph: BoundGraph, input_set: InputSet, spec: torch.Tensor, rhs: torch.Tensor | None = None,
              groups: torch.Tensor | None = None) -> BabProblem:
        """Check and move everything to the graph's device and dtype (defaults: ``rhs = 0``, one group per row).

        Raises:
            InvalidInputError: not one L∞ box, or shapes that do not fit the graph.
        """
        if input_set.batch != 1 or input_set.norm != "linf":
            raise InvalidInputError(f"branch and bound takes one L∞ box (batch 1), got batch {input_set.batch}, "
                                    f"norm {input_set.norm!r}")
        if tuple(input_set.lower.shape[1:]) != graph.input_shape:
            raise InvalidInputError(f"the input box has shape {tuple(input_set.lower.shape[1:])}, the graph takes "
                                    f"{graph.input_shape}")
        if spec.dim() < 2 or tuple(spec.shape[1:]) != graph.output_shape or spec.shape[0] == 0:
            raise InvalidInputError(f"spec must have shape (S, {graph.output_shape}) with S >= 1, got "
                                    f"{tuple(spec.shape)}")
        rows = spec.shape[0]
        rhs = torch.zeros(rows) if rhs is None else rhs.reshape(-1)
        groups = torch.arange(rows) if groups is None else groups.reshape(-1).to(torch.int64)
        if rhs.numel() != rows or groups.numel() != rows or int(groups.min()) < 0:
            raise InvalidInputError(f"rhs and groups need {rows} entries (groups >= 0)")
        if not bool(torch.isfinite(spec).all() and torch.isfinite(rhs).all()):
            raise InvalidInputError("spec and rhs must be finite")
        device, dtype = graph.device, graph.dtype
        split, relu_of = {}, {}
        for node in graph:
            op = node.op
            if isinstance(op, ops.PiecewiseLinear) and len(op.breaks) == 1 and op.weights[0] != 0 \
                    and node.inputs[0] not in split:
                split[node.inputs[0]], relu_of[node.inputs[0]] = float(op.breaks[0]), node.name
        _, groups = torch.unique(groups, return_inverse=True)
        return cls(graph, input_set.to(device, dtype), spec.to(device, dtype), rhs.to(device, dtype),
                   groups.to(device), split, relu_of)

    @property
    def relu_of(self) -> set[str]:
        return set(self.relu_of_input.values())

    @property
    def num_groups(self) -> int:
        return int(self.groups.max()) + 1

    def objective(self, rows: torch.Tensor) -> torch.Tensor:
        """``(D,)``: ``min_k max_{i in k}`` of ``rows`` ``(S, D)`` minus the right-hand sides (bounds or values)."""
        values = rows - self.rhs[:, None]
        per = values.new_full((self.num_groups, values.shape[1]), -math.inf)
        per = per.scatter_reduce(0, self.groups[:, None].expand_as(values), values, reduce="amax")
        return per.min(dim=0).values

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)``: ``g`` at the inputs ``x`` ``(B, *input_shape)`` by a plain forward pass of the graph."""
        out = self.graph(x.to(self.graph.device, self.graph.dtype)).flatten(1)
        return self.objective(self.spec.flatten(1) @ out.T)

    def best_candidates(self, points: torch.Tensor) -> torch.Tensor:
        """``(D, *input_shape)``: per subdomain, the point of ``points`` ``(S, D, *input_shape)`` with the least
        ``g``."""
        s, d = points.shape[:2]
        values = self.value(points.reshape(s * d, *points.shape[2:])).reshape(s, d)
        pick = values.argmin(dim=0)
        return points[pick, torch.arange(d, device=points.device)]
