"""A hard perceptual budget over any threat: ``metric(x, x_adv) <= bound`` for every example.

:class:`PerceptualBudget` wraps a threat (one component or a whole chain). Its perturbation behaves
as the inner one, and :meth:`PerceptualPerturbation.project_` first projects the inner perturbation
into its own budget, then shrinks (with ``scale_``) only the examples that still exceed the
perceptual bound, to the largest scale ``t`` in ``[0, 1]`` found that satisfies it. ``t = 0`` is the
identity, so a feasible scale always exists; every accepted ``t`` has been evaluated, so after
``project_`` every example satisfies the bound (a hard constraint, not a penalty).

The search for ``t`` is a safeguarded interpolation search (a bisection that guesses better): per
example a bracket ``[lo, hi]`` (``lo`` feasible, ``hi`` infeasible) shrinks every round by one guess,
placed where ``d(t) ≈ c t^p`` reaches 95% of the bound (``p`` fitted through the bracket, or carried
over from the previous projection); an example stops once its feasible ``lo`` is within 10% of the
bound. (On a chain, ``d`` is far from a power law and not even monotone in ``t``: one guess per round
costs fewer evaluations than several, measured in ``benchmarks/metric_cost.py``.) Once at most eight
examples are left, where a round's fixed cost dominates, each gets three guesses (98%, 93%, 86%). The
metric is evaluated without gradient: once on the whole batch (at ``t = 1``), then only on the examples
still searched, through a copy of the inner perturbation restricted to them: in an attack on the ``combined``
preset about 3 evaluations per example and projection in all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from ..errors import InvalidInputError
from ..metrics import DISTANCES, FEATURE_METRICS, canonical_metric, check_bound, reference_distance
from .base import Perturbation, Threat
from .compose import Sequence, Union
from .naming import format_number

__all__ = ["PerceptualBudget", "PerceptualPerturbation", "bind_features"]

#: The search stops for an example once its feasible distance is at least ``(1 - ACCEPT_RTOL) * bound``.
ACCEPT_RTOL = 0.1
#: Accepted distances stay below ``(1 - SAFETY_RTOL) * bound``, so round-off when the metric is
#: re-evaluated in a different batch never pushes an example over the bound.
SAFETY_RTOL = 1e-5
#: Each round evaluates one guess per example, aimed at this fraction of the bound ...
_AIM = 0.95
#: ... except when at most ``_FEW`` examples are left: then one guess at each of these fractions.
_TAIL_AIMS = (0.98, 0.93, 0.86)
_FEW = 8
_MAX_ROUNDS = 6
_MIN_BRACKET = 1e-4
_SAFEGUARD = 0.02  # each guess stays this fraction of the bracket away from its ends
#: The exponent ``p`` of ``d(t) ≈ c t^p`` assumed before two points are known: norms grow linearly
#: with the scale, LPIPS and 1 - SSIM (squared feature / statistics differences) about quadratically.
#: Laidlaw's feature distance is a norm of feature differences: about linear.
_PRIOR_POWER = {"linf": 1.0, "l2": 1.0, "l1": 1.0, "lpips": 2.0, "lpips-alex": 2.0, "lpips-vgg": 2.0,
                "lpips-self": 1.0, "lpips-net": 1.0, "dssim": 2.0, "ms-dssim": 2.0}


@dataclass(frozen=True)
class PerceptualBudget(Threat):
    """``threat`` restricted to ``metric(x, x_adv) <= bound`` per example (a hard constraint).

    Args:
        threat: any threat (a component or a chain); a :class:`Union` is distributed over its
            alternatives by :meth:`alternatives`.
        metric: a distance of :mod:`mistered.metrics` (``DISTANCES``): ``"lpips"`` (AlexNet),
            ``"lpips-vgg"``, ``"lpips-self"``, ``"lpips-net"``, ``"dssim"`` (``1 - SSIM``), ``"ms-dssim"``,
            ``"linf"``, ``"l2"`` or ``"l1"``. ``"ssim"`` is the deprecated name of ``"dssim"``: it is
            translated, with a warning.
        bound: the largest allowed distance, in the metric's units, inside the metric's range.
        features: the network of ``"lpips-self"`` (the attacked classifier) or ``"lpips-net"`` (a feature
            extractor); see :func:`bind_features`. Not part of the threat's identity (equality, name).

    Example:
        >>> threat = PerceptualBudget(Additive("linf", 0.3), "dssim", 0.05)
        >>> x = torch.rand(4, 1, 28, 28)
        >>> delta = threat.perturbation(x).random_init_()
        >>> bool((delta.sizes()["dssim"] <= 0.05).all())
        True
    """

    threat: Threat
    metric: str = "lpips"
    bound: float = 0.1
    features: nn.Module | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.threat, Threat):
            raise InvalidInputError(f"PerceptualBudget wraps a Threat, got {type(self.threat).__name__}")
        if not isinstance(self.metric, str):
            raise InvalidInputError(f"a perceptual metric is a name (one of {', '.join(DISTANCES)}), got {self.metric!r}")
        object.__setattr__(self, "metric", canonical_metric(self.metric))
        object.__setattr__(self, "bound", check_bound(self.metric, self.bound))

    def perturbation(self, x: torch.Tensor) -> PerceptualPerturbation:
        return PerceptualPerturbation(self, x)

    def alternatives(self) -> tuple[Threat, ...]:
        inner = self.threat.alternatives()
        if len(inner) == 1 and inner[0] is self.threat:
            return (self,)
        return tuple(replace(self, threat=alternative) for alternative in inner)

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
        self._measure = reference_distance(threat.metric, x, threat.features)
        self._key = threat.metric if threat.metric not in self.inner.budgets() else f"{threat.metric}_total"
        # per example, the exponent p of d(t) ≈ c t^p fitted at the last projection: the next guess starts from it
        prior = torch.full((x.shape[0],), _PRIOR_POWER[threat.metric], device=x.device, dtype=x.dtype)
        self.register_buffer("power_estimate", prior, persistent=False)
        self._nested = any(isinstance(m, PerceptualPerturbation) for m in self.inner.modules())

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

        def evaluate(t: torch.Tensor, searched: torch.Tensor) -> torch.Tensor:
            """The metric ``(m,)`` of the violators ``rows[searched]`` scaled by ``t`` (both ``(m,)``)."""
            chosen = rows[searched]
            probe = self._probe(chosen).scale_(t)
            d = self._measure(probe(probe.reference), chosen)
            if not self._nested:
                return d
            # shrinking keeps plain budgets (norms, boxes, smoothness), not necessarily a nested perceptual one
            return torch.where(probe.within_budget(), d, torch.full_like(d, float("inf")))

        lo, power = self._search(evaluate, distances[rows], limit, self.power_estimate[rows])
        self.power_estimate[rows] = power.to(self.power_estimate)
        t = torch.ones(self.batch_size, device=self.reference.device, dtype=self.reference.dtype)
        t[rows] = lo.to(t)
        self.inner.scale_(t)  # the same parameters times the same t as evaluated: the same distances
        return self

    def _probe(self, rows: torch.Tensor) -> Perturbation:
        """A copy of the inner perturbation for the examples ``rows`` only (repeats allowed).

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

        ``evaluate(t, idx)`` returns the metric ``(m,)`` of the searched examples ``idx`` (``(m,)``, repeats
        allowed) at the scales ``t`` (``(m,)``). Keeps a bracket ``lo < hi`` with ``d(lo) <= limit < d(hi)``;
        ``lo = 0`` (the identity, ``d = 0``) is feasible by definition. One guess per example and round
        (several once few examples are left). Returns ``lo`` (every returned ``t > 0`` was evaluated
        feasible) and the exponent ``p`` of ``d(t) ≈ c t^p`` fitted through the final bracket
        (``prior_power`` where no fit exists), both like ``d_hi``.

        The bookkeeping runs in float64 NumPy on at most a batch of numbers: torch's per-operation cost
        would exceed the arithmetic many times over.
        """
        like = d_hi
        n = d_hi.shape[0]
        lo, d_lo = np.zeros(n), np.zeros(n)
        prior = prior_power.detach().double().cpu().numpy()
        if limit <= 0.0:  # only the identity is inside a zero bound
            return like.new_zeros(n), prior_power
        hi = np.ones(n)
        d_hi_ = np.nan_to_num(d_hi.detach().double().cpu().numpy(), nan=np.inf)
        active = np.ones(n, dtype=bool)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for _ in range(_MAX_ROUNDS):
                idx = np.flatnonzero(active)
                if idx.size == 0:
                    break
                aims = np.array([_AIM] if idx.size > _FEW else _TAIL_AIMS)  # few left: several guesses each
                guess = _guesses(lo[idx], d_lo[idx], hi[idx], d_hi_[idx], prior[idx], aims * limit)  # (m, k)
                owner = torch.as_tensor(np.repeat(idx, aims.size), device=like.device)
                d = evaluate(torch.as_tensor(guess.ravel(), dtype=like.dtype, device=like.device), owner)
                d = np.nan_to_num(d.detach().double().cpu().numpy(), nan=np.inf).reshape(guess.shape)
                feasible = d <= limit
                # the largest feasible guess raises lo; the smallest infeasible one above it lowers hi
                # (d need not be monotone in t: lo < hi holds either way)
                best = np.where(feasible, guess, -1.0).argmax(axis=1)
                rows = np.arange(idx.size)
                raise_lo = feasible[rows, best] & (guess[rows, best] > lo[idx])
                lo[idx] = np.where(raise_lo, guess[rows, best], lo[idx])
                d_lo[idx] = np.where(raise_lo, d[rows, best], d_lo[idx])
                above = np.where(~feasible & (guess > lo[idx, None]), guess, 2.0)
                worst = above.argmin(axis=1)
                lower_hi = above[rows, worst] < hi[idx]
                hi[idx] = np.where(lower_hi, guess[rows, worst], hi[idx])
                d_hi_[idx] = np.where(lower_hi, d[rows, worst], d_hi_[idx])
                active[idx] = (d_lo[idx] < limit * (1.0 - ACCEPT_RTOL)) & (hi[idx] - lo[idx] >= _MIN_BRACKET)
            fitted = (lo > 0) & (d_lo > 0) & np.isfinite(d_hi_)
            power = np.where(fitted, _fit_power(lo, d_lo, hi, d_hi_), prior)
        return torch.as_tensor(lo, dtype=like.dtype, device=like.device), torch.as_tensor(power).to(prior_power)


def _guesses(lo: np.ndarray, d_lo: np.ndarray, hi: np.ndarray, d_hi: np.ndarray, prior: np.ndarray,
             targets: np.ndarray) -> np.ndarray:
    """``(m, k)`` scales inside each bracket ``(lo, hi)`` where ``d(t) ≈ c t^p`` would reach each of ``targets`` ``(k,)``.

    ``p`` is fitted through the bracket's ends when both are positive, else ``prior`` through the origin
    and ``hi``; every guess is safeguarded strictly inside the bracket (by :data:`_SAFEGUARD` of its width).
    """
    a, b, da, db = lo[:, None], hi[:, None], d_lo[:, None], d_hi[:, None]
    width = b - a
    from_origin = b * (targets / db) ** (1.0 / prior[:, None])
    fitted = a * (targets / np.maximum(da, 1e-30)) ** (1.0 / _fit_power(a, da, b, db))
    guess = np.where((a > 0) & (da > 0) & np.isfinite(db), fitted, from_origin)
    guess = np.where(np.isfinite(guess), guess, a + width / 2)
    return np.minimum(np.maximum(guess, a + _SAFEGUARD * width), b - _SAFEGUARD * width)


def _fit_power(t0: np.ndarray, d0: np.ndarray, t1: np.ndarray, d1: np.ndarray) -> np.ndarray:
    """The exponent ``p`` of ``d = c t^p`` through ``(t0, d0)`` and ``(t1, d1)``, clamped to ``[0.5, 8]``."""
    ratio = np.log(d1 / np.maximum(d0, 1e-30)) / np.log(t1 / np.maximum(t0, 1e-30))
    return np.clip(np.nan_to_num(ratio, nan=1.0), 0.5, 8.0)


def bind_features(threat: Threat, model: nn.Module | None = None, net: nn.Module | None = None) -> Threat:
    """``threat`` with the networks of its ``lpips-self`` (``model``) and ``lpips-net`` (``net``) budgets set.

    Walks sequences, unions and nested budgets; returns an equal threat (the network is not part of a
    threat's identity). An attack calls it with the model it attacks; the CLI passes ``--lpips-net``.

    Raises:
        InvalidInputError: a budget needs a network that was not given.

    Example:
        >>> classifier = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
        >>> bound = bind_features(parse_threat("linf(0.3)|lpips-self<=0.5"), model=classifier)
        >>> bound.features is classifier
        True
    """
    if isinstance(threat, PerceptualBudget):
        inner = bind_features(threat.threat, model, net)
        if threat.metric not in FEATURE_METRICS:
            return replace(threat, threat=inner)
        network = model if threat.metric == "lpips-self" else net
        network = threat.features if network is None else network  # already bound: kept
        if network is None:
            what = "the model (bind_features(threat, model=...))" if threat.metric == "lpips-self" else \
                "a feature extractor (--lpips-net file.py:Name, or bind_features(threat, net=...))"
            raise InvalidInputError(f"the budget {threat.metric}<={format_number(threat.bound)} needs {what}")
        return replace(threat, threat=inner, features=network)
    if isinstance(threat, Sequence):
        return Sequence(tuple(bind_features(component, model, net) for component in threat.components))
    if isinstance(threat, Union):
        return Union(tuple(bind_features(choice, model, net) for choice in threat.choices))
    return threat
