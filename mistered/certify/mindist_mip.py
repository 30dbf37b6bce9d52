"""The minimal adversarial distance as a mixed-integer linear program on OR-Tools (SCIP): GeoCert's cross-check.

For L∞ and L1 only: ``min |x - x0|`` subject to the ReLU network encoded with one binary per unstable ReLU
(big-M from interval bounds over the search box; stable ReLUs fixed) and ``f_j(x) >= f_c(x)``, solved once per
target class ``j`` (the margin row is switched on for one target at a time), keeping the best. L2 would need a
mixed-integer QP, which no free solver reachable through ``pywraplp`` handles; GeoCert's L2 radius is checked
against brute force instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from ortools.linear_solver import pywraplp

from ..errors import InvalidInputError, MisteredError
from .interval import interval_bounds
from .plnet import PiecewiseLinearNet

__all__ = ["MipDistanceResult", "mindist_mip"]



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
    net: PiecewiseLinearNet,
    x: torch.Tensor,
    norm: str = "linf",
    time_limit: float | None = None,
    upper_bound: float | None = None,
    domain: tuple[float, float] = (0.0, 1.0),
    solver_name: str = "SCIP",
) -> MipDistanceResult:
    """Minimal ``norm`` distance from ``x`` (``(d,)`` or ``input_shape``) to another class, by MILP.

    Args:
        upper_bound: a known upper bound; the search box (and so the big-M constants) shrinks to it.
        time_limit: seconds for all targets together; when reached the status is ``timeout``.
    """
    if norm not in ("linf", "l1"):
        raise InvalidInputError(f"the MIP baseline handles norm 'linf' or 'l1', got {norm!r} (L2 needs a MIQP)")
    start = time.perf_counter()
    net = net.to(torch.float64)
    x0 = net.flatten_input(x.reshape(1, -1))[0].cpu().numpy()
    d = x0.shape[0]
    c = int(net(torch.as_tensor(x0)[None])[0].argmax())
    radius = np.inf if upper_bound is None else float(upper_bound)
    lo = np.maximum(domain[0], x0 - radius)
    hi = np.minimum(domain[1], x0 + radius)
    bounds = interval_bounds(net, torch.as_tensor(lo)[None], torch.as_tensor(hi)[None])
    solver = pywraplp.Solver.CreateSolver(solver_name)
    if solver is None:
        raise MisteredError(f"OR-Tools has no solver {solver_name!r}; use 'SCIP', 'CBC' or 'HIGHS'")
    inf = solver.infinity()
    xs = [solver.NumVar(float(lo[i]), float(hi[i]), "") for i in range(d)]
    objective = solver.Objective()
    if norm == "linf":
        t = solver.NumVar(0.0, inf, "t")
        objective.SetCoefficient(t, 1.0)
        for i in range(d):
            for sign in (1.0, -1.0):  # sign * (x_i - x0_i) <= t
                row = solver.Constraint(-inf, sign * float(x0[i]))
                row.SetCoefficient(xs[i], sign)
                row.SetCoefficient(t, -1.0)
    else:
        for i in range(d):  # x_i - x0_i = p_i - n_i
            p, n = solver.NumVar(0.0, float(hi[i] - x0[i]), ""), solver.NumVar(0.0, float(x0[i] - lo[i]), "")
            objective.SetCoefficient(p, 1.0)
            objective.SetCoefficient(n, 1.0)
            row = solver.Constraint(float(x0[i]), float(x0[i]))
            row.SetCoefficient(xs[i], 1.0)
            row.SetCoefficient(p, -1.0)
            row.SetCoefficient(n, 1.0)
    objective.SetMinimization()
    h = xs
    ws = [w.cpu().numpy() for w in net.weights]
    bs = [b.cpu().numpy() for b in net.biases]
    for layer in range(net.num_hidden):
        l_b, u_b = (v[0].cpu().numpy() for v in bounds[layer])
        h = [_relu(solver, ws[layer][k], bs[layer][k], h, l_b[k], u_b[k]) for k in range(ws[layer].shape[0])]
    margin_rows = []
    for j in range(ws[-1].shape[0]):  # (f_j - f_c)(h) >= 0, switched on for one target at a time
        row = solver.Constraint(-inf, inf)
        for var, coef in zip(h, ws[-1][j] - ws[-1][c]):
            if var is not None and coef != 0.0:
                row.SetCoefficient(var, float(coef))
        margin_rows.append((row, float(bs[-1][c] - bs[-1][j])))
    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(params.RELATIVE_MIP_GAP, 1e-9)
    lower, upper, best_x, timed_out = np.inf, np.inf, None, False
    for j, (row, rhs) in enumerate(margin_rows):
        if j == c:
            continue
        if time_limit is not None:
            left = time_limit - (time.perf_counter() - start)
            if left <= 0:
                timed_out, lower = True, min(lower, 0.0)
                continue
            solver.SetTimeLimit(max(1, int(left * 1000)))
        for other, _ in margin_rows:
            other.SetLb(-inf)
        row.SetLb(rhs)
        status = solver.Solve(params)
        if status == pywraplp.Solver.OPTIMAL:
            value = objective.Value()
            lower = min(lower, value)
            if value < upper:
                upper, best_x = value, np.array([v.solution_value() for v in xs])
        elif status == pywraplp.Solver.FEASIBLE or status == pywraplp.Solver.NOT_SOLVED:
            timed_out = True
            lower = min(lower, objective.BestBound() if status == pywraplp.Solver.FEASIBLE else 0.0)
            if status == pywraplp.Solver.FEASIBLE and objective.Value() < upper:
                upper, best_x = objective.Value(), np.array([v.solution_value() for v in xs])
        elif status != pywraplp.Solver.INFEASIBLE:
            raise MisteredError(f"the MIP solver {solver_name} failed with status {status} on target class {j}")
    if upper_bound is not None and not timed_out and not np.isfinite(upper):
        lower = upper = float(upper_bound)  # nothing strictly closer than the given bound
    seconds = time.perf_counter() - start
    adv = None if best_x is None else torch.as_tensor(best_x).reshape(net.input_shape)
    return MipDistanceResult(float(lower), float(upper), "timeout" if timed_out else "exact", adv, c, seconds)


def _relu(solver, w_row: np.ndarray, bias: float, inputs: list, lower: float, upper: float):
    """Variable for ``relu(w_row · inputs + bias)`` (``None`` for a ReLU that is always 0)."""
    if upper <= 0:
        return None
    inf = solver.infinity()
    out = solver.NumVar(0.0, max(float(upper), 0.0), "")
    terms = [(var, float(coef)) for var, coef in zip(inputs, w_row) if var is not None and coef != 0.0]
    if lower >= 0:  # always active: out = z
        row = solver.Constraint(float(bias), float(bias))
        row.SetCoefficient(out, 1.0)
        for var, coef in terms:
            row.SetCoefficient(var, -coef)
        return out
    active = solver.BoolVar("")
    above = solver.Constraint(float(bias), inf)  # out >= z
    below = solver.Constraint(-inf, float(bias) - float(lower))  # out <= z - l (1 - a)
    cap = solver.Constraint(-inf, 0.0)  # out <= u a
    above.SetCoefficient(out, 1.0)
    below.SetCoefficient(out, 1.0)
    below.SetCoefficient(active, -float(lower))
    cap.SetCoefficient(out, 1.0)
    cap.SetCoefficient(active, -float(upper))
    for var, coef in terms:
        above.SetCoefficient(var, -coef)
        below.SetCoefficient(var, -coef)
    return out
