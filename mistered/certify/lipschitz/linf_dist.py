"""Certificates of L∞-dist nets (Zhang et al. 2021/2022): every L∞-dist neuron is 1-Lipschitz in L∞.

* :class:`~mistered.models.linf_dist.LinfDistNet`: if the top raw output exceeds the runner-up by ``m``, no L∞
  perturbation smaller than ``m / 2`` changes the prediction (:func:`certify_linf_dist`).
* :class:`~mistered.models.linf_dist.LinfDistHybrid` (an L∞-dist backbone followed by a small ReLU head): an input
  perturbation of L∞ size ``eps`` keeps each backbone feature in ``[f(x) - eps, f(x) + eps]``; interval bound
  propagation through the head (hidden layer by :func:`~mistered.certify.bounds.chain_interval.interval_bounds`,
  the output layer directly on the margins ``logit_y - logit_j``) bounds the margins from below, and the example is
  certified at ``eps`` when every such bound is positive. The radius is found per example by a batched bisection
  on ``eps`` and is always a value that was verified (interval bounds grow with the box).
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from ...errors import InvalidInputError, UnsupportedLayerError
from ...models.linf_dist import LinfDistHybrid, LinfDistNet, certification_mode
from ...validation import check_batch, check_logits, describe_model, model_device, model_dtype
from ..bounds.chain_interval import interval_bounds
from ..certificate import Certificate
from ..graph.piecewise import PiecewiseLinearNet

__all__ = [
    "certify_linf_dist", "linf_dist_radius", "certify_linf_dist_hybrid", "head_net", "hybrid_margin_bounds",
    "hybrid_margin_lower_bound",
]


def linf_dist_radius(raw: torch.Tensor) -> torch.Tensor:
    """Certified L∞ radius ``(top - runner_up) / 2`` from 1-Lipschitz outputs ``(B, K)``; returns ``(B,)``."""
    top2 = raw.topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) / 2


@torch.no_grad()
def certify_linf_dist(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Certificate:
    """Certify an L∞-dist net on ``x`` ``(B, C, H, W)`` in ``[0, 1]`` with labels ``y`` ``(B,)`` in ``[0, K)``: radius
    ``margin / 2``. The batch is validated by :func:`~mistered.validation.check_batch` (cast to the model's dtype).

    The model is evaluated in eval mode with ``p = inf`` (its state is restored after). Misclassified
    examples get radius 0.

    A :class:`~mistered.models.linf_dist.LinfDistHybrid` is certified by
    :func:`certify_linf_dist_hybrid` (bisection with interval bounds).

    Raises:
        UnsupportedLayerError: ``model`` is not a :class:`LinfDistNet` (other networks are not 1-Lipschitz in L∞).
    """
    if isinstance(model, LinfDistHybrid):
        return certify_linf_dist_hybrid(model, x, y)
    if not isinstance(model, LinfDistNet):
        raise UnsupportedLayerError(
            f"L∞-dist certification needs an L∞-dist net (architecture 'linf-dist-net'), got {describe_model(model)}: "
            "only networks built from L∞-dist neurons are 1-Lipschitz in L∞; use --method lmt for other models"
        )
    x, y = check_batch(x, y, dtype=model_dtype(model), device=model_device(model))
    with certification_mode(model):
        start = time.perf_counter()
        raw = model.raw(x)
        check_logits(raw, y)
        radius = linf_dist_radius(raw)
        seconds = time.perf_counter() - start
    return Certificate.from_radii("linf-dist", "linf", radius, raw.argmax(dim=1), y, seconds)


def _check_hybrid(model: nn.Module) -> LinfDistHybrid:
    if not isinstance(model, LinfDistHybrid):
        raise UnsupportedLayerError(
            f"hybrid L∞-dist certification needs a hybrid L∞-dist net (architecture 'linf-dist-hybrid'), "
            f"got {describe_model(model)}"
        )
    return model


def _check_batch(model: LinfDistHybrid, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~mistered.validation.check_batch` with the model's class count, dtype and device."""
    return check_batch(x, y, num_classes=model.head[-1].out_features, dtype=model_dtype(model),
                       device=model_device(model))


def head_net(model: LinfDistHybrid) -> PiecewiseLinearNet:
    """The head of ``model`` as a :class:`~mistered.certify.graph.piecewise.PiecewiseLinearNet` that shares its parameters.

    No copy is made, so bounds computed through it are differentiable in the head's weights (for training).
    """
    first, last = model.head[0], model.head[2]
    return PiecewiseLinearNet([first.weight, last.weight], [first.bias, last.bias], (first.in_features,))


def hybrid_margin_bounds(
    model: LinfDistHybrid, features: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor
) -> torch.Tensor:
    """``(B, K)`` lower bounds of ``logit_y - logit_j`` over the feature box ``features -/+ eps`` (0 at ``j = y``).

    Args:
        model: the hybrid net whose head is bounded (its backbone is not run: ``features`` are given).
        features: ``(B, width)`` backbone outputs; y: ``(B,)`` labels.
        eps: half-width of the feature box, a float or a ``(B,)`` tensor (pixel units: each feature is
            1-Lipschitz in L∞ at ``p = inf``, so an input ball of radius ``eps`` stays inside this box).

    Differentiable in ``features`` and in the head's parameters; ``-bounds`` are the worst-case logits
    of interval bound propagation training (Gowal et al. 2018), whose cross-entropy is the IBP loss.
    """
    model = _check_hybrid(model)
    return _margin_bounds(model, features, y, _check_eps(eps, features))


def _check_eps(eps: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``eps`` as a ``(B,)`` tensor of ``like``'s dtype and device; raises unless finite and non-negative."""
    eps_t = torch.as_tensor(eps, dtype=like.dtype, device=like.device).expand(like.shape[0])
    if (eps_t < 0).any() or not torch.isfinite(eps_t).all():
        raise InvalidInputError(f"eps must be finite and non-negative, got {eps}")
    return eps_t


def _margin_bounds(model: LinfDistHybrid, features: torch.Tensor, y: torch.Tensor, eps_t: torch.Tensor) -> torch.Tensor:
    """:func:`hybrid_margin_bounds` without the checks; ``eps_t`` is ``(B,)``."""
    head = head_net(model)
    hidden = interval_bounds(head, features - eps_t[:, None], features + eps_t[:, None])[0]
    lo, hi = hidden[0].clamp_min(0), hidden[1].clamp_min(0)
    centre, radius = (hi + lo) / 2, (hi - lo) / 2
    w, b = head.weights[-1], head.biases[-1]  # (K, n), (K,)
    diff_w = w[y][:, None, :] - w[None]  # (B, K, n): rows w_y - w_j
    diff_b = b[y][:, None] - b[None]  # (B, K)
    return torch.einsum("bkn,bn->bk", diff_w, centre) + diff_b - torch.einsum("bkn,bn->bk", diff_w.abs(), radius)


def _margin_bound(model: LinfDistHybrid, features: torch.Tensor, y: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``(B,)`` lower bound of ``min_{j != y} (logit_y - logit_j)`` over the feature box ``features -/+ eps[:, None]``."""
    return _margin_bounds(model, features, y, eps).scatter(1, y[:, None], math.inf).amin(dim=1)


@torch.no_grad()
def hybrid_margin_lower_bound(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """``(B,)`` sound lower bound of ``min_{j != y} (logit_y - logit_j)`` over the L∞ ball of radius ``eps`` around ``x``.

    Args:
        model: a :class:`LinfDistHybrid` (evaluated in eval mode at ``p = inf``; its state is restored after).
        x: ``(B, C, H, W)`` images in ``[0, 1]``; y: ``(B,)`` labels.
        eps: L∞ radius in pixel units, a float or a ``(B,)`` tensor.

    A positive value proves that no input in the ball is classified other than ``y``.
    """
    model = _check_hybrid(model)
    x, y = _check_batch(model, x, y)
    eps_t = _check_eps(eps, x)
    with certification_mode(model):
        return _margin_bound(model, model.backbone(x), y, eps_t)


@torch.no_grad()
def certify_linf_dist_hybrid(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, bisection_steps: int = 20, upper: float = 1.0
) -> Certificate:
    """Certify a hybrid L∞-dist net on ``x`` ``(B, C, H, W)`` in ``[0, 1]`` with labels ``y`` ``(B,)``.

    Each example's radius is the largest ``eps`` in ``[0, upper]`` that a batched bisection of
    ``bisection_steps`` steps verified with :func:`hybrid_margin_lower_bound` (0 if none was); the
    bisection resolution is ``upper / 2**bisection_steps``. Misclassified examples get radius 0.

    Raises:
        UnsupportedLayerError: ``model`` is not a :class:`LinfDistHybrid`.
        InvalidInputError: ``bisection_steps < 1`` or ``upper <= 0``.
    """
    model = _check_hybrid(model)
    x, y = _check_batch(model, x, y)
    if int(bisection_steps) != bisection_steps or bisection_steps < 1:
        raise InvalidInputError(f"bisection_steps must be a positive integer, got {bisection_steps}")
    if not (math.isfinite(upper) and upper > 0):
        raise InvalidInputError(f"the bisection's upper end must be a positive finite radius, got {upper}")
    with certification_mode(model):
        start = time.perf_counter()
        features = model.backbone(x)
        predictions = model.head(features).argmax(dim=1)
        top = torch.full((x.shape[0],), float(upper), dtype=features.dtype, device=features.device)
        lo = torch.where(_margin_bound(model, features, y, top) > 0, top, torch.zeros_like(top))
        hi = top
        for _ in range(int(bisection_steps)):
            mid = (lo + hi) / 2
            verified = _margin_bound(model, features, y, mid) > 0
            lo, hi = torch.where(verified, mid, lo), torch.where(verified, hi, mid)
        seconds = time.perf_counter() - start
    details = {"bisection_steps": int(bisection_steps), "upper": float(upper), "resolution": float(upper) / 2**bisection_steps}
    return Certificate.from_radii("linf-dist-hybrid", "linf", lo, predictions, y, seconds, details)
