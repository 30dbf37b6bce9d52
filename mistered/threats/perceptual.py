"""A hard perceptual budget over any threat: ``metric(x, x_adv) <= bound`` for every example.

:class:`PerceptualBudget` wraps a threat (one component or a whole chain). Its perturbation behaves
as the inner one, and :meth:`PerceptualPerturbation.project_` first projects the inner perturbation
into its own budget, then shrinks (with ``scale_``) only the examples that still exceed the
perceptual bound, to the largest scale ``t`` in ``[0, 1]`` found that satisfies it. ``t = 0`` is the
identity, so a feasible scale always exists; every accepted ``t`` has been evaluated, so after
``project_`` every example satisfies the bound (a hard constraint, not a penalty).

The search for ``t`` is a safeguarded interpolation search (bisection that guesses better): the
bracket ``[lo, hi]`` (``lo`` feasible, ``hi`` infeasible) shrinks at every evaluation, each guess
interpolates the metric as ``d(t) ∝ t^p`` through the bracket, and an example stops as soon as its
feasible ``lo`` is within 2% of the bound. The metric is evaluated without gradient, once on the
whole batch (at ``t = 1``) and then only on the examples still searching: typically 1-3 times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError
from ..metrics import METRICS, reference_distance
from ..validation import check_nonnegative
from .base import Perturbation, Threat
from .naming import format_number

__all__ = ["PerceptualBudget", "PerceptualPerturbation"]

#: The search stops for an example once its feasible distance is at least ``(1 - ACCEPT_RTOL) * bound``.
ACCEPT_RTOL = 0.05
#: Accepted distances stay below ``(1 - SAFETY_RTOL) * bound``, so round-off when the metric is
#: re-evaluated in a different batch never pushes an example over the bound.
SAFETY_RTOL = 1e-5
_MAX_EVALUATIONS = 8
_MIN_BRACKET = 1e-4
_SAFEGUARD = 0.02  # each guess stays this fraction of the bracket away from its ends
#: The exponent ``p`` of ``d(t) ≈ c t^p`` assumed before two points are known: norms grow linearly
#: with the scale, LPIPS and 1 - SSIM (squared feature / statistics differences) about quadratically.
_PRIOR_POWER = {"linf": 1.0, "l2": 1.0, "l1": 1.0, "lpips": 2.0, "ssim": 2.0}


@dataclass(frozen=True)
class PerceptualBudget(Threat):
    """``threat`` restricted to ``metric(x, x_adv) <= bound`` per example (a hard constraint).

    Args:
        threat: any threat (a component or a chain); a :class:`Union` is distributed over its
            alternatives by :meth:`alternatives`.
        metric: a distance of :mod:`mistered.metrics`: ``"lpips"``, ``"ssim"`` (``1 - SSIM``),
            ``"linf"``, ``"l2"`` or ``"l1"``.
        bound: the largest allowed distance, in the metric's units.

    Example:
        >>> threat = PerceptualBudget(Additive("linf", 0.3), "ssim", 0.05)
        >>> x = torch.rand(4, 1, 28, 28)
        >>> delta = threat.perturbation(x).random_init_()
        >>> bool((delta.sizes()["ssim"] <= 0.05).all())
        True
    """

    threat: Threat
    metric: str = "lpips"
    bound: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.threat, Threat):
            raise InvalidInputError(f"PerceptualBudget wraps a Threat, got {type(self.threat).__name__}")
        if self.metric not in METRICS:
            raise InvalidInputError(f"unknown perceptual metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        check_nonnegative(self.bound, f"{self.metric} bound")

    def perturbation(self, x: torch.Tensor) -> PerceptualPerturbation:
        return PerceptualPerturbation(self, x)

    def alternatives(self) -> tuple[Threat, ...]:
        inner = self.threat.alternatives()
        if len(inner) == 1 and inner[0] is self.threat:
            return (self,)
        return tuple(PerceptualBudget(alternative, self.metric, self.bound) for alternative in inner)

    @property
    def name(self) -> str:
        inner = self.threat.name
        if len(self.threat.alternatives()) > 1:  # "a||b|m<=v" would bound only b: parenthesise a union
            inner = f"({inner})"
        return f"{inner}|{self.metric}<={format_number(self.bound)}"


class PerceptualPerturbation(Perturbation):
    """The inner threat's perturbation (as ``inner``) plus the perceptual bound, enforced by :meth:`project_`.

    Its parameters are exactly the inner perturbation's; the metric network is not a submodule.
    """

    threat: PerceptualBudget

    def __init__(self, threat: PerceptualBudget, x: torch.Tensor) -> None:
        super().__init__(threat, x)
        self.inner = threat.threat.perturbation(x)
        # a plain function, not a submodule: the metric's frozen weights are not perturbation parameters
        self._measure = reference_distance(threat.metric, x)
        self._key = threat.metric if threat.metric not in self.inner.budgets() else f"{threat.metric}_total"
        # per example, the exponent p of d(t) ≈ c t^p fitted at the last projection: the next guess starts from it
        prior = torch.full((x.shape[0],), _PRIOR_POWER[threat.metric], device=x.device, dtype=x.dtype)
        self.register_buffer("power_estimate", prior, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    @torch.no_grad()
    def perceptual_size(self) -> torch.Tensor:
        """``metric(reference, forward(reference))``, shape ``(B,)``, in the metric's units."""
        return self._measure(self.inner(self.reference), None)

    def sizes(self) -> dict[str, torch.Tensor]:
        return {**self.inner.sizes(), self._key: self.perceptual_size()}

    def budgets(self) -> dict[str, float]:
        return {**self.inner.budgets(), self._key: self.threat.bound}

    def scale_(self, t: torch.Tensor) -> PerceptualPerturbation:
        self.inner.scale_(t)
        return self

    def step_(self, lr: float) -> PerceptualPerturbation:
        self.inner.step_(lr)
        return self

    def random_init_(self, generator: torch.Generator | None = None) -> PerceptualPerturbation:
        self.inner.random_init_(generator)
        return self.project_()

    @torch.no_grad()
    def project_(self) -> PerceptualPerturbation:
        """Project the inner perturbation, then shrink the examples over the perceptual bound until inside it."""
        self.inner.project_()
        limit = self.threat.bound * (1.0 - SAFETY_RTOL)
        distances = self.perceptual_size()
        violating = ~(distances <= limit)  # NaN counts as a violation
        if not violating.any():
            return self
        rows = violating.nonzero().squeeze(1)
        saved = self.snapshot()

        def evaluate(t_rows: torch.Tensor, searched: torch.Tensor) -> torch.Tensor:
            """The metric of violators ``rows[searched]`` scaled by ``t_rows`` (others at ``t = 1``)."""
            which = rows[searched]
            self._set_scale(saved, violating, which, t_rows)
            return self._measure(self.inner(self.reference)[which], which)

        lo, power = self._search(evaluate, distances[rows], limit, self.power_estimate[rows])
        self.power_estimate[rows] = power.to(self.power_estimate)
        self._set_scale(saved, violating, rows, lo)
        return self

    def _set_scale(self, saved: list[torch.Tensor], violating: torch.Tensor, rows: torch.Tensor, t_rows: torch.Tensor) -> None:
        """Restore the violating examples from ``saved`` and scale example ``rows[i]`` by ``t_rows[i]``."""
        t = torch.ones(self.batch_size, device=self.reference.device, dtype=self.reference.dtype)
        t[rows] = t_rows.to(t)
        self.restore_(saved, mask=violating)
        self.inner.scale_(t)

    @staticmethod
    def _search(
        evaluate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        d_hi: torch.Tensor,
        limit: float,
        prior_power: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per searched example ``i``, the largest scale found with ``d(t) <= limit``, given ``d(1) = d_hi[i] > limit``.

        ``evaluate(t, idx)`` returns the metric of the searched examples ``idx`` at scales ``t``.
        Keeps a bracket ``lo < hi`` with ``d(lo) <= limit < d(hi)``; ``lo = 0`` (the identity, ``d = 0``)
        is feasible by definition. Returns ``lo`` (every returned ``t > 0`` was evaluated feasible) and
        the exponent ``p`` of ``d(t) ≈ c t^p`` fitted through the final bracket (``prior_power`` where
        no fit exists).
        """
        n = d_hi.shape[0]
        lo = torch.zeros(n, dtype=d_hi.dtype, device=d_hi.device)
        if limit <= 0.0:  # only the identity is inside a zero bound
            return lo, prior_power
        hi = torch.ones_like(lo)
        d_lo = torch.zeros_like(lo)
        d_hi = torch.nan_to_num(d_hi.clone(), nan=float("inf"))
        aim = limit * (1.0 - 0.7 * ACCEPT_RTOL)  # low in the accepted band: d(t) is noisy for warps
        active = torch.ones(n, dtype=torch.bool, device=lo.device)
        for _ in range(_MAX_EVALUATIONS - 1):
            if not active.any():
                break
            idx = active.nonzero().squeeze(1)
            a, b, da, db = lo[idx], hi[idx], d_lo[idx], d_hi[idx]
            width = b - a
            # guess from d(t) ∝ t^p: p fitted through the bracket's ends when both are positive, else the
            # prior p through the origin and hi; then safeguarded strictly inside the bracket
            from_origin = b * (aim / db) ** (1.0 / prior_power[idx])
            both_positive = (a > 0) & (da > 0) & torch.isfinite(db)
            fitted = a * (aim / da.clamp_min(1e-30)) ** (1.0 / _fit_power(a, da, b, db))
            guess = torch.where(both_positive, fitted, from_origin)
            guess = torch.where(torch.isfinite(guess), guess, a + width / 2)
            guess = torch.minimum(torch.maximum(guess, a + _SAFEGUARD * width), b - _SAFEGUARD * width)
            d = torch.nan_to_num(evaluate(guess, idx), nan=float("inf"))
            feasible = d <= limit
            lo[idx] = torch.where(feasible, guess, a)
            d_lo[idx] = torch.where(feasible, d, da)
            hi[idx] = torch.where(feasible, b, guess)
            d_hi[idx] = torch.where(feasible, db, d)
            done = (d_lo[idx] >= limit * (1.0 - ACCEPT_RTOL)) | (hi[idx] - lo[idx] < _MIN_BRACKET)
            active[idx] = ~done
        fitted = (lo > 0) & (d_lo > 0) & torch.isfinite(d_hi)
        return lo, torch.where(fitted, _fit_power(lo, d_lo, hi, d_hi), prior_power)


def _fit_power(t0: torch.Tensor, d0: torch.Tensor, t1: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
    """The exponent ``p`` of ``d = c t^p`` through ``(t0, d0)`` and ``(t1, d1)``, clamped to ``[0.5, 8]``."""
    ratio = torch.log(d1 / d0.clamp_min(1e-30)) / torch.log(t1 / t0.clamp_min(1e-30))
    return torch.nan_to_num(ratio, nan=1.0).clamp(0.5, 8.0)
