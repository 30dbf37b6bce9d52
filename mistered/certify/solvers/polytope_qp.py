"""A convex QP over a polytope whose bounds change in place, solved by Clarabel (interior point).

Branch and bound in L2 (:mod:`mistered.certify.solvers.triangle`) takes Newton steps on the first layer's distance
function over each node's polytope: ``min qᵀx + ½ xᵀ P x`` subject to ``row_lo <= A x <= row_hi`` and
``col_lo <= x <= col_hi``, where only the bounds (the node's ReLU splits and target) and a few appended rows change
between solves. HiGHS' active-set QP ends in "solve error" on some of these (a semidefinite ``P``: zero on every
column but the first layer's) and needs ~100 phase-1 simplex iterations each time; Clarabel solves them reliably in
about a millisecond (measured on MNIST nets: 1.2 ms against HiGHS' 2.9 ms). The answer is used as a search
direction only, so an interior-point optimum (not a vertex, tolerance 1e-8) is all it needs to be.

Example:
    >>> qp = PolytopeQP(matrix, row_lo, row_hi, col_lo, col_hi)
    >>> qp.col_lo[3] = 0.0                      # bounds are plain arrays, changed in place
    >>> x = qp.solve(q, sp.triu(hessian, format="csc"))   # None if infeasible or the solver fails
"""

from __future__ import annotations

import clarabel
import numpy as np
import scipy.sparse as sp

__all__ = ["PolytopeQP"]

_FINITE = 1e20  # bounds at or beyond this are infinite (HiGHS' infinity is 1e30)


class PolytopeQP:
    """The polytope ``{x : row_lo <= A x <= row_hi, col_lo <= x <= col_hi}`` and QPs over it.

    Args:
        matrix: ``A`` ``(m, n)``, sparse or dense; rows appended later by :meth:`add_row`.
        row_lo, row_hi: ``(m,)`` row bounds (``±inf`` or beyond ``1e20`` for none; equal for an equality).
        col_lo, col_hi: ``(n,)`` variable bounds, likewise.
    """

    def __init__(self, matrix, row_lo: np.ndarray, row_hi: np.ndarray, col_lo: np.ndarray,
                 col_hi: np.ndarray) -> None:
        dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix, dtype=float)
        self._rows = np.vstack([dense, np.eye(dense.shape[1])])  # the rows, then one per variable bound
        self._n_base = dense.shape[0]  # rows given at construction (later ones come from add_row)
        self.row_lo, self.row_hi = np.array(row_lo, dtype=float), np.array(row_hi, dtype=float)
        self.col_lo, self.col_hi = np.array(col_lo, dtype=float), np.array(col_hi, dtype=float)
        self._cache: tuple | None = None  # the last solve's bounds and constraint matrices
        self._settings = clarabel.DefaultSettings()
        self._settings.verbose = False

    def add_row(self, cols: np.ndarray, values: np.ndarray, lo: float, hi: float) -> None:
        """Append the row ``lo <= Σ values[i] x[cols[i]] <= hi``."""
        row = np.zeros((1, self._rows.shape[1]))
        row[0, cols] = values
        m = self.row_lo.size
        self._rows = np.vstack([self._rows[:m], row, self._rows[m:]])
        self.row_lo, self.row_hi = np.append(self.row_lo, lo), np.append(self.row_hi, hi)
        self._cache = None

    def forget_added(self, keep: int) -> None:
        """Drop the rows added by :meth:`add_row` but the last ``keep``."""
        m = self.row_lo.size
        kept = np.r_[0:self._n_base, max(self._n_base, m - keep):m]
        self._rows = np.vstack([self._rows[kept], self._rows[m:]])
        self.row_lo, self.row_hi = self.row_lo[kept], self.row_hi[kept]
        self._cache = None

    def solve(self, q: np.ndarray, hessian_upper: sp.csc_matrix, time_limit: float | None = None) -> np.ndarray | None:
        """``argmin qᵀx + ½ xᵀ H x`` over the polytope, or ``None`` when the polytope is empty or Clarabel does not
        reach its tolerance within ``time_limit`` seconds (``None``: no limit); ``hessian_upper``: the upper
        triangle of the symmetric PSD ``H`` ``(n, n)`` (CSC). (A search direction only: no status is needed.)"""
        lo, hi = np.concatenate([self.row_lo, self.col_lo]), np.concatenate([self.row_hi, self.col_hi])
        if (lo > hi).any():
            return None
        if self._cache is None or not (np.array_equal(lo, self._cache[0]) and np.array_equal(hi, self._cache[1])):
            fin_lo, fin_hi = np.abs(lo) < _FINITE, np.abs(hi) < _FINITE
            equal = fin_lo & fin_hi & (lo == hi)
            upper, lower = fin_hi & ~equal, fin_lo & ~equal
            a = sp.csc_matrix(np.vstack([self._rows[equal], self._rows[upper], -self._rows[lower]]))
            b = np.concatenate([hi[equal], hi[upper], -lo[lower]])
            self._cache = (lo, hi, a, b, int(equal.sum()), int(upper.sum() + lower.sum()))
        _, _, a, b, n_equal, n_inequal = self._cache  # (the same polytope as the last solve: its matrices again)
        cones = [clarabel.ZeroConeT(n_equal), clarabel.NonnegativeConeT(n_inequal)]
        self._settings.time_limit = np.inf if time_limit is None else max(float(time_limit), 0.0)
        solver = clarabel.DefaultSolver(hessian_upper, np.asarray(q, dtype=float), a, b, cones, self._settings)
        solution = solver.solve()
        if solution.status != clarabel.SolverStatus.Solved:
            return None
        return np.asarray(solution.x)
