"""Exact minimal adversarial distance (L1, L2, L∞) by branch and bound over ReLU splits.

Why not regions: GeoCert (:mod:`mistered.certify.exact.geocert`) grows a ball through the linear regions. In 784
dimensions an L∞ (or L2) ball of the answer's radius crosses nearly every first-layer hyperplane, so the number of
regions it must visit grows exponentially with the unstable ReLUs: hundreds to thousands of regions (one LP or QP
each) on a 784-20-20-2 net. Branch and bound instead splits the whole search space on one ReLU at a time and bounds
each part with a convex relaxation: most parts are pruned without ever enumerating their regions.

The search, best-first over nodes (a node = some ReLUs fixed active or inactive, and a target class ``j``):

* the search box is the domain intersected with the L∞ ball of radius = the best upper bound (seeded by
  ``upper_bound``/``x_adv``); pre-activation bounds come from CROWN over the box and, for L1/L2, the norm ball
  (:func:`~mistered.certify.bounds.chain_linear.search_region_bounds`, shared with GeoCert), recomputed when the upper
  bound shrinks by 10 %; ReLUs they prove stable are fixed;
* one root per target ``j != c`` that the bounds on the margin ``f_j - f_c`` do not rule out, all in one queue;
* a node's bound is the optimum of its triangle relaxation (:class:`~mistered.certify.solvers.triangle.
  TriangleRelaxation`: an LP for L1/L∞, a QP with Hessian ``2 I`` for L2, solved by HiGHS from the last basis):
  a lower bound on the distance of every adversarial point of the node; nodes at or beyond the upper bound are
  pruned (an LP stops as soon as its bound passes the upper bound: HiGHS' ``objective_bound``). In L2 on large
  inputs (>= 100) the bound comes instead from an LP over the hidden units with cuts on the first layer's
  distance function, tightened by Newton steps until it prunes the node or the relaxation is shown unable to
  (``L2CutRelaxation``; ~25x cheaper per node than the 784-D QP, which is kept for a node whose LP fails
  numerically);
* a leaf (every unstable ReLU split) is one linear region: its exact projection is its exact distance;
* upper bounds: at every node, the exact projection (:mod:`mistered.certify.solvers.projection`, as GeoCert) onto the
  linear region of the network's true activation pattern at the relaxation's optimum, intersected with
  ``f_j >= f_c``: an adversarial point at an exactly known distance. A node whose bound that point attains is
  closed;
* otherwise the node is split on the free unstable ReLU whose relaxation is most violated at the optimum
  (``z - relu(ẑ)``, ties to earlier layers).

Exactness: every pruning rule compares a valid lower bound with a distance actually attained, the children of a
node partition it, and a node with every unstable ReLU fixed is a single region, which is projected exactly.
When the queue holds nothing below the best distance found, that distance is the minimum. Float64 throughout.
Relaxation bounds do not rest on the LP solver's tolerances: each is recomputed from its duals
(``TriangleRelaxation._dual_bound``) and taken ``1e-9`` (relative) low against rounding. A node whose bound is
attained within ``1e-7`` (relative; the solvers' accuracy) is closed, and ``lower`` reports that bound: an exact
result has ``upper`` attained and ``lower`` within ``1e-7`` of it (equal unless such a node was closed).
"""

from __future__ import annotations

import heapq
import logging
import time

import numpy as np
import torch

from .region_search import GeoCertResult, RegionSearch, start_search
from .mip import margin_net
from ..graph.piecewise import PiecewiseLinearNet
from ..solvers.l2_cuts import L2CutRelaxation
from ..solvers.status import Status
from ..solvers.triangle import RelaxationSolution, TriangleRelaxation

__all__ = ["branch_and_bound_distance"]

logger = logging.getLogger(__name__)
_SAFETY = 1e-9  # relative slack on relaxation bounds (they are rigorous up to float64 rounding)
_ATTAINED = 1e-7  # a node whose bound is within this (relative) of a distance attained in it is closed
_CUTS_FROM = 100  # L2 inputs of this size or more bound nodes with the cut relaxation instead of the QP


def branch_and_bound_distance(
    net: PiecewiseLinearNet,
    x: torch.Tensor,
    norm: str = "l2",
    time_limit: float | None = None,
    decision_eps: float | None = None,
    upper_bound: float | None = None,
    x_adv: torch.Tensor | None = None,
    domain: tuple[float, float] = (0.0, 1.0),
) -> GeoCertResult:
    """Exact minimal adversarial distance of one input ``x`` (``input_shape`` or flat ``(d,)``) in ``norm``.

    The same contract as :func:`~mistered.certify.exact.geocert.geocert` (see the module docstring for the algorithm).

    Args:
        net: the network in piecewise-linear form (cast to float64 internally).
        x: one input inside ``domain``; its predicted class ``c`` is the one to keep.
        norm: "l1", "l2" or "linf" (input units).
        time_limit: seconds; when reached, returns the current bounds with status ``timeout``.
        decision_eps: decision mode: stop as soon as an adversarial point within ``eps`` is found (``attacked``)
            or the lower bound reaches ``eps`` (``certified``).
        upper_bound: a known upper bound on the distance (e.g. from an attack) to prune with.
        x_adv: a known adversarial input; its distance seeds the upper bound.
        domain: the input box ``(lo, hi)`` the adversary must stay in.

    Returns:
        :class:`~mistered.certify.exact.geocert.GeoCertResult` with ``n_regions`` = nodes processed and
        ``n_lp_solves`` = relaxation solves plus exact projections; ``x_adv`` is at distance ``upper``.
    """
    start = time.perf_counter()
    deadline = None if time_limit is None else start + time_limit  # (every relaxation solve gets what is left)
    net, x0, c, best, best_x = start_search(net, x, norm, upper_bound, x_adv, domain)
    eps = np.inf if decision_eps is None else float(decision_eps)
    search = RegionSearch(margin_net(net, c), x0, norm, domain)  # outputs f_j - f_c: the targets' margins

    incumbent = _Incumbent(search, best, best_x, eps)
    limit = incumbent.limit
    search.shrink(limit())
    n_hidden = int(sum(search.sizes))
    heap, counter = _root_nodes(search, c, n_hidden)
    n_nodes, n_relaxations, status = 0, 0, None
    closed = np.inf  # the least bound of a node closed as attained (within _ATTAINED of its bound)
    relax, cut_relax, relax_radius = None, None, np.nan
    use_cuts = norm == "l2" and x0.shape[0] >= _CUTS_FROM and n_hidden > 0
    while heap and heap[0][0] < limit():
        if time_limit is not None and time.perf_counter() - start > time_limit:
            status = "timeout"
            break
        key, _, j, splits = heapq.heappop(heap)
        if float(search.bounds[-1][1][0, j]) < 0:  # bounds tightened since: target j is out of reach
            continue
        if relax_radius != search.box_radius:
            relax, relax_radius = _relaxation(search, x0, norm, c), search.box_radius
            cut_relax = _relaxation(search, x0, norm, c, l2_cuts=True) if use_cuts else None
        if relax.contradicts(splits):
            continue
        n_nodes += 1
        free = relax.unstable & (splits == 0)
        if not free.any():  # a leaf is one linear region: its exact projection is its exact distance
            incumbent.offer((j, np.where(relax.unstable, splits > 0, relax.active).tobytes()))
            if decision_eps is not None and incumbent.best <= eps:
                break
            continue
        sol, bound, solved = _bound_node(relax, cut_relax, splits, j, key, limit(), deadline)
        n_relaxations += solved
        if sol is Status.INFEASIBLE or bound >= limit():
            continue
        if not isinstance(sol, Status):
            tag = (j, _pattern(search, x0 + sol.delta, domain).tobytes())
            if incumbent.offer(tag) <= sol.bound * (1 + _ATTAINED):
                closed = min(closed, bound)
                continue  # the node's bound is attained: nothing in it is nearer (than that bound)
        if decision_eps is not None and incumbent.best <= eps:
            break
        if bound >= limit():
            continue
        counter = _branch(heap, counter, (bound, j, splits), free, None if isinstance(sol, Status) else sol.violation)
    lower = min(heap[0][0], incumbent.best, closed) if heap else min(incumbent.best, closed)
    if status is None:
        status = "exact" if decision_eps is None else ("attacked" if incumbent.best <= eps else "certified")
    return _result(net, search, incumbent, lower, status, c, (n_nodes, n_relaxations), time.perf_counter() - start)


def _result(net: PiecewiseLinearNet, search: RegionSearch, incumbent: _Incumbent, lower: float, status: str, c: int,
            counts: tuple[int, int], seconds: float) -> GeoCertResult:
    """The search's :class:`GeoCertResult` from its final state; ``counts``: nodes processed and relaxations solved."""
    n_nodes, n_relaxations = counts
    logger.debug("branch and bound %s: [%g, %g] %s, %d nodes, %d relaxations, %d projections, %.3fs", search.norm,
                 lower, incumbent.best, status, n_nodes, n_relaxations, search.n_solves, seconds)
    adv = None if incumbent.x is None else torch.as_tensor(incumbent.x).reshape(net.input_shape)
    return GeoCertResult(float(lower), float(incumbent.best), status, adv, c, search.norm, n_nodes,
                         n_relaxations + search.n_solves, seconds,
                         {"n_projections": search.n_solves, "n_relaxations": n_relaxations})


class _Incumbent:
    """The best adversarial point so far (distance ``best``, point ``x``) and the exact projections already made,
    one per region ``(target, pattern)``; ``limit()``: nothing at or beyond it matters (decision mode: nothing
    beyond ``eps``)."""

    def __init__(self, search: RegionSearch, best: float, x: np.ndarray | None, eps: float) -> None:
        self.search, self.best, self.x, self.eps = search, best, x, eps
        self.projected: dict[tuple[int, bytes], float] = {}

    def limit(self) -> float:
        return min(self.best, np.nextafter(self.eps, np.inf))

    def offer(self, tag: tuple[int, bytes]) -> float:
        """The exact distance of the region ``tag`` (once per region), which becomes the best if it is nearer."""
        if tag not in self.projected:
            point = _project(self.search, tag, self.limit())
            self.projected[tag] = np.inf if point is None else point[1]
            if point is not None and point[1] < self.best:
                self.best, self.x = point[1], point[0]
                self.search.shrink(self.limit())
        return self.projected[tag]


def _root_nodes(search: RegionSearch, c: int, n_hidden: int) -> tuple[list, int]:
    """The heap of root nodes, one per target class ``j != c`` the margins' bounds leave reachable (no ReLU
    split yet), and the next tie-break counter."""
    reachable = search.bounds[-1][1][0].numpy() >= 0
    heap = [(0.0, j, j, np.zeros(n_hidden, np.int8)) for j in range(len(reachable)) if j != c and reachable[j]]
    heapq.heapify(heap)
    return heap, len(reachable)


def _bound_node(relax: TriangleRelaxation, cut_relax: L2CutRelaxation | None, splits: np.ndarray, j: int,
                key: float, limit: float, deadline: float | None) -> tuple[RelaxationSolution | Status, float, int]:
    """The relaxation's solution at the node (``splits``, target ``j``), its lower bound (never below the parent's
    ``key``) and the number of relaxations solved; the solution is ``Status.INFEASIBLE`` when the node is pruned,
    ``Status.FAILED`` or ``Status.TIME_LIMIT`` (``deadline``, on ``time.perf_counter()``, passed) when it keeps
    the parent's bound. In L2 on large inputs the cut LP bounds it first and the QP relaxation runs only if that
    solve fails."""
    sol, solved = Status.FAILED, 0
    if cut_relax is not None:
        cut_relax.set_node(splits, j)
        solved += 1
        sol = cut_relax.solve(limit, _left(deadline))
        if sol is Status.INFEASIBLE or (not isinstance(sol, Status) and max(key, sol.bound * (1 - _SAFETY)) >= limit):
            return Status.INFEASIBLE, np.inf, solved
    if sol is Status.FAILED:
        relax.set_node(splits, j)
        solved += 1
        sol = relax.solve(limit, _left(deadline))
    if sol is Status.INFEASIBLE:
        return sol, np.inf, solved
    return sol, (key if isinstance(sol, Status) else max(key, sol.bound * (1 - _SAFETY))), solved


def _left(deadline: float | None) -> float | None:
    """Seconds to ``deadline`` (``time.perf_counter()``), or ``None`` without one."""
    return None if deadline is None else deadline - time.perf_counter()


def _branch(heap: list, counter: int, node: tuple, free: np.ndarray, violation: np.ndarray | None) -> int:
    """Split the node ``(bound, j, splits)`` on the free ReLU its relaxation violates most (the first free one
    without a violation score); both children are queued at the node's bound. Returns the next counter."""
    bound, j, splits = node
    score = np.zeros(len(splits)) if violation is None else violation
    k = int(np.flatnonzero(free)[np.argmax(score[free])])
    for side in (1, -1):
        child = splits.copy()
        child[k] = side
        heapq.heappush(heap, (bound, counter, j, child))
        counter += 1
    return counter


def _relaxation(search: RegionSearch, x0: np.ndarray, norm: str, c: int, l2_cuts: bool = False) -> TriangleRelaxation:
    """The relaxation over the search's current box and pre-activation bounds (with ``l2_cuts``, the L2 bound over
    the hidden units, :class:`~mistered.certify.solvers.l2_cuts.L2CutRelaxation`)."""
    lower = np.concatenate([low[0].numpy() for low, _ in search.bounds[:-1]] or [np.zeros(0)])
    upper = np.concatenate([up[0].numpy() for _, up in search.bounds[:-1]] or [np.zeros(0)])
    lo, hi = search.box(search.box_radius)
    if l2_cuts:
        return L2CutRelaxation(search.ws, search.bs, x0, lo, hi, lower, upper, c)
    return TriangleRelaxation(search.ws, search.bs, x0, norm, lo, hi, lower, upper, c)


def _pattern(search: RegionSearch, x: np.ndarray, domain: tuple[float, float]) -> np.ndarray:
    """``(N,)`` bool: the network's activation pattern at ``x`` (clipped to the domain)."""
    point = torch.as_tensor(np.clip(x, domain[0], domain[1]))[None]
    pre = search.net.pre_activations(point)[:-1]
    return np.concatenate([(z[0] > 0).numpy() for z in pre] or [np.zeros(0, bool)])


def _project(search: RegionSearch, tag: tuple[int, bytes], radius: float) -> tuple[np.ndarray, float] | None:
    """Exact nearest point of the region of pattern ``tag[1]`` where target ``tag[0]`` wins (margin >= 0)."""
    j, pattern = tag[0], np.frombuffer(tag[1], dtype=bool)
    a, b, _, margin_mat, margin_off = search.region(pattern)
    return search.solve(np.vstack([a, -margin_mat[j][None]]), np.append(b, margin_off[j]), radius)
