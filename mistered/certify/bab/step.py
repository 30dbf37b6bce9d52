"""Branch and bound as the complete step of :func:`mistered.certify.verify.verify`.

Each open conjunction ``C y <= d`` of each open region is its own :func:`~.search.bab` problem: ``g(x) = max_i
(C_i f(x) - d_i)`` over the region's box (one group), proved when ``g > 0``. The conjunctions the attack came
closest to violating go first; the root's intermediate bounds are tightened once per region for all of them
(:mod:`.root`); they take turns with slices of time doubling every round (each search continues
where it stopped). A counterexample ends the step
at once (the verifier re-checks it); otherwise every conjunction's bound is raised to what the search proved.

Example:
    >>> verify(model, prop, 60, branch_and_bound=BabStep())
"""

from __future__ import annotations

import logging
import time

import torch

from ...errors import InvalidInputError
from ..verify.complete import CompleteOutcome, OpenRegion
from ..verify.deadline import Deadline
from ..verify.incomplete import box_input_set
from ..verify.network import Network
from ..verify.property import Property
from .root import root_boxes
from .search import BabOptions, BabRun

__all__ = ["BabStep"]

logger = logging.getLogger(__name__)


class BabStep:
    """A :class:`~mistered.certify.verify.complete.CompleteStep` running :func:`~.search.bab` per open conjunction,
    in ``dtype`` (float64: sound up to rounding far below any margin that matters). The conjunctions take turns:
    each continues its own search for ``first_slice`` seconds, then twice that per round, so the easy ones are
    decided early and the hard ones get the rest of the time."""

    name = "bab"

    def __init__(self, options: BabOptions = BabOptions(), dtype: torch.dtype = torch.float64,
                 first_slice: float = 2.0) -> None:
        if not first_slice > 0:
            raise InvalidInputError(f"first_slice must be positive seconds, got {first_slice}")
        self.options, self.dtype, self.first_slice = options, dtype, first_slice

    def __call__(self, network: Network, prop: Property, open_regions: list[OpenRegion],
                 deadline: Deadline) -> CompleteOutcome:
        lower = [r.lower.clone() for r in open_regions]
        if network.graph is None:
            return CompleteOutcome(lower, [])
        graph = network.graph.to(dtype=self.dtype)
        order = sorted((float(r.attack_value[k]), i, k) for i, r in enumerate(open_regions) for k in r.open)
        runs: dict[tuple[int, int], BabRun] = {}
        for _, i, k in order:
            region = open_regions[i]
            conjunction = region.region.disjuncts[k]
            if conjunction.rows == 0:  # always true: every point of the box violates it
                return CompleteOutcome(lower, [(region.index, (region.region.lower + region.region.upper) / 2)])
            box = box_input_set(region.region.lower[None], region.region.upper[None], graph.input_shape, self.dtype,
                                graph.device)
            spec = conjunction.coef.reshape(conjunction.rows, *graph.output_shape)
            runs[i, k] = BabRun(graph, box, spec, conjunction.rhs, torch.zeros(conjunction.rows), self.options)
        self._share_root_boxes(runs, deadline)
        slice_s = self.first_slice
        while runs and not deadline.expired():
            for (i, k), run in list(runs.items()):
                if deadline.expired():
                    break
                result = run.advance(min(slice_s, deadline.remaining()))
                logger.info("bab region %d conjunction %d: %s, bound %.6g, %d domains, %.2f s",
                            open_regions[i].index, k, result.status, result.lower_bound, result.domains,
                            result.seconds)
                if result.counterexample is not None:
                    x = result.counterexample.reshape(-1).to("cpu", torch.float64)
                    return CompleteOutcome(lower, [(open_regions[i].index, x)])
                lower[i][k] = max(float(lower[i][k]), result.lower_bound)
                if result.status != "timeout":  # decided, or nothing more to gain
                    del runs[i, k]
            slice_s *= 2
        return CompleteOutcome(lower, [])

    def _share_root_boxes(self, runs: dict[tuple[int, int], BabRun], deadline: Deadline) -> None:
        """One :func:`~.root.root_boxes` per region (its box is every conjunction's), for all its conjunctions'
        rows at once, given to each of its runs."""
        for region in sorted({i for i, _ in runs}):
            if deadline.expired():
                return
            mine = [run for (i, _), run in runs.items() if i == region]
            first = mine[0].problem
            spec = torch.cat([run.problem.spec for run in mine])[:, None]
            boxes = root_boxes(first.graph, first.input_set, spec, first.split_nodes, self.options.root,
                               self.options.bound.max_elements, time.monotonic() + deadline.remaining())
            for run in mine:
                run.root = boxes
