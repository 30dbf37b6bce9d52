"""Jacobians of a piecewise-linear net and interval bounds on them (the core of Fast-Lip), batched on tensors.

Notation: ``f = W_L relu(... relu(W_1 x + b_1)) + b_L``; for a weighting ``c`` the gradient of ``c^T f`` is
``g_1 = W_1^T D_1 W_2^T D_2 ... D_{L-1} W_L^T c`` with ``D_k`` the 0/1 diagonal ReLU derivative of layer ``k``.
Going backwards, ``g_L = W_L^T c`` and ``g_k = W_k^T (D_k g_{k+1})``.
"""

from __future__ import annotations

import torch

from ...bounds.chain_interval import stable_masks
from ...graph.piecewise import PiecewiseLinearNet
from .directions import OutputDirections, dual_norm

__all__ = ["jacobians", "backward_bounds", "fastlip_bound"]

Bounds = list[tuple[torch.Tensor, torch.Tensor]]


def jacobians(net: PiecewiseLinearNet, x: torch.Tensor) -> torch.Tensor:
    """The Jacobians ``df/dx`` at the points ``x (N, d)`` -> ``(N, m, d)`` (ReLU'(0) = 0)."""
    pre = net.pre_activations(x)
    jac = net.weights[0].expand(x.shape[0], -1, -1)
    for k in range(1, len(net.weights)):
        jac = net.weights[k] @ ((pre[k - 1] > 0).to(jac.dtype)[:, :, None] * jac)
    return jac


def backward_bounds(
    net: PiecewiseLinearNet, bounds: Bounds, c_lower: torch.Tensor, c_upper: torch.Tensor
) -> Bounds:
    """Intervals on the backward quantities ``g_k`` over every pattern the pre-activation bounds allow.

    Args:
        net: the network.
        bounds: :func:`~mistered.certify.bounds.chain_interval.interval_bounds` of the input box, ``[(l_k, u_k)]`` ``(B, n_k)``.
        c_lower, c_upper: ``(B, m)`` bounds on the output weighting ``c``.

    Returns:
        ``[(lo_1, hi_1), ..., (lo_L, hi_L)]``: ``g_k = W_k^T a_k`` lies in ``[lo_k, hi_k]`` ``(B, n_{k-1})``;
        ``(lo_1, hi_1)`` bounds the input gradient of ``c^T f``. A stable active ReLU passes ``g`` through, an
        inactive one gives 0, an unstable one gives ``D g`` in ``[min(lo, 0), max(hi, 0)]``.
    """
    masks = stable_masks(bounds)
    lo, hi = c_lower, c_upper
    out: Bounds = [None] * len(net.weights)  # type: ignore[list-item]
    for k in reversed(range(len(net.weights))):
        w = net.weights[k]
        mid, rad = (lo + hi) / 2, (hi - lo) / 2
        g_mid, g_rad = mid @ w, rad @ w.abs()
        out[k] = (g_mid - g_rad, g_mid + g_rad)
        if k > 0:
            active, inactive = masks[k - 1]
            g_lo, g_hi = out[k]
            zero = torch.zeros_like(g_lo)
            lo = torch.where(active, g_lo, torch.where(inactive, zero, g_lo.clamp_max(0)))
            hi = torch.where(active, g_hi, torch.where(inactive, zero, g_hi.clamp_min(0)))
    return out


def fastlip_bound(net: PiecewiseLinearNet, bounds: Bounds, directions: OutputDirections, norm: str) -> torch.Tensor:
    """Fast-Lip (Weng et al. 2018): an upper bound on ``max_x max_c ||J(x)^T c||_*`` from interval Jacobians.

    Returns ``(B,)``. For the simplex of rows (vector output, L∞) each row is bounded separately and the
    largest row bound is taken, which is tighter than one interval over the whole simplex.
    """
    if directions.simplex:
        batch, m = directions.lower.shape
        eye = torch.eye(m, dtype=directions.lower.dtype, device=directions.lower.device)
        c = eye.repeat(batch, 1)
        rows = [(lo.repeat_interleave(m, 0), hi.repeat_interleave(m, 0)) for lo, hi in bounds]
        g_lo, g_hi = backward_bounds(net, rows, c, c)[0]
        per_row = dual_norm(torch.maximum(g_lo.abs(), g_hi.abs()), norm).reshape(batch, m)
        return per_row.masked_fill(directions.upper <= 0, float("-inf")).amax(-1)
    g_lo, g_hi = backward_bounds(net, bounds, directions.lower, directions.upper)[0]
    return dual_norm(torch.maximum(g_lo.abs(), g_hi.abs()), norm)
