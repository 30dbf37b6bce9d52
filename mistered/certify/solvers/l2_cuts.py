"""Branch and bound's L2 node bound over the hidden units: an LP with cuts on the first layer's distance, made
tight by Newton steps.

A node's relaxation in ``δ`` (784 pixels on MNIST) is a QP whose active set must free hundreds of pixels one at a
time (HiGHS: 0.3-0.6 s per node). Only the first layer sees ``δ``, through ``y = W₁ δ + c``, so the relaxation's
value is ``min φ(y)`` over the node's polytope in the hidden units, where
``φ(y) = min {|δ|² : W₁ δ + c = y, δ in the box}`` (:class:`FirstLayerDistance`) is convex and every dual vector
gives a cut on it valid for every node. :class:`L2CutRelaxation` bounds a node by an LP over the hidden units with
a shared pool of such cuts (every LP's dual bound is a valid bound) and tightens it by Newton steps on ``φ`` (small QPs
over the hidden units, :class:`~mistered.certify.solvers.polytope_qp.PolytopeQP`): at the relaxation's optimum ``y*`` the
tangent cut alone makes the LP exact. ~12 ms per node on the MNIST nets of ``benchmarks/geocert_speed.py``.

Example:
    >>> relax = L2CutRelaxation(ws, bs, x0, lo, hi, lower, upper, c)
    >>> relax.set_node(splits, j)
    >>> outcome = relax.solve(enough=best_distance)   # a RelaxationSolution, or a Status (INFEASIBLE, ...)
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .highs import HessianFormat
from .polytope_qp import PolytopeQP
from .status import Status
from .triangle import RelaxationSolution, TriangleRelaxation

__all__ = ["L2CutRelaxation", "FirstLayerDistance"]

_MAX_CUTS = 20  # cutting-plane rounds per node
_NEWTON_STEPS = 20  # Newton steps on φ per round (exact on φ's piece: a few suffice once it is found)
_PIECE_SLACK = 1e-2  # weight of the pixels at a bound in the Newton model of φ (see _newton_step)
_LINE_SEARCH = 10  # step halvings tried by a Newton step
_CUT_POOL = 200  # cuts kept in the LP beyond which the slack ones are dropped
_GOAL_MARGIN = 1e-7  # the rounds aim this far (relative) above the caller's pruning level: the rigorous bound
# (TriangleRelaxation._dual_bound) is a hair below the LP's optimum, and must still prune
_CUT_GAIN = 1e-9  # a cut is added only if it raises the bound by more than this (relative)
_SMALL_ENTRY = 1e-9  # HiGHS' small_matrix_value: it drops matrix entries below this
_NEGLIGIBLE = 1e-13  # cut entries below this (relative to the largest) are dropped, the cut loosened to match


class L2CutRelaxation(TriangleRelaxation):
    """The L2 relaxation of :class:`~mistered.certify.solvers.triangle.TriangleRelaxation` without ``δ``: columns
    ``s`` (a lower bound on ``|δ|²``, through cuts) and the hidden units; same arguments, less ``norm``. Needs at
    least one hidden layer."""

    def __init__(self, ws: list[np.ndarray], bs: list[np.ndarray], x0: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 lower: np.ndarray, upper: np.ndarray, c: int) -> None:
        super().__init__(ws, bs, x0, "l2", lo, hi, lower, upper, c, l2_cuts=True)
        matrix, row_lo, row_hi, col_lo, col_hi = self._rows
        self._l2 = FirstLayerDistance(ws[0], bs[0] + ws[0] @ x0, lo - x0, hi - x0)
        self._l2_cols = np.concatenate([[0], self.zhat_col[:ws[0].shape[0]]]).astype(np.int32)  # s, then y
        self._newton = PolytopeQP(matrix, row_lo, row_hi, col_lo, col_hi)  # the node without cuts: Newton steps
        self._reach_args = (ws, bs, x0, "l2", lo, hi, lower, upper, c)
        self._reach: TriangleRelaxation | None = None  # an LP in δ, for reachable start points

    def set_node(self, splits: np.ndarray, target: int) -> None:
        super().set_node(splits, target)
        if self._reach is not None:
            self._reach.set_node(splits, target)

    def _set_bounds(self, cols: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        super()._set_bounds(cols, rows)
        for index, new_lo, new_hi in cols:
            self._newton.col_lo[index], self._newton.col_hi[index] = new_lo, new_hi
        for index, new_lo, new_hi in rows:
            self._newton.row_lo[index], self._newton.row_hi[index] = new_lo, new_hi

    def solve(self, enough: float = np.inf, time_limit: float | None = None) -> RelaxationSolution | Status:
        """The node's L2 bound from the LP with cuts on ``φ``: every LP's optimum ``s`` bounds ``|δ|²``; the bound
        returned is the last LP's, recomputed from its duals (``_dual_bound``), so solver tolerances cannot lift it.

        Each round evaluates ``φ`` exactly at the LP's first-layer point ``y`` (the dual of :class:`FirstLayerDistance`,
        whose ``δ`` gives an attained value ``|δ|²``) and cuts there (Kelley). If no displacement in the box reaches
        that ``y``, the round starts from the node's feasibility LP over ``δ`` instead (:meth:`_reachable_point`).
        Then Newton steps on ``φ`` over the node's polytope (:meth:`_newton_step`) descend to the relaxation's
        optimum ``y*``, and the tangent cut there alone lifts the LP to ``φ(y*)`` (first-order optimality).

        The rounds end when ``s`` meets the best attained value (the bound is the relaxation's optimum, within
        ``_CUT_GAIN``), when ``s`` reaches ``enough`` (the caller prunes), when an attained value is below
        ``enough`` (the relaxation cannot prune the node, so a tighter bound is not worth its time: the caller
        splits it), or after ``_MAX_CUTS`` rounds. ``delta`` and ``violation`` are taken at the best point.

        ``time_limit`` (seconds) bounds every LP and QP solve; when it passes after the first round, the bound so
        far is returned (anytime: every round's bound is valid), before it ``Status.TIME_LIMIT``. Other outcomes:
        ``Status.INFEASIBLE`` (an empty node) or ``Status.FAILED``.
        """
        best, goal = None, (enough / (1 - _GOAL_MARGIN)) ** 2
        deadline = None if time_limit is None else time.perf_counter() + time_limit
        for _ in range(_MAX_CUTS):
            cols = self._run(None if deadline is None else deadline - time.perf_counter())
            if cols is Status.TIME_LIMIT and best is not None:
                break
            if isinstance(cols, Status):
                return cols
            bound = max(self._dual_bound(), 0.0)  # (rigorous; the rounds steer by the LP's primal s)
            self._forget_slack_cuts()
            s = max(float(cols[self._l2_cols[0]]), 0.0)
            point = self._evaluate(cols, s)
            best = point if best is None or point.value < best.value else best
            if best.value <= s + _CUT_GAIN * (1.0 + s) or s >= goal or best.value < goal:
                break
            if not np.isfinite(best.value):
                start = self._reachable_point(s, deadline)
                if start is Status.TIME_LIMIT:
                    break
                if isinstance(start, Status):
                    return start
                best = start
            for _ in range(_NEWTON_STEPS):
                step = self._newton_step(best, deadline)
                if step is None:
                    break
                improved = best.value - step.value > _CUT_GAIN * (1.0 + best.value)
                best = step
                if not improved or best.value < goal:
                    break
            if best.value < goal:
                break
            self._evaluate(best.cols, s)  # (its cut)
        return RelaxationSolution(float(np.sqrt(bound)), best.delta, self._violation(best.cols))

    def _evaluate(self, cols: np.ndarray, s: float) -> "_Point":
        """``φ`` at the columns' first-layer point ``y``, with the cut there when it lifts the LP above ``s``; if no
        pixel displacement in the box reaches ``y`` (``φ(y) = ∞``), the cut that separates ``y`` from that set."""
        y = cols[self._l2_cols[1:]]
        point = self._attained(cols)
        mu, value = point.mu, point.bound
        if np.isfinite(point.value):
            if value > s + _CUT_GAIN * (1.0 + s):
                self._add_cut(mu, value - mu @ y)
            return point
        self._l2.mu = np.zeros_like(mu)  # the dual diverged (along a separating direction): restart from 0 next
        u = mu / max(float(np.linalg.norm(mu)), 1e-300)
        reach = self._l2.support(u) + u @ self._l2.c  # max of u·y over the reachable y
        if u @ y > reach + 1e-9 * (1.0 + abs(reach)):
            kept, loosen, scale = self._for_highs(u)
            self._transposed = None
            self._model.addRows(1, np.array([-self._inf]), np.array([scale * (reach + loosen)]), u.size,
                                np.zeros(1, np.int32), self._l2_cols[1:], scale * kept)
            self._newton.add_row(self._l2_cols[1:], u, -np.inf, reach)
        elif value > s + _CUT_GAIN * (1.0 + s):
            self._add_cut(mu, value - mu @ y)
        return point

    def _attained(self, cols: np.ndarray) -> "_Point":
        """The point of ``cols``: ``φ``'s dual at its first-layer ``y`` and, if that ``δ`` reaches ``y``, ``|δ|²``."""
        y = cols[self._l2_cols[1:]]
        mu, bound, delta = self._l2.dual(y)
        reached = np.abs(self._l2.w @ delta + self._l2.c - y).max() <= 1e-9 * (1.0 + np.abs(y).max())
        return _Point(float(delta @ delta) if reached else np.inf, cols, delta, mu, bound)

    def _reachable_point(self, s: float, deadline: float | None = None) -> "_Point | Status":
        """A point of the node's relaxation whose first-layer ``y`` some displacement in the box reaches, from an
        LP that has ``δ``: the relaxation in ``δ`` without its Hessian, minimising ``|δ_i|`` over the pixels that
        can move one way only (the background of a digit: cheap, and near ``x0``); else the LP's :class:`Status`
        (``INFEASIBLE``: the node is empty) by ``deadline`` (``time.perf_counter()``; ``None``: no limit).
        (The L∞ relaxation would do as well, at ~7x the time: its ``±δ_i <= t`` rows.)"""
        if self._reach is None:
            self._reach = TriangleRelaxation(*self._reach_args)
            model = self._reach._model
            n_cols = self._reach._n_cols
            model.passHessian(n_cols, 0, HessianFormat.kTriangular, np.zeros(n_cols + 1, np.int32),
                              np.zeros(0, np.int32), np.zeros(0))  # (an empty Hessian: an LP)
            lo, hi = self._l2.lo, self._l2.hi
            model.changeColsCost(self.d, np.arange(self.d, dtype=np.int32),
                                 np.where(lo >= 0, 1.0, np.where(hi <= 0, -1.0, 0.0)))
            self._reach.set_node(self.splits, self.target)
        cols = self._reach._run(None if deadline is None else deadline - time.perf_counter())
        if isinstance(cols, Status):
            return cols
        return self._evaluate(np.concatenate([[0.0], cols[self.d:]]), s)

    def _newton_step(self, point: "_Point", deadline: float | None = None) -> "_Point | None":
        """A point of the node's polytope with a smaller ``φ`` than ``point``'s (see :meth:`solve`), or ``None``
        (none found, or ``deadline`` passed)."""
        w, lo, hi = self._l2.w, self._l2.lo, self._l2.hi
        free = (point.delta > lo + 1e-12) & (point.delta < hi - 1e-12)
        # φ's Hessian on its piece, 2 (W_F W_Fᵀ)⁻¹, with the pixels at a bound weighted by _PIECE_SLACK: finite
        # when fewer pixels than units are free (then the piece alone would pin y to a subspace)
        gram = w[:, free] @ w[:, free].T + _PIECE_SLACK * (w[:, ~free] @ w[:, ~free].T)
        try:
            hess = 2.0 * np.linalg.inv(gram)
        except np.linalg.LinAlgError:
            return None
        hess = 0.5 * (hess + hess.T)
        y_cols = self._l2_cols[1:]
        y = point.cols[y_cols]
        q = np.zeros(self._n_cols)
        q[y_cols] = point.mu - hess @ y  # (μ = ∇φ(y))
        left = None if deadline is None else deadline - time.perf_counter()
        if left is not None and left <= 0:
            return None
        target = self._newton.solve(q, _upper_block(hess, int(y_cols[0]), self._n_cols), time_limit=left)
        if target is None:
            return None
        for t in 0.5 ** np.arange(_LINE_SEARCH):
            cols_t = point.cols + t * (target - point.cols)
            trial = self._attained(cols_t)
            if trial.value < point.value:
                return trial
        return None

    def _add_cut(self, mu: np.ndarray, offset: float) -> None:
        """Add the cut ``s - μ·y >= offset`` (it holds for every node; see :meth:`_forget_slack_cuts`)."""
        kept, loosen, scale = self._for_highs(mu)  # (as the row -s + μ·y <= -offset)
        self._transposed = None
        self._model.addRows(1, np.array([scale * (offset - loosen)]), np.array([self._inf]), self._l2_cols.size,
                            np.zeros(1, np.int32), self._l2_cols, scale * np.concatenate([[1.0], -kept]))

    def _for_highs(self, coef: np.ndarray) -> tuple[np.ndarray, float, float]:
        """A row ``coef·y <= r`` on the first layer's ``y`` (``coef`` ``(m,)``) as HiGHS will keep it: HiGHS drops
        entries below its ``small_matrix_value``, which can make a cut cut off the optimum (measured: 1.3e-6
        relative on a 30-pixel net). Returns ``(kept, loosen, scale)``: the row ``scale·kept·y <= scale·(r +
        loosen)`` is valid and HiGHS keeps every entry. Entries negligible against the largest are zeroed, and
        ``loosen`` is the maximum of their terms ``-coef_t y_t`` over ``y``'s bounds; ``scale >= 1`` lifts the
        smallest kept entry (and the row's other entries, ``s``'s included) to ``small_matrix_value``."""
        size = np.abs(coef)
        negligible = size < _NEGLIGIBLE * max(float(size.max(initial=0.0)), 1.0)
        loosen = 0.0
        if negligible.any():
            m = coef.size
            low, high = self.lower[:m][negligible], self.upper[:m][negligible]
            loosen = float(np.maximum(-coef[negligible] * low, -coef[negligible] * high).sum())
            coef = np.where(negligible, 0.0, coef)
        smallest = float(size[~negligible].min(initial=np.inf))
        return coef, loosen, max(1.0, _SMALL_ENTRY / smallest)

    def _forget_slack_cuts(self) -> None:
        """Once the pool holds more than ``_CUT_POOL`` cuts, drop those with slack at the LP's current optimum
        (every cut stays valid and is found again where it binds; a long pool slows every re-solve), and all but
        the last ``_CUT_POOL`` separating cuts from the Newton steps' polytope."""
        model = self._model
        n_rows = model.getNumRow()
        if n_rows - self._n_base_rows <= _CUT_POOL:
            return
        self._newton.forget_added(_CUT_POOL)
        lp, solution = model.getLp(), model.getSolution()
        extra = slice(self._n_base_rows, n_rows)
        activity = np.asarray(solution.row_value)[extra]
        row_lo, row_hi = np.asarray(lp.row_lower_)[extra], np.asarray(lp.row_upper_)[extra]
        slack = np.minimum(activity - row_lo, row_hi - activity)
        drop = self._n_base_rows + np.flatnonzero(slack > 1e-9 * (1.0 + np.abs(activity)))
        if drop.size:
            self._transposed = None
            model.deleteRows(drop.size, drop.astype(np.int32))  # (basic rows: the basis stays valid)


@dataclass
class _Point:
    """A point of a node's relaxation: ``value`` = ``|δ|²`` attained for its first-layer pre-activations ``y``
    (``inf`` if no ``δ`` in the box was found to reach them), its columns ``cols``, ``δ`` ``(d,)``, and the dual's
    ``μ`` ``(m,)`` with its lower bound ``bound`` on ``φ(y)`` (``μ = ∇φ(y)`` where the two meet)."""

    value: float
    cols: np.ndarray
    delta: np.ndarray
    mu: np.ndarray
    bound: float


class FirstLayerDistance:
    """Linear lower bounds on ``φ(y) = min {|δ|² : W δ + c = y, lo <= δ <= hi}``, the squared L2 distance needed to
    give the first layer the pre-activations ``y`` (``(m,)``; ``W`` ``(m, d)``, ``c`` = ``W x0 + b``).

    For every ``μ`` ``(m,)``, weak duality gives ``φ(y) >= q(μ) + μ·(y - c)`` with
    ``q(μ) = min_{lo <= δ <= hi} |δ|² - μ·W δ``, attained at ``δ = clip(Wᵀμ / 2, lo, hi)``: a cut valid for every
    node. The relaxation keeps ``s >= cut`` rows instead of ``δ`` (784 columns) and a QP: the LP has only the
    hidden units' columns, and the cut at the dual optimum for the LP's ``y`` (a concave piecewise-quadratic
    maximisation in ``m`` dimensions, by Newton's method from the last ``μ``) makes the bound exact at ``y``.
    """

    def __init__(self, w: np.ndarray, c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        self.w, self.c, self.lo, self.hi = w, c, lo, hi
        self.cap = float(np.maximum(lo ** 2, hi ** 2).sum())  # φ <= cap wherever it is finite
        self.mu = np.zeros(w.shape[0])

    def _value(self, mu: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        v = self.w.T @ mu
        delta = np.clip(v / 2, self.lo, self.hi)
        return float(delta @ delta - v @ delta + mu @ (y - self.c)), delta, v

    def support(self, u: np.ndarray) -> float:
        """``max {u·W δ : lo <= δ <= hi}`` for ``u`` ``(m,)``: the support function of the reachable ``y - c``."""
        v = self.w.T @ u
        return float(np.maximum(v * self.lo, v * self.hi).sum())

    def dual(self, y: np.ndarray, max_iter: int = 50) -> tuple[np.ndarray, float, np.ndarray]:
        """``(μ, q(μ) + μ·(y - c), δ(μ))`` for a ``μ`` (near-)maximising the bound at ``y``; any ``μ`` is valid."""
        mu = self.mu
        value, delta, v = self._value(mu, y)
        for _ in range(max_iter):
            grad = y - self.c - self.w @ delta
            if np.abs(grad).max() <= 1e-12 * (1.0 + np.abs(y).max()) or value > self.cap:
                break  # (above the cap the dual is unbounded: no δ in the box reaches y)
            free = (v / 2 > self.lo) & (v / 2 < self.hi)
            hess = 0.5 * self.w[:, free] @ self.w[:, free].T
            step = np.linalg.solve(hess + 1e-12 * (1.0 + np.trace(hess)) * np.eye(hess.shape[0]), grad)
            if float(grad @ step) <= 1e-15 * (1.0 + abs(value)):
                break  # the ascent left is below rounding: converged
            t, improved = 1.0, False
            while t > 1e-10:
                trial = mu + t * step
                value_t, delta_t, v_t = self._value(trial, y)
                if value_t >= value + 1e-4 * t * float(grad @ step):
                    improved = True
                    break
                t /= 2
            if not improved:
                break
            mu, value, delta, v = trial, value_t, delta_t, v_t
        self.mu = mu
        return mu, value, delta


@functools.lru_cache(maxsize=8)
def _upper_block_pattern(k: int, start: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column indices into a ``(k, k)`` block and the CSC ``indices``/``indptr`` of its upper triangle
    placed at rows and columns ``start:start + k`` of an ``(n, n)`` matrix."""
    rows, cols = np.triu_indices(k)
    order = np.lexsort((rows, cols))  # column-major
    counts = np.zeros(n, np.int64)
    counts[start:start + k] = np.arange(1, k + 1)
    return rows[order], cols[order], np.concatenate([[0], np.cumsum(counts)])


def _upper_block(block: np.ndarray, start: int, n: int) -> sp.csc_matrix:
    """The upper triangle, as CSC, of the ``(n, n)`` matrix that is ``block`` ``(k, k)`` at rows and columns
    ``start:start + k`` and zero elsewhere."""
    rows, cols, indptr = _upper_block_pattern(block.shape[0], start, n)
    return sp.csc_matrix((block[rows, cols], rows + start, indptr), shape=(n, n))
