"""Pre-activation bounds by backward linear relaxation (CROWN, Zhang et al. 2018) over an input box, batched.

Each layer's pre-activations are bounded by propagating a linear form backwards through the network: every
earlier ReLU with bounds ``l < 0 < u`` is replaced by its linear relaxations (above: the chord
``u (z - l) / (u - l)``; below: ``z`` if ``u > -l`` else ``0``), chosen per coefficient sign, and the resulting
linear function of the input is maximised in closed form over the box. The bounds are intersected with the
interval bounds, so they are never looser; much tighter from the second hidden layer on, which shrinks the
big-M constants of the MIP and fixes more ReLUs as stable for GeoCert.

For the exact distance searches (GeoCert, branch and bound), :func:`search_region_bounds` intersects these with
bounds over the L1/L2 ball of the current radius (first layer exact, then interval propagation).

Example:
    >>> bounds = linear_bounds(net, lower, upper)   # lower/upper (B, d) -> [(l_1, u_1), ..., (l_L, u_L)]
"""

from __future__ import annotations

import math

import torch

from .interval import interval_bounds
from .plnet import PiecewiseLinearNet

__all__ = ["linear_bounds", "search_region_bounds"]

_DUAL = {"l2": 2, "linf": 1, "l1": float("inf")}  # the dual norm of each distance


def linear_bounds(
    net: PiecewiseLinearNet, lower: torch.Tensor, upper: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Sound pre-activation bounds of every layer over the input box ``[lower, upper]`` (same format as
    :func:`~mistered.certify.interval.interval_bounds`: ``[(l_i, u_i)]``, ``(B, n_i)`` each, logits last)."""
    boxes = interval_bounds(net, lower, upper)
    lo, hi = net.flatten_input(lower.to(net.device)), net.flatten_input(upper.to(net.device))
    bounds = [boxes[0]]  # the first layer: interval bounds are exact
    for k in range(1, len(net.weights)):
        w = net.weights[k]
        coef = torch.cat([w, -w])[None].expand(lo.shape[0], -1, -1)  # upper bounds of z_k and of -z_k
        const = torch.cat([net.biases[k], -net.biases[k]])[None].expand(lo.shape[0], -1)
        for i in range(k - 1, -1, -1):  # through relu(z_i), then z_i = W_i h_{i-1} + b_i
            l_i, u_i = bounds[i]
            unstable = (l_i < 0) & (u_i > 0)
            chord = torch.where(unstable, u_i / (u_i - l_i).clamp_min(1e-300), (l_i >= 0).to(l_i.dtype))
            below = torch.where(unstable, (u_i > -l_i).to(l_i.dtype), (l_i >= 0).to(l_i.dtype))
            pos, neg = coef.clamp_min(0), coef.clamp_max(0)
            const = const + torch.einsum("brn,bn->br", pos, torch.where(unstable, -chord * l_i, 0.0))
            coef = pos * chord[:, None] + neg * below[:, None]
            const = const + coef @ net.biases[i]
            coef = coef @ net.weights[i]
        top = const + torch.einsum("brd,bd->br", coef.clamp_min(0), hi) + torch.einsum("brd,bd->br",
                                                                                       coef.clamp_max(0), lo)
        m = w.shape[0]
        l_box, u_box = boxes[k]
        bounds.append((torch.maximum(-top[:, m:], l_box), torch.minimum(top[:, :m], u_box)))
    return bounds


def search_region_bounds(
    net: PiecewiseLinearNet, x0: torch.Tensor, norm: str, lower: torch.Tensor, upper: torch.Tensor, radius: float
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Sound pre-activation bounds over the box ``[lower, upper]`` intersected with the ``norm`` ball of ``radius``
    around ``x0`` (all ``(d,)``, input units): CROWN over the box, and for "l1"/"l2" with a finite radius also the
    first layer exactly over the ball (``W x0 + b ± radius |W_k|_dual``) then interval propagation, intersected.

    Returns:
        ``[(l_1, u_1), ..., (l_L, u_L)]``, ``(1, n_i)`` each, logits last (as :func:`linear_bounds`).
    """
    bounds = linear_bounds(net, lower[None], upper[None])
    if norm == "linf" or not math.isfinite(radius):
        return bounds
    w1 = net.weights[0]
    centre = w1 @ x0 + net.biases[0]
    spread = radius * torch.linalg.vector_norm(w1, ord=_DUAL[norm], dim=1)
    first = (torch.maximum(bounds[0][0], centre - spread), torch.minimum(bounds[0][1], centre + spread))
    ball = [first]
    if net.num_hidden > 0:
        rest = PiecewiseLinearNet(net.weights[1:], net.biases[1:], (w1.shape[0],))
        ball += interval_bounds(rest, first[0].clamp_min(0), first[1].clamp_min(0))
    return [(torch.maximum(l, bl), torch.minimum(u, bu)) for (l, u), (bl, bu) in zip(bounds, ball)]
