"""LipMIP (Jordan & Dimakis 2020): the exact local Lipschitz constant of a ReLU network as a MIP.

The model is built with OR-Tools' ``pywraplp`` and solved on HiGHS through ``highspy`` by default (presolve on, one
thread: a median 3.5 CPU s against SCIP's ~10 s on MNIST 196-20-20-2 at r = 0.2, ``benchmarks/RESULTS.md``), or on
SCIP / CBC through OR-Tools (``solver=``). A chain lowered from a graph must carry its residual values through stable
neurons on the box (lower it on a domain holding the box; see :func:`_check_carried`).

For one example, with box ``B = [lower, upper]`` and output weightings ``C`` (see
:mod:`~mistered.certify.lipschitz.local.directions`), the MIP computes

    L = max_{x in B, c in C} || W_1^T D_1(x) ... D_{L-1}(x) W_L^T c ||_*

where ``D_k(x)`` ranges over the generalised ReLU derivatives: a neuron with pre-activation exactly 0 may
take either 0 or 1 (the Clarke-style relaxation LipMIP uses; it changes nothing for nets in general position).

* Pre-activation bounds: IBP (``bounds="interval"``), CROWN (``"crown"``,
  :func:`~mistered.certify.bounds.chain_linear.linear_bounds`, intersected with the interval bounds) or CROWN tightened
  by LP (``"lp"``: :func:`~mistered.certify.bounds.chain_lp.lp_bounds` for the neurons and, in forward mode,
  :func:`~mistered.certify.lipschitz.local.tangent.tangent_bounds` for the big-M of the tangent gates). All are
  valid, so the optimum is the same; tighter ones fix more neurons as stable and shrink the big-M constants.
  CROWN cuts layer-2 widths by 40% vs IBP (MNIST 196-20-20-2, r=0.2); LP tightening costs ~0.2 s (neurons) and
  1-3 s (tangents) on 784-20-20-2 and shrinks layer-2 neuron widths by 5-15% and tangent widths by ~35%.
  ``"auto"`` (default) takes ``"lp"`` when CROWN leaves more than :data:`AUTO_LP_UNSTABLE` unstable neurons and
  ``"crown"`` otherwise, where the tightening costs more than the MIP it speeds up.
* Forward pass: big-M ReLU ``z = relu(z_hat)`` with one binary ``delta`` per unstable neuron; neurons that
  the bounds prove stable get no binary (``z = z_hat`` or ``z = 0``).
* Backward pass: ``a = delta * g`` with the SAME binary, linearised exactly with big-M from interval bounds of
  ``g`` (:func:`~mistered.certify.lipschitz.local.jacobian.backward_bounds`): ``gl' delta <= a <= gu' delta``,
  ``g - gu'(1 - delta) <= a <= g - gl'(1 - delta)``. Backward quantities are kept as exact linear expressions
  (a coefficient matrix over the backward variables), so stable-active neurons cost nothing.
* Dual norm, exactly: primal L∞ -> ``||g||_1 = sum_i t_i`` with ``t_i <= |g_i|`` via one sign binary per
  coordinate whose sign interval bounds cannot fix; primal L1 -> ``||g||_∞ = t`` with one selection binary per
  (coordinate, sign) that could still attain the maximum.

* Forward mode (default when ``c`` is fixed: scalar and margin objectives): since
  ``||J^T c||_* = max_{||v|| <= 1} c^T J v``, the MIP maximises the LINEAR ``c^T t_L`` over ``v`` in the primal
  unit ball and a tangent ``t_{k+1} = W_{k+1} D_k t_k`` gated by the same binaries. It is exact too and needs no
  dual-norm binaries, which on 784-pixel inputs is the difference between seconds and minutes
  (:mod:`~mistered.certify.lipschitz.local.tangent`).

Primal L2 is not supported: ``max ||g||_2`` is a non-convex quadratic maximisation that the free solvers behind
OR-Tools (SCIP, CBC, HiGHS) cannot encode exactly.

With ``relax=True`` the binaries become ``[0, 1]`` variables: the LP relaxation, an upper bound.
A time limit returns ``min(solver's best bound, Fast-Lip)`` as a valid upper bound and the incumbent as lower bound
(a HiGHS run stopped before its branch and bound starts has no bound: Fast-Lip).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ....errors import InvalidInputError, UnsoundResultError
from ...bounds.chain_interval import interval_bounds
from ...bounds.chain_linear import linear_bounds
from ...bounds.chain_lp import lp_bounds
from ...graph.piecewise import PiecewiseLinearNet
from ...solvers.mip import pywraplp_status, solve_maximisation_on_highs
from ...solvers.status import SolveResult, Status
from .directions import DUAL_NORMS, OutputDirections
from .jacobian import backward_bounds, fastlip_bound
from .milp import MipModel, forward_relus, gate
from .tangent import tangent_bounds, tangent_objective

__all__ = ["MIP_SOLVERS", "LP_SOLVERS", "PRE_ACTIVATION_BOUNDS", "AUTO_LP_UNSTABLE", "MipSolution", "solve_lipmip"]

MIP_SOLVERS = ("SCIP", "CBC", "HIGHS")
PRE_ACTIVATION_BOUNDS = ("auto", "interval", "crown", "lp")
#: ``bounds="auto"`` tightens by LP above this many unstable neurons (CROWN), e.g. 40 on 784-20-20-2 at r = 0.2.
AUTO_LP_UNSTABLE = 30
LP_SOLVERS = ("GLOP", "CLP", "HIGHS", "PDLP")


@dataclass
class MipSolution:
    """The answer for one example.

    Attributes:
        value: the Lipschitz constant when ``status == "exact"`` (LP: the relaxation's optimum); else ``upper``.
        lower, upper: valid bounds (the incumbent's objective, up to solver tolerance; the best bound).
        status: ``"exact"`` (solved to ``mip_gap``) or ``"timeout"``.
        x: ``(d,)`` a maximiser (the incumbent's input), or ``None`` when the solver found none.
        seconds: wall-clock time including model building.
        stats: binaries, unstable neurons, solver name, variables, constraints.
    """

    value: float
    lower: float
    upper: float
    status: str
    x: torch.Tensor | None
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)


def _backward(model: MipModel, net: PiecewiseLinearNet, deltas, back_bounds, directions: OutputDirections):
    """Exact linear expressions of the input gradient ``g_1``: ``(coef (d, nv), const (d,), variables)``."""
    c_lo, c_hi = directions.lower[0].numpy(), directions.upper[0].numpy()
    if directions.fixed:
        variables: list[Any] = []
        coef, const = np.zeros((len(c_lo), 0)), c_lo.copy()
    else:
        variables = [model.var(lo, hi) for lo, hi in zip(c_lo.tolist(), c_hi.tolist())]
        coef, const = np.eye(len(c_lo)), np.zeros(len(c_lo))
        if directions.simplex:
            model.row(1.0, 1.0, variables, np.ones(len(variables)))
    for k in reversed(range(1, len(net.weights))):
        w = net.weights[k].numpy()
        coef, const = w.T @ coef, w.T @ const  # g_{k+1} = W_{k+1}^T a_{k+1} (0-based k here)
        g_lo, g_hi = back_bounds[k][0][0].numpy(), back_bounds[k][1][0].numpy()
        old_vars, width = variables, coef.shape[1]
        unstable = [j for j, d in enumerate(deltas[k - 1]) if not isinstance(d, int)]
        new_coef = np.zeros((coef.shape[0], width + len(unstable)))
        new_const = np.zeros_like(const)
        for j, delta in enumerate(deltas[k - 1]):
            if isinstance(delta, int) and delta == 1:  # stable active: a = g
                new_coef[j, :width], new_const[j] = coef[j], const[j]
        for i, j in enumerate(unstable):
            a = gate(model, deltas[k - 1][j], old_vars, coef[j], const[j], g_lo[j], g_hi[j])
            new_coef[j, width + i] = 1.0
            variables = variables + [a]
        coef, const = new_coef, new_const
    w = net.weights[0].numpy()
    return w.T @ coef, w.T @ const, variables


def _dual_norm_objective(model: MipModel, coef: np.ndarray, const: np.ndarray, variables, g_lo, g_hi, norm: str):
    """Set the objective to the dual norm of ``g = coef @ variables + const`` (``g`` in ``[g_lo, g_hi]``)."""
    inf = model.solver.infinity()
    objective = model.solver.Objective()
    objective.SetMaximization()
    if DUAL_NORMS[norm] == "l1":  # sum_i |g_i|
        linear = np.zeros(len(variables))
        offset = 0.0
        for i in range(len(const)):
            if g_lo[i] >= 0 or g_hi[i] <= 0:  # sign fixed: |g_i| = +-g_i is linear
                sign = 1.0 if g_lo[i] >= 0 else -1.0
                linear += sign * coef[i]
                offset += sign * const[i]
                continue
            t, s = model.var(0.0, max(-g_lo[i], g_hi[i])), model.binary()
            row_vars = [t, s] + variables
            # s = 1: t <= g_i (and t <= -g_i + 2 g_hi, slack); s = 0: t <= -g_i (and t <= g_i - 2 g_lo, slack)
            model.row(-inf, const[i] - 2 * g_lo[i], row_vars, np.concatenate([[1.0, -2 * g_lo[i]], -coef[i]]))
            model.row(-inf, -const[i], row_vars, np.concatenate([[1.0, -2 * g_hi[i]], coef[i]]))
            objective.SetCoefficient(t, 1.0)
        for v, a in zip(variables, linear.tolist()):
            objective.SetCoefficient(v, objective.GetCoefficient(v) + a)
        objective.SetOffset(float(offset))
        return
    # max_i |g_i|: pick one (coordinate, sign) that can still reach the maximum
    reach = np.maximum(-g_lo, g_hi)
    floor = float(np.max(np.where(g_lo > 0, g_lo, np.where(g_hi < 0, -g_hi, 0.0))))
    top = float(reach.max())
    t = model.var(floor, top)
    choices = []
    for i in np.flatnonzero(reach >= floor).tolist():
        for sign, least in ((1.0, g_lo[i]), (-1.0, -g_hi[i])):
            if sign * (g_hi[i] if sign > 0 else g_lo[i]) < floor:
                continue
            p = model.binary()
            # t <= sign * g_i + (top - least)(1 - p)
            model.row(-inf, sign * const[i] + top - least, [t, p] + variables,
                      np.concatenate([[1.0, top - least], -sign * coef[i]]))
            choices.append(p)
    model.row(1.0, 1.0, choices, np.ones(len(choices)))
    objective.SetCoefficient(t, 1.0)


def solve_lipmip(
    net: PiecewiseLinearNet,
    lower: torch.Tensor,
    upper: torch.Tensor,
    directions: OutputDirections,
    norm: str = "linf",
    *,
    relax: bool = False,
    solver: str | None = None,
    time_limit: float | None = None,
    mip_gap: float = 1e-6,
    formulation: str = "auto",
    bounds: str = "auto",
) -> MipSolution:
    """Solve LipMIP (or its LP relaxation) for ONE example.

    Args:
        net: the network (converted to float64 on the CPU for the solver).
        lower, upper: ``(d,)`` the input box in flattened input units.
        directions: the output weightings of this example (batch of one).
        norm: primal norm, ``"linf"`` or ``"l1"``.
        relax: solve the LP relaxation (binaries in ``[0, 1]``): an upper bound.
        solver: the MIP on ``"HIGHS"`` (default, ``highspy``), ``"SCIP"`` or ``"CBC"`` (OR-Tools); the LP on an OR-Tools
            LP backend (default ``"GLOP"``).
        time_limit: seconds for build and solve together; ``None`` for no limit.
        mip_gap: relative optimality gap at which the MIP counts as solved.
        formulation: ``"backward"`` (LipMIP's: gradient by the backward pass, dual norm with binaries),
            ``"forward"`` (fixed ``c`` only: ``max c^T J(x) v`` over the primal unit ball of ``v``, a linear
            objective with no dual-norm binaries; much faster on wide inputs), or ``"auto"`` (forward when ``c``
            is fixed, else backward). Both are exact.
        bounds: the bounds behind stable neurons and big-M constants: ``"interval"``, ``"crown"``, ``"lp"`` (CROWN
            tightened by LP, tangents too) or ``"auto"`` (``"lp"`` above :data:`AUTO_LP_UNSTABLE` unstable neurons,
            else ``"crown"``); the LP tightening shares ``time_limit``.
    """
    if norm == "l2":
        raise InvalidInputError(
            "LipMIP with primal norm 'l2' is not supported: maximising the L2 norm of the gradient is a non-convex "
            "quadratic objective that the free solvers (SCIP, CBC, HiGHS via OR-Tools) cannot solve exactly; "
            "use norm='linf' or 'l1', or an upper estimator such as 'fastlip' or 'naive' for 'l2'"
        )
    if norm not in DUAL_NORMS:
        raise InvalidInputError(f"norm must be 'linf' or 'l1' for LipMIP, got {norm!r}")
    start = time.perf_counter()
    solver = solver or ("GLOP" if relax else "HIGHS")
    net = net.to(device="cpu", dtype=torch.float64)
    lo, hi = lower.detach().to("cpu", torch.float64).reshape(1, -1), upper.detach().to("cpu", torch.float64).reshape(1, -1)
    directions = OutputDirections(
        directions.lower.to("cpu", torch.float64), directions.upper.to("cpu", torch.float64),
        directions.simplex, directions.description,
    )
    pre, bounds = _pre_activation_bounds(net, lo, hi, bounds, time_limit)
    if not relax:
        _check_carried(net, pre)
    fallback = float(fastlip_bound(net, pre, directions, norm)[0])

    model = MipModel(solver, relax)
    x_vars, deltas = forward_relus(model, net, lo[0].numpy(), hi[0].numpy(), pre)
    remaining = None if time_limit is None else time_limit - (time.perf_counter() - start)
    formulation = _objective(model, net, (lo, hi, pre), deltas, directions, norm, formulation, bounds, remaining)

    remaining = None if time_limit is None else time_limit - (time.perf_counter() - start)
    result = _solve(model, solver, relax, mip_gap, remaining)
    stats = {
        "solver": solver, "binaries": model.binaries, "variables": model.solver.NumVariables(),
        "constraints": model.solver.NumConstraints(),
        "unstable": int(sum(not isinstance(d, int) for layer in deltas for d in layer)),
        "formulation": formulation, "bounds": bounds,
    }
    if result.status in (Status.INFEASIBLE, Status.FAILED):
        raise UnsoundResultError(f"{solver} ended {result.status.value} ({result.message}) on a LipMIP model that "
                                 "contains x0; the pre-activation bounds or the encoding are wrong, please report this")
    found = result.solution is not None
    incumbent = -result.objective if found else 0.0
    x = torch.tensor(result.solution[[v.index() for v in x_vars]], dtype=torch.float64) if found else None
    seconds = time.perf_counter() - start
    if result.status is Status.OPTIMAL:
        return MipSolution(incumbent, incumbent, -result.bound, "exact", x, seconds, stats)
    upper_bound = min(-result.bound, fallback)
    return MipSolution(upper_bound, incumbent, upper_bound, "timeout", x, seconds, stats)


def _solve(model: MipModel, solver: str, relax: bool, mip_gap: float, time_limit: float | None) -> SolveResult:
    """Solve the maximisation in ``model``: the MILP on HiGHS through ``highspy`` for ``solver="HIGHS"``, else on
    OR-Tools' ``solver``. Returns the result of the equivalent MINIMISATION of ``-objective`` (``-bound``: the proven
    upper bound, ``inf`` when none; ``solution`` indexed by the variables' ``index()``)."""
    if solver == "HIGHS" and not relax:
        return solve_maximisation_on_highs(model, time_limit, mip_gap)
    params = model.pywraplp.MPSolverParameters()
    if not relax:
        params.SetDoubleParam(params.RELATIVE_MIP_GAP, mip_gap)
    if time_limit is not None:
        model.solver.SetTimeLimit(max(1, int(1000 * time_limit)))
    code = model.solver.Solve(params)
    s = model.pywraplp.Solver
    status = pywraplp_status(code, model.pywraplp)
    if code not in (s.OPTIMAL, s.FEASIBLE):
        return SolveResult(status)
    objective = model.solver.Objective()
    values = np.array([v.solution_value() for v in model.solver.variables()])
    if relax:  # an LP: its optimum is the bound; stopped early, it proves nothing
        bound = objective.Value() if code == s.OPTIMAL else math.inf
    else:
        bound = max(objective.Value(), objective.BestBound())
    return SolveResult(status, -objective.Value(), -bound, values)


def _check_carried(net: PiecewiseLinearNet, pre: list) -> None:
    """Refuse a lowered chain whose neurons that carry a value (a residual branch, see
    :mod:`~mistered.certify.graph.piecewise_lowering`) may change sign in the box: LipMIP's generalised derivative
    of such a neuron pair (0 or 2 where the value is 0) is not the model's (1), so the MIP could exceed the true
    constant while claiming it exact."""
    for k, mask in enumerate(net.carried or []):
        low, high = pre[k][0][0].cpu(), pre[k][1][0].cpu()
        if bool((mask & (low < 0) & (high > 0)).any()):
            raise InvalidInputError(
                f"LipMIP needs the chain form of this network lowered on a domain that contains the box (layer {k + 1} "
                "carries a value that changes sign in it): pass the model itself to estimate_lipschitz, or "
                "as_plnet(model, input_shape, domain=(lo, hi)) with the box inside [lo, hi]"
            )


def _pre_activation_bounds(net: PiecewiseLinearNet, lo: torch.Tensor, hi: torch.Tensor, bounds: str,
                           time_limit: float | None) -> tuple[list, str]:
    """The pre-activation bounds behind stable neurons and big-M constants over the box ``[lo, hi]`` ``(1, d)``,
    and the kind used (``"auto"`` resolved: LP-tightened above :data:`AUTO_LP_UNSTABLE` unstable neurons)."""
    if bounds not in PRE_ACTIVATION_BOUNDS:
        raise InvalidInputError(f"bounds must be one of {PRE_ACTIVATION_BOUNDS}, got {bounds!r}")
    pre = (interval_bounds if bounds == "interval" else linear_bounds)(net, lo, hi)
    if bounds == "auto":
        unstable = sum(int(((l < 0) & (u > 0)).sum()) for l, u in pre[:-1])
        bounds = "lp" if unstable > AUTO_LP_UNSTABLE else "crown"
    if bounds == "lp":
        pre = lp_bounds(net, lo, hi, pre, time_limit=time_limit)
    return pre, bounds


def _objective(model: MipModel, net: PiecewiseLinearNet, box: tuple, deltas: list, directions: OutputDirections,
               norm: str, formulation: str, bounds: str, time_limit: float | None) -> str:
    """Add the objective of ``formulation`` (``"auto"`` resolved) to ``model``; ``box`` is ``(lo, hi, pre)``.
    Returns the formulation used."""
    lo, hi, pre = box
    if formulation == "auto":
        formulation = "forward" if directions.fixed else "backward"
    if formulation == "forward":
        if not directions.fixed:
            raise InvalidInputError("formulation='forward' needs a fixed output weighting (scalar or margin objective)")
        t_bounds = None
        if bounds == "lp":
            t_bounds = tangent_bounds(net, lo[0].numpy(), hi[0].numpy(), pre, norm, time_limit=time_limit)
        tangent_objective(model, net, deltas, directions.lower[0].numpy(), norm, t_bounds)
    elif formulation == "backward":
        back = backward_bounds(net, pre, directions.lower, directions.upper)
        coef, const, variables = _backward(model, net, deltas, back, directions)
        _dual_norm_objective(model, coef, const, variables, back[0][0][0].numpy(), back[0][1][0].numpy(), norm)
    else:
        raise InvalidInputError(f"formulation must be 'auto', 'forward' or 'backward', got {formulation!r}")
    return formulation
