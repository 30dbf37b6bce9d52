"""Additive perturbations ``x + delta`` bounded in L∞ or L2 norm (per example)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..validation import check_nonnegative
from ..errors import InvalidInputError
from .base import Perturbation, Threat
from .naming import format_number

__all__ = ["Additive", "AdditivePerturbation"]

Norm = Literal["linf", "l2"]
_NORMS = ("linf", "l2")


@dataclass(frozen=True)
class Additive(Threat):
    """``x_adv = clip(x + delta, 0, 1)`` with ``||delta||_p <= eps`` per example.

    Args:
        norm: ``"linf"`` or ``"l2"``; the norm is taken over all of ``C*H*W``.
        eps: the budget, in pixel units of images in ``[0, 1]`` (e.g. ``8/255`` for L∞ on CIFAR-10).

    Example:
        >>> threat = Additive("linf", 0.3)
        >>> x = torch.rand(4, 1, 28, 28)
        >>> delta = threat.perturbation(x).random_init_()
        >>> bool((delta(x) - x).abs().max() <= 0.3 + 1e-6)
        True
    """

    norm: Norm = "linf"
    eps: float = 0.3

    def __post_init__(self) -> None:
        if self.norm not in _NORMS:
            raise InvalidInputError(f"additive norm must be one of {_NORMS}, got {self.norm!r}")
        check_nonnegative(self.eps, f"{self.norm} eps")

    def perturbation(self, x: torch.Tensor) -> AdditivePerturbation:
        return AdditivePerturbation(self, x)

    @property
    def name(self) -> str:
        return f"{self.norm}({format_number(self.eps)})"


def _per_example_l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def _broadcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


class AdditivePerturbation(Perturbation):
    """Holds ``delta`` of shape ``(B, C, H, W)``."""

    threat: Additive

    def __init__(self, threat: Additive, x: torch.Tensor) -> None:
        super().__init__(threat, x)
        self.delta = nn.Parameter(torch.zeros_like(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.delta).clamp(0.0, 1.0)

    @torch.no_grad()
    def random_init_(self, generator: torch.Generator | None = None) -> AdditivePerturbation:
        eps = self.threat.eps
        if self.threat.norm == "linf":
            noise = torch.rand(self.delta.shape, generator=generator, device=self.delta.device, dtype=self.delta.dtype)
            self.delta.copy_((2 * noise - 1) * eps)
        else:  # uniform in the L2 ball: a uniform direction times radius eps * u^(1/d)
            direction = torch.randn(self.delta.shape, generator=generator, device=self.delta.device, dtype=self.delta.dtype)
            direction /= _broadcast(_per_example_l2(direction).clamp_min(1e-12), direction)
            u = torch.rand(self.batch_size, generator=generator, device=self.delta.device, dtype=self.delta.dtype)
            radius = eps * u.pow(1.0 / direction[0].numel())
            self.delta.copy_(direction * _broadcast(radius, direction))
        return self

    @torch.no_grad()
    def project_(self) -> AdditivePerturbation:
        eps = self.threat.eps
        if self.threat.norm == "linf":
            self.delta.clamp_(-eps, eps)
        else:
            norms = _per_example_l2(self.delta)
            factor = (eps / norms.clamp_min(1e-12)).clamp(max=1.0)
            self.delta.mul_(_broadcast(factor, self.delta))
        # keep x + delta inside the image box so the reported size is the size actually applied (in place: the
        # same values as (reference + delta).clamp(0, 1) - reference, without allocating)
        self.delta.add_(self.reference).clamp_(0.0, 1.0).sub_(self.reference)
        return self

    def sizes(self) -> dict[str, torch.Tensor]:
        flat = self.delta.detach().flatten(1)
        if self.threat.norm == "linf":
            return {"linf": flat.abs().amax(dim=1)}
        return {"l2": flat.norm(dim=1)}

    def budgets(self) -> dict[str, float]:
        return {self.threat.norm: self.threat.eps}

    @torch.no_grad()
    def scale_(self, t: torch.Tensor) -> AdditivePerturbation:
        self.delta.mul_(_broadcast(t.to(self.delta), self.delta))
        return self

    @torch.no_grad()
    def step_(self, lr: float) -> AdditivePerturbation:
        grad = self.delta.grad
        if grad is None:
            return self
        if self.threat.norm == "linf":
            direction = grad.sign()
        else:
            direction = grad / _broadcast(_per_example_l2(grad).clamp_min(1e-12), grad)
        self.delta.add_(direction, alpha=lr * self.threat.eps)
        return self
