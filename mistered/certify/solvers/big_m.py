"""The big-M (mixed-integer) encoding of a ReLU: the one place it is written.

``h = relu(ẑ)`` with ``ẑ = w·inputs + b`` known to lie in ``[lo, hi]`` (pre-activation bounds from IBP, CROWN or
LP) is encoded exactly with one binary ``a`` (Tjeng et al. 2019) when the ReLU is unstable (``lo < 0 < hi``):

* ``h >= ẑ``, ``h >= 0`` (a bound), ``h <= hi·a`` and ``h <= ẑ - lo·(1 - a)``;

a stable active ReLU (``lo >= 0``) is the equality ``h = ẑ`` and a stable inactive one (``hi <= 0``) no variable
at all (``h = 0``). Both MILPs of certify/ build their ReLUs here: the minimal adversarial distance
(:mod:`mistered.certify.exact.mip`, on :class:`~mistered.certify.solvers.mip.SparseModel`) and LipMIP
(:mod:`mistered.certify.lipschitz.local.milp`, on :class:`~mistered.certify.solvers.mip.MipModel`).

The model is anything with ``var(lo, hi)``, ``binary()`` and ``row(lo, hi, variables, coefs)`` (see
:class:`LinearBuilder`).

Example:
    >>> h, a = add_relu_big_m(model, inputs, w[j], b[j], lower[j], upper[j])   # a: a binary, 0 or 1
"""

from __future__ import annotations

import math
from typing import Any, Protocol, Sequence

import numpy as np

__all__ = ["LinearBuilder", "add_relu_big_m", "add_relu_layer"]


class LinearBuilder(Protocol):
    """What the encoding needs of a model: variables, binaries and two-sided linear rows."""

    def var(self, lo: float, hi: float) -> Any: ...

    def binary(self) -> Any: ...

    def row(self, lo: float, hi: float, variables: list[Any], coefs: np.ndarray) -> None: ...


def add_relu_big_m(model: LinearBuilder, inputs: list[Any], w: np.ndarray, b: float, lo: float,
                   hi: float) -> tuple[Any | None, Any | int]:
    """Add ``h = relu(w·inputs + b)`` for the pre-activation bounds ``[lo, hi]`` (see the module docstring).

    Args:
        model: the model to add to.
        inputs: the ``k`` input variables; ``w``: ``(k,)`` their weights; ``b``: the bias.
        lo, hi: bounds on ``ẑ = w·inputs + b`` over the whole input set (any sound ones: tighter is faster).

    Returns:
        ``(h, indicator)``: ``h`` the new output variable in ``[max(lo, 0), max(hi, 0)]`` (``None`` when
        ``hi <= 0``: the output is 0) and ``indicator`` the ReLU's phase: a binary variable when unstable, else
        ``1`` (active) or ``0`` (inactive).
    """
    if hi <= 0:
        return None, 0
    h = model.var(max(lo, 0.0), max(hi, 0.0))
    row = np.concatenate([[1.0], -w])
    if lo >= 0:
        model.row(b, b, [h] + inputs, row)  # h = ẑ
        return h, 1
    a = model.binary()
    model.row(b, math.inf, [h] + inputs, row)  # h >= ẑ
    model.row(-math.inf, 0.0, [h, a], np.array([1.0, -hi]))  # h <= hi a
    model.row(-math.inf, b - lo, [h] + inputs + [a], np.concatenate([row, [-lo]]))  # h <= ẑ - lo (1 - a)
    return h, a


def add_relu_layer(model: LinearBuilder, inputs: Sequence[Any | None], w: np.ndarray, b: np.ndarray,
                   lower: np.ndarray, upper: np.ndarray) -> tuple[list[Any | None], list[Any | int]]:
    """A layer ``h = relu(W inputs + b)`` by :func:`add_relu_big_m`, neuron by neuron.

    Args:
        inputs: ``n`` input variables, ``None`` for an input known to be 0 (a stable inactive ReLU before).
        w: ``(m, n)``; b, lower, upper: ``(m,)`` the bias and the pre-activation bounds.

    Returns:
        ``(outputs, indicators)``, ``m`` each, as :func:`add_relu_big_m` returns them.
    """
    keep = [i for i, v in enumerate(inputs) if v is not None]
    live = [inputs[i] for i in keep]
    w_live = w[:, keep]
    outputs, indicators = [], []
    for j in range(w.shape[0]):
        h, a = add_relu_big_m(model, live, w_live[j], float(b[j]), float(lower[j]), float(upper[j]))
        outputs.append(h)
        indicators.append(a)
    return outputs, indicators
