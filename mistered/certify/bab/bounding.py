"""Bounding a batch of subdomains at once: one CROWN / α-β-CROWN computation over ``D`` copies of the input box.

A subdomain is the input box together with ReLU split decisions. The decisions live in the boxes of the split
ReLUs' inputs (:class:`DomainBoxes`): a neuron split active has its pre-activation lower bound raised to the
breakpoint, one split inactive its upper bound lowered to it, so the engine's relaxation uses the exact linear
piece. Every node's interval box is intersected with these boxes before CROWN refines it
(:func:`~mistered.certify.bounds.crown_bounds`'s ``tighten``), which also tightens the later layers' intermediate
bounds. A box with ``lower > upper`` proves the subdomain empty.

The final bound optionally optimises, per subdomain and specification row, the ReLU lower slopes (α) and
Lagrange multipliers ``β >= 0`` of the split constraints (β-CROWN, Wang et al. 2021): for every neuron known to
satisfy ``z >= 0`` (``z <= 0``) on the subdomain, ``-β z`` (``+β z``) is added to the form on ``z``, which is
``<= 0`` there, so every ``β >= 0`` gives a sound bound; Adam maximises it, and the best bound seen is kept.
A subdomain's α and β at its best bound (:class:`WarmStart`) are returned with it: its children start from them
(β-CROWN's warm start), so a few steps refine what the parent had already optimised.

Example:
    >>> out = bound_batch(problem, boxes, BoundOptions())    # boxes: D subdomains
    >>> out.lower                                            # (D,) lower bounds of the objective
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import InvalidInputError
from ..bounds.alpha import AlphaSlopes
from ..bounds.backward import backward_lower
from ..bounds.crown import DEFAULT_MAX_ELEMENTS, crown_bounds
from ..bounds.forms import Form
from ..bounds.input_set import InputSet
from ..bounds.interval import Box
from ..bounds.relaxations import AdaptiveSlopes
from .problem import BabProblem

__all__ = ["BoundOptions", "DomainBoxes", "WarmStart", "BatchBounds", "bound_batch", "evaluate_batch"]

DomainBoxes = dict[str, Box]
"""Per split node (a ReLU's input), ``(lower, upper)`` ``(D, n)`` flat: the subdomains' known boxes."""


@dataclass(frozen=True)
class BoundOptions:
    """How a batch of subdomains is bounded.

    Attributes:
        iterations: gradient steps on α and β (0: plain CROWN with the split constraints as exact pieces); few
            suffice as a subdomain starts from its parent's (measured on mnistfc 256x4: 5 beat 10 and 20).
        beta: optimise the split multipliers β (with α) when ``iterations > 0``.
        lr_alpha, lr_beta: Adam's learning rates, small as the start is the parent's optimum (on mnistfc 256x4,
            lr_alpha 0.1 made no progress from it; 0.01, 0.03 and 0.05 did, 0.03 best over three properties).
        recompute_intermediate: recompute the intermediate bounds by CROWN per subdomain (tighter, much
            costlier); otherwise they are the parent's, clamped by the new split, intersected with interval
            propagation (the root's are always CROWN's).
        max_elements: memory bound of CROWN's chunks (values in one form tensor).
    """

    iterations: int = 5
    beta: bool = True
    lr_alpha: float = 0.03
    lr_beta: float = 0.05
    recompute_intermediate: bool = False
    max_elements: int = DEFAULT_MAX_ELEMENTS

    def __post_init__(self) -> None:
        if int(self.iterations) != self.iterations or self.iterations < 0:
            raise InvalidInputError(f"bound iterations must be a non-negative integer, got {self.iterations}")
        if not (self.lr_alpha > 0 and self.lr_beta > 0):
            raise InvalidInputError("bound learning rates must be positive")


@dataclass
class WarmStart:
    """Optimised multipliers of ``D`` subdomains, per split node ``(D, S, n)`` (``S`` specification rows): the lower
    slopes α in ``[0, 1]`` of its ReLU and the split multipliers β ``>= 0`` (any values are sound; they are only
    where the optimisation starts). Stored in float32 to halve the open subdomains' memory."""

    alphas: dict[str, torch.Tensor]
    betas: dict[str, torch.Tensor]

    def index(self, index: torch.Tensor) -> WarmStart:
        """The subdomains ``index`` (a bool mask or indices)."""
        return WarmStart({n: a[index] for n, a in self.alphas.items()}, {n: b[index] for n, b in self.betas.items()})

    def cat(self, other: WarmStart) -> WarmStart:
        return WarmStart({n: torch.cat([a, other.alphas[n]]) for n, a in self.alphas.items()},
                         {n: torch.cat([b, other.betas[n]]) for n, b in self.betas.items()})


@dataclass
class BatchBounds:
    """The bounds of ``D`` subdomains.

    Attributes:
        lower: ``(D,)`` lower bounds of the objective (``+inf``: the subdomain is empty).
        boxes: the subdomains' refined boxes of the split nodes (the children inherit them).
        scores: per split node, ``(D, n)`` branching scores (``-inf`` where a neuron cannot be split).
        candidates: ``(D, *input_shape)`` points of the input box, one per subdomain, worth a forward pass.
        warm: the α and β at each subdomain's best bound (``None`` without optimisation).
    """

    lower: torch.Tensor
    boxes: DomainBoxes
    scores: dict[str, torch.Tensor]
    candidates: torch.Tensor
    warm: WarmStart | None = None


def _repeat(input_set: InputSet, count: int) -> InputSet:
    rep = lambda t: t.expand(count, *t.shape[1:]).contiguous()  # noqa: E731
    return InputSet(rep(input_set.center), rep(input_set.eps), input_set.norm, rep(input_set.lower),
                    rep(input_set.upper))


def _intermediate(problem: BabProblem, input_set: InputSet, known: DomainBoxes, options: BoundOptions) -> dict:
    """Every node's box over each subdomain, intersected with ``known`` (and CROWN-refined if asked)."""
    graph = problem.graph

    def tighten(name: str, box: Box) -> Box:
        if name not in known:
            return box
        lo, hi = known[name]
        return torch.maximum(box[0], lo.reshape(box[0].shape)), torch.minimum(box[1], hi.reshape(box[1].shape))

    skip = None if options.recompute_intermediate or not known else {
        name: torch.zeros(0, dtype=torch.int64, device=graph.device) for name in graph.ancestors(graph.output)}
    return crown_bounds(graph, input_set, max_elements=options.max_elements, rows=skip, tighten=tighten)


class _Final:
    """The final backward pass from the specification, with β terms and the forms the search reads; α and β start
    from ``warm`` where given (CROWN's adaptive slopes and ``β = 0`` otherwise)."""

    def __init__(self, problem: BabProblem, boxes: dict, input_set: InputSet, options: BoundOptions,
                 warm: WarmStart | None) -> None:
        self.problem, self.boxes, self.input_set = problem, boxes, input_set
        rows, count = problem.spec.shape[0], input_set.batch
        self.spec = problem.spec.expand(count, *problem.spec.shape).transpose(0, 1)  # (S, D, *out)
        multipliers = bool(options.iterations) or warm is not None  # optimised, or given
        self.slopes = AlphaSlopes(problem.graph.output, rows, {}) if multipliers else None
        self.every_row = torch.arange(rows, device=problem.spec.device)
        self.betas: dict[str, torch.Tensor] = {}
        self.signs: dict[str, torch.Tensor] = {}
        if multipliers and options.beta:
            for name, t in problem.split_nodes.items():
                lo, hi = boxes[name]
                if t == 0:  # the split constraint z >= 0 / z <= 0 needs no constant
                    self.signs[name] = (lo >= 0).to(lo.dtype) - (hi <= 0).to(lo.dtype)
                    start = warm.betas.get(name) if warm is not None else None
                    self.betas[name] = lo.new_zeros(rows, *lo.shape) if start is None else \
                        _unflat(start, lo).clamp(min=0)
                    self.betas[name].requires_grad_(True)
        if self.slopes is not None and warm is not None:
            output = problem.graph.output
            for name, alpha in warm.alphas.items():
                lo = boxes[name][0]
                self.slopes.params[output, problem.relu_of_input[name], 0] = \
                    _unflat(alpha, lo).clamp(0, 1).requires_grad_(True)
        self.seen: dict[str, torch.Tensor] = {}
        self.watched = problem.relu_of | {problem.graph.input.name}

    def _visit(self, name: str, form: Form) -> Form:
        if name in self.watched:
            self.seen[name] = form.dense().detach()
        if name in self.betas:
            form = Form(form.dense() - self.betas[name] * self.signs[name])
        return form

    def __call__(self) -> torch.Tensor:
        """``(S, D)`` lower bounds of the specification rows (before the right-hand sides)."""
        slopes = self.slopes.bind(self.problem.graph.output, self.every_row) if self.slopes else AdaptiveSlopes()
        return backward_lower(self.problem.graph, self.problem.graph.output, self.spec, self.boxes, self.input_set,
                              slopes, visit=self._visit)

    def parameters(self) -> list[tuple[torch.Tensor, int]]:
        """``(tensor, 0)`` for the slopes, ``(tensor, 1)`` for the multipliers."""
        return [(p, 0) for p in (self.slopes.params.values() if self.slopes else [])] + \
            [(b, 1) for b in self.betas.values()]

    def multipliers(self) -> WarmStart:
        """The current α (of the split nodes' ReLUs) and β, each ``(S, D, *shape)`` (detached clones)."""
        params = self.slopes.params if self.slopes else {}
        output = self.problem.graph.output
        alphas = {name: params[output, relu, 0].detach().clone() for name, relu in self.problem.relu_of_input.items()
                  if (output, relu, 0) in params}
        return WarmStart(alphas, {name: b.detach().clone() for name, b in self.betas.items()})

    @torch.no_grad()
    def project_(self) -> None:
        if self.slopes:
            self.slopes.project_()
        for b in self.betas.values():
            b.clamp_(min=0)


def _unflat(stored: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(S, D, *shape)`` in ``like``'s dtype from a stored ``(D, S, n)``; ``like`` is ``(D, *shape)``."""
    return stored.transpose(0, 1).reshape(stored.shape[1], *like.shape).to(like.dtype).clone()


def _stored(multipliers: WarmStart) -> WarmStart:
    """``(S, D, *shape)`` tensors as the stored ``(D, S, n)`` float32."""
    flat = lambda t: t.transpose(0, 1).flatten(2).to(torch.float32).contiguous()  # noqa: E731
    return WarmStart({n: flat(a) for n, a in multipliers.alphas.items()}, {n: flat(b) for n, b in
                                                                            multipliers.betas.items()})


def _keep_best(kept: WarmStart | None, current: WarmStart, better: torch.Tensor) -> WarmStart:
    """``current``'s values where ``better`` ``(S, D)`` holds, ``kept``'s elsewhere."""
    if kept is None:
        return current

    def pick(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        return torch.where(better.reshape(*better.shape, *[1] * (new.dim() - 2)), new, old)

    return WarmStart({n: pick(a, kept.alphas[n]) for n, a in current.alphas.items()},
                     {n: pick(b, kept.betas[n]) for n, b in current.betas.items()})


def _optimise(final: _Final, options: BoundOptions) -> tuple[torch.Tensor, WarmStart]:
    """``(S, D)`` the best row bounds over ``options.iterations`` Adam steps on α and β, stopping early once every
    subdomain is proved, and the α and β that gave them (the last evaluation is the one whose forms
    :attr:`_Final.seen` keeps)."""
    best, kept, optimizer = None, None, None
    for step in range(options.iterations + 1):
        with torch.enable_grad():
            rows = final()
        better = torch.ones_like(rows, dtype=torch.bool) if best is None else rows.detach() > best
        kept = _keep_best(kept, final.multipliers(), better)
        best = rows.detach() if best is None else torch.maximum(best, rows.detach())
        if step == options.iterations or not final.parameters() or bool((final.problem.objective(best) > 0).all()):
            break
        if optimizer is None:
            groups = [{"params": [p for p, k in final.parameters() if k == 0], "lr": options.lr_alpha},
                      {"params": [p for p, k in final.parameters() if k == 1], "lr": options.lr_beta}]
            optimizer = torch.optim.Adam([g for g in groups if g["params"]])
        optimizer.zero_grad(set_to_none=True)
        (-final.problem.objective(rows).sum()).backward()
        optimizer.step()
        final.project_()
    return best, _stored(kept)


def _scores(problem: BabProblem, boxes: dict, seen: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BaBSR-style scores per split node ``(D, n)``: how much the upper relaxation's intercept of each unstable
    neuron costs the bound (summed over the rows), with its width times ``|coef|`` as a tie-breaker."""
    scores = {}
    for name, t in problem.split_nodes.items():
        lo, hi = (b.flatten(1) - t for b in boxes[name])
        if problem.relu_of_input[name] not in seen:  # the output does not depend on it
            scores[name] = torch.full_like(lo, -torch.inf)
            continue
        coef = seen[problem.relu_of_input[name]].flatten(2)  # (S, D, n)
        unstable = (lo < 0) & (hi > 0)
        intercept = (-lo * hi / (hi - lo).clamp(min=1e-12)).clamp(min=0)
        score = coef.clamp(max=0).abs().sum(0) * intercept + 1e-4 * coef.abs().sum(0) * torch.minimum(hi, -lo)
        scores[name] = torch.where(unstable, score, torch.full_like(score, -torch.inf))
    return scores


def _objective(problem: BabProblem, boxes: dict, rows: torch.Tensor) -> torch.Tensor:
    """``(D,)`` the objective's lower bounds from the rows' ``(S, D)``, ``+inf`` where a box proves the subdomain
    empty."""
    lower = problem.objective(rows)
    empty = torch.zeros_like(lower, dtype=torch.bool)
    for name in problem.split_nodes:
        lo, hi = boxes[name]
        empty |= (lo > hi).flatten(1).any(dim=1)
    return torch.where(empty, torch.full_like(lower, torch.inf), lower)


def bound_batch(problem: BabProblem, known: DomainBoxes, count: int, options: BoundOptions,
                warm: WarmStart | None = None) -> BatchBounds:
    """Bound ``count`` subdomains given by ``known`` (``{}``: ``count`` copies of the whole box), α and β starting
    from ``warm`` (``D = count``) where given."""
    input_set = _repeat(problem.input_set, count)
    with torch.no_grad():
        boxes = _intermediate(problem, input_set, known, options)
    final = _Final(problem, boxes, input_set, options, warm)
    multipliers = None
    if options.iterations:
        rows, multipliers = _optimise(final, options)
    else:
        with torch.no_grad():
            rows = final()
    lower = _objective(problem, boxes, rows)
    kept = {name: (boxes[name][0].flatten(1), boxes[name][1].flatten(1)) for name in problem.split_nodes}
    coef = final.seen[problem.graph.input.name]  # (S, D, *in): the minimiser of each row's linear bound
    corners = torch.where(coef >= 0, input_set.lower, input_set.upper)
    return BatchBounds(lower, kept, _scores(problem, boxes, final.seen), problem.best_candidates(corners),
                       multipliers)


@torch.no_grad()
def evaluate_batch(problem: BabProblem, known: DomainBoxes, count: int, options: BoundOptions,
                   warm: WarmStart | None) -> torch.Tensor:
    """``(D,)`` lower bounds of ``count`` subdomains with α and β fixed at ``warm`` (no optimisation; CROWN's slopes
    without it): one backward pass, as strong branching scores candidate splits."""
    input_set = _repeat(problem.input_set, count)
    boxes = _intermediate(problem, input_set, known, options)
    return _objective(problem, boxes, _Final(problem, boxes, input_set, options, warm)())
