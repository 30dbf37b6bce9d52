"""Building a :class:`~.graph.BoundGraph` while converting a traced model: references to graph values, the place in
the model's code being converted, and the builder that evaluates every new node on an example input.

Evaluating as we build gives each node its shape and lets :mod:`.trace` compare every converted operation with the
model's own value on the same example, so a conversion that is not faithful is caught where it happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...errors import UnsupportedLayerError
from .graph import Node
from .ops import Input, Op

__all__ = ["Ref", "Site", "Builder", "unsupported", "as_constant"]


@dataclass(frozen=True)
class Ref:
    """A value of the graph being built (the output of node ``name``), as opposed to a constant."""

    name: str


@dataclass(frozen=True)
class Site:
    """The model operation being converted.

    Attributes:
        what: a readable name of the operation (``"nn.GELU (module 'net.3')"``, ``"torch.sigmoid"``).
        source: the model's source line that made it (``"model.py:12 in forward: return self.act(x)"``), or ``""``.
        expected: the operation's value on the example input (for shapes).
    """

    what: str
    source: str
    expected: Any

    def where(self) -> str:
        return f"{self.what} at {self.source}" if self.source else self.what


def unsupported(site: Site, why: str = "") -> UnsupportedLayerError:
    """The error for an operation the bound graph cannot represent, naming it and its source line."""
    detail = f" ({why})" if why else ""
    return UnsupportedLayerError(
        f"unsupported operation {site.where()}{detail}; bounds support Linear, Conv2d, ConvTranspose2d, BatchNorm "
        "(eval), ReLU/LeakyReLU/Hardtanh/clamp, add/sub of tensors, arithmetic with constants, cat, "
        "flatten/view/reshape/permute, average/max pooling, Identity, Dropout and the L∞-dist layers"
    )


class Builder:
    """Accumulates nodes; evaluates each on the example input as it is added.

    Args:
        example: ``(B, *input_shape)`` the example input (``B >= 2``, so that a reshape across the batch shows).
    """

    def __init__(self, example: torch.Tensor) -> None:
        self.batch = example.shape[0]
        self.dtype, self.device = example.dtype, example.device
        self.nodes: list[Node] = [Node("input", Input(), (), tuple(example.shape[1:]), "the model's input")]
        self._values: dict[str, torch.Tensor] = {"input": example}

    @property
    def input(self) -> Ref:
        return Ref("input")

    def value(self, ref: Ref) -> torch.Tensor:
        """The example value ``(B, *shape)`` of ``ref``."""
        return self._values[ref.name]

    def shape(self, ref: Ref) -> tuple[int, ...]:
        """The per-example shape of ``ref``."""
        return tuple(self._values[ref.name].shape[1:])

    def add(self, op: Op, inputs: Sequence[Ref], site: Site) -> Ref:
        """Append ``op`` applied to ``inputs``; returns the reference to its output."""
        name = f"n{len(self.nodes)}"
        with torch.no_grad():
            value = op.forward(*(self._values[r.name] for r in inputs))
        if value.shape[0] != self.batch:
            raise unsupported(site, "it mixes the examples of a batch")
        self._values[name] = value
        self.nodes.append(Node(name, op, tuple(r.name for r in inputs), tuple(value.shape[1:]), site.where()))
        return Ref(name)

    def constant(self, value: Any) -> torch.Tensor:
        """``value`` (a number or tensor) as a tensor of the graph's dtype and device."""
        return torch.as_tensor(value).to(device=self.device, dtype=self.dtype).detach()


def as_constant(value: Any, shape: tuple[int, ...], b: Builder, site: Site) -> torch.Tensor:
    """A constant operand of an elementwise operation on values of per-example ``shape``, as a tensor that
    broadcasts against ``shape`` without enlarging it (a leading batch dimension of size 1 is dropped)."""
    if not isinstance(value, (int, float, torch.Tensor)) or isinstance(value, bool):
        raise unsupported(site, f"a constant operand of type {type(value).__name__}")
    c = b.constant(value)
    if c.dim() == len(shape) + 1:
        if c.shape[0] != 1:
            raise unsupported(site, "a constant with one value per example of the batch")
        c = c[0]
    try:
        broadcast = torch.broadcast_shapes(c.shape, shape)
    except RuntimeError:
        broadcast = None
    if c.dim() > len(shape) or broadcast != torch.Size(shape):
        raise unsupported(site, f"a constant of shape {tuple(c.shape)} that does not broadcast to {shape}")
    return c
