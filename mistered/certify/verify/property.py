"""A verification property: input boxes, each with an output specification in disjunctive normal form.

A :class:`Property` is what a VNNLIB file states (:mod:`.vnnlib`) or what ``--eps`` around a labelled example
means (:func:`robustness_property`). It holds one or more :class:`Region` s; a region is an input box
``lower <= x <= upper`` (flat, ``(n,)``, float64, in the model's input units) and a disjunction of
:class:`Conjunction` s ``C y <= d`` over the network's outputs ``y`` ``(m,)``. The property is *violated*
(VNN-COMP's ``sat``) iff some ``x`` in some region's box makes some of that region's conjunctions true; it holds
(``unsat``) iff no such ``x`` exists.

Example:
    >>> prop = robustness_property(x, label=3, eps=0.05, num_classes=10)   # x (1, 28, 28) in [0, 1]
    >>> region = prop.regions[0]
    >>> region.violation(logits)                                         # (B, K): <= 0 where violated
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import InvalidInputError

__all__ = ["Conjunction", "Region", "Property", "robustness_property"]


@dataclass(frozen=True)
class Conjunction:
    """``C y <= d`` (every row): one disjunct of an output specification.

    Attributes:
        coef: ``(r, m)`` float64, the rows ``C`` over the ``m`` outputs (``r = 0``: always true).
        rhs: ``(r,)`` float64, ``d``.
    """

    coef: torch.Tensor
    rhs: torch.Tensor

    def __post_init__(self) -> None:
        if self.coef.dim() != 2 or self.rhs.shape != (self.coef.shape[0],):
            raise InvalidInputError(f"a conjunction needs coef (r, m) and rhs (r,), got {tuple(self.coef.shape)} "
                                    f"and {tuple(self.rhs.shape)}")
        if not bool(torch.isfinite(self.coef).all() and torch.isfinite(self.rhs).all()):
            raise InvalidInputError("a conjunction's coefficients and right-hand sides must be finite")

    @property
    def rows(self) -> int:
        return self.coef.shape[0]


@dataclass(frozen=True)
class Region:
    """An input box with the disjunction of output conjunctions that violates the property inside it.

    Attributes:
        lower, upper: ``(n,)`` float64, the box (``lower <= upper``), in the order of the flattened input.
        disjuncts: the conjunctions (at least one); the region is violated where any of them holds.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    disjuncts: tuple[Conjunction, ...]

    def __post_init__(self) -> None:
        if self.lower.dim() != 1 or self.lower.shape != self.upper.shape:
            raise InvalidInputError(f"a region's box needs lower and upper of one shape (n,), got "
                                    f"{tuple(self.lower.shape)} and {tuple(self.upper.shape)}")
        if not bool(torch.isfinite(self.lower).all() and torch.isfinite(self.upper).all()):
            raise InvalidInputError("a region's box must be finite")
        if bool((self.lower > self.upper).any()):
            raise InvalidInputError("a region's box has lower > upper")
        if not self.disjuncts:
            raise InvalidInputError("a region needs at least one output conjunction")
        widths = {c.coef.shape[1] for c in self.disjuncts}
        if len(widths) != 1:
            raise InvalidInputError(f"a region's conjunctions disagree on the number of outputs: {sorted(widths)}")

    @property
    def num_outputs(self) -> int:
        return self.disjuncts[0].coef.shape[1]

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every row of every conjunction: ``C`` ``(S, m)``, ``d`` ``(S,)`` and the conjunction of each row ``(S,)``
        (int64, an index into :attr:`disjuncts`)."""
        coef = torch.cat([c.coef for c in self.disjuncts])
        rhs = torch.cat([c.rhs for c in self.disjuncts])
        owner = torch.cat([torch.full((c.rows,), k, dtype=torch.int64) for k, c in enumerate(self.disjuncts)])
        return coef, rhs, owner

    def violation(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, K)``: ``max_i (C_k y - d_k)_i`` per conjunction ``k`` for outputs ``y`` ``(B, m)``; a conjunction
        holds where its value is ``<= 0`` (``-inf`` for a conjunction without rows, which always holds)."""
        coef, rhs, owner = self.stacked()
        rows = y.to(torch.float64) @ coef.to(y.device).T - rhs.to(y.device)  # (B, S)
        out = torch.full((y.shape[0], len(self.disjuncts)), float("-inf"), dtype=torch.float64, device=y.device)
        return out.scatter_reduce(1, owner.to(y.device).expand_as(rows), rows, reduce="amax", include_self=True)

    def contains(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: the flat inputs ``x`` ``(B, n)`` lie in the box (compared in float64, no tolerance)."""
        x = x.to(torch.float64)
        return ((x >= self.lower.to(x.device)) & (x <= self.upper.to(x.device))).all(dim=1)


@dataclass(frozen=True)
class Property:
    """A verification property: violated iff some region is.

    Attributes:
        regions: the input boxes with their output specifications.
        num_inputs: ``n``, the flattened input size; num_outputs: ``m``.
        name: where it came from (a file name, ``"example 12, linf eps 0.05"``), for messages.
    """

    regions: tuple[Region, ...]
    num_inputs: int
    num_outputs: int
    name: str = ""

    def __post_init__(self) -> None:
        if not self.regions:
            raise InvalidInputError(f"property {self.name!r} has no input region")
        for region in self.regions:
            if region.lower.shape[0] != self.num_inputs or region.num_outputs != self.num_outputs:
                raise InvalidInputError(f"property {self.name!r}: a region has {region.lower.shape[0]} inputs and "
                                        f"{region.num_outputs} outputs, expected {self.num_inputs} and "
                                        f"{self.num_outputs}")


def robustness_property(x: torch.Tensor, label: int, eps: float, num_classes: int,
                        domain: tuple[float, float] = (0.0, 1.0), name: str = "") -> Property:
    """Local L∞ robustness of one example: violated iff some input in ``[x - eps, x + eps] ∩ domain`` gets a logit
    ``y_j >= y_label`` for some ``j != label`` (VNN-COMP's convention: a tie counts as a violation).

    Args:
        x: the example, any shape (flattened in C order), in ``domain``; label: its class in ``[0, num_classes)``.
        eps: the L∞ radius (input units); domain: the valid inputs (``[0, 1]`` pixels).
    """
    if not (0 <= int(label) < num_classes) or num_classes < 2:
        raise InvalidInputError(f"label {label} is not a class of a {num_classes}-class model")
    if not (eps >= 0 and eps < float("inf")):
        raise InvalidInputError(f"eps must be finite and non-negative, got {eps}")
    flat = x.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
    if flat.numel() and (float(flat.min()) < domain[0] or float(flat.max()) > domain[1]):
        raise InvalidInputError(f"the example must lie in {list(domain)}, got values in [{float(flat.min()):.4g}, "
                                f"{float(flat.max()):.4g}]")
    lower, upper = (flat - eps).clamp(min=domain[0]), (flat + eps).clamp(max=domain[1])
    eye = torch.eye(num_classes, dtype=torch.float64)
    disjuncts = tuple(Conjunction((eye[label] - eye[j])[None], torch.zeros(1, dtype=torch.float64))
                      for j in range(num_classes) if j != label)
    return Property((Region(lower, upper, disjuncts),), flat.numel(), num_classes, name)
