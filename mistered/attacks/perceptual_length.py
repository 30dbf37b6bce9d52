"""Lengths in a perceptual budget's own geometry, shared by the perceptual attacks (PPGD, LPA).

Every perceptual distance of :mod:`mistered.metrics` behaves near zero as a power of a norm:
``d(x, y) ≈ ℓ(x, y)^p`` with ``p = 2`` for LPIPS-alex/vgg (a squared distance of weighted feature maps) and for
``dssim``/``ms-dssim`` (squared statistics), ``p = 1`` for Laidlaw et al.'s ``lpips-self``/``lpips-net`` and the
Lp norms. The attacks measure steps and budgets in the **length** ``ℓ = d^(1/p)``, so a budget ``d <= b``
is the ball ``ℓ <= b^(1/p)`` (its *radius*) and a step of length ``η`` costs about ``η`` of it, whatever the
metric. For the LPIPS distances ``ℓ(x, y) = ||φ(x) - φ(y)||_2`` exactly, with ``φ`` the metric's flat
feature map (:meth:`~mistered.metrics.LPIPSDistance.features`): PPGD linearises that map.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InvalidInputError
from ..metrics import get_distance
from ..threats.base import Threat
from ..threats.perceptual import PerceptualBudget

__all__ = ["LENGTH_POWER", "FEATURE_MAP_METRICS", "PerceptualLength", "require_perceptual_budgets"]

#: ``p`` of ``d ≈ ℓ^p`` per distance name (see the module docstring).
LENGTH_POWER: dict[str, float] = {"lpips": 2.0, "lpips-alex": 2.0, "lpips-vgg": 2.0, "dssim": 2.0, "ms-dssim": 2.0,
                                  "lpips-self": 1.0, "lpips-net": 1.0, "linf": 1.0, "l2": 1.0, "l1": 1.0}
#: The distances that are a norm of a differentiable feature map ``φ`` (PPGD needs one).
FEATURE_MAP_METRICS = ("lpips", "lpips-alex", "lpips-vgg", "lpips-self", "lpips-net")


def require_perceptual_budgets(threat: Threat, attack: str, *, feature_map: bool = False) -> None:
    """Raise :class:`InvalidInputError` unless every alternative of ``threat`` is a :class:`PerceptualBudget`.

    With ``feature_map``, each budget's metric must also be one of :data:`FEATURE_MAP_METRICS`.
    """
    for alternative in threat.alternatives():
        if not isinstance(alternative, PerceptualBudget):
            raise InvalidInputError(
                f"{attack} searches under a perceptual bound, and the threat {alternative.name!r} has none; "
                f"append one, e.g. '{alternative.name}|lpips<=0.015'")
        if feature_map and alternative.metric not in FEATURE_MAP_METRICS:
            raise InvalidInputError(
                f"{attack} linearises the budget's feature map, and {alternative.metric} has none; bound "
                f"{', '.join(FEATURE_MAP_METRICS)} instead, or use --attack lpa, which takes any distance")


class PerceptualLength:
    """The length ``ℓ = d^(1/p)`` of one budget (module docstring), measured from a fixed clean batch ``x``.

    Args:
        budget: the perceptual budget (its metric, bound and, for ``lpips-self``/``lpips-net``, its network).
        x: the clean images ``(B, C, H, W)`` in ``[0, 1]``.

    Attributes:
        radius: the budget as a length, ``bound^(1/p)``.
        feature_map: ``φ`` (images ``(b, C, H, W)`` -> ``(b, F)``, differentiable) for the metrics of
            :data:`FEATURE_MAP_METRICS`, else ``None``.
    """

    def __init__(self, budget: PerceptualBudget, x: torch.Tensor) -> None:
        self.power = LENGTH_POWER[budget.metric]
        self.radius = budget.bound ** (1.0 / self.power)
        self._module = get_distance(budget.metric, x.device, budget.features)
        self.feature_map: Callable[[torch.Tensor], torch.Tensor] | None = (
            self._module.features if budget.metric in FEATURE_MAP_METRICS else None)
        self._x = x.detach()
        with torch.no_grad():
            self._x_features = None if self.feature_map is None else self.feature_map(self._x)

    def to_clean(self, y: torch.Tensor) -> torch.Tensor:
        """``ℓ(x, y)``, ``(B,)``, differentiable w.r.t. ``y`` ``(B, C, H, W)``."""
        if self._x_features is None:
            return _root(self._module(self._x, y), self.power)
        return _norm(self.feature_map(y) - self._x_features)

    @torch.no_grad()
    def between(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``ℓ(a, b)``, ``(B,)``, for two image batches ``(B, C, H, W)`` (no gradient)."""
        if self.feature_map is None:
            return _root(self._module(a, b), self.power)
        return _norm(self.feature_map(a) - self.feature_map(b))


def _norm(difference: torch.Tensor) -> torch.Tensor:
    """Per-row L2 norm of ``(B, F)``, with a zero (not NaN) gradient at 0."""
    squared = difference.square().sum(dim=1)
    return torch.where(squared > 0, squared.clamp_min(1e-30).sqrt(), torch.zeros_like(squared))


def _root(d: torch.Tensor, power: float) -> torch.Tensor:
    d = d.reshape(-1).clamp_min(0.0)
    if power == 1.0:
        return d
    return torch.where(d > 0, d.clamp_min(1e-30) ** (1.0 / power), torch.zeros_like(d))
