"""Hard bounds, checked: every example an attack returns is re-measured against its threat's budgets.

:func:`bound_violations` checks an :class:`~mistered.attacks.AttackResult` independently of the search that
produced it: the image range, the winning perturbation's own budgets (its unitless ``size`` <= 1), and each
perceptual bound re-measured on ``(x, x_adv)`` in one batch. :class:`HardBoundMixin` makes an attack store the
count in ``result.info["bound_violations"]`` (0 when every bound holds).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..metrics import distance
from ..threats.base import BUDGET_RTOL, Threat
from ..threats.perceptual import PerceptualBudget, bind_features
from .result import AttackResult

__all__ = ["bound_violations", "HardBoundMixin"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def bound_violations(result: AttackResult, threat: Threat, model: nn.Module | None = None) -> torch.Tensor:
    """``(B,)`` bool: example ``i`` of ``result`` is outside the budget of the alternative that produced it.

    Args:
        result: an attack's result on ``B`` examples.
        threat: the attacked threat (an attack's ``self.threat``, or the threat it was given).
        model: the attacked model, which measures ``lpips-self`` budgets (not needed when ``threat``'s networks
            are already bound, as in an attack's ``self.threat``; see :func:`~mistered.threats.bind_features`).

    An example violates when ``x_adv`` leaves ``[0, 1]`` or is not finite; when its winning perturbation's
    ``size`` exceeds 1 by more than :data:`~mistered.threats.base.BUDGET_RTOL`; or when its perceptual
    distance, re-measured between ``x`` and ``x_adv``, exceeds the bound (no slack: the projection keeps a margin).
    Examples where the clean image was kept (``alternative == -1``) are inside every budget.
    """
    if model is not None:
        threat = bind_features(threat, model=model)
    flat = result.x_adv.flatten(1)
    bad = ~(torch.isfinite(flat).all(dim=1) & (flat >= 0).all(dim=1) & (flat <= 1).all(dim=1))
    size = result.sizes.get("size")
    if size is not None:
        bad |= size.to(bad.device) > 1.0 + BUDGET_RTOL
    for index, alternative in enumerate(threat.alternatives()):
        rows = (result.alternative == index).nonzero().squeeze(1)
        if rows.numel() == 0 or not isinstance(alternative, PerceptualBudget):
            continue
        measured = distance(alternative.metric, result.x[rows], result.x_adv[rows], alternative.features).reshape(-1)
        bad[rows] |= ~(measured <= alternative.bound)
    return bad


class HardBoundMixin:
    """Mix into an :class:`~mistered.attacks.Attack` (before it in the bases) to count its bound violations.

    After the attack, ``result.info["bound_violations"]`` holds the number of examples outside their bound
    (:func:`bound_violations`); a nonzero count is also logged as an error.
    """

    def attack(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> AttackResult:
        result = super().attack(x, y, target)  # type: ignore[misc]
        count = int(bound_violations(result, self.threat).sum())  # type: ignore[attr-defined]
        result.info["bound_violations"] = count
        if count:
            logger.error("%s returned %d example(s) outside the bound of %s", type(self).__name__, count,
                         self.threat)  # type: ignore[attr-defined]
        return result
