"""The MILP building blocks shared by LipMIP's encodings: the big-M ReLU forward pass (the encoding of
:mod:`mistered.certify.solvers.big_m`, on the ``pywraplp`` builder :class:`~mistered.certify.solvers.mip.MipModel`)
and the exact big-M product ``a = delta * e`` of a binary and a bounded linear expression.

All arrays are float64 numpy on the CPU; "bounds" are the pre-activation bounds of
:func:`~mistered.certify.bounds.chain_interval.interval_bounds` format (batch of one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...graph.piecewise import PiecewiseLinearNet
from ...solvers.big_m import add_relu_layer
from ...solvers.mip import SCIP_PARAMETERS, MipModel

__all__ = ["MipModel", "SCIP_PARAMETERS", "forward_relus", "gate"]


def forward_relus(model: MipModel, net: PiecewiseLinearNet, lower: np.ndarray, upper: np.ndarray, bounds) -> tuple:
    """Input variables and big-M ReLUs; returns ``(x_vars, deltas)`` with ``deltas[k][j]`` a var, 0 or 1."""
    x = [model.var(lo, hi) for lo, hi in zip(lower.tolist(), upper.tolist())]
    prev = x
    deltas = []
    for k in range(len(net.weights) - 1):
        w, b = net.weights[k].numpy(), net.biases[k].numpy()
        l, u = bounds[k][0][0].numpy(), bounds[k][1][0].numpy()
        prev, layer_deltas = add_relu_layer(model, prev, w, b, l, u)
        deltas.append(layer_deltas)
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
