"""LipMIP's forward-mode (tangent) encoding for a fixed output weighting ``c``, and LP tightening of its big-M bounds.

Since ``||J^T c||_* = max_{||v|| <= 1} c^T J v``, the MIP maximises the LINEAR ``c^T t_L`` over ``v`` in the primal
unit ball and the tangent ``t_1 = W_1 v``, ``t_{k+1} = W_{k+1} D_k t_k``, where each unstable ReLU's gate
``D_k t_k`` is the exact big-M product (:func:`~mistered.certify.lipschitz.local.milp.gate`) of the forward pass's
binary and ``t_k`` in ``[lo_k, hi_k]``.

The gate's LP relaxation is only as tight as ``[lo_k, hi_k]``. ``t_1``'s bounds ``+-||W_1[j]||_1`` (L∞) are exact,
but interval arithmetic through the gates treats the coordinates of ``t_k`` as independent although they all come
from the same ``v``, so from layer 2 on it is loose (measured ~2x too wide on MNIST 784-20-20-2). With
:func:`tangent_bounds` each ``t_k`` (``k >= 2``) gets its exact minimum and maximum over the LP relaxation of the
whole model up to layer ``k`` (forward big-M with relaxed binaries, coupled to the gates through the same
binaries), layer by layer, each layer built with the bounds already tightened for the layers before it. The LP
relaxes a set that contains every (input, pattern, tangent) the network realises, so the bounds are sound;
each is pushed outwards by ``1e-6 (1 + |bound|)`` for solver tolerance and intersected with the interval bound.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ...graph.piecewise import PiecewiseLinearNet
from .milp import MipModel, forward_relus, gate

__all__ = ["TangentBounds", "tangent_objective", "tangent_bounds"]

#: Per hidden layer ``k``: ``(lo_k, hi_k)``, bounds of the tangent ``t_k`` entering its gates, ``(n_k,)`` each.
TangentBounds = list[tuple[np.ndarray, np.ndarray]]
_SAFETY = 1e-6


def _encode(model: MipModel, net: PiecewiseLinearNet, deltas, norm: str, given: TangentBounds | None,
            tighten_until: float | None) -> tuple[np.ndarray, list[Any], TangentBounds]:
    """The tangent chain in ``model``: ``(coef, variables, used)`` with ``t_L = coef @ variables``.

    ``given`` replaces the interval bounds (intersected); ``tighten_until`` (a ``perf_counter`` deadline, or
    ``inf``) tightens them by LP in ``model`` itself, which must then be a relaxation.
    """
    d = net.in_features
    if norm == "linf":
        variables = [model.var(-1.0, 1.0) for _ in range(d)]
        to_v = np.eye(d)
    else:  # L1 ball: v = p - q, p, q >= 0, sum(p + q) <= 1
        variables = [model.var(0.0, 1.0) for _ in range(2 * d)]
        model.row(-model.solver.infinity(), 1.0, variables, np.ones(2 * d))
        to_v = np.concatenate([np.eye(d), -np.eye(d)], axis=1)
    w = net.weights[0].numpy()
    coef = w @ to_v  # the tangent t_1 = W_1 v as coefficients over the variables
    radius = np.abs(w).sum(1) if norm == "linf" else np.abs(w).max(1)
    t_lo, t_hi = -radius, radius
    used: TangentBounds = []
    for k in range(1, len(net.weights)):
        width, layer = coef.shape[1], deltas[k - 1]
        if given is not None:
            t_lo, t_hi = np.maximum(t_lo, given[k - 1][0]), np.minimum(t_hi, given[k - 1][1])
        elif tighten_until is not None and k > 1:
            t_lo, t_hi = _tighten(model, coef, variables, layer, t_lo, t_hi, tighten_until)
        used.append((t_lo.copy(), t_hi.copy()))
        unstable = [j for j, delta in enumerate(layer) if not isinstance(delta, int)]
        new_coef = np.zeros((coef.shape[0], width + len(unstable)))
        u_lo, u_hi = np.zeros(len(layer)), np.zeros(len(layer))
        new_vars = []
        for j, delta in enumerate(layer):
            if isinstance(delta, int) and delta == 1:  # stable active: u = t
                new_coef[j, :width], u_lo[j], u_hi[j] = coef[j], t_lo[j], t_hi[j]
        for i, j in enumerate(unstable):
            new_vars.append(gate(model, layer[j], variables, coef[j], 0.0, t_lo[j], t_hi[j]))
            new_coef[j, width + i] = 1.0
            u_lo[j], u_hi[j] = min(t_lo[j], 0.0), max(t_hi[j], 0.0)
        w = net.weights[k].numpy()
        variables = variables + new_vars
        coef = w @ new_coef
        mid, rad = w @ ((u_lo + u_hi) / 2), np.abs(w) @ ((u_hi - u_lo) / 2)
        t_lo, t_hi = mid - rad, mid + rad
    return coef, variables, used


def _tighten(model: MipModel, coef, variables, layer, t_lo, t_hi, deadline: float) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of every live ``t_k[j] = coef[j] @ variables`` over the relaxation ``model``, within ``deadline``."""
    t_lo, t_hi = t_lo.copy(), t_hi.copy()
    live = [j for j, delta in enumerate(layer) if not (isinstance(delta, int) and delta == 0)]
    copies = {}
    for j in live:  # one variable per tangent entry, so that each objective is a single coefficient
        copies[j] = model.var(t_lo[j], t_hi[j])
        model.row(0.0, 0.0, [copies[j]] + variables, np.concatenate([[1.0], -coef[j]]))
    objective = model.solver.Objective()
    optimal = model.pywraplp.Solver.OPTIMAL
    for j in live:
        for maximise in (True, False):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return t_lo, t_hi
            if np.isfinite(remaining):
                model.solver.SetTimeLimit(max(1, int(1000 * remaining)))
            objective.Clear()
            objective.SetCoefficient(copies[j], 1.0)
            objective.SetOptimizationDirection(maximise)
            if model.solver.Solve() != optimal:
                continue
            value = objective.Value()
            if maximise:
                t_hi[j] = min(t_hi[j], value + _SAFETY * (1 + abs(value)))
            else:
                t_lo[j] = max(t_lo[j], value - _SAFETY * (1 + abs(value)))
    return t_lo, t_hi


def tangent_objective(model: MipModel, net: PiecewiseLinearNet, deltas, c: np.ndarray, norm: str,
                      bounds: TangentBounds | None = None) -> None:
    """Encode the tangent chain in ``model`` and set the objective ``max c^T t_L`` (= ``||J^T c||_*`` at the optimum).

    Args:
        model: the MIP (or its relaxation) holding the forward pass whose binaries are ``deltas``.
        net: the network (float64, CPU).
        deltas: per hidden layer, per neuron: the forward binary, or ``0``/``1`` for stable neurons.
        c: ``(m,)`` the output weighting.
        norm: primal norm, ``"linf"`` or ``"l1"``.
        bounds: tighter tangent bounds from :func:`tangent_bounds` (default: interval bounds).
    """
    coef, variables, _ = _encode(model, net, deltas, norm, bounds, None)
    objective = model.solver.Objective()
    objective.SetMaximization()
    for v, a in zip(variables, (c @ coef).tolist()):
        if a != 0.0:
            objective.SetCoefficient(v, a)


def tangent_bounds(
    net: PiecewiseLinearNet, lower: np.ndarray, upper: np.ndarray, pre, norm: str,
    solver: str = "GLOP", time_limit: float | None = None,
) -> TangentBounds:
    """LP-tightened bounds of the tangents ``t_k`` over the box ``[lower, upper]`` ``(d,)`` (see the module docstring).

    Args:
        net: the network (float64, CPU).
        lower, upper: ``(d,)`` the input box.
        pre: the pre-activation bounds the MIP uses (batch of one), which fix its stable neurons.
        norm: primal norm, ``"linf"`` or ``"l1"``.
        solver: OR-Tools LP backend.
        time_limit: seconds; entries not reached keep their interval bounds.
    """
    model = MipModel(solver, relax=True)
    _, deltas = forward_relus(model, net, lower, upper, pre)
    deadline = float("inf") if time_limit is None else time.perf_counter() + time_limit
    return _encode(model, net, deltas, norm, None, deadline)[2]
