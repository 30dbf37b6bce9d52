"""L∞-dist training objectives: the v2 net's hinge (Zhang et al. 2022) and the hybrid net's IBP loss (Zhang et al. 2021).

Both relax the norm ``p`` of every L∞-dist layer with one :class:`PSchedule`: exponentially from ``p_start``
to ``p_end`` over the ``p_phase`` fraction of training, then ``inf``, driven by ``progress``.

:class:`LinfDistObjective` (a :class:`~mistered.models.linf_dist.nets.LinfDistNet`): with ``raw`` the
network's 1-Lipschitz (L∞) outputs and ``eps`` the training radius, the hinge term is
``mean_b max_{j != y} clip(1 - (raw_y - raw_j) / (2 eps), 0, clip)``: zero exactly when the example is
certified at ``eps``. It is mixed with ``lam * cross_entropy(logits)``, ``lam`` decaying exponentially
from ``lam_start`` to ``lam_end``. Defaults are v2's MNIST recipe (eps_train 0.3 for a test eps of 0.1;
epochs 25..400 of 450 for p).

:class:`LinfDistHybridObjective` (a :class:`~mistered.models.linf_dist.hybrid.LinfDistHybrid`):
``kappa * CE(logits) + (1 - kappa) * CE(-m)`` with ``m`` the ``(B, K)`` interval lower bounds of the margins
``logit_y - logit_j`` over the feature box ``features -/+ eps`` (the worst-case logits of IBP training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models.linf_dist.layers import fast_p
from ..models.linf_dist.hybrid import LinfDistHybrid
from ..certify.lipschitz.linf_dist import hybrid_margin_bounds
from ..models.linf_dist.nets import LinfDistNet, set_p
from ..errors import InvalidInputError, UnsupportedLayerError
from ..validation import check_nonnegative
from .distributed import unwrap_model

__all__ = ["PSchedule", "LinfDistObjective", "LinfDistHybridObjective"]


def _check_phase(phase: tuple[float, float], name: str) -> tuple[float, float]:
    if len(phase) != 2 or not 0 <= phase[0] <= phase[1] <= 1:
        raise InvalidInputError(f"{name} must be fractions 0 <= start <= end <= 1, got {phase}")
    return float(phase[0]), float(phase[1])


def _phase_ratio(phase: tuple[float, float], progress: float) -> float:
    """How far ``progress`` is through ``phase``, in ``[0, 1]`` (a step at ``end`` for an empty phase)."""
    start, end = phase
    if end <= start:
        return 1.0 if progress >= end else 0.0
    return min(1.0, max(0.0, (progress - start) / (end - start)))


def _train_eps(eps: float) -> float:
    eps = check_nonnegative(eps, "L∞-dist training eps")
    if eps == 0:
        raise InvalidInputError("L∞-dist training eps must be positive (e.g. --eps 0.3)")
    return eps


def _relaxed_net(model: nn.Module, kind: type, schedule: "PSchedule", progress: float, refusal: str) -> nn.Module:
    """The network inside ``model`` (DDP unwrapped), refused with ``refusal`` (``{name}``: its class) unless a
    ``kind``, with every L∞-dist layer's ``p`` set to the schedule's at ``progress``, rounded to the integer the
    layer computes with multiplies only (:func:`~mistered.models.linf_dist.layers.fast_p`)."""
    net = unwrap_model(model)
    if not isinstance(net, kind):
        raise UnsupportedLayerError(refusal.format(name=type(net).__name__))
    set_p(net, fast_p(schedule.p_at(progress)))
    return net


@dataclass(frozen=True)
class PSchedule:
    """The p-relaxation: ``p`` rises exponentially from ``p_start`` to ``p_end`` over ``phase``, then ``inf``.

    ``p_end >= 100`` switches to ``inf`` at the end of the phase (as in both papers, which stop at 1000).
    """

    p_start: float = 8.0
    p_end: float = 1000.0
    phase: tuple[float, float] = (25 / 450, 400 / 450)

    def __post_init__(self) -> None:
        if not 1 <= self.p_start <= self.p_end:
            raise InvalidInputError(f"need 1 <= p_start <= p_end, got p_start={self.p_start}, p_end={self.p_end}")
        object.__setattr__(self, "phase", _check_phase(tuple(self.phase), "p_phase"))

    def ratio(self, progress: float) -> float:
        """How far ``progress`` in ``[0, 1]`` is through the phase, in ``[0, 1]``."""
        return _phase_ratio(self.phase, progress)

    def p_at(self, progress: float) -> float:
        """The layers' norm ``p`` at ``progress`` in ``[0, 1]``."""
        ratio = self.ratio(progress)
        if ratio >= 1 and self.p_end >= 100:
            return math.inf
        return self.p_start * (self.p_end / self.p_start) ** ratio


class LinfDistObjective:
    """``objective(model, x, y, progress) -> (loss, logits)`` for a :class:`~mistered.models.linf_dist.nets.LinfDistNet`.

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
        self.eps = _train_eps(eps)
        self.schedule = PSchedule(float(p_start), float(p_end), tuple(p_phase))
        if not 0 < lam_end <= lam_start:
            raise InvalidInputError(f"need 0 < lam_end <= lam_start, got lam_start={lam_start}, lam_end={lam_end}")
        self.lam_start, self.lam_end, self.clip = float(lam_start), float(lam_end), float(clip)

    def p_at(self, progress: float) -> float:
        """The layers' norm ``p`` at ``progress`` in ``[0, 1]``."""
        return self.schedule.p_at(progress)

    def lam_at(self, progress: float) -> float:
        """The cross-entropy weight at ``progress``."""
        return self.lam_start * (self.lam_end / self.lam_start) ** self.schedule.ratio(progress)

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        net = _relaxed_net(model, LinfDistNet, self.schedule, progress,
                           "L∞-dist training needs an L∞-dist net (--model linf-dist-net), got {name}; a hybrid net "
                           "(linf-dist-hybrid) trains with LinfDistHybridObjective (method 'linf-dist-hybrid')")
        logits = model(x)  # through the (possibly DDP) wrapper
        raw = logits / net.scale.abs()
        gaps = raw.gather(1, y[:, None]) - raw  # (B, K): raw_y - raw_j
        hinge = (1 - gaps / (2 * self.eps)).clamp(0, self.clip)
        hinge = hinge.scatter(1, y[:, None], 0.0).amax(dim=1).mean()
        return hinge + self.lam_at(progress) * F.cross_entropy(logits, y), logits


class LinfDistHybridObjective:
    """``objective(model, x, y, progress) -> (loss, logits)`` for a :class:`~mistered.models.linf_dist.hybrid.LinfDistHybrid`.

    The loss is ``kappa * CE(logits, y) + (1 - kappa) * CE(-m, y)``, ``m`` the ``(B, K)`` interval lower bounds
    of ``logit_y - logit_j`` over the feature box ``features -/+ eps_at(progress)``
    (:func:`~mistered.certify.lipschitz.linf_dist.hybrid_margin_bounds`; the worst-case logits of IBP training,
    Gowal et al. 2018). The radius rises linearly from 0 to ``eps`` over ``eps_phase``. At ``p = inf`` the
    box contains every feature vector of the input ball of radius ``eps`` (each feature is 1-Lipschitz in
    L∞), so the worst-case term is the certificate's own bound; during the p-relaxation (``||·||_p`` is
    1-Lipschitz for L_p, up to ``d^(1/p)`` times larger in L∞) it is only a training signal.

    Defaults are Zhang et al. 2021's L∞-dist Net+MLP recipe on MNIST: ``kappa`` 0.5 (constant), eps_train
    0.35 for a test radius of 0.3 (0.11 for 0.1 on Fashion-MNIST), eps ramped over epochs 0..50 of 400 and
    ``p`` from 8 to 1000 over epochs 50..350 of 400, then ``inf``.

    Args:
        eps: training L∞ radius (pixel units), > 0.
        kappa: weight of the clean cross-entropy, in ``[0, 1]``.
        eps_phase: ``(start, end)`` fractions of training over which the radius rises from 0 to ``eps``.
        p_start, p_end, p_phase: the p-relaxation (see :class:`PSchedule`).
    """

    def __init__(
        self,
        eps: float = 0.35,
        kappa: float = 0.5,
        eps_phase: tuple[float, float] = (0.0, 50 / 400),
        p_start: float = 8.0,
        p_end: float = 1000.0,
        p_phase: tuple[float, float] = (50 / 400, 350 / 400),
    ) -> None:
        self.eps = _train_eps(eps)
        if not 0 <= kappa <= 1:
            raise InvalidInputError(f"kappa (the clean cross-entropy's weight) must be in [0, 1], got {kappa}")
        self.kappa = float(kappa)
        self.eps_phase = _check_phase(tuple(eps_phase), "eps_phase")
        self.schedule = PSchedule(float(p_start), float(p_end), tuple(p_phase))

    def eps_at(self, progress: float) -> float:
        """The training radius at ``progress`` in ``[0, 1]``."""
        return self.eps * _phase_ratio(self.eps_phase, progress)

    def p_at(self, progress: float) -> float:
        """The layers' norm ``p`` at ``progress`` in ``[0, 1]``."""
        return self.schedule.p_at(progress)

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        net = _relaxed_net(model, LinfDistHybrid, self.schedule, progress,
                           "hybrid L∞-dist training needs a hybrid L∞-dist net (--model linf-dist-hybrid), got {name}")
        features: list[torch.Tensor] = []
        hook = net.backbone.register_forward_hook(lambda _module, _inputs, out: features.append(out))
        try:
            logits = model(x)  # through the (possibly DDP) wrapper; the hook keeps the backbone's output
        finally:
            hook.remove()
        worst = -hybrid_margin_bounds(net, features[0], y, self.eps_at(progress))
        return self.kappa * F.cross_entropy(logits, y) + (1 - self.kappa) * F.cross_entropy(worst, y), logits
