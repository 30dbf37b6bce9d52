"""The fast gradient sign method (Goodfellow et al. 2015), generalised to any threat: one full-budget step."""

from __future__ import annotations

from torch import nn

from ..threats.base import Threat
from .pgd import PGD

__all__ = ["FGSM"]


class FGSM(PGD):
    """One steepest-ascent step of the full budget from the clean image (``step_size=1.0``), then a projection.

    For an L∞ threat this is ``x + eps * sign(grad)``; for any other threat it is the perturbation's own
    ``step_(1.0)``. Keyword arguments as :class:`~mistered.attacks.base.Attack` (``restarts`` only
    matter with a random start, which FGSM does not use).

    Example:
        >>> import torch
        >>> from mistered.threats import Additive
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> FGSM(net, Additive("linf", 0.1))(torch.rand(2, 1, 2, 2), torch.tensor([0, 1])).success.shape
        torch.Size([2])
    """

    def __init__(self, model: nn.Module, threat: Threat, **kwargs) -> None:
        super().__init__(model, threat, steps=1, step_size=1.0, random_start=False, **kwargs)
