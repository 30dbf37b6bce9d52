"""Certificates from the bound engine: robustness at given radii, and certified radii by bisection on the bound.

An example is certified at ``eps`` when every margin lower bound over the ``norm`` ball of radius ``eps`` (within
``[0, 1]``) is positive. The certified radius is found by bisection on ``eps``: the reported radius is always a
radius at which the bound *proved* robustness (the lower end of the bisection, 0 if none was proved), and the
largest radius the method can prove lies below ``radius + upper / 2**steps`` (bounds only loosen as the ball
grows). Misclassified examples get radius 0.

Example:
    >>> cert = certify_bounds(model, x, y, eps=[1 / 255, 2 / 255], norm="linf", method="crown")
    >>> cert.certified_accuracy(1 / 255)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import nn

from ...errors import InvalidInputError
from ...validation import check_batch, check_logits
from ..certificate import Certificate
from ..graph.graph import BoundGraph
from .alpha import AlphaOptions
from .crown import DEFAULT_MAX_ELEMENTS
from .engine import METHODS, as_graph, margin_lower_bounds
from .input_set import NORMS

__all__ = ["certified_radius", "certify_bounds", "default_upper"]


def default_upper(norm: str, input_shape: tuple[int, ...]) -> float:
    """The diameter of the pixel cube ``[0, 1]^d`` in ``norm``: no radius can be larger."""
    d = math.prod(input_shape)
    return {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}[norm]


def _verified(graph: BoundGraph, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, norm: str, method: str,
              max_elements: int, alpha: AlphaOptions) -> torch.Tensor:
    """``(B,)`` bool: every margin bound positive over the ball of radius ``eps`` ``(B,)``."""
    return (margin_lower_bounds(graph, x, y, eps, norm, method, max_elements, alpha) > 0).all(dim=1)


def certified_radius(model: nn.Module | BoundGraph, x: torch.Tensor, y: torch.Tensor, norm: str = "linf",
                     method: str = "crown", upper: float | None = None, steps: int = 20,
                     max_elements: int = DEFAULT_MAX_ELEMENTS, alpha: AlphaOptions = AlphaOptions()) -> torch.Tensor:
    """``(B,)`` certified radii (pixel units of ``norm``) by a batched bisection on ``eps`` in ``[0, upper]``.

    Args:
        model: the network or its bound graph; x: ``(B, *input_shape)`` in ``[0, 1]``; y: ``(B,)`` labels.
        norm: "linf", "l2" or "l1"; method: "ibp", "crown" or "alpha-crown".
        upper: the bisection's upper end (default :func:`default_upper`, the cube's diameter).
        steps: bisection steps; the resolution is ``upper / 2**steps``.

    Returns:
        Radii at which the bound proves robustness (0 where none was proved and for misclassified examples).
    """
    graph = as_graph(model, tuple(x.shape[1:]))
    upper = default_upper(norm, graph.input_shape) if upper is None else float(upper)
    if not (math.isfinite(upper) and upper > 0) or int(steps) != steps or steps < 1:
        raise InvalidInputError(f"bisection needs a finite upper > 0 and steps >= 1, got upper={upper}, steps={steps}")
    x = x.to(device=graph.device, dtype=graph.dtype)
    y = y.to(graph.device)
    with torch.no_grad():
        correct = graph.forward(x).argmax(dim=1) == y
    lo = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    hi = torch.full_like(lo, upper)
    active = correct.nonzero().flatten()
    if active.numel():
        at_top = _verified(graph, x[active], y[active], hi[active], norm, method, max_elements, alpha)
        lo[active[at_top]] = upper
        active = active[~at_top]
    for _ in range(int(steps)):
        if not active.numel():
            break
        mid = (lo[active] + hi[active]) / 2
        ok = _verified(graph, x[active], y[active], mid, norm, method, max_elements, alpha)
        lo[active] = torch.where(ok, mid, lo[active])
        hi[active] = torch.where(ok, hi[active], mid)
    return lo


def _just_above(eps: float) -> float:
    """A radius slightly above ``eps``: a certificate verified there counts at ``eps`` (``radius > eps``)."""
    return eps + max(eps * 2.0**-20, 2.0**-30)


def _radius_at(graph: BoundGraph, x: torch.Tensor, y: torch.Tensor, eps_list: Sequence[float], norm: str,
               method: str, max_elements: int, alpha: AlphaOptions) -> torch.Tensor:
    """``(B,)`` the largest checked radius (each ``eps`` nudged :func:`_just_above`) the bound proves, else 0."""
    radius = torch.zeros(x.shape[0], dtype=graph.dtype, device=graph.device)
    with torch.no_grad():
        active = (graph.forward(x).argmax(dim=1) == y).nonzero().flatten()  # misclassified: radius 0
    for eps in sorted(eps_list):
        if not active.numel():
            break
        check = _just_above(float(eps))
        eps = torch.full((active.numel(),), check, dtype=graph.dtype, device=graph.device)
        ok = _verified(graph, x[active], y[active], eps, norm, method, max_elements, alpha)
        radius[active[ok]] = check
        active = active[ok]  # not proved at a radius: not tried at larger ones (bounds loosen as it grows)
    return radius


def certify_bounds(model: nn.Module | BoundGraph, x: torch.Tensor, y: torch.Tensor,
                   eps: float | Sequence[float] | None = None, norm: str = "linf", method: str = "crown",
                   upper: float | None = None, steps: int = 20, max_elements: int = DEFAULT_MAX_ELEMENTS,
                   alpha: AlphaOptions = AlphaOptions()) -> Certificate:
    """Certify ``model`` on images ``x`` ``(B, C, H, W)`` in ``[0, 1]`` with labels ``y`` ``(B,)``.

    Args:
        eps: radii to certify at (a float or a list; pixel units): each example's radius is the largest of them
            (nudged up by ``2**-20`` relative, :func:`_just_above`, so that ``Certificate.certified_at(eps)`` counts
            it) that the bound proves, else 0. ``None``: certified radii by bisection (:func:`certified_radius`).
        norm: "linf", "l2" or "l1"; method: "ibp", "crown" or "alpha-crown".
        upper, steps: the bisection's range and steps (``eps=None`` only).
        max_elements: memory bound of CROWN's chunks; alpha: α-CROWN's settings.

    Returns:
        A :class:`~mistered.certify.certificate.Certificate` (method ``"ibp"``, ``"crown"`` or ``"alpha-crown"``);
        ``details`` records the norm's settings and, for ``eps`` lists, the radii checked.

    Raises:
        InvalidInputError: bad images, labels, norm, method or radii.
        UnsupportedLayerError: a model with an operation the bounds do not support.
    """
    if norm not in NORMS or method not in METHODS:
        raise InvalidInputError(f"norm must be one of {NORMS} and method one of {METHODS}, got {norm!r}, {method!r}")
    eps_list = None if eps is None else ([float(eps)] if isinstance(eps, (int, float)) else [float(e) for e in eps])
    if eps_list is not None and (not eps_list or any(not (math.isfinite(e) and e >= 0) for e in eps_list)):
        raise InvalidInputError(f"eps must be finite non-negative radii, got {eps}")
    start = time.perf_counter()
    graph = as_graph(model, tuple(x.shape[1:]))
    x, y = check_batch(x, y, dtype=graph.dtype, device=graph.device)
    with torch.no_grad():
        logits = graph.forward(x)
    check_logits(logits, y)
    predictions = logits.argmax(dim=1)
    if eps_list is None:
        radius = certified_radius(graph, x, y, norm, method, upper, steps, max_elements, alpha)
        details = {"bisection_steps": int(steps), "upper": upper or default_upper(norm, graph.input_shape)}
    else:
        radius = _radius_at(graph, x, y, eps_list, norm, method, max_elements, alpha)
        details = {"eps_checked": sorted(eps_list)}
    seconds = time.perf_counter() - start
    return Certificate.from_radii(method, norm, radius, predictions, y, seconds, details)
