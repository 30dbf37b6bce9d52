"""A hard perceptual budget over any threat: ``metric(x, x_adv) <= bound`` for every example.

:class:`PerceptualBudget` wraps a threat (one component or a whole chain). Its perturbation behaves
as the inner one, and :meth:`PerceptualPerturbation.project_` first projects the inner perturbation
into its own budget, then shrinks (with ``scale_``) only the examples that still exceed the
perceptual bound, to the largest scale ``t`` in ``[0, 1]`` found that satisfies it. ``t = 0`` is the
identity, so a feasible scale always exists; every accepted ``t`` has been evaluated, so after
``project_`` every example satisfies the bound (a hard constraint, not a penalty).

The search for ``t`` is a safeguarded interpolation search (a bisection that guesses better): per
example a bracket ``[lo, hi]`` (``lo`` feasible, ``hi`` infeasible) shrinks every round; each round
evaluates three guesses per example in one batched call, placed where ``d(t) ≈ c t^p`` (``p``
fitted through the bracket, or carried over from the previous projection) reaches 98%, 93% and
86% of the bound; an example stops once its feasible ``lo`` is within 10% of the bound. The metric is
evaluated without gradient: once on the whole batch (at ``t = 1``), then only on the violators,
through a copy of the inner perturbation restricted to them; typically one or two rounds.
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
ACCEPT_RTOL = 0.1
#: Accepted distances stay below ``(1 - SAFETY_RTOL) * bound``, so round-off when the metric is
#: re-evaluated in a different batch never pushes an example over the bound.
SAFETY_RTOL = 1e-5
#: Each round evaluates, per example, the guesses aiming at these fractions of the bound.
_AIMS = (0.98, 0.93, 0.86)
_MAX_ROUNDS = 4
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
        n, k = rows.shape[0], len(_AIMS)
        probe = self._probe(rows.repeat(k))  # copy j of violator i is probe example j * n + i
        saved = probe.snapshot()

        def evaluate(t_rows: torch.Tensor, searched: torch.Tensor) -> torch.Tensor:
            """The metric ``(m, k)`` of violators ``rows[searched]`` (``(m,)``) scaled by ``t_rows`` (``(m, k)``)."""
            slots = (torch.arange(k, device=searched.device) * n).view(1, k) + searched.view(-1, 1)  # (m, k)
            t = torch.ones(n * k, device=t_rows.device, dtype=t_rows.dtype)
            t[slots.flatten()] = t_rows.flatten()
            probe.restore_(saved).scale_(t)
            images = probe(probe.reference)[slots.flatten()]
            d = self._measure(images, rows[searched].repeat_interleave(k)).view(-1, k)
            # shrinking keeps plain budgets, but not necessarily a nested perceptual one: check them all
            inside = probe.within_budget()[slots.flatten()].view(-1, k)
            return torch.where(inside, d, torch.full_like(d, float("inf")))

        lo, power = self._search(evaluate, distances[rows], limit, self.power_estimate[rows])
        self.power_estimate[rows] = power.to(self.power_estimate)
        t = torch.ones(self.batch_size, device=self.reference.device, dtype=self.reference.dtype)
        t[rows] = lo.to(t)
        self.inner.scale_(t)  # the same parameters times the same t as evaluated: the same distances
        return self

    def _probe(self, rows: torch.Tensor) -> Perturbation:
        """A copy of the inner perturbation for the examples ``rows`` only.

        Relies on the perturbation contract: all per-example state is in parameters of shape ``(B, ...)``.
        """
        probe = self.threat.threat.perturbation(self.reference[rows])
        for mine, theirs in zip(self.inner.parameters(), probe.parameters()):
            theirs.copy_(mine[rows])
        return probe

    @staticmethod
    def _search(
        evaluate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        d_hi: torch.Tensor,
        limit: float,
        prior_power: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per searched example ``i``, the largest scale found with ``d(t) <= limit``, given ``d(1) = d_hi[i] > limit``.

        ``evaluate(t, idx)`` returns the metric ``(m, k)`` of the searched examples ``idx`` (``(m,)``)
        at the scales ``t`` (``(m, k)``). Keeps a bracket ``lo < hi`` with ``d(lo) <= limit < d(hi)``;
        ``lo = 0`` (the identity, ``d = 0``) is feasible by definition. Returns ``lo`` (every returned
        ``t > 0`` was evaluated feasible) and the exponent ``p`` of ``d(t) ≈ c t^p`` fitted through the
        final bracket (``prior_power`` where no fit exists).
        """
        n = d_hi.shape[0]
        lo = torch.zeros(n, dtype=d_hi.dtype, device=d_hi.device)
        if limit <= 0.0:  # only the identity is inside a zero bound
            return lo, prior_power
        hi = torch.ones_like(lo)
        d_lo = torch.zeros_like(lo)
        d_hi = torch.nan_to_num(d_hi.clone(), nan=float("inf"))
        aims = torch.tensor(_AIMS, dtype=lo.dtype, device=lo.device).view(1, -1) * limit  # (1, k)
        active = torch.ones(n, dtype=torch.bool, device=lo.device)
        for _ in range(_MAX_ROUNDS):
            if not active.any():
                break
            idx = active.nonzero().squeeze(1)
            a, b, da, db = (v[idx].view(-1, 1) for v in (lo, hi, d_lo, d_hi))
            width = b - a
            # d(t) ≈ c t^p: p fitted through the bracket's ends when both are positive, else the prior p
            # through the origin and hi; every guess safeguarded strictly inside the bracket
            from_origin = b * (aims / db) ** (1.0 / prior_power[idx].view(-1, 1))
            fitted = a * (aims / da.clamp_min(1e-30)) ** (1.0 / _fit_power(a, da, b, db))
            guess = torch.where((a > 0) & (da > 0) & torch.isfinite(db), fitted, from_origin)
            guess = torch.where(torch.isfinite(guess), guess, a + width / 2)
            guess = torch.minimum(torch.maximum(guess, a + _SAFEGUARD * width), b - _SAFEGUARD * width)
            d = torch.nan_to_num(evaluate(guess, idx), nan=float("inf"))  # (m, k)
            feasible = d <= limit
            best = torch.where(feasible, guess, torch.full_like(guess, -1.0)).max(dim=1)
            improved = best.values > a.squeeze(1)
            new_lo = torch.where(improved, best.values, a.squeeze(1))
            new_d_lo = torch.where(improved, d.gather(1, best.indices.view(-1, 1)).squeeze(1), da.squeeze(1))
            # the smallest infeasible guess above the new lo tightens hi (d need not be monotone)
            above = ~feasible & (guess > new_lo.view(-1, 1))
            worst = torch.where(above, guess, torch.full_like(guess, 2.0)).min(dim=1)
            tighter = worst.values < b.squeeze(1)
            hi[idx] = torch.where(tighter, worst.values, b.squeeze(1))
            d_hi[idx] = torch.where(tighter, d.gather(1, worst.indices.view(-1, 1)).squeeze(1), db.squeeze(1))
            lo[idx], d_lo[idx] = new_lo, new_d_lo
            done = (new_d_lo >= limit * (1.0 - ACCEPT_RTOL)) | (hi[idx] - new_lo < _MIN_BRACKET)
            active[idx] = ~done
        fitted = (lo > 0) & (d_lo > 0) & torch.isfinite(d_hi)
        return lo, torch.where(fitted, _fit_power(lo, d_lo, hi, d_hi), prior_power)


def _fit_power(t0: torch.Tensor, d0: torch.Tensor, t1: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
    """The exponent ``p`` of ``d = c t^p`` through ``(t0, d0)`` and ``(t1, d1)``, clamped to ``[0.5, 8]``."""
    ratio = torch.log(d1 / d0.clamp_min(1e-30)) / torch.log(t1 / t0.clamp_min(1e-30))
    return torch.nan_to_num(ratio, nan=1.0).clamp(0.5, 8.0)
