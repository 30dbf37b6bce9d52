"""Branch and bound over ReLU splits, many subdomains bounded at once (:mod:`.bounding`).

The root (the whole box, its intermediate bounds tightened once by :mod:`.root`) is bounded first; while open
subdomains remain and time is left, the ``batch`` with the least lower bounds are each split on one unstable neuron
(the best of their BaBSR-scored candidates by strong branching, :mod:`.branching`), and the ``2 x batch`` children
are bounded as one tensor computation, their α and β starting from their parent's optimised ones
(:mod:`.bounding`). A child's bound is at least its parent's (the parent's bound holds on the child), so the
anytime lower bound — the least over the open subdomains and the pruned leaves — never decreases. Children with a
positive bound (or an empty domain) are pruned. Every bounded subdomain gives a candidate point (the minimiser of
its linear bound at a box corner, then a few signed-gradient steps on ``g`` inside the box); a point with
``g(x) <= 0`` by a plain forward pass is a counterexample. A subdomain without an unstable neuron left that is
still not proved stays open: the answer is then ``unknown``, never ``verified``.

Example:
    >>> result = bab(graph, InputSet.ball(x, 0.03), margin_spec(y, 10)[0], timeout=60)
    >>> result.status, result.lower_bound, result.domains
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace

import torch

from ...errors import InvalidInputError, UnsoundResultError
from ..bounds.alpha import AlphaOptions
from ..bounds.input_set import InputSet
from ..graph.graph import BoundGraph
from .bounding import BoundOptions, DomainBoxes, WarmStart, bound_batch
from .branching import strong_branching
from .domains import DomainStore, split
from .problem import BabProblem
from .root import root_boxes

__all__ = ["BabOptions", "BabResult", "BabRun", "bab"]

logger = logging.getLogger(__name__)

#: A counterexample's value may sit below a proved lower bound by this much (relative) before it is a contradiction.
_TOLERANCE = 1e-6


@dataclass(frozen=True)
class BabOptions:
    """Settings of :func:`bab`.

    Attributes:
        batch: subdomains split per step (each gives two children, bounded together).
        bound: how a batch is bounded (α, β, intermediate bounds).
        attack_steps: signed-gradient steps from each subdomain's candidate (0: the corner only).
        max_domains: most open subdomains kept (memory); beyond it the search stops with ``unknown``.
        max_steps: most branching steps (``None``: until solved or out of time).
        root: the α-CROWN that tightens the root's intermediate bounds (:mod:`.root`; ``iterations=0``: CROWN's).
        candidates: split candidates per subdomain compared by bounding their children (:mod:`.branching`;
            1: BaBSR's best-scored neuron).
    """

    batch: int = 128
    bound: BoundOptions = field(default_factory=BoundOptions)
    root: AlphaOptions = field(default_factory=lambda: AlphaOptions(max_slopes=1 << 24))
    candidates: int = 3
    attack_steps: int = 2
    max_domains: int = 50_000
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.batch < 1 or self.max_domains < 1 or self.attack_steps < 0 or self.candidates < 1 or \
                (self.max_steps is not None and self.max_steps < 0):
            raise InvalidInputError("bab needs batch >= 1, max_domains >= 1, attack_steps >= 0, candidates >= 1, "
                                    "max_steps >= 0")


@dataclass
class BabResult:
    """The outcome for one property.

    Attributes:
        status: "verified" (``g > 0`` on the whole box), "falsified" (a counterexample), "unknown" (the search
            ended without an answer: stuck subdomains, ``max_domains`` or ``max_steps``) or "timeout".
        lower_bound: a sound lower bound of ``min g`` over the box (finite; ``> 0`` when verified).
        counterexample: ``(*input_shape)`` a point with ``g <= 0`` (falsified only), else ``None``.
        value: ``g`` at the best point found (``inf`` if none evaluated).
        domains: subdomains bounded (the root included); steps: branching steps; seconds: wall-clock time.
    """

    status: str
    lower_bound: float
    counterexample: torch.Tensor | None
    value: float
    domains: int
    steps: int
    seconds: float


def _attack(problem: BabProblem, x: torch.Tensor, steps: int) -> torch.Tensor:
    """``x`` moved by ``steps`` signed-gradient steps on ``g`` inside the box (step sizes shrinking)."""
    lo, hi = problem.input_set.lower, problem.input_set.upper
    for k in range(steps):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            grad, = torch.autograd.grad(problem.value(x).sum(), x)
        x = torch.minimum(torch.maximum(x - (hi - lo) * grad.sign() / (2 * (k + 2)), lo), hi)
    return x.detach()


class _Search:
    def __init__(self, problem: BabProblem, options: BabOptions) -> None:
        self.problem, self.options = problem, options
        self.start, self.timeout, self.seconds = time.monotonic(), math.inf, 0.0
        self.nodes = list(problem.split_nodes)
        self.pruned = math.inf  # least bound of a pruned leaf
        self.best_x, self.best_value = None, math.inf
        self.domains = 0
        self.stuck: DomainStore | None = None

    def expired(self) -> bool:
        return time.monotonic() - self.start >= self.timeout

    def candidates(self, points: torch.Tensor) -> None:
        points = _attack(self.problem, points, self.options.attack_steps)
        with torch.no_grad():
            values = self.problem.value(points)
        k = int(values.argmin())
        if float(values[k]) < self.best_value:
            self.best_value, self.best_x = float(values[k]), points[k].clone()

    def bound(self, known: dict, count: int, parent: torch.Tensor | None, warm: WarmStart | None = None,
              options: BoundOptions | None = None) -> DomainStore:
        """Bound ``count`` subdomains (α and β from ``warm``; ``options``: default the search's); returns the open
        ones (pruned ones recorded)."""
        out = bound_batch(self.problem, known, count, options or self.options.bound, warm)
        self.domains += count
        lower = out.lower if parent is None else torch.maximum(out.lower, parent)
        out.lower = lower
        self.candidates(out.candidates)
        closed = lower > 0
        finite = lower[closed & torch.isfinite(lower)]
        if finite.numel():
            self.pruned = min(self.pruned, float(finite.min()))
        return DomainStore.from_batch(self.nodes, out, ~closed, self.options.candidates)

    def lower_bound(self, store: DomainStore) -> float:
        least = min(store.least(), self.stuck.least() if self.stuck is not None else math.inf, self.pruned)
        return least if math.isfinite(least) else float(torch.finfo(torch.float64).max)

    def check(self, store: DomainStore) -> None:
        bound = self.lower_bound(store)
        if self.best_value < bound - _TOLERANCE * (1 + abs(bound)):
            raise UnsoundResultError(f"branch and bound proved g >= {bound:.6g} on the box, yet g = "
                                     f"{self.best_value:.6g} at a point of it; no answer given")

    def park_stuck(self, store: DomainStore) -> DomainStore:
        """Move the subdomains with nothing left to split out of ``store``; returns the rest."""
        stuck = store.choice[:, 0, 0] < 0
        if bool(stuck.any()):
            parked = store.select(stuck)
            if self.stuck is None:
                self.stuck = parked
            else:
                self.stuck.add(parked)
        return store.select(~stuck)


def _status(search: _Search, store: DomainStore, steps_left: bool) -> str:
    if search.best_value <= 0:
        return "falsified"
    if not len(store) and search.stuck is None:
        return "verified"
    return "timeout" if search.expired() and steps_left and len(store) else "unknown"


class BabRun:
    """A branch and bound that can be continued: :meth:`advance` searches for more seconds from where the last
    call stopped (the same arguments as :func:`bab`, without the time limit). ``root``: the root's boxes of the
    split nodes where already known (:func:`.root.root_boxes`, e.g. shared by the conjunctions of one box);
    otherwise the first :meth:`advance` computes them."""

    def __init__(self, graph: BoundGraph, input_set: InputSet, spec: torch.Tensor, rhs: torch.Tensor | None = None,
                 groups: torch.Tensor | None = None, options: BabOptions = BabOptions(),
                 root: DomainBoxes | None = None) -> None:
        self.problem = BabProblem.build(graph, input_set, spec, rhs, groups)
        self.options, self.root = options, root
        self.search = _Search(self.problem, options)
        self.store: DomainStore | None = None
        self.steps = 0
        self.result: BabResult | None = None

    @property
    def decided(self) -> bool:
        return self.result is not None and self.result.status in ("verified", "falsified")

    def advance(self, timeout: float, steps: int | None = None) -> BabResult:
        """Search for at most ``timeout`` more seconds (checked between batches) and ``steps`` more branching
        steps (``None``: no limit but ``options.max_steps``); the result so far (its ``seconds`` and counts cover
        every call)."""
        if not timeout > 0:
            raise InvalidInputError(f"timeout must be positive seconds, got {timeout}")
        search, options = self.search, self.options
        if self.decided:
            return self.result
        search.start, search.timeout = time.monotonic(), timeout
        if self.store is None:
            if self.root is None:
                problem = self.problem
                self.root = root_boxes(problem.graph, problem.input_set, problem.spec[:, None], problem.split_nodes,
                                       options.root, options.bound.max_elements, search.start + timeout)
            at_root = replace(options.bound, iterations=max(options.bound.iterations, options.root.iterations),
                              lr_alpha=max(options.bound.lr_alpha, options.root.lr))  # α starts cold here
            self.store = search.park_stuck(search.bound(self.root, 1, None, options=at_root))
        store, steps_left = self.store, True
        limit = min(options.max_steps if options.max_steps is not None else math.inf,
                    self.steps + steps if steps is not None else math.inf)
        while len(store) and search.best_value > 0:
            search.check(store)
            steps_left = self.steps < limit
            if search.expired() or not steps_left or len(store) > options.max_domains:
                break
            parents = store.pop(options.batch)
            choice = strong_branching(self.problem, parents, options.bound)
            children = split(parents.boxes, choice, search.nodes, self.problem.split_nodes)
            warm = parents.warm.cat(parents.warm) if parents.warm is not None else None  # as split orders them
            store.add(search.park_stuck(search.bound(children, 2 * len(parents), parents.lower.repeat(2), warm)))
            self.steps += 1
            logger.debug("bab step %d: %d open, lower bound %.6g", self.steps, len(store), search.lower_bound(store))
        search.check(store)
        search.seconds += time.monotonic() - search.start
        status = _status(search, store, steps_left)
        self.result = BabResult(status, search.lower_bound(store), search.best_x if status == "falsified" else None,
                                search.best_value, search.domains, self.steps, search.seconds)
        return self.result


def bab(graph: BoundGraph, input_set: InputSet, spec: torch.Tensor, timeout: float, rhs: torch.Tensor | None = None,
        groups: torch.Tensor | None = None, options: BabOptions = BabOptions()) -> BabResult:
    """Decide ``g(x) = min_k max_{i in k} (<spec_i, f(x)> - rhs_i) > 0`` on the box of ``input_set``
    (:mod:`.problem`) by branch and bound within ``timeout`` seconds (checked between batches).

    Args:
        graph: the network (its dtype is used; float64 makes the bounds sound up to ~1e-15).
        input_set: one L∞ box, batch 1; spec: ``(S, *output_shape)``; rhs: ``(S,)`` (default 0);
        groups: ``(S,)`` group of each row (default one per row: every row must stay positive).
        timeout: seconds (``math.inf``: none); options: see :class:`BabOptions`.

    Raises:
        InvalidInputError: bad shapes or settings; UnsoundResultError: a counterexample below a proved bound.
    """
    if not timeout > 0:
        raise InvalidInputError(f"timeout must be positive seconds, got {timeout}")
    return BabRun(graph, input_set, spec, rhs, groups, options).advance(timeout)
