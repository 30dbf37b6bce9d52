"""The root's intermediate bounds, tightened by α-CROWN with optimised intermediate slopes (computed once per box).

Every subdomain of a branch and bound starts from the root's boxes of the split nodes (ReLU inputs), so their
tightness decides how many neurons are unstable, hence how deep the search must go. CROWN's intermediate bounds
use the adaptive slopes; here every refined neuron's lower and upper bound has its own slopes, optimised by Adam
for the specification's bound (auto_LiRPA's ``optimize_bound_args`` without ``fix_interm_bounds``, as α,β-CROWN
does at the root). Every evaluation's boxes are sound (any slopes in ``[0, 1]`` are), so each node keeps the
elementwise tightest box seen, and later evaluations start from it. The boxes do not depend on the specification,
only their tightness does: one computation serves every conjunction of a region.

Example:
    >>> known = root_boxes(graph, box, spec, problem.split_nodes, AlphaOptions(iterations=20))
    >>> bound_batch(problem, known, 1, BoundOptions())                  # the root bounded inside these boxes
"""

from __future__ import annotations

import logging
import math
import time

import torch

from ..bounds.alpha import AlphaOptions, AlphaSlopes, SlopeOptimizer, intermediate_slopes
from ..bounds.backward import backward_lower
from ..bounds.crown import DEFAULT_MAX_ELEMENTS, crown_bounds
from ..bounds.input_set import InputSet
from ..bounds.interval import Box
from ..graph.graph import BoundGraph
from .bounding import DomainBoxes

__all__ = ["root_boxes"]

logger = logging.getLogger(__name__)


def root_boxes(graph: BoundGraph, input_set: InputSet, spec: torch.Tensor, split_nodes: dict[str, float] | list[str],
               options: AlphaOptions = AlphaOptions(), max_elements: int = DEFAULT_MAX_ELEMENTS,
               until: float = math.inf) -> DomainBoxes:
    """Per split node, the box ``(lower, upper)`` ``(1, n)`` of its neurons over ``input_set`` (batch 1): CROWN's,
    tightened by ``options.iterations`` Adam steps on every refined neuron's slopes, maximising the lower bounds of
    ``spec`` ``(S, 1, *output_shape)``. Sound for any number of steps; CROWN's alone with ``iterations == 0`` or
    when the slopes would exceed ``options.max_slopes``; the steps stop early at ``time.monotonic() >= until``."""
    rows: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        first = crown_bounds(graph, input_set, max_elements=max_elements, rows=rows)
    best: dict[str, Box] = {name: first[name] for name in split_nodes}
    slopes = intermediate_slopes(graph, rows)
    if options.iterations and slopes > options.max_slopes:
        logger.info("root bounds: %d slopes exceed max_slopes, CROWN's intermediate bounds kept", slopes)
    elif options.iterations:
        source = AlphaSlopes(graph.output, spec.shape[0], rows)

        def tighten(name: str, box: Box) -> Box:
            if name not in best:
                return box
            return torch.maximum(box[0], best[name][0]), torch.minimum(box[1], best[name][1])

        every_row = torch.arange(spec.shape[0], device=spec.device)
        optimizer = SlopeOptimizer(source, options)
        for _ in range(options.iterations):
            if time.monotonic() >= until:
                break
            with torch.enable_grad():
                boxes = crown_bounds(graph, input_set, source, max_elements, rows, tighten=tighten)
                lower = backward_lower(graph, graph.output, spec, boxes, input_set,
                                       source.bind(graph.output, every_row))
            best = {name: (boxes[name][0].detach(), boxes[name][1].detach()) for name in best}
            if not optimizer.step(lower):
                break
    return {name: (lo.flatten(1), hi.flatten(1)) for name, (lo, hi) in best.items()}
