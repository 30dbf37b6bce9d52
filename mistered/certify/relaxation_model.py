"""The triangle relaxation of "a point of class ``j`` near ``x0``" as one persistent HiGHS model, re-solved per node.

Variables, in the displacement ``δ = x - x0`` (input units, ``(d,)``):

* ``δ`` inside the search box ``[lo - x0, hi - x0]``, and the norm's auxiliaries: L∞ ``t`` with
  ``-t <= δ_i <= t`` (rows), L1 ``s`` with ``s_i >= ±δ_i`` (rows), L2 none (Hessian ``2 I`` on ``δ``);
  the objective is ``t``, ``Σ s`` or ``|δ|²``;
* every hidden ReLU's pre-activation ``ẑ`` in its bounds ``[l, u]``, with the row ``ẑ = W h_prev + b``, where the
  previous layer's outputs ``h_prev`` are ``δ`` (offset ``W x0``), ``ẑ`` itself for a stable active ReLU
  (``l >= 0``), a post-activation column ``z`` for an unstable one (``l < 0 < u``), and nothing for a stable
  inactive one;
* for every unstable ReLU the triangle: ``z >= 0`` (bound), ``z - ẑ >= 0`` and ``z <= u (ẑ - l) / (u - l)``;
* one margin row ``f_j - f_c >= 0`` per class ``j != c``, all but the current target's switched off (free bounds).

With ``l2_cuts`` (L2 only) ``δ`` is left out: a column ``s`` bounds ``|δ|²`` from below through cuts on the first
layer's distance function ``φ(y)`` (:class:`_L2Cuts`; ``y`` = its pre-activations), an LP over the hidden units
only, whose every optimum is a valid bound. Newton steps on ``φ`` over the node's polytope (small QPs over the
hidden units, :class:`~mistered.certify.polytope_qp.PolytopeQP`) find the relaxation's optimum ``y*``, where one
tangent cut makes the LP exact; the pool is shared by all nodes (slack cuts are dropped once it is long). On
784-pixel MNIST nets this is ~25x cheaper per node than the QP in ``δ``, whose active set must free hundreds of
pixels one at a time (measured 0.3-0.6 s per node against ~12 ms).

A node of the branch and bound is a vector of ReLU splits (``+1`` active, ``-1`` inactive, ``0`` free) and a target:
a split only changes bounds (active: ``ẑ >= 0`` and ``z - ẑ <= 0``, so ``z = ẑ``; inactive: ``z = 0`` and
``ẑ <= 0``), so moving between nodes resets the bounds that differ and re-solves from the previous basis (dual
simplex for L1/L∞ and the L2 cuts' LP; HiGHS' active-set QP for L2 in ``δ``, exact). Presolve is off so that the
basis survives between solves.

Example:
    >>> relax = TriangleRelaxation(ws, bs, x0, "l2", lo, hi, lower, upper, c)
    >>> relax.set_node(np.zeros(relax.n_hidden, np.int8), j)
    >>> outcome = relax.solve()   # None when the node is infeasible
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import scipy.sparse as sp

from ..errors import MisteredError
from .polytope_qp import PolytopeQP

try:  # HiGHS as bundled by scipy (see mistered.certify.projection)
    from scipy.optimize._highspy import _core as _highs
except ImportError:  # pragma: no cover - depends on the scipy build
    _highs = None

__all__ = ["TriangleRelaxation", "RelaxationSolution", "native_stdout_silenced"]

_QP_ITERATIONS = 5000  # the active-set QP solver can cycle from a warm start: a stalled solve is retried cold
_MAX_CUTS = 20  # L2: cutting-plane rounds per node
_NEWTON_STEPS = 20  # L2: Newton steps on φ per round (exact on φ's piece: a few suffice once it is found)
_PIECE_SLACK = 1e-2  # L2: weight of the pixels at a bound in the Newton model of φ (see _newton_step)
_LINE_SEARCH = 10  # L2: step halvings tried by a Newton step
_CUT_POOL = 200  # L2: cuts kept in the LP beyond which the slack ones are dropped
_CUT_SLACK = 1e-7  # L2: relative slack on the cut bound (the LP's primal tolerance can lift it: measured 5e-10)
_CUT_GAIN = 1e-9  # L2: a cut is added only if it raises the bound by more than this (relative)
_DUAL_TOLERANCE = 1e-9  # a dual slack could raise a node's bound above the truth: kept tight


@dataclass
class RelaxationSolution:
    """One node's relaxation optimum: ``bound`` (the distance ``t``, ``Σ s`` or ``|δ|``, a lower bound on the
    distance of every point of the node), ``delta`` ``(d,)`` the optimal displacement and, per hidden ReLU ``(N,)``,
    ``violation`` = ``z - relu(ẑ)`` at the optimum (0 for stable ReLUs). With L2 cuts the bound may be below the
    relaxation's optimum, and ``delta``/``violation`` are at the best point found (see ``_solve_by_cuts``)."""

    bound: float
    delta: np.ndarray
    violation: np.ndarray


class TriangleRelaxation:
    """The persistent relaxation model (see the module docstring).

    Args:
        ws, bs: the layers ``W_i`` ``(n_i, n_{i-1})``, ``b_i`` ``(n_i,)`` (float64 numpy), logits last.
        x0: ``(d,)`` the centre; norm: "l1", "l2" or "linf"; lo, hi: ``(d,)`` the search box (absolute inputs).
        lower, upper: ``(N,)`` bounds on every hidden pre-activation over that box (all hidden layers in order).
        c: the class to keep.
        l2_cuts: for L2, replace ``δ`` and the QP by an LP over the hidden units with cuts from
            :class:`_L2Cuts` (a cheaper, valid but not always tight bound; see ``solve``).
    """

    def __init__(self, ws: list[np.ndarray], bs: list[np.ndarray], x0: np.ndarray, norm: str, lo: np.ndarray,
                 hi: np.ndarray, lower: np.ndarray, upper: np.ndarray, c: int, l2_cuts: bool = False) -> None:
        if _highs is None:  # pragma: no cover - depends on the scipy build
            raise MisteredError("branch and bound needs scipy's bundled HiGHS (scipy >= 1.15); upgrade scipy")
        d, n = x0.shape[0], lower.shape[0]
        self.d, self.n_hidden, self.norm, self.c = d, n, norm, c
        self.lower, self.upper = lower, np.maximum(upper, lower)
        self.unstable = (lower < 0) & (upper > 0)
        self.active = lower >= 0  # stable active
        self.cuts = l2_cuts and norm == "l2" and n > 0  # L2 by cuts on the first layer (see _L2Cuts)
        n_in = 0 if self.cuts else d  # δ columns
        n_aux = {"linf": 1, "l1": d, "l2": int(self.cuts)}[norm]
        self.zhat_col = n_in + n_aux + np.arange(n)
        unstable_idx = np.flatnonzero(self.unstable)
        self.z_col = np.full(n, -1)
        self.z_col[unstable_idx] = n_in + n_aux + n + np.arange(unstable_idx.size)
        n_cols = n_in + n_aux + n + unstable_idx.size
        post = np.where(self.unstable, self.z_col, np.where(self.active, self.zhat_col, -1))
        model = _configured_highs()
        inf = model.getInfinity()
        cost = np.zeros(n_cols)
        cost[n_in:n_in + n_aux] = 1.0
        col_lo = np.concatenate([(lo - x0)[:n_in], np.zeros(n_aux), self.lower, np.zeros(unstable_idx.size)])
        col_hi = np.concatenate([(hi - x0)[:n_in], np.full(n_aux, inf), self.upper, self.upper[unstable_idx]])
        blocks, row_lo, row_hi = [], [], []
        eye = sp.identity(d, format="csr")
        # only the rows that can bind: δ_i <= t (s_i >= δ_i) where δ_i can be positive, -δ_i <= t where negative
        up, down = np.flatnonzero(hi - x0 > 0), np.flatnonzero(lo - x0 < 0)
        if norm == "linf":  # ±δ_i - t <= 0
            aux = sp.csr_matrix(-np.ones((d, 1)))
            blocks += [(eye[up], aux[up]), (-eye[down], aux[down])]
            row_lo += [np.full(up.size + down.size, -inf)]
            row_hi += [np.zeros(up.size + down.size)]
        elif norm == "l1":  # s_i ∓ δ_i >= 0 (and s_i >= 0, a bound)
            blocks += [(-eye[up], eye[up]), (eye[down], eye[down])]
            row_lo += [np.zeros(up.size + down.size)]
            row_hi += [np.full(up.size + down.size, inf)]
        rows = [sp.hstack([left, right, sp.csr_matrix((left.shape[0], n_cols - d - n_aux))]) for left, right in blocks]
        prev_cols, start = np.arange(d), 0
        for i, (w, b) in enumerate(zip(ws[:-1], bs[:-1])):  # ẑ - W h_prev = b (+ W x0 on the first layer)
            m = w.shape[0]
            if i > 0 or not self.cuts:  # (with cuts, δ is not in the model: the first layer's ẑ is free)
                rhs = b + (w @ x0 if i == 0 else 0.0)
                keep = prev_cols >= 0
                rows.append(_rows(m, n_cols, [(self.zhat_col[start:start + m], np.eye(m)),
                                              (prev_cols[keep], -w[:, keep])]))
                row_lo.append(rhs)
                row_hi.append(rhs)
            prev_cols, start = post[start:start + m], start + m
        k = unstable_idx
        lk, uk = self.lower[k], self.upper[k]
        slope = uk / (uk - lk)
        self.relu_row = np.full(n, -1)  # the row z - ẑ >= 0 of each unstable ReLU
        self.relu_row[k] = sum(r.shape[0] for r in rows) + np.arange(k.size)
        ones = np.ones(k.size)
        rows.append(_sparse(k.size, n_cols, self.z_col[k], self.zhat_col[k], ones, -ones))  # z - ẑ >= 0
        row_lo.append(np.zeros(k.size))
        row_hi.append(np.full(k.size, inf))
        rows.append(_sparse(k.size, n_cols, self.z_col[k], self.zhat_col[k], ones, -slope))  # the chord
        row_lo.append(np.full(k.size, -inf))
        row_hi.append(-slope * lk)
        margin_w = ws[-1] - ws[-1][c]
        margin_b = bs[-1] - bs[-1][c] + (margin_w @ x0 if len(ws) == 1 else 0.0)
        keep = prev_cols >= 0
        self.margin_row = sum(r.shape[0] for r in rows) + np.arange(margin_w.shape[0])
        self.margin_lo = -margin_b
        rows.append(_rows(margin_w.shape[0], n_cols, [(prev_cols[keep], margin_w[:, keep])]))
        row_lo.append(np.full(margin_w.shape[0], -inf))
        row_hi.append(np.full(margin_w.shape[0], inf))
        matrix, row_lo, row_hi = sp.vstack(rows, format="csr"), np.concatenate(row_lo), np.concatenate(row_hi)
        _load(model, cost, col_lo, col_hi, matrix, row_lo, row_hi)
        if norm == "l2" and not self.cuts:  # |δ|² = ½ δᵀ (2 I) δ
            starts = np.minimum(np.arange(n_cols + 1), d).astype(np.int32)
            model.passHessian(n_cols, d, _highs.HessianFormat.kTriangular, starts, np.arange(d, dtype=np.int32),
                              np.full(d, 2.0))
        self._model, self._inf, self._n_cols, self._newton = model, inf, n_cols, None
        self._n_base_rows = matrix.shape[0]  # (cuts are appended after these)
        if self.cuts:
            self._l2 = _L2Cuts(ws[0], bs[0] + ws[0] @ x0, lo - x0, hi - x0)
            self._l2_cols = np.concatenate([[n_aux - 1 + n_in], self.zhat_col[:ws[0].shape[0]]]).astype(np.int32)
            self._newton = PolytopeQP(matrix, row_lo, row_hi, col_lo, col_hi)  # the node without cuts: Newton steps
            self._reach_args = (ws, bs, x0, "l2", lo, hi, lower, upper, c)
            self._reach: TriangleRelaxation | None = None  # an LP in δ, for reachable start points
        self.splits = np.zeros(n, np.int8)
        self.target = -1

    def contradicts(self, splits: np.ndarray) -> bool:
        """True if ``splits`` force a ReLU against its stable state (the node is empty in this search box)."""
        return bool(((splits > 0) & ~self.unstable & ~self.active).any() or ((splits < 0) & self.active).any())

    def set_node(self, splits: np.ndarray, target: int) -> None:
        """Make the model the relaxation of the node: ``splits`` ``(N,)`` int8 (+1 active, -1 inactive, 0 free;
        splits of stable ReLUs are ignored, see :meth:`contradicts`) and the target class ``target``."""
        splits = np.where(self.unstable, splits, 0).astype(np.int8)
        changed = np.flatnonzero(splits != self.splits)
        s, lo, up, inf = splits[changed], self.lower[changed], self.upper[changed], self._inf
        cols = [(self.zhat_col[changed], np.where(s > 0, 0.0, lo), np.where(s < 0, 0.0, up)),
                (self.z_col[changed], np.zeros(changed.size), np.where(s < 0, 0.0, up))]
        rows = [(self.relu_row[changed], np.zeros(changed.size), np.where(s > 0, 0.0, inf))]
        if target != self.target:
            if self.target >= 0:
                rows.append((self.margin_row[[self.target]], np.array([-inf]), np.array([inf])))
            rows.append((self.margin_row[[target]], self.margin_lo[[target]], np.array([inf])))
        for index, new_lo, new_hi in cols:
            self._model.changeColsBounds(index.size, index.astype(np.int32), new_lo, new_hi)
            if self._newton is not None:
                self._newton.col_lo[index], self._newton.col_hi[index] = new_lo, new_hi
        for index, new_lo, new_hi in rows:
            for i, row_lo, row_hi in zip(index.tolist(), new_lo.tolist(), new_hi.tolist()):
                self._model.changeRowBounds(i, row_lo, row_hi)
            if self._newton is not None:
                self._newton.row_lo[index], self._newton.row_hi[index] = new_lo, new_hi
        self.target, self.splits = target, splits
        if self.cuts and self._reach is not None:
            self._reach.set_node(splits, target)

    def solve(self, enough: float = np.inf) -> RelaxationSolution | str | None:
        """Solve the current node: its :class:`RelaxationSolution`, ``None`` if infeasible, ``"failed"`` if the
        solver ends otherwise (numerical trouble; the caller keeps the parent's bound). With L2 cuts see
        :meth:`_solve_by_cuts`."""
        if self.cuts:
            return self._solve_by_cuts(enough)
        cols = self._run()
        if cols is None or isinstance(cols, str):
            return cols
        value = max(float(self._model.getObjectiveValue()), 0.0)
        bound = float(np.sqrt(value)) if self.norm == "l2" else value
        return RelaxationSolution(bound, cols[:self.d], self._violation(cols))

    def _solve_by_cuts(self, enough: float) -> RelaxationSolution | str | None:
        """The node's L2 bound from the LP with cuts on ``φ``: every LP optimum ``s`` is a valid bound on ``|δ|²``.

        Each round evaluates ``φ`` exactly at the LP's first-layer point ``y`` (the dual of :class:`_L2Cuts`,
        whose ``δ`` gives an attained value ``|δ|²``) and cuts there (Kelley). If no displacement in the box reaches
        that ``y``, the round starts from the node's feasibility LP over ``δ`` instead (:meth:`_reachable_point`).
        Then Newton steps on ``φ`` over the node's polytope (:meth:`_newton_step`) descend to the relaxation's
        optimum ``y*``, and the tangent cut there alone lifts the LP to ``φ(y*)`` (first-order optimality).

        The rounds end when ``s`` meets the best attained value (the bound is the relaxation's optimum, within
        ``_CUT_GAIN``), when ``s`` reaches ``enough`` (the caller prunes), when an attained value is below
        ``enough`` (the relaxation cannot prune the node, so a tighter bound is not worth its time: the caller
        splits it), or after ``_MAX_CUTS`` rounds. ``delta`` and ``violation`` are taken at the best point.
        """
        best, goal = None, (enough / (1 - _CUT_SLACK)) ** 2
        for _ in range(_MAX_CUTS):
            cols = self._run()
            if cols is None or isinstance(cols, str):
                return cols
            self._forget_slack_cuts()
            s = max(float(cols[self._l2_cols[0]]), 0.0)
            point = self._evaluate(cols, s)
            best = point if best is None or point.value < best.value else best
            if best.value <= s + _CUT_GAIN * (1.0 + s) or s >= goal or best.value < goal:
                break
            if not np.isfinite(best.value):
                start = self._reachable_point(s)
                if start is None or isinstance(start, str):
                    return start
                best = start
            for _ in range(_NEWTON_STEPS):
                step = self._newton_step(best)
                if step is None:
                    break
                improved = best.value - step.value > _CUT_GAIN * (1.0 + best.value)
                best = step
                if not improved or best.value < goal:
                    break
            if best.value < goal:
                break
            self._evaluate(best.cols, s)  # (its cut)
        return RelaxationSolution(float(np.sqrt(s)) * (1 - _CUT_SLACK), best.delta, self._violation(best.cols))

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
            self._model.addRows(1, np.array([-self._inf]), np.array([reach]), u.size, np.zeros(1, np.int32),
                                self._l2_cols[1:], u)
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

    def _reachable_point(self, s: float) -> "_Point | str | None":
        """A point of the node's relaxation whose first-layer ``y`` some displacement in the box reaches, from an
        LP that has ``δ``: the relaxation in ``δ`` without its Hessian, minimising ``|δ_i|`` over the pixels that
        can move one way only (the background of a digit: cheap, and near ``x0``); ``None`` if it is infeasible.
        (The L∞ relaxation would do as well, at ~7x the time: its ``±δ_i <= t`` rows.)"""
        if self._reach is None:
            self._reach = TriangleRelaxation(*self._reach_args)
            model = self._reach._model
            n_cols = self._reach._n_cols
            model.passHessian(n_cols, 0, _highs.HessianFormat.kTriangular, np.zeros(n_cols + 1, np.int32),
                              np.zeros(0, np.int32), np.zeros(0))  # (an empty Hessian: an LP)
            lo, hi = self._l2.lo, self._l2.hi
            model.changeColsCost(self.d, np.arange(self.d, dtype=np.int32),
                                 np.where(lo >= 0, 1.0, np.where(hi <= 0, -1.0, 0.0)))
            self._reach.set_node(self.splits, self.target)
        cols = self._reach._run()
        if cols is None or isinstance(cols, str):
            return cols
        return self._evaluate(np.concatenate([[0.0], cols[self.d:]]), s)

    def _newton_step(self, point: "_Point") -> "_Point | None":
        """A point of the node's polytope with a smaller ``φ`` than ``point``'s (see :meth:`_solve_by_cuts`)."""
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
        target = self._newton.solve(q, _upper_block(hess, int(y_cols[0]), self._n_cols))
        if target is None:
            return None
        for t in 0.5 ** np.arange(_LINE_SEARCH):
            cols_t = point.cols + t * (target - point.cols)
            trial = self._attained(cols_t)
            if trial.value < point.value:
                return trial
        return None

    def _violation(self, cols: np.ndarray) -> np.ndarray:
        """``(N,)`` ``z - relu(ẑ)`` per unstable ReLU at ``cols`` (0 for stable ones)."""
        zhat = cols[self.zhat_col]
        z = np.where(self.unstable, cols[self.z_col], 0.0)
        return np.where(self.unstable, z - np.maximum(zhat, 0.0), 0.0)

    def _add_cut(self, mu: np.ndarray, offset: float) -> None:
        """Add the cut ``s - μ·y >= offset`` (it holds for every node; see :meth:`_forget_slack_cuts`)."""
        self._model.addRows(1, np.array([offset]), np.array([self._inf]), self._l2_cols.size, np.zeros(1, np.int32),
                            self._l2_cols, np.concatenate([[1.0], -mu]))

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
            model.deleteRows(drop.size, drop.astype(np.int32))  # (basic rows: the basis stays valid)

    def _run(self) -> np.ndarray | str | None:
        """One solve: the column values, ``None`` if infeasible or ``"failed"``."""
        model = self._model
        quiet = native_stdout_silenced if self.norm == "l2" and not self.cuts else nullcontext
        for _ in range(2):  # from the last basis, then (if that stalls, as HiGHS' QP solver can) from scratch
            with quiet():
                model.run()
            status = model.getModelStatus()
            if status == _highs.HighsModelStatus.kInfeasible:
                return None
            if status == _highs.HighsModelStatus.kOptimal:
                return np.asarray(model.getSolution().col_value)
            model.clearSolver()
        return "failed"


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


@contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """Point the process's file descriptor 1 at ``/dev/null`` inside the block.

    HiGHS' QP solver ``printf``-s diagnostics ("dimension mismatch", "degeneracy? ...") that its ``output_flag``
    does not silence; they would land in the CLI's output. Python's and C's buffers are flushed on entry and exit,
    so nothing written before or after is lost or reordered. Costs two ``dup2`` calls (microseconds).
    """
    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    libc.fflush(None)
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


class _L2Cuts:
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


def _sparse(m: int, n_cols: int, cols_a: np.ndarray, cols_b: np.ndarray, va: np.ndarray,
            vb: np.ndarray) -> sp.csr_matrix:
    """``m`` rows with two entries each: ``va[i]`` at ``cols_a[i]`` and ``vb[i]`` at ``cols_b[i]``."""
    rows = np.concatenate([np.arange(m), np.arange(m)])
    return sp.csr_matrix((np.concatenate([va, vb]), (rows, np.concatenate([cols_a, cols_b]))), shape=(m, n_cols))


def _rows(m: int, n_cols: int, parts: list[tuple[np.ndarray, np.ndarray]]) -> sp.csr_matrix:
    """``m`` rows with dense blocks ``(m, len(cols))`` placed at the given columns, zeros elsewhere."""
    data, r, c = [], [], []
    for cols, block in parts:
        rr, cc = np.nonzero(block)
        data.append(block[rr, cc]), r.append(rr), c.append(cols[cc])
    return sp.csr_matrix((np.concatenate(data), (np.concatenate(r), np.concatenate(c))), shape=(m, n_cols))


def _configured_highs() -> "_highs._Highs":
    """An empty HiGHS model with the options every relaxation uses."""
    model = _highs._Highs()
    model.setOptionValue("output_flag", False)
    model.setOptionValue("presolve", "off")
    model.setOptionValue("qp_iteration_limit", _QP_ITERATIONS)
    model.setOptionValue("qp_regularization_value", 0.0)  # exact QP; the default 1e-7 stalls more often here
    model.setOptionValue("dual_feasibility_tolerance", _DUAL_TOLERANCE)  # (primal: default; a primal slack only
    # lowers the bound, the safe side)
    return model


def _load(model: "_highs._Highs", cost: np.ndarray, col_lo: np.ndarray, col_hi: np.ndarray, matrix: sp.csr_matrix,
          row_lo: np.ndarray, row_hi: np.ndarray) -> None:
    """Add the columns (cost and bounds) and the rows ``row_lo <= matrix @ cols <= row_hi`` to ``model``."""
    n_cols = cost.shape[0]
    model.addCols(n_cols, cost, col_lo, col_hi, 0, np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0))
    model.addRows(matrix.shape[0], row_lo, row_hi, matrix.nnz, matrix.indptr[:-1].astype(np.int32),
                  matrix.indices.astype(np.int32), matrix.data)
