"""Incomplete verification by the bound engine: lower bounds of every conjunction's violation over its region's box.

A conjunction ``C y <= d`` cannot hold anywhere in the box when some row has ``min (C_i y - d_i) > 0`` there; the
bound of the conjunction's violation ``max_i (C_i y - d_i)`` is therefore ``max_i`` of the rows' lower bounds
(CROWN or α-CROWN, :func:`mistered.certify.bounds.spec_lower_bounds`, with the box as the input set). A region is
proved when every conjunction's bound is ``> 0``; the property when every region is.

The bounds are computed in float64 on a float64 copy of the bound graph: sound for the network's real-valued
function up to float64 rounding (~1e-15 relative), far below any margin that matters.

Example:
    >>> lower = violation_lower_bounds(graph64, prop.regions, (784, 1), "crown")   # [(K,)] per region
    >>> proved = all(bool((b > 0).all()) for b in lower)
"""

from __future__ import annotations

import math

import torch

from ...errors import InvalidInputError
from ..bounds import AlphaOptions, InputSet, spec_lower_bounds
from ..graph.graph import BoundGraph
from .property import Region

__all__ = ["BOUND_METHODS", "violation_lower_bounds", "box_input_set"]

#: The bound methods used, cheapest first.
BOUND_METHODS = ("crown", "alpha-crown")

_REGIONS_PER_CALL = 32


def box_input_set(lower: torch.Tensor, upper: torch.Tensor, input_shape: tuple[int, ...],
                  dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> InputSet:
    """The bound engine's input set for boxes ``lower``/``upper`` ``(B, n)``: exactly these boxes (never clipped to
    ``[0, 1]``)."""
    lo = lower.to(device=device, dtype=dtype).reshape(-1, *input_shape)
    hi = upper.to(device=device, dtype=dtype).reshape(-1, *input_shape)
    return InputSet.box(lo, hi)


def _bounds(graph: BoundGraph, regions: list[Region], method: str, alpha: AlphaOptions) -> list[torch.Tensor]:
    stacked = [r.stacked() for r in regions]
    rows = max(c.shape[0] for c, _, _ in stacked)
    m = math.prod(graph.output_shape)
    spec = torch.zeros(len(regions), max(rows, 1), m, dtype=torch.float64)
    rhs = torch.zeros(len(regions), max(rows, 1), dtype=torch.float64)
    for i, (coef, d, _) in enumerate(stacked):
        spec[i, : coef.shape[0]], rhs[i, : d.shape[0]] = coef, d
    input_set = box_input_set(torch.stack([r.lower for r in regions]), torch.stack([r.upper for r in regions]),
                              graph.input_shape, graph.dtype, graph.device)
    spec = spec.to(graph.device, graph.dtype).reshape(len(regions), spec.shape[1], *graph.output_shape)
    lower = spec_lower_bounds(graph, input_set, spec, method, alpha=alpha).to("cpu", torch.float64) - rhs
    out = []
    for i, (coef, _, owner) in enumerate(stacked):
        k = len(regions[i].disjuncts)
        per = torch.full((k,), -math.inf, dtype=torch.float64)
        out.append(per.scatter_reduce(0, owner, lower[i, : coef.shape[0]], reduce="amax", include_self=True))
    return out


def violation_lower_bounds(graph: BoundGraph, regions: list[Region], method: str = "crown",
                           alpha: AlphaOptions = AlphaOptions()) -> list[torch.Tensor]:
    """Per region, ``(K,)`` float64 lower bounds of each conjunction's violation over the region's box
    (``-inf`` for a conjunction without rows, which holds everywhere).

    Args:
        graph: the network's bound graph (its dtype and device are used; float64 recommended).
        regions: the regions (their boxes must have ``prod(graph.input_shape)`` inputs).
        method: "crown" or "alpha-crown"; alpha: α-CROWN's settings.
    """
    if method not in BOUND_METHODS:
        raise InvalidInputError(f"bound method must be one of {', '.join(BOUND_METHODS)}, got {method!r}")
    out: list[torch.Tensor] = []
    for start in range(0, len(regions), _REGIONS_PER_CALL):
        out += _bounds(graph, regions[start : start + _REGIONS_PER_CALL], method, alpha)
    return out
