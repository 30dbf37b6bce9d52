"""α-CROWN (Xu et al. 2021): the ReLU lower-relaxation slopes optimised by projected gradient ascent on the bound.

Every ReLU term's lower relaxation ``relu(y) >= alpha * y`` is valid for any ``alpha`` in ``[0, 1]``, so any slopes
give a sound bound; α-CROWN maximises the bound over them. The slopes are separate for every specification row of
every example (batched over examples and specifications) and for every backward pass's start node, initialised at
CROWN's adaptive choice, optimised with Adam and projected back into ``[0, 1]`` after every step. The best bound
seen is kept per row and example, so the result is never below CROWN's (the first evaluation *is* CROWN).

By default the intermediate bounds stay CROWN's and only the slopes of the final specification are optimised
(auto_LiRPA's ``CROWN-Optimized`` given its CROWN bounds as ``interm_bounds``: the same bounds to 1e-7 on the
benchmark's residual CNN); with ``optimize_intermediate`` the intermediate bounds are recomputed with their own
slopes at every step and the gradient flows through them too (tighter, much more costly: one full CROWN sweep per
step, slopes for every refined neuron; each chunk of the sweep is checkpointed so memory stays bounded by the chunk
size). auto_LiRPA's own default is of that second kind, with the slopes of convolutional intermediate bounds shared
per channel.

Conventions, against auto_LiRPA 0.7.1 (same optimiser: Adam with torch's defaults, lr 0.5, decay 0.98 per step,
slopes clamped into ``[0, 1]`` after each step, initialised at CROWN's adaptive slopes): ``iterations`` counts
gradient steps, so the bound is evaluated ``iterations + 1`` times (its ``iteration`` counts evaluations: its 20 is
our 19); the best bound is kept for every specification row of every example (it keeps an example's rows from the
iterations where their sum improved, never tighter than ours).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import InvalidInputError
from ..graph.graph import BoundGraph
from ..graph.ops import PiecewiseLinear
from .backward import backward_lower
from .crown import DEFAULT_MAX_ELEMENTS, crown_bounds
from .input_set import InputSet
from .relaxations import AdaptiveSlopes, Slopes

__all__ = ["AlphaOptions", "AlphaSlopes", "SlopeOptimizer", "alpha_crown", "intermediate_slopes"]


@dataclass(frozen=True)
class AlphaOptions:
    """Settings of the slope optimisation (auto_LiRPA's defaults).

    Attributes:
        iterations: gradient steps (the bound is evaluated ``iterations + 1`` times).
        lr: Adam's learning rate; lr_decay: its factor per step.
        optimize_intermediate: also optimise the slopes of the intermediate bounds (see the module docstring).
        max_slopes: the most slope values ``optimize_intermediate`` may create (refused beyond: it needs twice the
            refined neurons times the earlier ReLU neurons per example, quadratic in the width of the network).
    """

    iterations: int = 20
    lr: float = 0.5
    lr_decay: float = 0.98
    optimize_intermediate: bool = False
    max_slopes: int = 1 << 27

    def __post_init__(self) -> None:
        if int(self.iterations) != self.iterations or self.iterations < 0:
            raise InvalidInputError(f"alpha iterations must be a non-negative integer, got {self.iterations}")
        if not self.lr > 0 or not 0 < self.lr_decay <= 1:
            raise InvalidInputError(f"alpha needs lr > 0 and 0 < lr_decay <= 1, got {self.lr}, {self.lr_decay}")


class _Bound:
    """The slopes of one backward pass: rows ``rows`` of the start's parameters."""

    def __init__(self, owner: AlphaSlopes, start: str, rows: torch.Tensor) -> None:
        self.owner, self.start, self.rows = owner, start, rows

    def lower(self, node: str, piece: int, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        key = (self.start, node, piece)
        params = self.owner.params
        if key not in params:  # first use: CROWN's adaptive slopes, one per row of the start
            with torch.no_grad():  # (not recorded: a checkpointed chunk records the same operations when rerun)
                init = AdaptiveSlopes().lower(node, piece, lo, hi)
                total = self.owner.total_rows(self.start)
                params[key] = init.expand(total, *init.shape).clone().requires_grad_(True)
        return params[key][self.rows]


class AlphaSlopes:
    """Optimisable lower slopes, ``params[(start, node, piece)]`` of shape ``(R_start, B, *node.shape)``, created on
    first use. ``R_start`` is the output specification's row count for the output, and twice the refined neurons
    (lower and upper bound) for an intermediate node.

    Args:
        output: the graph's output node; spec_rows: its specification rows.
        rows: the refined neurons of each intermediate node (as filled by :func:`crown_bounds`).
    """

    def __init__(self, output: str, spec_rows: int, rows: dict[str, torch.Tensor]) -> None:
        self.output, self.spec_rows, self.rows = output, spec_rows, rows
        self.params: dict[tuple[str, str, int], torch.Tensor] = {}

    def total_rows(self, start: str) -> int:
        return self.spec_rows if start == self.output else 2 * self.rows[start].numel()

    def bind(self, start: str, rows: torch.Tensor) -> Slopes:
        return _Bound(self, start, rows)

    @torch.no_grad()
    def project_(self) -> None:
        """Clamp every slope into ``[0, 1]``."""
        for p in self.params.values():
            p.clamp_(0.0, 1.0)


def intermediate_slopes(graph: BoundGraph, rows: dict[str, torch.Tensor], batch: int = 1) -> int:
    """How many slope values optimising every refined neuron's bounds creates for ``batch`` examples (an upper
    estimate); ``rows`` as :func:`~mistered.certify.bounds.crown.crown_bounds` fills it."""
    relu = {n.name: n.numel * len(n.op.breaks) for n in graph if isinstance(n.op, PiecewiseLinear)}
    return sum(2 * r.numel() * batch * sum(relu.get(a, 0) for a in graph.ancestors(start)) for start, r in rows.items())


class SlopeOptimizer:
    """Adam (with exponential learning-rate decay) over the slopes of an :class:`AlphaSlopes`, maximising a sum of
    lower bounds; the optimizer is made at the first step, after the slopes exist."""

    def __init__(self, source: AlphaSlopes, options: AlphaOptions) -> None:
        self.source, self.options = source, options
        self.optimizer: torch.optim.Optimizer | None = None
        self.schedule: torch.optim.lr_scheduler.LRScheduler | None = None

    def step(self, lower: torch.Tensor) -> bool:
        """One ascent step on ``lower.sum()`` then the projection into ``[0, 1]``; ``False`` (no step) when the
        bound has no slopes to optimise."""
        if not self.source.params:
            return False
        if self.optimizer is None:
            self.optimizer = torch.optim.Adam(list(self.source.params.values()), lr=self.options.lr)
            self.schedule = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, self.options.lr_decay)
        self.optimizer.zero_grad(set_to_none=True)
        (-lower.sum()).backward()
        self.optimizer.step()
        self.schedule.step()
        self.source.project_()
        return True


def alpha_crown(graph: BoundGraph, input_set: InputSet, spec: torch.Tensor, options: AlphaOptions = AlphaOptions(),
                max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """``(R, B)`` α-CROWN lower bounds of ``<spec[r, b], output>`` over the input set; ``spec`` ``(R, B, *out_shape)``.

    Never below the CROWN bound (the best over the iterations is kept, the first being CROWN's).

    Raises:
        InvalidInputError: ``optimize_intermediate`` would create more than ``options.max_slopes`` slopes.
    """
    rows: dict[str, torch.Tensor] = {}
    source = AlphaSlopes(graph.output, spec.shape[0], rows)
    with torch.no_grad():  # CROWN's intermediate bounds, and the neurons every iteration refines
        fixed = crown_bounds(graph, input_set, max_elements=max_elements, rows=rows)
    if options.optimize_intermediate:
        needed = intermediate_slopes(graph, rows, input_set.batch)
        if needed > options.max_slopes:
            raise InvalidInputError(
                f"optimising the intermediate bounds of this network needs {needed:,} slopes (more than max_slopes = "
                f"{options.max_slopes:,}); use AlphaOptions(optimize_intermediate=False), a smaller batch, or raise "
                "max_slopes"
            )
        fixed = None
    every_row = torch.arange(spec.shape[0], device=spec.device)
    best, optimizer = None, SlopeOptimizer(source, options)
    for step in range(options.iterations + 1):
        with torch.enable_grad():
            boxes = fixed if fixed is not None else crown_bounds(graph, input_set, source, max_elements, rows)
            lower = backward_lower(graph, graph.output, spec, boxes, input_set, source.bind(graph.output, every_row))
        best = lower.detach() if best is None else torch.maximum(best, lower.detach())
        if step == options.iterations or not optimizer.step(lower):
            break
    return best
