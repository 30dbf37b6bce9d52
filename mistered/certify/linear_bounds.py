"""Pre-activation bounds by backward linear relaxation (CROWN, Zhang et al. 2018) over an input box, batched.

Each layer's pre-activations are bounded by propagating a linear form backwards through the network: every
earlier ReLU with bounds ``l < 0 < u`` is replaced by its linear relaxations (above: the chord
``u (z - l) / (u - l)``; below: ``z`` if ``u > -l`` else ``0``), chosen per coefficient sign, and the resulting
linear function of the input is maximised in closed form over the box. The bounds are intersected with the
interval bounds, so they are never looser; much tighter from the second hidden layer on, which shrinks the
big-M constants of the MIP and fixes more ReLUs as stable for GeoCert.

Example:
    >>> bounds = linear_bounds(net, lower, upper)   # lower/upper (B, d) -> [(l_1, u_1), ..., (l_L, u_L)]
"""

from __future__ import annotations

import torch

from .interval import interval_bounds
from .plnet import PiecewiseLinearNet

__all__ = ["linear_bounds"]


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
