"""The bound graph: operations (:mod:`.ops`) wired into a directed acyclic graph with one input and one output.

Nodes are kept in topological order (every node after its inputs), each with its per-example output shape (no
batch dimension) and the source line that made it, so that errors and reports can point at the model's code.

Example:
    >>> graph = trace_graph(model, (1, 28, 28))     # see mistered.certify.graph.trace
    >>> graph.forward(x)                            # (B, K), equal to model(x) in eval mode
    >>> [n.name for n in graph.nodes if isinstance(n.op, PiecewiseLinear)]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ...errors import InvalidInputError
from .ops import Input, Op

__all__ = ["Node", "BoundGraph"]


@dataclass(frozen=True, eq=False)
class Node:
    """One operation of a :class:`BoundGraph`.

    Attributes:
        name: unique within the graph.
        op: the operation.
        inputs: names of the nodes whose outputs are ``op``'s inputs, in order.
        shape: per-example output shape (no batch dimension).
        source: where the model made it (``"file.py:12: y = self.conv(x)"`` or a module path), for messages.
    """

    name: str
    op: Op
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    source: str = ""

    @property
    def numel(self) -> int:
        """Elements of one example's output."""
        n = 1
        for s in self.shape:
            n *= s
        return n


class BoundGraph:
    """A traced network as a DAG of :class:`Node` in topological order; the first is the :class:`~.ops.Input`.

    Args:
        nodes: in topological order, the input first.
        output: the name of the node whose value is the network's output.
    """

    def __init__(self, nodes: list[Node], output: str) -> None:
        self._nodes = {n.name: n for n in nodes}
        if len(self._nodes) != len(nodes) or not nodes or not isinstance(nodes[0].op, Input):
            raise ValueError("a bound graph needs unique node names and its Input node first")
        seen: set[str] = set()
        for n in nodes:
            missing = [i for i in n.inputs if i not in seen]
            if missing:
                raise ValueError(f"node {n.name} uses {missing} before they are defined")
            seen.add(n.name)
        if output not in self._nodes:
            raise ValueError(f"unknown output node {output!r}")
        self.output = output
        self._consumers: dict[str, list[str]] = {n.name: [] for n in nodes}
        for n in nodes:
            for i in n.inputs:
                self._consumers[i].append(n.name)

    @property
    def nodes(self) -> list[Node]:
        """All nodes in topological order."""
        return list(self._nodes.values())

    @property
    def input(self) -> Node:
        return next(iter(self._nodes.values()))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.input.shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self._nodes[self.output].shape

    def __getitem__(self, name: str) -> Node:
        return self._nodes[name]

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    def consumers(self, name: str) -> list[str]:
        """Names of the nodes that take ``name``'s output as an input."""
        return list(self._consumers[name])

    def ancestors(self, name: str) -> set[str]:
        """``name`` and every node it depends on."""
        found, stack = {name}, [name]
        while stack:
            for i in self._nodes[stack.pop()].inputs:
                if i not in found:
                    found.add(i)
                    stack.append(i)
        return found

    @property
    def device(self) -> torch.device:
        for n in self:
            for value in vars(n.op).values():
                if isinstance(value, torch.Tensor):
                    return value.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for n in self:
            for value in vars(n.op).values():
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    return value.dtype
        return torch.get_default_dtype()

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> BoundGraph:
        """A copy with every parameter moved to ``device`` and floating-point ones cast to ``dtype``."""
        nodes = [Node(n.name, n.op.to(device, dtype), n.inputs, n.shape, n.source) for n in self]
        return BoundGraph(nodes, self.output)

    def evaluate(self, x: torch.Tensor, upto: str | None = None) -> dict[str, torch.Tensor]:
        """Every node's value on ``x`` ``(B, *input_shape)`` (up to and including ``upto``, default the output)."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise InvalidInputError(f"the graph takes inputs of shape (B, {self.input_shape}), got {tuple(x.shape)}")
        needed = self.ancestors(upto or self.output)
        values: dict[str, torch.Tensor] = {}
        for n in self:
            if n.name not in needed:
                continue
            values[n.name] = x if isinstance(n.op, Input) else n.op.forward(*(values[i] for i in n.inputs))
        return values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output ``(B, *output_shape)`` on ``x`` ``(B, *input_shape)``."""
        return self.evaluate(x)[self.output]

    __call__ = forward

    def __repr__(self) -> str:
        lines = [f"BoundGraph({len(self)} nodes, input {self.input_shape} -> output {self.output_shape})"]
        for n in self:
            lines.append(f"  {n.name}: {type(n.op).__name__}({', '.join(n.inputs)}) -> {n.shape}")
        return "\n".join(lines)
