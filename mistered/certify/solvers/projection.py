"""Exact distances from a point to a polytope ``{x : A x <= b, lo <= x <= hi}`` in L1, L2 and L∞.

* L∞ and L1: linear programs solved by HiGHS' simplex (``scipy.optimize.linprog``), which returns a vertex
  optimum. We measured it ~1.2x-3x faster than OR-Tools GLOP on these 784-dimensional problems, mostly from
  model construction (HiGHS takes the sparse matrix directly; GLOP needs one Python call per coefficient).
* L∞ within one search: :class:`LinfProjector` keeps one HiGHS model per ``x0`` (the box and the rows
  ``-t <= δ_i <= t`` are built once; each call swaps the polytope's rows and re-solves by dual simplex from the
  previous basis, ~2x faster than a fresh ``linprog`` on MNIST nets), made by
  :func:`~mistered.certify.solvers.highs.new_highs`; where a solve is not optimal or its point fails the
  feasibility check, it falls back to :func:`distance_lp`.
* L2: the projection is a convex QP with identity Hessian. No free solver reachable from OR-Tools solves it exactly,
  so we solve its dual ``max_{λ >= 0} min_{lo <= x <= hi} ½|x - x0|² + λᵀ(A x - b)`` by a projected Newton method
  (finite on this piecewise-quadratic dual), recover ``x = clip(x0 - Aᵀλ, lo, hi)`` (stationarity holds by
  construction) and **verify** primal feasibility, dual feasibility and complementary slackness (so a zero duality
  gap) to tolerance. Where the Newton method stalls (a degenerate dual: a ReLU region's rows all lie in the first
  layer's row space), it restarts from multipliers that an interior-point solve (Clarabel) and NNLS on its tight
  rows provide, and verifies again. If that fails too, the problem is re-solved as a least-distance program by
  Lawson-Hanson NNLS (exact, finite active set, slower) and verified again; when that point is infeasible too, an
  LP decides whether the polytope is empty (``None``) or the projection failed (an error).

All arrays are float64 numpy; ``x0`` has shape ``(d,)``, ``A`` ``(m, d)``, ``b`` ``(m,)``, ``lo``/``hi`` ``(d,)``.
Every function returns ``(x, distance)`` or ``None`` when the polytope is empty.
"""

from __future__ import annotations

import clarabel
import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog, nnls

from ...errors import MisteredError
from .highs import new_highs, run_highs
from .status import Status

__all__ = ["polytope_distance", "project_l2", "distance_lp", "LinfProjector", "FEASIBILITY_TOL"]

#: Constraint violation accepted as feasible (in the units of ``A x - b``, rows are not normalised).
FEASIBILITY_TOL = 1e-7
_GAP_TOL = 1e-12
_TIGHT = 1e-6  # an interior-point slack below this counts as tight (see _interior_point_multipliers)


def polytope_distance(
    norm: str, A: np.ndarray, b: np.ndarray, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray,
    within: float = np.inf,
) -> tuple[np.ndarray, float] | None:
    """The point of ``{A x <= b} ∩ [lo, hi]`` nearest to ``x0`` in ``norm`` ("l1", "l2", "linf") and its distance.
    ``within``: L2 may return ``None`` as soon as its dual proves the distance beyond this (nothing nearer)."""
    if norm == "l2":
        return project_l2(A, b, x0, lo, hi, within=within)
    return distance_lp(norm, A, b, x0, lo, hi)


def distance_lp(
    norm: str, A: np.ndarray, b: np.ndarray, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, float] | None:
    """Exact L∞ or L1 distance by one LP in the displacement ``δ = x - x0`` (bounds ``lo - x0 <= δ <= hi - x0``)."""
    d = x0.shape[0]
    lower, upper = lo - x0, hi - x0
    rhs = b - A @ x0
    if norm == "l1":  # δ = p - n, minimise Σ p + Σ n
        cost = np.ones(2 * d)
        a_ub = np.hstack([A, -A])
        bounds = np.stack([np.zeros(2 * d), np.concatenate([upper, -lower])], axis=1)
        res = _linprog(cost, a_ub, rhs, bounds)
        if res is None:
            return None
        delta = res[:d] - res[d:]
    elif norm == "linf":  # minimise t with -t <= δ_i <= t (only the rows that can bind)
        up_rows, down_rows = np.flatnonzero(upper > 0), np.flatnonzero(lower < 0)
        n_rows = len(up_rows) + len(down_rows)
        rows = np.arange(n_rows)
        pick = sp.csr_matrix(
            (np.concatenate([np.ones(len(up_rows)), -np.ones(len(down_rows))]),
             (rows, np.concatenate([up_rows, down_rows]))),
            shape=(n_rows, d),
        )
        a_ub = sp.bmat([[sp.csr_matrix(A), None], [pick, -np.ones((n_rows, 1))]], format="csr")
        b_ub = np.concatenate([rhs, np.zeros(n_rows)])
        cost = np.zeros(d + 1)
        cost[-1] = 1.0
        bounds = np.concatenate([np.stack([lower, upper], axis=1), [[0.0, np.inf]]])
        res = _linprog(cost, a_ub, b_ub, bounds)
        if res is None:
            return None
        delta = res[:d]
    else:
        raise MisteredError(f"unknown norm {norm!r}; use 'l1', 'l2' or 'linf'")
    x = np.clip(x0 + delta, lo, hi)
    return x, _norm(x - x0, norm)


class LinfProjector:
    """Exact L∞ distances from one fixed ``x0`` ``(d,)`` to a sequence of polytopes ``{A x <= b} ∩ [lo, hi]``.

    One persistent LP in ``(δ, t)``: minimise ``t`` s.t. ``-t <= δ_i <= t``, ``lo - x0 <= δ <= hi - x0`` and the
    current polytope's rows ``A δ <= b - A x0``; each call replaces those rows and warm-starts from the last basis.
    Results equal :func:`distance_lp` (same solver, same tolerances); any doubt falls back to it.

    Example:
        >>> proj = LinfProjector(x0)
        >>> x, dist = proj(A, b, lo, hi)   # or None when the polytope is empty
    """

    def __init__(self, x0: np.ndarray) -> None:
        self.x0 = np.asarray(x0, dtype=np.float64)
        self.d = self.x0.shape[0]
        self.n_fallbacks = 0
        self._model = self._build()
        self._n_rows = 0
        self._bounds: tuple[np.ndarray, np.ndarray] | None = None

    def _build(self):
        d, model = self.d, new_highs()  # (presolve off: it would discard the basis between calls)
        inf = model.getInfinity()
        cost = np.zeros(d + 1)
        cost[-1] = 1.0
        lower = np.concatenate([np.full(d, -inf), [0.0]])
        model.addCols(d + 1, cost, lower, np.full(d + 1, inf), 0, np.zeros(0, np.int32), np.zeros(0, np.int32),
                      np.zeros(0))
        starts = np.arange(0, 2 * d, 2, dtype=np.int32)
        cols = np.stack([np.arange(d, dtype=np.int32), np.full(d, d, dtype=np.int32)], axis=1).ravel()
        for sign in (1.0, -1.0):  # sign * δ_i - t <= 0
            model.addRows(d, np.full(d, -inf), np.zeros(d), 2 * d, starts, cols, np.tile([sign, -1.0], d))
        self._inf = inf
        return model

    def __call__(self, A: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, float] | None:
        """The point of ``{A x <= b} ∩ [lo, hi]`` nearest to ``x0`` in L∞ and its distance, or ``None`` if empty."""
        outcome = self._solve(A, b, lo, hi)
        if outcome is Status.INFEASIBLE:
            return None
        if not isinstance(outcome, Status):
            return outcome
        self.n_fallbacks += 1
        return distance_lp("linf", A, b, self.x0, lo, hi)

    def _solve(self, A, b, lo, hi) -> tuple[np.ndarray, float] | Status:
        """The nearest point and its distance, or ``Status.INFEASIBLE`` (empty) or ``Status.FAILED`` (not optimal,
        or the point fails the feasibility check: the caller falls back to :func:`distance_lp`)."""
        model, d, x0 = self._model, self.d, self.x0
        if self._bounds is None or not (np.array_equal(self._bounds[0], lo) and np.array_equal(self._bounds[1], hi)):
            model.changeColsBounds(d, np.arange(d, dtype=np.int32), lo - x0, hi - x0)
            self._bounds = (lo.copy(), hi.copy())
        if self._n_rows:
            model.deleteRows(self._n_rows, np.arange(2 * d, 2 * d + self._n_rows, dtype=np.int32))
        m = A.shape[0]
        if m:
            nonzero = A != 0
            starts = np.concatenate([[0], np.cumsum(nonzero.sum(1))[:-1]]).astype(np.int32)
            model.addRows(m, np.full(m, -self._inf), b - A @ x0, int(nonzero.sum()), starts,
                          np.nonzero(nonzero)[1].astype(np.int32), A[nonzero])
        self._n_rows = m
        status = run_highs(model)
        if status is Status.INFEASIBLE:
            return status
        if status is not Status.OPTIMAL:
            return Status.FAILED
        x = np.clip(x0 + np.asarray(model.getSolution().col_value)[:d], lo, hi)
        if m and (A @ x - b).max() > FEASIBILITY_TOL:
            return Status.FAILED
        return x, _norm(x - x0, "linf")


def _linprog(cost, a_ub, b_ub, bounds) -> np.ndarray | None:
    if a_ub.shape[0] == 0:
        a_ub, b_ub = None, None
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs-ds")
    if res.status == 4:  # numerical trouble in the simplex: the interior-point method with crossover instead
        res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs-ipm")
    if res.status == 2:
        return None
    if res.status != 0:
        raise MisteredError(f"the LP solver (HiGHS) failed with status {res.status}: {res.message}")
    return res.x


def _norm(v: np.ndarray, norm: str) -> float:
    if norm == "l2":
        return float(np.linalg.norm(v))
    if norm == "l1":
        return float(np.abs(v).sum())
    return float(np.abs(v).max(initial=0.0))


def project_l2(
    A: np.ndarray, b: np.ndarray, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, max_iter: int = 200,
    within: float = np.inf,
) -> tuple[np.ndarray, float] | None:
    """Exact Euclidean projection of ``x0`` onto ``{A x <= b} ∩ [lo, hi]``, verified by its KKT conditions;
    ``None`` if the polytope is empty or (weak duality) holds no point within distance ``within`` of ``x0``."""
    if A.shape[0] == 0:
        x = np.clip(x0, lo, hi)
        return x, float(np.linalg.norm(x - x0))
    outcome = _dual_newton(A, b, x0, lo, hi, max_iter, within=within)
    if outcome is None:  # stalled from λ = 0 (a degenerate dual): again from an interior-point solve's multipliers
        start = _interior_point_multipliers(A, b, x0, lo, hi)
        if start is Status.INFEASIBLE:
            outcome = Status.INFEASIBLE if _is_empty(A, b, lo, hi) else None
        elif start is not None:
            outcome = _dual_newton(A, b, x0, lo, hi, max_iter, start, within)
    if outcome is Status.INFEASIBLE:
        return None
    if outcome is None:
        outcome = _least_distance_nnls(A, b, x0, lo, hi)
    if outcome is None or (A @ outcome - b).max() > FEASIBILITY_TOL:
        # NNLS tells emptiness by a residual near zero, which is scale-dependent: an LP settles it.
        if _is_empty(A, b, lo, hi):
            return None
        raise MisteredError("the L2 projection could not be verified (KKT conditions violated after the NNLS fallback)")
    return outcome, float(np.linalg.norm(outcome - x0))


def _is_empty(A, b, lo, hi) -> bool:
    """True if ``{A x <= b} ∩ [lo, hi]`` is empty (decided by an LP)."""
    return _linprog(np.zeros(lo.shape[0]), A, b, np.stack([lo, hi], axis=1)) is None


def _dual_newton(A, b, x0, lo, hi, max_iter, lam: np.ndarray | None = None,
                 within: float = np.inf) -> np.ndarray | Status | None:
    """Projected Newton ascent on the dual from ``lam`` (``(m,)``, default 0); returns the verified primal point,
    ``Status.INFEASIBLE`` (nothing within ``within``: the dual passed ``½ within²``, or the primal's bound on the
    box, so the polytope is empty or farther) or ``None`` (stalled)."""
    m = A.shape[0]
    bound = 0.5 * float(np.sum(np.maximum(x0 - lo, hi - x0) ** 2))  # weak duality: q(λ) <= primal <= bound
    bound = min(bound, 0.5 * within ** 2)
    lam = np.zeros(m) if lam is None else np.maximum(lam, 0.0)

    def evaluate(lam_):
        v_ = x0 - A.T @ lam_
        x_ = np.clip(v_, lo, hi)
        g_ = A @ x_ - b
        return v_, x_, g_, 0.5 * float(np.sum((x_ - x0) ** 2)) + float(lam_ @ g_)

    v, x, g, q = evaluate(lam)
    for _ in range(max_iter):
        if g.max() <= FEASIBILITY_TOL and -float(lam @ g) <= _GAP_TOL * max(1.0, q) and (lam >= 0).all():
            return x
        if q > bound + 1e-9:
            return Status.INFEASIBLE
        work = (lam > 0) | (g > 0)
        free = (v > lo) & (v < hi)
        a_w = A[np.ix_(work, free)]
        hess = a_w @ a_w.T
        reg = 1e-12 * max(1.0, float(np.trace(hess)))
        step = np.linalg.solve(hess + reg * np.eye(hess.shape[0]), g[work])
        alpha, accepted = 1.0, False
        while alpha > 1e-12:
            trial = lam.copy()
            trial[work] = np.maximum(lam[work] + alpha * step, 0.0)
            v2, x2, g2, q2 = evaluate(trial)
            if q2 >= q + 1e-4 * float(g @ (trial - lam)) and q2 >= q:
                accepted = True
                break
            alpha *= 0.5
        if not accepted:
            return None
        lam, v, x, g, q = trial, v2, x2, g2, q2
    return None


def _interior_point_multipliers(A, b, x0, lo, hi) -> np.ndarray | Status | None:
    """``(m,)`` multipliers of the rows ``A x <= b`` to restart the dual Newton method from, where it stalled from 0:
    the rows of a region's polytope all lie in the first layer's row space (rank ~10 for 40+ rows on a
    784-10-50-10-2 net), so its dual is degenerate. Clarabel (interior point, to ~1e-8) finds the projection; the
    rows it leaves (near) tight and the pixels it leaves inside the box give the KKT system ``G λ = h``, ``λ >= 0``
    on those rows, solved by NNLS (tens of unknowns): a vertex of the optimal multipliers, where the Newton method
    verifies at once. ``Status.INFEASIBLE`` when Clarabel finds the polytope empty, ``None`` if it fails."""
    d = x0.shape[0]
    eye = sp.identity(d, format="csc")
    rows = sp.vstack([sp.csc_matrix(A), eye, -eye], format="csc")
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    solver = clarabel.DefaultSolver(sp.identity(d, format="csc"), -x0, rows, np.concatenate([b, hi, -lo]),
                                    [clarabel.NonnegativeConeT(rows.shape[0])], settings)
    solution = solver.solve()
    if solution.status == clarabel.SolverStatus.PrimalInfeasible:
        return Status.INFEASIBLE
    if solution.status not in (clarabel.SolverStatus.Solved, clarabel.SolverStatus.AlmostSolved):
        return None
    x = np.asarray(solution.x)
    tight = b - A @ x <= _TIGHT * (1.0 + np.abs(b))
    free = (x > lo + _TIGHT) & (x < hi - _TIGHT)
    x_fixed = np.where(x - lo < hi - x, lo, hi)[~free]
    a_free = A[np.ix_(tight, free)]
    gram = a_free @ a_free.T
    rhs = a_free @ x0[free] + A[np.ix_(tight, ~free)] @ x_fixed - b[tight]
    lam = np.zeros(A.shape[0])
    lam[tight] = nnls(gram, rhs, maxiter=50 * max(1, int(tight.sum())))[0]
    return lam


def _least_distance_nnls(A, b, x0, lo, hi) -> np.ndarray | None:
    """Lawson-Hanson least-distance programming: min |z| s.t. G z <= h - G x0 with the box as rows of G."""
    d = x0.shape[0]
    g_mat = np.vstack([A, np.eye(d), -np.eye(d)])
    h = np.concatenate([b, hi, -lo])
    slack = g_mat @ x0 - h  # LDP form: (-G) z >= slack
    e = np.vstack([-g_mat.T, slack[None]])
    f = np.zeros(d + 1)
    f[-1] = 1.0
    u, _ = nnls(e, f, maxiter=50 * e.shape[1])
    r = e @ u - f
    if abs(r[-1]) < 1e-12:
        return None
    return np.clip(x0 - r[:d] / r[-1], lo, hi)
