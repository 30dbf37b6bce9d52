"""The MILP building blocks shared by LipMIP's encodings: a thin ``pywraplp`` builder, the big-M ReLU forward
pass and the exact big-M product ``a = delta * e`` of a binary and a bounded linear expression.

All arrays are float64 numpy on the CPU; "bounds" are the pre-activation bounds of
:func:`~mistered.certify.bounds.chain_interval.interval_bounds` format (batch of one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ....errors import InvalidInputError
from ...bounds.chain_interval import stable_masks
from ...graph.piecewise import PiecewiseLinearNet

__all__ = ["MipModel", "SCIP_PARAMETERS", "forward_relus", "gate"]

SCIP_PARAMETERS = "separating/maxrounds = 0\nseparating/maxroundsroot = 0\n"
_TINY = 1e-13


class MipModel:
    """A thin builder over ``pywraplp`` with dense coefficient rows."""

    def __init__(self, solver_name: str, relax: bool) -> None:
        from ortools.linear_solver import pywraplp

        self.pywraplp = pywraplp
        self.solver = pywraplp.Solver.CreateSolver(solver_name)
        if self.solver is None:
            raise InvalidInputError(f"OR-Tools solver {solver_name!r} is not available in this build")
        if solver_name == "SCIP":  # SCIP's cutting planes cost 10-30x the solve time on these big-M models
            self.solver.SetSolverSpecificParametersAsString(SCIP_PARAMETERS)
        self.relax = relax
        self.binaries = 0

    def var(self, lo: float, hi: float) -> Any:
        return self.solver.NumVar(float(lo), float(hi), "")

    def binary(self) -> Any:
        self.binaries += 1
        return self.solver.NumVar(0.0, 1.0, "") if self.relax else self.solver.BoolVar("")

    def row(self, lo: float, hi: float, variables: list[Any], coefs: np.ndarray) -> None:
        ct = self.solver.RowConstraint(float(lo), float(hi), "")
        for v, a in zip(variables, coefs.tolist()):
            if abs(a) > _TINY:  # coefficients of 1e-30 (dead pixels) only slow the LP down
                ct.SetCoefficient(v, a)


def forward_relus(model: MipModel, net: PiecewiseLinearNet, lower: np.ndarray, upper: np.ndarray, bounds) -> tuple:
    """Input variables and big-M ReLUs; returns ``(x_vars, deltas)`` with ``deltas[k][j]`` a var, 0 or 1."""
    inf = model.solver.infinity()
    x = [model.var(lo, hi) for lo, hi in zip(lower.tolist(), upper.tolist())]
    prev = x
    deltas = []
    for k, (active, inactive) in enumerate(stable_masks(bounds)):
        w, b = net.weights[k].numpy(), net.biases[k].numpy()
        l, u = bounds[k][0][0].numpy(), bounds[k][1][0].numpy()
        layer_vars, layer_deltas = [], []
        keep = [i for i, v in enumerate(prev) if v is not None]
        prev_vars = [prev[i] for i in keep]
        for j in range(w.shape[0]):
            if inactive[0, j]:
                layer_vars.append(None)
                layer_deltas.append(0)
                continue
            z = model.var(max(l[j], 0.0), max(u[j], 0.0))
            row = np.concatenate([[1.0], -w[j, keep]])
            if active[0, j]:
                model.row(b[j], b[j], [z] + prev_vars, row)
                layer_deltas.append(1)
            else:
                delta = model.binary()
                model.row(b[j], inf, [z] + prev_vars, row)  # z >= z_hat
                model.row(-inf, 0.0, [z, delta], np.array([1.0, -u[j]]))  # z <= u delta
                model.row(-inf, b[j] - l[j], [z] + prev_vars + [delta], np.concatenate([row, [-l[j]]]))
                layer_deltas.append(delta)
            layer_vars.append(z)
        deltas.append(layer_deltas)
        prev = layer_vars
    return x, deltas


def gate(model: MipModel, delta: Any, variables: list[Any], coef: np.ndarray, const: float, lo: float, hi: float) -> Any:
    """A new variable ``a = delta * e`` for the binary ``delta`` and ``e = coef @ variables + const`` in ``[lo, hi]``.

    Exact big-M linearisation with ``lo' = min(lo, 0)``, ``hi' = max(hi, 0)``: ``lo' delta <= a <= hi' delta`` and
    ``e - hi'(1 - delta) <= a <= e - lo'(1 - delta)``.
    """
    inf = model.solver.infinity()
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    a = model.var(lo, hi)
    row_vars = [a, delta] + variables
    model.row(-inf, 0.0, [a, delta], np.array([1.0, -hi]))
    model.row(0.0, inf, [a, delta], np.array([1.0, -lo]))
    model.row(-inf, const - lo, row_vars, np.concatenate([[1.0, -lo], -coef]))
    model.row(const - hi, inf, row_vars, np.concatenate([[1.0, -hi], -coef]))
    return a
