"""The first perceptual attack's name, kept: ``PerceptualAttack`` (``--attack perceptual``) is now :class:`~.lpa.LPA`.

The old attack was a Lagrangian perceptual attack with budget-relative steps and ``λ`` raised every five
steps; LPA (Laidlaw et al. 2021) is the same idea written from the paper, with steps normalised in
perceptual distance and ``λ`` raised per round. The name stays as a deprecated alias of LPA; since the
search changed, constructing it warns once per call with a ``FutureWarning``.
"""

from __future__ import annotations

import warnings

from torch import nn

from ..threats.base import Threat
from .lpa import LPA

__all__ = ["PerceptualAttack"]


class PerceptualAttack(LPA):
    """Deprecated alias of :class:`~mistered.attacks.LPA` (same arguments); warns with a ``FutureWarning``."""

    name = "perceptual"

    def __init__(self, model: nn.Module, threat: Threat, **kwargs) -> None:
        warnings.warn("the 'perceptual' attack (PerceptualAttack) is now LPA, the Lagrangian perceptual attack of "
                      "Laidlaw et al. 2021, with steps normalised in perceptual distance; use 'lpa' (or 'ppgd', or "
                      "'fast-lpa') by name", FutureWarning, stacklevel=2)
        super().__init__(model, threat, **kwargs)
