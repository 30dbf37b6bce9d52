"""Pre-activation bounds by backward linear relaxation (CROWN, Zhang et al. 2018) over an input box, batched.

Each layer's pre-activations are bounded by propagating a linear form backwards through the network: every
earlier ReLU with bounds ``l < 0 < u`` is replaced by its linear relaxations (above: the chord
``u (z - l) / (u - l)``; below: ``z`` if ``u > -l`` else ``0``), chosen per coefficient sign, and the resulting
linear function of the input is maximised in closed form over the box. The bounds are intersected with the
interval bounds, so they are never looser; much tighter from the second hidden layer on, which shrinks the
big-M constants of the MIP and fixes more ReLUs as stable for GeoCert.

Over a box intersected with an L1 or L2 ball (the exact distance searches, GeoCert and branch and bound, through
:func:`search_region_bounds`), each linear form is maximised over box and ball together by its Lagrangian dual in
closed form (:func:`ball_box_support`): the first layer exactly, the later ones as CROWN over that region. In 784
dimensions the L∞ box of an L2 radius near 1 is the whole pixel cube, so this is what makes deep bounds useful.

Example:
    >>> bounds = linear_bounds(net, lower, upper)   # lower/upper (B, d) -> [(l_1, u_1), ..., (l_L, u_L)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .chain_interval import interval_bounds
from ..graph.piecewise import PiecewiseLinearNet

__all__ = ["linear_bounds", "search_region_bounds", "NormBall", "ball_box_support"]

_BISECTIONS = 64  # halvings of the log-range of the L2 multiplier (any multiplier gives a valid bound)


@dataclass(frozen=True)
class NormBall:
    """The ball ``{x : |x - centre|_norm <= radius}``: ``centre`` ``(B, d)`` (or ``(B, *input_shape)``), ``norm``
    "l1" or "l2", ``radius`` in input units."""

    centre: torch.Tensor
    norm: str
    radius: float


def linear_bounds(
    net: PiecewiseLinearNet, lower: torch.Tensor, upper: torch.Tensor, ball: NormBall | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Sound pre-activation bounds of every layer over the input box ``[lower, upper]`` (same format as
    :func:`~mistered.certify.bounds.chain_interval.interval_bounds`: ``[(l_i, u_i)]``, ``(B, n_i)`` each, logits last), or over
    its intersection with ``ball`` (an L1 or L2 ball whose centre ``(B, d)`` lies in the box): every linear form is
    then maximised over box and ball together (:func:`ball_box_support`), the first layer exactly."""
    boxes = interval_bounds(net, lower, upper)
    lo, hi = net.flatten_input(lower.to(net.device)), net.flatten_input(upper.to(net.device))
    if ball is None:
        bounds = [boxes[0]]  # the first layer: interval bounds are exact
    else:
        centre = net.flatten_input(ball.centre.to(net.device))
        w = torch.cat([net.weights[0], -net.weights[0]])[None].expand(lo.shape[0], -1, -1)
        top = _maximise(w, lo, hi, ball, centre) + torch.cat([net.biases[0], -net.biases[0]])
        m = net.weights[0].shape[0]
        bounds = [(torch.maximum(-top[:, m:], boxes[0][0]), torch.minimum(top[:, :m], boxes[0][1]))]
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
        top = const + _maximise(coef, lo, hi, ball, None if ball is None else centre)
        m = w.shape[0]
        l_box, u_box = boxes[k]
        bounds.append((torch.maximum(-top[:, m:], l_box), torch.minimum(top[:, :m], u_box)))
    return bounds


def search_region_bounds(
    net: PiecewiseLinearNet, x0: torch.Tensor, norm: str, lower: torch.Tensor, upper: torch.Tensor, radius: float
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Sound pre-activation bounds over the box ``[lower, upper]`` intersected, for "l1"/"l2" with a finite
    radius, with the ``norm`` ball of ``radius`` around ``x0`` (all ``(d,)``, input units; ``x0`` in the box):
    CROWN with every linear form maximised over box and ball together (:func:`linear_bounds`).

    Returns:
        ``[(l_1, u_1), ..., (l_L, u_L)]``, ``(1, n_i)`` each, logits last (as :func:`linear_bounds`).
    """
    if norm == "linf" or not math.isfinite(radius):
        return linear_bounds(net, lower[None], upper[None])
    return linear_bounds(net, lower[None], upper[None], NormBall(x0[None], norm, radius))


def ball_box_support(coef: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, norm: str,
                     radius: float) -> torch.Tensor:
    """An upper bound, tight to rounding, on ``max coef·δ`` over ``lo <= δ <= hi`` with ``|δ|_norm <= radius``.

    By weak duality, for every multiplier ``λ >= 0``,
    ``max <= λ r^p + Σ_i max_{lo_i <= δ_i <= hi_i} (coef_i δ_i - λ |δ_i|^p)`` (``p`` = 1 or 2): separable, in closed
    form. The bound is evaluated at a near-optimal ``λ``: for L1 the exact minimiser (a breakpoint ``|coef_i|``,
    found by sorting); for L2 a bisection on ``Σ δ_i(λ)² = r²`` with ``δ_i(λ) = clip(coef_i / 2λ, lo_i, hi_i)``.
    Never below the true maximum, whatever the bisection's accuracy; never above the box's maximum nor Hölder's
    ``radius·|coef|_dual``.

    Args:
        coef: ``(B, R, d)`` linear forms; lo, hi: ``(B, d)`` the box of ``δ``, ``lo <= 0 <= hi``.
        norm: "l1" or "l2"; radius: the ball's radius (>= 0).

    Returns:
        ``(B, R)``.
    """
    lo, hi = lo[:, None], hi[:, None]
    box = torch.maximum(coef * lo, coef * hi).sum(-1)  # λ = 0
    if radius <= 0:
        return torch.zeros_like(box)
    ball = radius * torch.linalg.vector_norm(coef, ord=float("inf") if norm == "l1" else 2, dim=-1)  # (Hölder)
    box = torch.minimum(box, ball)
    if norm == "l1":
        size = coef.abs()
        reach = torch.where(coef >= 0, hi, -lo).expand_as(coef)
        order = size.argsort(dim=-1, descending=True)
        spent = reach.gather(-1, order).cumsum(-1)
        k = torch.searchsorted(spent, torch.full((*spent.shape[:-1], 1), radius, dtype=spent.dtype))
        lam = torch.where(k < size.shape[-1], size.gather(-1, order).gather(-1, k.clamp_max(size.shape[-1] - 1)), 0.0)
        dual = lam[..., 0] * radius + ((size - lam).clamp_min(0) * reach).sum(-1)
        return torch.minimum(box, dual)
    if norm != "l2":
        raise ValueError(f"ball_box_support handles 'l1' or 'l2', got {norm!r}")

    def step(lam: torch.Tensor) -> torch.Tensor:
        return torch.clamp(coef / (2 * lam[..., None]), lo, hi)

    high = (torch.linalg.vector_norm(coef, dim=-1) / (2 * radius)).clamp_min(1e-150)  # |δ(high)| <= r
    log_lo, log_hi = torch.log(high) - 40.0, torch.log(high)
    for _ in range(_BISECTIONS):
        mid = 0.5 * (log_lo + log_hi)
        inside = step(torch.exp(mid)).square().sum(-1) <= radius ** 2
        log_hi, log_lo = torch.where(inside, mid, log_hi), torch.where(inside, log_lo, mid)
    lam = torch.exp(log_hi)
    delta = step(lam)
    dual = lam * radius ** 2 + (coef * delta - lam[..., None] * delta.square()).sum(-1)
    return torch.minimum(box, dual.nan_to_num(nan=float("inf")))  # (nan: λ overflowed on a tiny radius)


def _maximise(coef: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, ball: NormBall | None,
              centre: torch.Tensor | None) -> torch.Tensor:
    """``(B, R)`` upper bounds on ``coef·x`` (``coef`` ``(B, R, d)``) over the box ``[lo, hi]`` ``(B, d)``,
    intersected with ``ball`` (centre ``(B, d)``, flat) if given."""
    if ball is None:
        return torch.einsum("brd,bd->br", coef.clamp_min(0), hi) + torch.einsum("brd,bd->br", coef.clamp_max(0), lo)
    return torch.einsum("brd,bd->br", coef, centre) + ball_box_support(coef, lo - centre, hi - centre, ball.norm,
                                                                       ball.radius)
