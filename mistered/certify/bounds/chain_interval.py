"""Interval bound propagation (IBP) through a :class:`~mistered.certify.graph.piecewise.PiecewiseLinearNet`, batched.

Bounds use the centre/radius form: for ``z = W h + b`` with ``h`` in ``[l, u]``, ``z`` lies in
``W c + b -/+ |W| r`` with ``c = (l + u) / 2`` and ``r = (u - l) / 2``. One matrix product per layer for the
whole batch, on the net's device (move the net with ``net.to("cuda")`` to run on a GPU).

Example:
    >>> lower, upper = linf_box(x, 0.1)               # x: (B, 1, 28, 28) in [0, 1]
    >>> bounds = interval_bounds(net, lower, upper)   # [(l_1, u_1), ..., (l_L, u_L)], each (B, n_i)
    >>> masks = stable_masks(bounds)                  # [(active_1, inactive_1), ...] per hidden layer
"""

from __future__ import annotations

import torch

from ...errors import InvalidInputError
from ..graph.piecewise import PiecewiseLinearNet

__all__ = ["interval_bounds", "stable_masks", "linf_box"]


def linf_box(
    x: torch.Tensor, eps: float | torch.Tensor, clip: tuple[float, float] | None = (0.0, 1.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """The L∞ ball ``{x' : |x' - x|_∞ <= eps}`` intersected with ``clip`` (the pixel box), as ``(lower, upper)``.

    Args:
        x: ``(B, ...)`` centres; flattened to ``(B, d)``.
        eps: radius, a float or a ``(B,)`` tensor (one per example), in input units.
        clip: ``(lo, hi)`` of the input domain, or ``None`` for no clipping.

    Returns:
        ``lower``, ``upper``: ``(B, d)`` each.
    """
    flat = x.reshape(x.shape[0], -1)
    eps_t = torch.as_tensor(eps, dtype=flat.dtype, device=flat.device)
    if (eps_t < 0).any() or not torch.isfinite(eps_t).all():
        raise InvalidInputError(f"eps must be finite and non-negative, got {eps}")
    if eps_t.dim() == 1:
        eps_t = eps_t[:, None]
    lower, upper = flat - eps_t, flat + eps_t
    if clip is not None:
        lower, upper = lower.clamp(clip[0], clip[1]), upper.clamp(clip[0], clip[1])
    return lower, upper


def interval_bounds(
    net: PiecewiseLinearNet, lower: torch.Tensor, upper: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pre-activation bounds of every layer over the input box ``[lower, upper]``.

    Args:
        net: the network (its dtype and device are used).
        lower, upper: ``(B, d)`` (or ``(B, *input_shape)``) input box per example, ``lower <= upper``.

    Returns:
        ``[(l_1, u_1), ..., (l_L, u_L)]`` with ``l_i``, ``u_i`` of shape ``(B, n_i)``: bounds on the
        pre-activations of hidden layer ``i`` (the last pair bounds the logits).
    """
    lo, hi = net.flatten_input(lower.to(net.device)), net.flatten_input(upper.to(net.device))
    if (lo > hi).any():
        raise InvalidInputError("interval bounds need lower <= upper everywhere")
    bounds = []
    for i, (w, b) in enumerate(zip(net.weights, net.biases)):
        centre, radius = (hi + lo) / 2, (hi - lo) / 2
        mid = torch.addmm(b, centre, w.T)
        spread = radius @ w.abs().T
        z_lo, z_hi = mid - spread, mid + spread
        bounds.append((z_lo, z_hi))
        if i < net.num_hidden:
            lo, hi = z_lo.clamp_min(0), z_hi.clamp_min(0)
    return bounds


def stable_masks(bounds: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Stable neurons of every hidden layer (the output layer, last in ``bounds``, is left out).

    Returns:
        ``[(active_i, inactive_i)]``, bool ``(B, n_i)`` each: ``active`` where ``l_i >= 0`` (the ReLU is the
        identity on the whole box), ``inactive`` where ``u_i <= 0`` (the ReLU is zero on the whole box).
    """
    return [(lo >= 0, hi <= 0) for lo, hi in bounds[:-1]]
