"""Lipschitz-margin certificates in L2 (Tsuzuku, Sato & Sugiyama 2018).

If the logit map ``f`` is ``L``-Lipschitz in L2, every logit difference ``f_i - f_j`` is
``sqrt(2) L``-Lipschitz, so no input within ``margin / (sqrt(2) L)`` of ``x`` changes the prediction,
``margin`` being the gap between the top logit and the runner-up. The **pairwise** form uses the last
layer ``W`` directly: ``f_i - f_j`` is ``||W_i - W_j||_2 * L_body``-Lipschitz, with ``L_body`` the bound
of everything before the last ``nn.Linear``; the radius is ``min_j (f_i - f_j) / (||W_i - W_j|| L_body)``.

:class:`LMTCertifier` computes the constant once (exact mode) and caches it, so certifying a batch
costs one forward pass plus ``O(B K)`` arithmetic.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ...validation import check_batch, check_logits, model_device, model_dtype
from ..certificate import Certificate
from .global_bound import check_bounded_model
from .graph_bound import bound_for_model

__all__ = ["LMTCertifier", "certify_lmt", "lmt_radius", "pairwise_radius", "pairwise_row_norms"]

_SQRT2 = 2.0**0.5


def lmt_radius(logits: torch.Tensor, lipschitz: torch.Tensor | float) -> torch.Tensor:
    """Certified L2 radius ``(top - runner_up) / (sqrt(2) L)`` for logits ``(B, K)``; returns ``(B,)``, ``>= 0``."""
    top2 = logits.topk(2, dim=1).values
    return ((top2[:, 0] - top2[:, 1]) / (_SQRT2 * lipschitz)).clamp_min(0)


def pairwise_row_norms(weight: torch.Tensor) -> torch.Tensor:
    """``(K, K)`` matrix ``||W_i - W_j||_2`` of the last layer's weight ``(K, D)`` (differentiable)."""
    diff = weight.unsqueeze(1) - weight.unsqueeze(0)
    return diff.pow(2).sum(-1).clamp_min(1e-24).sqrt()


def pairwise_radius(logits: torch.Tensor, row_norms: torch.Tensor, body_lipschitz: torch.Tensor | float) -> torch.Tensor:
    """Certified L2 radius ``min_{j != i} (f_i - f_j) / (||W_i - W_j|| L_body)`` for the predicted class ``i``.

    Args:
        logits: ``(B, K)``.
        row_norms: ``(K, K)`` from :func:`pairwise_row_norms`.
        body_lipschitz: the bound of the network without its last layer.

    Returns:
        ``(B,)``, ``>= 0``.
    """
    pred = logits.argmax(dim=1)
    gaps = logits.gather(1, pred[:, None]) - logits  # (B, K)
    ratios = gaps / (row_norms[pred] * body_lipschitz)
    ratios = ratios.scatter(1, pred[:, None], float("inf"))
    return ratios.amin(dim=1).clamp_min(0)


class LMTCertifier:
    """Certifies L2 robustness of ``model`` by its Lipschitz margin; the constant is computed once per input shape.

    Args:
        model: ``(B, *input_shape) -> (B, K)``: layers :class:`~mistered.certify.lipschitz.global_bound.LipschitzBound`
            supports in ``nn.Sequential`` / ``Residual`` / ``Normalized`` trees, or any graph
            :class:`~mistered.certify.lipschitz.graph_bound.GraphLipschitzBound` supports (residual blocks,
            BatchNorm, pooling, cat ...; see :func:`~mistered.certify.lipschitz.graph_bound.bound_for_model`). An
            unsupported layer raises :class:`~mistered.errors.UnsupportedLayerError` naming it; so does a
            TorchScript module or ``torch.fx`` graph, whose layers cannot be read.
        pairwise: use the tighter last-layer pairwise bound (the network must end with ``nn.Linear``).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(784, 20), nn.ReLU(), nn.Linear(20, 10)).eval()
        >>> cert = LMTCertifier(net).certify(torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
        >>> cert.radius.shape
        torch.Size([4])
    """

    def __init__(self, model: nn.Module, pairwise: bool = False) -> None:
        self.model = check_bounded_model(model)
        self.pairwise = pairwise
        self._constants: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor | None]] = {}

    def constant(self, input_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(L, row_norms)``: the global bound (or the body bound when pairwise) and the ``(K, K)`` row norms
        (``None`` unless pairwise), float32 on the model's device; computed on first use and cached."""
        key = tuple(input_shape)
        if key not in self._constants:
            bound = bound_for_model(self.model, key)
            if self.pairwise:
                body = bound.exact(exclude_head=True)
                norms = pairwise_row_norms(bound.head.weight.detach().double())
                self._constants[key] = (body.float(), norms.float())
            else:
                self._constants[key] = (bound.exact().float(), None)
        return self._constants[key]

    @torch.no_grad()
    def radius(self, logits: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
        """``(B,)`` certified L2 radii from logits ``(B, K)`` of inputs of shape ``input_shape``."""
        lipschitz, norms = self.constant(input_shape)
        if norms is None:
            return lmt_radius(logits, lipschitz.to(logits.device))
        return pairwise_radius(logits, norms.to(logits.device), lipschitz.to(logits.device))

    @torch.no_grad()
    def certify(self, x: torch.Tensor, y: torch.Tensor) -> Certificate:
        """Certify the batch ``x`` ``(B, C, H, W)`` in ``[0, 1]`` with labels ``y`` ``(B,)`` in ``[0, K)``.

        Validated by :func:`~mistered.validation.check_batch` (``x`` is cast to the model's dtype and device);
        misclassified examples get radius 0 and status ``"misclassified"``.
        """
        x, y = check_batch(x, y, dtype=model_dtype(self.model), device=model_device(self.model))
        lipschitz, _ = self.constant(tuple(x.shape[1:]))  # outside the timed pass: computed once
        start = time.perf_counter()
        logits = self.model(x)
        check_logits(logits, y)
        radius = self.radius(logits, tuple(x.shape[1:]))
        seconds = time.perf_counter() - start
        return Certificate.from_radii(
            "lmt", "l2", radius, logits.argmax(dim=1), y, seconds,
            details={"lipschitz": float(lipschitz), "pairwise": self.pairwise},
        )


def certify_lmt(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pairwise: bool = False) -> Certificate:
    """One-shot :meth:`LMTCertifier.certify` (the constant is computed for this call; reuse an
    :class:`LMTCertifier` to certify many batches)."""
    return LMTCertifier(model, pairwise=pairwise).certify(x, y)
