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

With ``l2_cuts`` (L2 only) ``δ`` is left out: a column ``s`` and the hidden units only, the layout of
:class:`~mistered.certify.solvers.l2_cuts.L2CutRelaxation`, which bounds ``|δ|²`` through cuts (~25x cheaper per
node than the QP in ``δ`` on 784-pixel nets).

A node of the branch and bound is a vector of ReLU splits (``+1`` active, ``-1`` inactive, ``0`` free) and a target:
a split only changes bounds (active: ``ẑ >= 0`` and ``z - ẑ <= 0``, so ``z = ẑ``; inactive: ``z = 0`` and
``ẑ <= 0``), so moving between nodes resets the bounds that differ and re-solves from the previous basis (dual
simplex for L1/L∞ and the L2 cuts' LP; HiGHS' active-set QP for L2 in ``δ``, exact). Presolve is off so that the
basis survives between solves.

Example:
    >>> relax = TriangleRelaxation(ws, bs, x0, "l2", lo, hi, lower, upper, c)
    >>> relax.set_node(np.zeros(relax.n_hidden, np.int8), j)
    >>> outcome = relax.solve()   # a RelaxationSolution, or a Status (INFEASIBLE, TIME_LIMIT, FAILED)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp

from .highs import HessianFormat, MatrixFormat, native_stdout_silenced, new_highs, run_highs
from .status import Status

__all__ = ["TriangleRelaxation", "RelaxationSolution", "triangle_rows", "native_stdout_silenced"]

_QP_ITERATIONS = 5000  # the active-set QP solver can cycle from a warm start: a stalled solve is retried cold
_CUTOFF_MARGIN = 1e-7  # the dual simplex stops this far (relative) above the caller's pruning level
_DUAL_TOLERANCE = 1e-10  # HiGHS' least: a dual slack lowers the rigorous bound (_dual_bound) by slack x column range


@dataclass
class RelaxationSolution:
    """One node's relaxation optimum: ``bound`` (the distance ``t``, ``Σ s`` or ``|δ|``, a lower bound on the
    distance of every point of the node), ``delta`` ``(d,)`` the optimal displacement and, per hidden ReLU ``(N,)``,
    ``violation`` = ``z - relu(ẑ)`` at the optimum (0 for stable ReLUs). With L2 cuts the bound may be below the
    relaxation's optimum, and ``delta``/``violation`` are at the best point found (see ``L2CutRelaxation.solve``)."""

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
        l2_cuts: for L2, the layout without ``δ``: a column ``s`` and the hidden units (for
            :class:`~mistered.certify.solvers.l2_cuts.L2CutRelaxation`, its only user).
    """

    def __init__(self, ws: list[np.ndarray], bs: list[np.ndarray], x0: np.ndarray, norm: str, lo: np.ndarray,
                 hi: np.ndarray, lower: np.ndarray, upper: np.ndarray, c: int, l2_cuts: bool = False) -> None:
        d, n = x0.shape[0], lower.shape[0]
        self.d, self.n_hidden, self.norm, self.c = d, n, norm, c
        self.lower, self.upper = lower, np.maximum(upper, lower)
        self.unstable = (lower < 0) & (upper > 0)
        self.active = lower >= 0  # stable active
        self.cuts = l2_cuts and norm == "l2" and n > 0  # L2 by cuts on the first layer (see L2CutRelaxation)
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
        rows, row_lo, row_hi = _norm_rows(norm, x0, lo, hi, n_cols - d - n_aux, inf)
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
        self.relu_row = np.full(n, -1)  # the row z - ẑ >= 0 of each unstable ReLU
        self.relu_row[k] = sum(r.shape[0] for r in rows) + np.arange(k.size)
        triangle, tri_lo, tri_hi = triangle_rows(self.z_col[k], self.zhat_col[k], self.lower[k], self.upper[k],
                                                 n_cols)
        rows.append(triangle)
        row_lo.append(tri_lo)
        row_hi.append(tri_hi)
        margin_w = ws[-1] - ws[-1][c]
        margin_b = bs[-1] - bs[-1][c] + (margin_w @ x0 if len(ws) == 1 else 0.0)
        keep = prev_cols >= 0
        self.margin_row = sum(r.shape[0] for r in rows) + np.arange(margin_w.shape[0])
        self.margin_lo = -margin_b
        rows.append(_rows(margin_w.shape[0], n_cols, [(prev_cols[keep], margin_w[:, keep])]))
        row_lo.append(np.full(margin_w.shape[0], -inf))
        row_hi.append(np.full(margin_w.shape[0], inf))
        matrix, row_lo, row_hi = sp.vstack(rows, format="csr"), np.concatenate(row_lo), np.concatenate(row_hi)
        model.addCols(n_cols, cost, col_lo, col_hi, 0, np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0))
        model.addRows(matrix.shape[0], row_lo, row_hi, matrix.nnz, matrix.indptr[:-1].astype(np.int32),
                      matrix.indices.astype(np.int32), matrix.data)
        if norm == "l2" and not self.cuts:  # |δ|² = ½ δᵀ (2 I) δ
            starts = np.minimum(np.arange(n_cols + 1), d).astype(np.int32)
            model.passHessian(n_cols, d, HessianFormat.kTriangular, starts, np.arange(d, dtype=np.int32),
                              np.full(d, 2.0))
        self._model, self._inf, self._n_cols = model, inf, n_cols
        reach = np.maximum(np.abs(lo - x0), np.abs(hi - x0))  # |δ_i| can reach this in the box
        aux_cap = {"linf": reach.max(initial=0.0), "l1": reach, "l2": np.square(reach).sum()}[norm]
        self._cols_cap = col_hi.copy()  # finite upper bounds that no optimum exceeds (for _dual_bound)
        self._cols_cap[n_in:n_in + n_aux] = aux_cap
        self._rows = (matrix, row_lo, row_hi, col_lo, col_hi)  # as built (for L2CutRelaxation's Newton steps)
        self._n_base_rows = matrix.shape[0]  # (cuts are appended after these)
        self.splits = np.zeros(n, np.int8)
        self.target = -1
        self._transposed = None  # Aᵀ of the model's rows (CSR) for _dual_bound; None after rows change

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
        self._set_bounds(cols, rows)
        self.target, self.splits = target, splits

    def _set_bounds(self, cols: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Apply ``(indices, lower, upper)`` bound changes of columns and rows to the model."""
        for index, new_lo, new_hi in cols:
            self._model.changeColsBounds(index.size, index.astype(np.int32), new_lo, new_hi)
        for index, new_lo, new_hi in rows:
            for i, row_lo, row_hi in zip(index.tolist(), new_lo.tolist(), new_hi.tolist()):
                self._model.changeRowBounds(i, row_lo, row_hi)

    def solve(self, enough: float = np.inf, time_limit: float | None = None) -> RelaxationSolution | Status:
        """Solve the current node: its :class:`RelaxationSolution`, or ``Status.INFEASIBLE`` (an empty node),
        ``Status.TIME_LIMIT`` (``time_limit`` seconds passed first) or ``Status.FAILED`` (numerical trouble); on
        the last two the caller keeps the parent's bound. ``enough``: a distance at which the caller prunes. An LP
        (L1, L∞) stops as soon as its bound passes it (HiGHS' dual simplex ``objective_bound``: a node the caller
        prunes, or an empty one, in ~40 pivots instead of ~200-400); that solution has only its ``bound``
        (``delta`` and ``violation`` are zeros)."""
        deadline = None if time_limit is None else time.perf_counter() + time_limit
        cutoff = self.norm != "l2" and np.isfinite(enough)
        if cutoff:  # dual simplex stops once its (rising) objective passes `enough`: a pruned or empty node
            self._model.setOptionValue("objective_bound", float(enough) * (1 + _CUTOFF_MARGIN))
        cols = self._run(time_limit)
        if cutoff:
            self._model.setOptionValue("objective_bound", np.inf)
        if cols is Status.CUTOFF:
            value = self._dual_bound()
            if value < enough * (1 + _CUTOFF_MARGIN / 10):  # (the rigorous bound fell short: solve to the end)
                return self.solve(time_limit=None if deadline is None else deadline - time.perf_counter())
            return RelaxationSolution(value, np.zeros(self.d), np.zeros(self.n_hidden))
        if isinstance(cols, Status):
            return cols
        value = max(self._dual_bound(), 0.0)
        bound = float(np.sqrt(value)) if self.norm == "l2" else value
        return RelaxationSolution(bound, cols[:self.d], self._violation(cols))

    def _dual_bound(self) -> float:
        """A lower bound on the current model's optimum from the solver's row duals ``λ``, whatever their accuracy
        (Neumaier & Shcherbina 2004): for every ``λ`` (with the sign of a finite row bound), the optimum is at least
        ``Σ_r λ_r·(bound of row r) + min over the column box of (cost - Aᵀλ)·x`` (plus ``|δ|²`` for the QP in
        ``δ``, separable in closed form). Unbounded columns are capped where no optimum reaches (``_cols_cap``).
        So a node's bound never rests on the solver's tolerances, only on float64 rounding (measured: the
        primal optimum of the L2 cut LP 8e-7 above the true one on a 30-pixel net)."""
        model, inf = self._model, self._inf
        lp = model.getLp()
        lam = np.asarray(model.getSolution().row_dual)
        row_lo, row_hi = np.asarray(lp.row_lower_), np.asarray(lp.row_upper_)
        lam = np.where(lam > 0, np.where(row_lo > -inf, lam, 0.0), np.where(row_hi < inf, lam, 0.0))
        rows = float(np.where(lam > 0, lam * np.where(row_lo > -inf, row_lo, 0.0),
                              lam * np.where(row_hi < inf, row_hi, 0.0)).sum())
        if self._transposed is None:  # (the matrix changes only when rows are added or deleted)
            a = lp.a_matrix_
            shape = (lp.num_row_, lp.num_col_)
            matrix = (sp.csc_matrix if a.format_ == MatrixFormat.kColwise else sp.csr_matrix)(
                (np.asarray(a.value_), np.asarray(a.index_), np.asarray(a.start_)), shape=shape)
            self._transposed = matrix.T.tocsr()
        reduced = np.asarray(lp.col_cost_) - self._transposed @ lam
        col_lo = np.asarray(lp.col_lower_)
        col_hi = np.minimum(np.asarray(lp.col_upper_), self._cols_cap)
        terms = np.minimum(reduced * col_lo, reduced * col_hi)
        if self.norm == "l2" and not self.cuts:  # min of δ_i² + reduced_i δ_i over [lo_i, hi_i]
            delta = np.clip(-reduced[:self.d] / 2, col_lo[:self.d], col_hi[:self.d])
            terms[:self.d] = delta * delta + reduced[:self.d] * delta
        return rows + float(terms.sum())

    def _violation(self, cols: np.ndarray) -> np.ndarray:
        """``(N,)`` ``z - relu(ẑ)`` per unstable ReLU at ``cols`` (0 for stable ones)."""
        zhat = cols[self.zhat_col]
        z = np.where(self.unstable, cols[self.z_col], 0.0)
        return np.where(self.unstable, z - np.maximum(zhat, 0.0), 0.0)

    def _run(self, time_limit: float | None = None) -> np.ndarray | Status:
        """One solve within ``time_limit`` seconds: the column values, or the :class:`Status` it ended with
        (``INFEASIBLE``, ``CUTOFF``, ``TIME_LIMIT``, ``FAILED``)."""
        model = self._model
        quiet = self.norm == "l2" and not self.cuts
        deadline = None if time_limit is None else time.perf_counter() + time_limit
        for _ in range(2):  # from the last basis, then (if that stalls, as HiGHS' QP solver can) from scratch
            left = None if deadline is None else deadline - time.perf_counter()
            status = run_highs(model, left, quiet=quiet)
            if status is Status.OPTIMAL:
                return np.asarray(model.getSolution().col_value)
            if status is not Status.FAILED:
                return status
            model.clearSolver()
        return Status.FAILED


def _sparse(m: int, n_cols: int, cols_a: np.ndarray, cols_b: np.ndarray, va: np.ndarray,
            vb: np.ndarray) -> sp.csr_matrix:
    """``m`` rows with two entries each: ``va[i]`` at ``cols_a[i]`` and ``vb[i]`` at ``cols_b[i]``."""
    rows = np.concatenate([np.arange(m), np.arange(m)])
    return sp.csr_matrix((np.concatenate([va, vb]), (rows, np.concatenate([cols_a, cols_b]))), shape=(m, n_cols))


def _norm_rows(norm: str, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_rest: int,
               inf: float) -> tuple[list, list, list]:
    """The rows of the norm's epigraph over the columns ``[δ (d), aux, the n_rest others]``, with their row bounds:
    only the rows that can bind (δ_i <= t, or s_i >= δ_i, where δ_i can be positive; -δ_i where negative). None in L2
    (a Hessian, or cuts)."""
    d = x0.shape[0]
    blocks, row_lo, row_hi = [], [], []
    eye = sp.identity(d, format="csr")
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
    return [sp.hstack([left, right, sp.csr_matrix((left.shape[0], n_rest))]) for left, right in blocks], row_lo, row_hi


def _rows(m: int, n_cols: int, parts: list[tuple[np.ndarray, np.ndarray]]) -> sp.csr_matrix:
    """``m`` rows with dense blocks ``(m, len(cols))`` placed at the given columns, zeros elsewhere."""
    data, r, c = [], [], []
    for cols, block in parts:
        rr, cc = np.nonzero(block)
        data.append(block[rr, cc]), r.append(rr), c.append(cols[cc])
    return sp.csr_matrix((np.concatenate(data), (np.concatenate(r), np.concatenate(c))), shape=(m, n_cols))


def triangle_rows(z_cols: np.ndarray, zhat_cols: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                  n_cols: int) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """The triangle relaxation of ``k`` unstable ReLUs ``z = relu(ẑ)`` (``lower < 0 < upper``, ``(k,)`` each) as
    rows over ``n_cols`` columns, with ``z`` and ``ẑ`` at the columns ``z_cols``, ``zhat_cols`` ``(k,)``: first
    the ``k`` rows ``z - ẑ >= 0``, then the ``k`` chords ``z - u/(u - l) ẑ <= -u l/(u - l)``; ``z >= 0`` is the
    caller's column bound. Returns the ``(2k, n_cols)`` CSR matrix and its row bounds ``(2k,)`` (``±inf``: none).
    The one place the triangle is written: :class:`TriangleRelaxation` and OBBT
    (:func:`~mistered.certify.bounds.chain_lp.lp_bounds`) both add these rows."""
    k = z_cols.size
    slope = upper / (upper - lower)
    ones = np.ones(k)
    rows = sp.vstack([_sparse(k, n_cols, z_cols, zhat_cols, ones, -ones),
                      _sparse(k, n_cols, z_cols, zhat_cols, ones, -slope)], format="csr")
    row_lo = np.concatenate([np.zeros(k), np.full(k, -np.inf)])
    row_hi = np.concatenate([np.full(k, np.inf), -slope * lower])
    return rows, row_lo, row_hi


def _configured_highs() -> highspy.Highs:
    """An empty HiGHS model with the options every relaxation uses."""
    return new_highs(qp_iteration_limit=_QP_ITERATIONS,
                     qp_regularization_value=0.0,  # exact QP; the default 1e-7 stalls more often here
                     dual_feasibility_tolerance=_DUAL_TOLERANCE)  # (primal: default; a primal slack only
    # lowers the bound, the safe side)

