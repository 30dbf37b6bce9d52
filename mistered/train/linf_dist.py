"""The L∞-dist net v2 training objective (Zhang et al. 2022): clipped hinge on the certified margin + cross-entropy.

With ``raw`` the network's 1-Lipschitz (L∞) outputs and ``eps`` the training radius, the hinge term is
``mean_b max_{j != y} clip(1 - (raw_y - raw_j) / (2 eps), 0, clip)``: zero exactly when the example is
certified at ``eps``. It is mixed with ``lam * cross_entropy(logits)``, ``lam`` decaying exponentially
from ``lam_start`` to ``lam_end``. The norm ``p`` of every L∞-dist layer rises exponentially from
``p_start`` to ``p_end`` over the ``p_phase`` fraction of training (then ``inf``), both driven by ``progress``.

Defaults are v2's MNIST recipe (eps_train 0.3 for a test eps of 0.1; epochs 25..400 of 450 for p).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..certify.linf_dist_nets import LinfDistNet, set_p
from ..errors import InvalidInputError, UnsupportedLayerError
from ..validation import check_nonnegative

__all__ = ["LinfDistObjective"]


class LinfDistObjective:
    """``objective(model, x, y, progress) -> (loss, logits)`` for a :class:`~mistered.certify.linf_dist_nets.LinfDistNet`.

    Args:
        eps: training L∞ radius of the hinge (v2 trains at 3x the test radius on MNIST 0.1, 1.5x at 0.3).
        p_start, p_end: the p-relaxation schedule; ``p_end >= 100`` switches to ``inf`` at the end of the phase.
        p_phase: ``(start, end)`` fractions of training over which ``p`` (and ``lam``) move.
        lam_start, lam_end: weight of the cross-entropy term at the start and end of the phase.
        clip: the hinge is clipped at this value (v2: 1).
    """

    def __init__(
        self,
        eps: float = 0.3,
        p_start: float = 8.0,
        p_end: float = 1000.0,
        p_phase: tuple[float, float] = (25 / 450, 400 / 450),
        lam_start: float = 0.05,
        lam_end: float = 0.0002,
        clip: float = 1.0,
    ) -> None:
        self.eps = check_nonnegative(eps, "L∞-dist training eps")
        if self.eps == 0:
            raise InvalidInputError("L∞-dist training eps must be positive (the hinge divides by it)")
        if not 1 <= p_start <= p_end:
            raise InvalidInputError(f"need 1 <= p_start <= p_end, got p_start={p_start}, p_end={p_end}")
        if not 0 <= p_phase[0] <= p_phase[1] <= 1:
            raise InvalidInputError(f"p_phase must be fractions 0 <= start <= end <= 1, got {p_phase}")
        if not 0 < lam_end <= lam_start:
            raise InvalidInputError(f"need 0 < lam_end <= lam_start, got lam_start={lam_start}, lam_end={lam_end}")
        self.p_start, self.p_end, self.p_phase = float(p_start), float(p_end), tuple(p_phase)
        self.lam_start, self.lam_end, self.clip = float(lam_start), float(lam_end), float(clip)

    def _ratio(self, progress: float) -> float:
        start, end = self.p_phase
        if end <= start:
            return 1.0 if progress >= end else 0.0
        return min(1.0, max(0.0, (progress - start) / (end - start)))

    def p_at(self, progress: float) -> float:
        """The layers' norm ``p`` at ``progress`` in ``[0, 1]``."""
        ratio = self._ratio(progress)
        if ratio >= 1 and self.p_end >= 100:
            return math.inf
        return self.p_start * (self.p_end / self.p_start) ** ratio

    def lam_at(self, progress: float) -> float:
        """The cross-entropy weight at ``progress``."""
        return self.lam_start * (self.lam_end / self.lam_start) ** self._ratio(progress)

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        if not isinstance(net, LinfDistNet):
            raise UnsupportedLayerError(
                f"L∞-dist training needs an L∞-dist net (--model linf-dist-net), got {type(net).__name__}"
            )
        set_p(net, self.p_at(progress))
        logits = model(x)  # through the (possibly DDP) wrapper
        raw = logits / net.scale.abs()
        gaps = raw.gather(1, y[:, None]) - raw  # (B, K): raw_y - raw_j
        hinge = (1 - gaps / (2 * self.eps)).clamp(0, self.clip)
        hinge = hinge.scatter(1, y[:, None], 0.0).amax(dim=1).mean()
        return hinge + self.lam_at(progress) * F.cross_entropy(logits, y), logits
