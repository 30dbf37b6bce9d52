"""The minimal adversarial distance as a mixed-integer linear program: GeoCert's cross-check and fast L∞ route.

For L∞ and L1 only: ``min |x - x0|`` subject to the ReLU network encoded with one binary per unstable ReLU and
``f_j(x) >= f_c(x)``, one MILP per target class ``j``, nearest local decision plane first. Each MILP is built
from numpy arrays (one sparse matrix) over the search box, the domain intersected with the L∞ ball of radius =
the best distance so far (for L1 that ball encloses the L1 ball), with the distance capped there:

* big-M constants come from CROWN bounds over that box (:mod:`mistered.certify.bounds.chain_linear`; in L1 over its
  intersection with the L1 ball, where the row ``Σ|δ| <= radius`` keeps the MILP), much tighter
  than interval bounds from the second layer on; a target whose margin ``f_j - f_c`` the same bounds prove
  negative on the whole box is skipped without a MILP;
* a trial radius below the best comes first (a smaller box: tighter big-M, fewer binaries): in L∞ 1.3 times
  the radius CROWN certifies for ``j``, in L1 0.85 times the best. The distance is capped at the radius in both
  norms, so a trial answer is exact and an infeasible trial only falls back to the full radius;
* the ReLUs are the big-M encoding of :mod:`mistered.certify.solvers.big_m` (stable ones exact, no binary);
* solvers (:func:`mistered.certify.solvers.mip.solve_milp`): SCIP through OR-Tools' model builder, filled from the
  sparse matrix in one call, with cutting planes and the dual sparsify presolver off (the default; on the
  784-input benchmark nets faster than with cuts, 2-8x measured, and than HiGHS, ~5x; dual sparsify ignores the
  time limit) and SCIP's memory capped, or HiGHS through ``scipy.optimize.milp``; every solve gets the time left.

L2 would need a mixed-integer QP; GeoCert's L2 radius is checked against brute force instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ...errors import InvalidInputError, MisteredError
from ...validation import check_inputs
from .boundary_search import local_logit_forms
from .halfspace import halfspace_projection
from ..bounds.chain_linear import NormBall, linear_bounds
from ..graph.piecewise import PiecewiseLinearNet
from ..graph.piecewise_lowering import as_plnet
from ..solvers.big_m import add_relu_layer
from ..solvers.mip import MILP_SOLVERS, MilpProblem, SparseModel, solve_milp
from ..solvers.projection import _norm
from ..solvers.status import Status

__all__ = ["MipDistanceResult", "mindist_mip", "margin_net", "MIP_SOLVERS"]

MIP_SOLVERS = MILP_SOLVERS
_TRIAL = 0.85  # L1 trial radius, as a fraction of the best distance so far
_GUESS, _BISECTIONS = 1.3, 8  # L∞ trial radius: 1.3 x the radius CROWN certifies (8 bisection steps)
# SCIP's dual sparsify presolver does not check the time limit: 273 s of presolve under a 10 s limit on an L1 MILP
# of mnist-fc; off, the L∞ medians also drop (10 digits: 0.75 -> 0.57 s on 784-10-50-10-2, 1.02 -> 0.67 s on mnist-fc)
_SCIP_DISTANCE_PARAMETERS = "limits/gap = 1e-9\npresolving/dualsparsify/maxrounds = 0\n"


@dataclass
class MipDistanceResult:
    """``lower``/``upper`` bounds on the minimal distance, ``status`` (``exact`` or ``timeout``), ``x_adv``
    ``(d,)`` at distance ``upper`` (``None`` if none found), the predicted class and the time in seconds."""

    lower: float
    upper: float
    status: str
    x_adv: torch.Tensor | None
    predicted: int
    seconds: float


def mindist_mip(
    net: PiecewiseLinearNet | torch.nn.Module,
    x: torch.Tensor,
    norm: str = "linf",
    time_limit: float | None = None,
    upper_bound: float | None = None,
    domain: tuple[float, float] = (0.0, 1.0),
    solver: str = "scip",
) -> MipDistanceResult:
    """Minimal ``norm`` distance from ``x`` (``(d,)`` or ``input_shape``, finite, inside ``domain``) to another class,
    by MILP.

    Args:
        net: the network in piecewise-linear form, or an ``nn.Module`` converted for inputs of ``x``'s shape.
        upper_bound: a known upper bound (e.g. from ``boundary_search``); the search box, and so the big-M
            constants, shrink to it. If nothing strictly closer exists, the answer is this bound.
        time_limit: seconds for all targets together; when reached the status is ``timeout``.
        solver: ``"scip"`` (OR-Tools; the faster on the 784-input benchmark nets) or ``"highs"`` (SciPy).
    """
    if solver not in MIP_SOLVERS:
        raise InvalidInputError(f"solver must be one of {MIP_SOLVERS}, got {solver!r}")
    if norm not in ("linf", "l1"):
        raise InvalidInputError(f"the MIP baseline handles norm 'linf' or 'l1', got {norm!r} (L2 needs a MIQP)")
    check_inputs(x[None] if isinstance(x, torch.Tensor) else x, images=False, domain=domain, name="x")
    start = time.perf_counter()
    net = as_plnet(net, tuple(x.shape), domain).to(torch.float64)
    x0 = net.flatten_input(x.reshape(1, -1))[0].cpu().numpy()
    logits = net(torch.as_tensor(x0)[None])[0].numpy()
    c = int(logits.argmax())
    margins = margin_net(net, c)  # its output bounds rule targets out before any MILP
    ws = [w.cpu().numpy() for w in margins.weights]
    bs = [b.cpu().numpy() for b in margins.biases]
    best = np.inf if upper_bound is None else float(upper_bound)
    lower, best_x, timed_out = np.inf, None, False
    for j in _target_order(net, x0, c, norm, domain):
        for radius in _radii(margins, x0, j, norm, best, domain):
            left = None if time_limit is None else time_limit - (time.perf_counter() - start)
            if left is not None and left <= 0:
                timed_out, lower = True, 0.0
                break
            lo, hi = _search_box(x0, radius, domain)
            box = _region_bounds(margins, x0, norm, radius, domain)
            if float(box[-1][1][0, j]) < 0:  # f_j < f_c on the whole box: nothing within radius for j
                continue
            problem = _target_problem(ws, bs, x0, j, norm, radius, lo, hi, box)
            result = solve_milp(problem, solver, left, _SCIP_DISTANCE_PARAMETERS)
            if result.status is Status.FAILED:
                raise MisteredError(f"the MIP solver failed ({result.message}); try solver='highs' or 'scip'")
            if result.status is Status.INFEASIBLE:  # nothing of class j within radius: the next radius
                continue
            value, point = result.objective, result.solution
            if point is not None and value < best:
                best, best_x = value, point[: x0.shape[0]].copy()
            if result.status is Status.OPTIMAL:  # value <= radius (capped): the nearest point of j overall
                lower = min(lower, value)
                break
            # a limit: the anytime bound is a lower bound for target j within radius
            timed_out, lower = True, min(lower, max(0.0, min(result.bound, radius)))
            break
        if timed_out:
            break
    if not timed_out:
        lower = best  # every target solved or proved to have nothing closer than the best
    if best_x is not None:  # the point from its displacement variables; its own distance, not the solver's
        best_x = np.clip(x0 + best_x, domain[0], domain[1])  # objective (they differ within its tolerance, ~1e-6)
        best = max(best, _norm(best_x - x0, norm))
    seconds = time.perf_counter() - start
    adv = None if best_x is None else torch.as_tensor(best_x).reshape(net.input_shape)
    return MipDistanceResult(float(min(lower, best)), float(best), "timeout" if timed_out else "exact", adv, c,
                             seconds)


def margin_net(net: PiecewiseLinearNet, c: int) -> PiecewiseLinearNet:
    """The same network with the margins ``f_k - f_c`` ``(B, K)`` as outputs (row ``c`` is zero): a target ``k``
    is reachable only where its margin is >= 0, so output bounds of this net rule targets out."""
    return PiecewiseLinearNet(net.weights[:-1] + [net.weights[-1] - net.weights[-1][c]],
                              net.biases[:-1] + [net.biases[-1] - net.biases[-1][c]], net.input_shape)


def _target_order(net: PiecewiseLinearNet, x0: np.ndarray, c: int, norm: str, domain) -> list[int]:
    """Classes other than ``c``, nearest local decision half-space first (so the best bound shrinks early)."""
    x = torch.as_tensor(x0)[None]
    mat, off = local_logit_forms(net, x)
    a, b = mat[:, c][:, None] - mat, off - off[:, c][:, None]
    lo, hi = torch.full_like(x, domain[0]), torch.full_like(x, domain[1])
    dist, _ = halfspace_projection(norm, a, b, x, lo, hi)
    return [j for j in dist[0].argsort().tolist() if j != c]


def _radii(margins: PiecewiseLinearNet, x0: np.ndarray, j: int, norm: str, best: float,
           domain: tuple[float, float]) -> tuple[float, ...]:
    """The radii to search for target ``j``: a trial radius below ``best`` first when one promises a smaller box
    (tighter big-M constants, fewer unstable ReLUs), then ``best``; ``()`` if CROWN rules ``j`` out within
    ``best``. Any trial radius is exact: the distance is capped at it, so an infeasible trial only costs time.

    L∞: the trial is ``_GUESS`` times the radius CROWN certifies for ``j`` (bisection), a lower bound on the
    distance, 72-98% of it on the benchmark nets (so the trial is rarely infeasible). L1: the
    L∞ certificate says little about the L1 distance, so the trial is ``_TRIAL * best``."""
    if not np.isfinite(best):
        return (best,)
    if float(_region_bounds(margins, x0, norm, best, domain)[-1][1][0, j]) < 0:
        return ()
    if norm == "l1":
        return (_TRIAL * best, best)
    certified, above = 0.0, best
    for _ in range(_BISECTIONS):
        mid = (certified + above) / 2
        crown = float(_region_bounds(margins, x0, "linf", mid, domain)[-1][1][0, j])
        certified, above = (mid, above) if crown < 0 else (certified, mid)
    trial = _GUESS * certified
    return (trial, best) if trial < best else (best,)


def _region_bounds(margins: PiecewiseLinearNet, x0: np.ndarray, norm: str, radius: float,
                   domain: tuple[float, float]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """CROWN bounds over the search box of ``radius`` (for L1 intersected with the L1 ball, which the MILP's row
    ``Σ|δ| <= radius`` keeps it in): every layer's, the margins ``f_j - f_c`` last."""
    lo, hi = _search_box(x0, radius, domain)
    centre = torch.as_tensor(x0)[None]
    ball = NormBall(centre, "l1", radius) if norm == "l1" and np.isfinite(radius) else None
    return linear_bounds(margins, centre + torch.as_tensor(lo)[None], centre + torch.as_tensor(hi)[None], ball)


def _search_box(x0: np.ndarray, radius: float, domain: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on the displacement ``δ``: the domain intersected with the L∞ ball of ``radius`` (if finite)."""
    if not np.isfinite(radius):
        return domain[0] - x0, domain[1] - x0
    return np.maximum(domain[0], x0 - radius) - x0, np.minimum(domain[1], x0 + radius) - x0


def _target_problem(ws, bs, x0, j, norm, radius, lo, hi, box) -> MilpProblem:
    """One MILP in the displacement ``δ = x - x0`` ``(d,)`` in ``[lo, hi]``: the columns ``δ`` first, then ``t``
    (L∞: ``-t <= δ <= t``) or ``(p, n)`` with ``δ = p - n`` (L1), the objective ``t`` or ``Σ p + Σ n`` capped at
    ``radius``; then every hidden ReLU (big-M, bounds ``box``) and the margin ``(f_j - f_c)(x) >= 0``."""
    d = x0.shape[0]
    model = SparseModel()
    cap = radius if np.isfinite(radius) else np.inf
    delta = model.vars(lo, hi)
    eye = sp.identity(d, format="csr")
    if norm == "linf":  # ±δ_i - t <= 0
        t = model.var(0.0, cap, cost=1.0)
        cols = np.append(delta, t)
        for sign in (1.0, -1.0):
            model.rows(np.full(d, -np.inf), np.zeros(d), sp.hstack([sign * eye, -np.ones((d, 1))]), cols)
    else:  # δ - p + n = 0, minimise Σ p + Σ n
        p, n = model.vars(np.zeros(d), hi, cost=1.0), model.vars(np.zeros(d), -lo, cost=1.0)
        model.rows(np.zeros(d), np.zeros(d), sp.hstack([eye, -eye, eye]), np.concatenate([delta, p, n]))
        if np.isfinite(cap):  # Σ p + Σ n <= radius: a trial radius never returns a point beyond it
            model.row(-np.inf, cap, np.concatenate([p, n]), np.ones(2 * d))
    prev = delta.tolist()
    for layer in range(len(ws) - 1):  # h = relu(W h_prev + b), with W x0 folded into the first layer's bias
        off = bs[layer] + (ws[layer] @ x0 if layer == 0 else 0.0)
        low, up = (v[0].numpy() for v in box[layer])
        prev, _ = add_relu_layer(model, prev, ws[layer], off, low, up)
    keep = [i for i, v in enumerate(prev) if v is not None]  # the margin (f_j - f_c)(h) >= 0
    model.row(-bs[-1][j], np.inf, [prev[i] for i in keep], ws[-1][j][keep])
    return model.problem()
