"""Pre-activation bounds by optimisation-based bound tightening (OBBT) over the LP (triangle) relaxation, per example.

For hidden layer ``k >= 2`` each neuron that the initial bounds leave unstable gets the exact minimum and maximum
of its pre-activation over the LP relaxation of the network up to layer ``k``: the input box, every earlier
affine layer as equalities, and every earlier unstable ReLU ``h = relu(z)`` with bounds ``l < 0 < u`` replaced
by its triangle ``h >= 0, h >= z, h <= u (z - l) / (u - l)`` (stable ones are exact: ``h = z`` or ``h = 0``),
built with the bounds already tightened for that layer. The triangle is the tightest convex relaxation of one
ReLU, so these bounds are never looser than CROWN's (whose linear relaxations lie inside the triangles); each
new bound is also intersected with the initial one.

One persistent HiGHS model per example (:func:`~mistered.certify.solvers.highs.new_highs`) grows layer by layer
(new columns and rows for each layer, nothing rebuilt); each neuron's two LPs only change the objective and the
sense and re-solve from the previous basis. The triangle rows are
:func:`~mistered.certify.solvers.triangle.triangle_rows`, the same as branch and bound's relaxation.

Soundness: an LP optimum is only accurate to the solver's tolerances, so every new bound is pushed outwards by
``1e-7 (1 + |bound|)``; a solve that is not optimal (or a time limit) keeps the initial bound.

Example:
    >>> bounds = lp_bounds(net, lower, upper)   # lower/upper (B, d) -> [(l_1, u_1), ..., (l_L, u_L)], (B, n_i)
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .chain_linear import linear_bounds
from ..graph.piecewise import PiecewiseLinearNet
from ..solvers.highs import new_highs, run_highs
from ..solvers.status import Status
from ..solvers.triangle import triangle_rows

__all__ = ["lp_bounds"]

Bounds = list[tuple[torch.Tensor, torch.Tensor]]
_SAFETY = 1e-7  # relative outward margin on every LP bound (solver feasibility/optimality tolerance)


def lp_bounds(
    net: PiecewiseLinearNet,
    lower: torch.Tensor,
    upper: torch.Tensor,
    initial: Bounds | None = None,
    time_limit: float | None = None,
) -> Bounds:
    """Sound pre-activation bounds over the box ``[lower, upper]``, tightened by LP for hidden layers 2 and up.

    Args:
        net: the network (solved in float64 on the CPU; the result has the net's dtype and device).
        lower, upper: ``(B, d)`` (or ``(B, *input_shape)``) input box per example.
        initial: bounds to start from and intersect with, same format as the result; default
            :func:`~mistered.certify.bounds.chain_linear.linear_bounds` (CROWN).
        time_limit: seconds per example for the tightening; neurons not reached keep their initial bounds.

    Returns:
        ``[(l_1, u_1), ..., (l_L, u_L)]``, ``(B, n_i)`` each (the last pair, the logits, is ``initial``'s).
    """
    initial = initial if initial is not None else linear_bounds(net, lower, upper)
    cpu = net.to(device="cpu", dtype=torch.float64)
    weights = [w.numpy() for w in cpu.weights]
    biases = [b.numpy() for b in cpu.biases]
    lo = net.flatten_input(lower).detach().to("cpu", torch.float64).numpy()
    hi = net.flatten_input(upper).detach().to("cpu", torch.float64).numpy()
    start = [(l.detach().to("cpu", torch.float64).numpy(), u.detach().to("cpu", torch.float64).numpy()) for l, u in initial]
    per_example = [
        _tighten_one(weights, biases, lo[b], hi[b], [(l[b].copy(), u[b].copy()) for l, u in start], time_limit)
        for b in range(lo.shape[0])
    ]
    out = []
    for k, (l_init, u_init) in enumerate(initial):
        l_new = _round_outwards(np.stack([bounds[k][0] for bounds in per_example]), l_init, -1.0)
        u_new = _round_outwards(np.stack([bounds[k][1] for bounds in per_example]), u_init, 1.0)
        out.append((torch.maximum(l_new, l_init), torch.minimum(u_new, u_init)))
    return out


def _round_outwards(values: np.ndarray, like: torch.Tensor, direction: float) -> torch.Tensor:
    """``values`` (float64) in ``like``'s dtype and device, rounded down (``direction=-1``) or up (``+1``)."""
    exact = torch.as_tensor(values, dtype=torch.float64)
    cast = exact.to(like.dtype)
    wrong = cast.double() < exact if direction > 0 else cast.double() > exact
    cast = torch.where(wrong, torch.nextafter(cast, torch.full_like(cast, direction * float("inf"))), cast)
    return cast.to(like.device)


class _Relaxation:
    """The growing LP: input columns, then per layer its pre-activation columns and the ReLU triangle rows."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray) -> None:
        self.model = new_highs()  # (presolve off: keeps the basis between the re-solves)
        self.n_cols = 0
        self.prev = self._add_cols(lo, hi)  # column of every entry of the previous layer's output (-1: zero)

    def _add_cols(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        n = len(lo)
        self.model.addCols(n, np.zeros(n), lo, hi, 0, np.zeros(n, np.int32), np.zeros(0, np.int32), np.zeros(0))
        cols = np.arange(self.n_cols, self.n_cols + n, dtype=np.int32)
        self.n_cols += n
        return cols

    def _add_rows(self, lo: np.ndarray, hi: np.ndarray, matrix: np.ndarray, cols: np.ndarray) -> None:
        """Rows ``lo <= matrix @ columns[cols] <= hi`` (dense ``matrix``, zeros skipped)."""
        nonzero = matrix != 0
        starts = np.concatenate([[0], np.cumsum(nonzero.sum(1))[:-1]]).astype(np.int32)
        self.model.addRows(len(lo), lo, hi, int(nonzero.sum()), starts, cols[np.nonzero(nonzero)[1]].astype(np.int32),
                           matrix[nonzero])

    def add_affine(self, w: np.ndarray, b: np.ndarray, l: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Columns ``z = W h_prev + b`` with bounds ``[l, u]``; returns their indices."""
        keep = self.prev >= 0
        z = self._add_cols(l, u)
        matrix = np.concatenate([np.eye(len(b)), -w[:, keep]], axis=1)
        self._add_rows(b, b, matrix, np.concatenate([z, self.prev[keep]]))
        return z

    def add_relu(self, z: np.ndarray, l: np.ndarray, u: np.ndarray) -> None:
        """The ReLU of the columns ``z`` with bounds ``[l, u]``: exact when stable, the triangle otherwise."""
        out = np.where(l >= 0, z, -1).astype(np.int32)
        unstable = np.flatnonzero((l < 0) & (u > 0))
        if len(unstable):
            h = self._add_cols(np.zeros(len(unstable)), u[unstable])
            rows, row_lo, row_hi = triangle_rows(h, z[unstable], l[unstable], u[unstable], self.n_cols)
            self.model.addRows(rows.shape[0], row_lo, row_hi, rows.nnz, rows.indptr[:-1].astype(np.int32),
                               rows.indices.astype(np.int32), rows.data)
            out[unstable] = h
        self.prev = out

    def extreme(self, col: int, sense: int, time_limit: float | None = None) -> float | None:
        """``min`` (sense 1) or ``max`` (sense -1) of one column, or ``None`` when not solved to optimality within
        ``time_limit`` seconds."""
        self.model.changeColCost(col, float(sense))
        optimal = run_highs(self.model, time_limit) is Status.OPTIMAL
        value = sense * float(self.model.getInfo().objective_function_value)
        self.model.changeColCost(col, 0.0)  # (this resets the model status, so it is read first)
        return value if optimal else None


def _tighten_one(weights, biases, lo, hi, bounds, time_limit) -> list[tuple[np.ndarray, np.ndarray]]:
    """OBBT for one example; ``bounds`` (numpy ``(l, u)`` per layer) is updated in place and returned."""
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    lp = _Relaxation(lo, hi)
    for k in range(len(weights) - 1):
        l, u = bounds[k]
        z = lp.add_affine(weights[k], biases[k], l, u)
        for j in np.flatnonzero((l < 0) & (u > 0)).tolist() if k > 0 else []:
            if deadline is not None and deadline - time.perf_counter() <= 0:
                break
            top = lp.extreme(int(z[j]), -1, None if deadline is None else deadline - time.perf_counter())
            if top is not None:
                u[j] = min(u[j], top + _SAFETY * (1 + abs(top)))
            if u[j] <= 0:  # proven inactive: the lower bound no longer matters for the encodings
                continue
            bottom = lp.extreme(int(z[j]), 1, None if deadline is None else deadline - time.perf_counter())
            if bottom is not None:
                l[j] = max(l[j], bottom - _SAFETY * (1 + abs(bottom)))
        lp.model.changeColsBounds(len(z), z, l, u)
        lp.add_relu(z, l, u)
    return bounds
