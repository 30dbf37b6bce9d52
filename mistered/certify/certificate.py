"""The result every certifier returns: per-example certified radii (lower bounds) and, for exact methods, upper bounds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Certificate", "STATUSES"]

#: Per-example statuses: ``exact`` (radius is the true minimal adversarial distance), ``certified``
#: (radius is a sound lower bound), ``timeout`` (anytime bounds only), ``misclassified`` (radius 0),
#: ``abstain`` (randomized smoothing could not decide the class at its confidence; radius 0).
STATUSES = ("exact", "certified", "timeout", "misclassified", "abstain")


@dataclass
class Certificate:
    """Per-example certified robustness of a batch.

    Attributes:
        method: the certifier, e.g. ``"lmt"``, ``"linf-dist"``, ``"geocert"``.
        norm: ``"l1"``, ``"l2"`` or ``"linf"``, the norm the radii are measured in (pixel units of [0, 1] images).
        radius: ``(B,)`` lower bound on the minimal adversarial distance: no input closer than this
            changes the prediction. 0 for misclassified examples.
        upper: ``(B,)`` upper bound on the minimal adversarial distance where known (``inf`` where not);
            equal to ``radius`` where ``status == "exact"``.
        status: one of :data:`STATUSES` per example.
        predictions: ``(B,)`` the model's predicted classes; ``labels`` ``(B,)`` the true ones.
        seconds: wall-clock time of the certification, in seconds.
        details: method-specific extras (per-example solver statistics, the Lipschitz constant ...).
    """

    method: str
    norm: str
    radius: torch.Tensor
    upper: torch.Tensor
    status: list[str]
    predictions: torch.Tensor
    labels: torch.Tensor
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_radii(
        cls,
        method: str,
        norm: str,
        radius: torch.Tensor,
        predictions: torch.Tensor,
        labels: torch.Tensor,
        seconds: float,
        details: dict[str, Any] | None = None,
    ) -> Certificate:
        """A certificate of lower bounds only (no upper bound known): ``radius`` ``(B,)`` is zeroed where
        ``predictions != labels``, whose status is ``misclassified``; the others are ``certified``."""
        correct = predictions == labels
        radius = torch.where(correct, radius, torch.zeros_like(radius)).detach().cpu()
        return cls(
            method=method,
            norm=norm,
            radius=radius,
            upper=torch.full_like(radius, float("inf")),
            status=["certified" if c else "misclassified" for c in correct.tolist()],
            predictions=predictions.cpu(),
            labels=labels.cpu(),
            seconds=seconds,
            details=details or {},
        )

    def certified_at(self, eps: float) -> torch.Tensor:
        """``(B,)`` bool: correctly classified and provably robust in the closed ball of radius ``eps``."""
        correct = self.predictions == self.labels
        return correct & (self.radius > eps)

    def certified_accuracy(self, eps: float) -> float:
        """Fraction of examples certified at ``eps``."""
        correct_and_robust = self.certified_at(eps)
        return int(correct_and_robust.sum()) / correct_and_robust.numel() if correct_and_robust.numel() else 0.0

    def to_json(self) -> list[dict[str, Any]]:
        """Per-example records for a results file."""
        return [
            {
                "radius": float(self.radius[i]),
                "upper": float(self.upper[i]) if torch.isfinite(self.upper[i]) else None,
                "status": self.status[i],
                "prediction": int(self.predictions[i]),
                "label": int(self.labels[i]),
            }
            for i in range(len(self.status))
        ]
