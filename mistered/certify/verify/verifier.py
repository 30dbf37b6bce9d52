"""``verify(model, property, timeout)``: falsification, incomplete bounds, then the complete step, within one deadline.

The steps, each started only while time remains (and the attack checks the deadline between gradient steps):

1. **attack** (:mod:`.falsify`): ``first_rounds`` rounds of PGD, within ``first_share`` of the time limit; a
   re-checked counterexample (:mod:`.recheck`) answers ``sat``;
2. **bounds** (:mod:`.incomplete`): CROWN, then α-CROWN where CROWN left a conjunction unproved (skipped when less
   than ``10x`` CROWN's time remains); every conjunction of every region proved answers ``unsat``;
3. **complete step** (:mod:`.complete`, the ``branch_and_bound`` argument): given the open regions and the rest
   of the time; ``None`` skips it;
4. **attack** again, fresh random starts each round, until the deadline (or ``attack_rounds`` more rounds).

``unsat`` only when proved; ``sat`` only with a checked counterexample; otherwise ``timeout`` when the deadline
ended the search and ``unknown`` when every step finished before it. Any internal disagreement — a lower bound
above the violation at a point the attack evaluated — raises :class:`~mistered.errors.UnsoundResultError`
rather than answering. The result carries the best bounds reached whatever the status.

Example:
    >>> result = verify(load_model("net.onnx"), read_vnnlib("prop.vnnlib"), timeout=60)
    >>> result.status, result.seconds
    ('unsat', 1.2)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...errors import InvalidInputError, UnsoundResultError
from ..bounds import AlphaOptions
from .complete import CompleteStep, OpenRegion
from .deadline import Deadline
from .falsify import AttackOptions, Falsifier
from .incomplete import BOUND_METHODS, violation_lower_bounds
from .network import Network, prepare_network
from .property import Property
from .recheck import Counterexample, CounterexampleChecker

__all__ = ["STATUSES", "VerifyOptions", "VerificationResult", "verify"]

#: The answers, as VNN-COMP writes them.
STATUSES = ("sat", "unsat", "timeout", "unknown")

#: A lower bound may exceed a violation the attack evaluated (float32 forward passes) by this much, relative.
CROSSING_TOLERANCE = 1e-4


@dataclass(frozen=True)
class VerifyOptions:
    """Settings of :func:`verify`.

    Attributes:
        attack: the attack's settings (each round).
        first_rounds: attack rounds before the bounds; first_share: the most of the time limit they may take.
        attack_rounds: attack rounds after the bounds and the complete step (``None``: until the deadline).
        methods: the bound methods, in order (a subset of "crown", "alpha-crown").
        alpha: α-CROWN's settings.
        bound_dtype: the precision of the bounds (float64: sound for the real-valued network up to ~1e-15).
    """

    attack: AttackOptions = AttackOptions()
    first_rounds: int = 1
    first_share: float = 0.25
    attack_rounds: int | None = None
    methods: tuple[str, ...] = BOUND_METHODS
    alpha: AlphaOptions = AlphaOptions()
    bound_dtype: torch.dtype = torch.float64

    def __post_init__(self) -> None:
        if self.first_rounds < 0 or (self.attack_rounds is not None and self.attack_rounds < 0):
            raise InvalidInputError("attack rounds must be non-negative integers")
        if not 0 < self.first_share <= 1:
            raise InvalidInputError(f"first_share must be in (0, 1], got {self.first_share}")
        unknown = [m for m in self.methods if m not in BOUND_METHODS]
        if unknown:
            raise InvalidInputError(f"unknown bound method(s) {unknown}; use {', '.join(BOUND_METHODS)}")


def _plain(values: torch.Tensor) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values.tolist()]


def _crosses(lower: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Where a lower bound exceeds a violation evaluated at a point (beyond float32 rounding): a contradiction."""
    return torch.isfinite(value) & (lower > value + CROSSING_TOLERANCE * (1 + value.abs()))


@dataclass
class VerificationResult:
    """The answer for one property.

    Attributes:
        status: one of :data:`STATUSES`.
        counterexample: the checked counterexample (``sat`` only), else ``None``.
        bounds: per region, ``(K,)`` float64: the best lower bound of each conjunction's violation (``> 0``:
            proved; ``-inf`` where none was computed).
        attack_values: per region, ``(K,)`` float64: the least violation the attack reached (``inf``: none).
        seconds: wall-clock time of the whole instance.
        steps: what each step did: ``{"step", "seconds", ...}``.
        notes: things the user must know (e.g. why no bounds were computed).
    """

    status: str
    counterexample: Counterexample | None
    bounds: list[torch.Tensor]
    attack_values: list[torch.Tensor]
    seconds: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def lower_bound(self) -> float:
        """The least lower bound over every conjunction of every region (``> 0`` iff proved; ``-inf`` if unknown)."""
        return min(float(b.min()) for b in self.bounds)

    @property
    def upper_bound(self) -> float:
        """The least violation the attack reached (``<= 0`` with a counterexample; ``inf`` if none)."""
        return min(float(v.min()) for v in self.attack_values)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (every number finite: unknown bounds are ``null``)."""
        low, high = self.lower_bound, self.upper_bound
        return {
            "status": self.status, "seconds": self.seconds,
            "lower_bound": low if math.isfinite(low) else None, "upper_bound": high if math.isfinite(high) else None,
            "bounds": [_plain(b) for b in self.bounds], "attack_values": [_plain(v) for v in self.attack_values],
            "counterexample": self.counterexample.to_json() if self.counterexample is not None else None,
            "steps": self.steps, "notes": self.notes,
        }


class _Search:
    """The state of one :func:`verify` call."""

    def __init__(self, net: Network, prop: Property, options: VerifyOptions, deadline: Deadline, seed: int) -> None:
        self.net, self.prop, self.options, self.deadline = net, prop, options, deadline
        self.falsifier = Falsifier(net, prop, options.attack, seed)
        self.checker = CounterexampleChecker(net, self.falsifier.box_gap)
        self.bounds = [torch.full((len(r.disjuncts),), -math.inf, dtype=torch.float64) for r in prop.regions]
        self.steps: list[dict[str, Any]] = []
        self.graph64 = net.graph.to(dtype=options.bound_dtype) if net.graph is not None else None

    def proved(self) -> bool:
        return all(bool((b > 0).all()) for b in self.bounds)

    def check_crossing(self) -> None:
        """Raise if a lower bound exceeds a violation the attack evaluated (beyond float32 rounding)."""
        for r, (low, high) in enumerate(zip(self.bounds, self.falsifier.best_value)):
            crossed = _crosses(low, high)
            if bool(crossed.any()):
                k = int(crossed.nonzero()[0])
                raise UnsoundResultError(f"region {r}, conjunction {k}: the lower bound {float(low[k]):.6g} exceeds "
                                         f"the violation {float(high[k]):.6g} at a point of the box; no answer given")

    def candidates(self, found: list[tuple[int, torch.Tensor]]) -> Counterexample | None:
        for region, x in found:
            cex = self.checker.check(self.prop, region, x)
            if cex is not None:
                k = cex.conjunction
                if cex.violation is not None and bool(_crosses(self.bounds[region][k], torch.tensor(cex.violation))):
                    raise UnsoundResultError(f"region {region}, conjunction {cex.conjunction} was proved, yet a "
                                             "checked counterexample satisfies it; no answer given")
                return cex
        return None

    def attack(self, rounds: int | None, deadline: Deadline) -> Counterexample | None:
        started, done = time.perf_counter(), 0
        cex = None
        while (rounds is None or done < rounds) and not deadline.expired() and cex is None:
            cex = self.candidates(self.falsifier.run_round(deadline))
            done += 1
        self.check_crossing()
        self.steps.append({"step": "attack", "seconds": time.perf_counter() - started, "rounds": done,
                           "found": cex is not None})
        return cex

    def bound(self) -> None:
        crown_seconds = None
        for method in self.options.methods:
            if self.proved() or self.deadline.expired() or self.graph64 is None:
                break
            if crown_seconds is not None and self.deadline.remaining() < 10 * crown_seconds:
                self.steps.append({"step": method, "seconds": 0.0, "skipped": "too little time left"})
                continue
            started = time.perf_counter()
            with torch.no_grad() if method == "crown" else torch.enable_grad():
                lower = violation_lower_bounds(self.graph64, list(self.prop.regions), method, self.options.alpha)
            self.bounds = [torch.maximum(b, new) for b, new in zip(self.bounds, lower)]
            seconds = time.perf_counter() - started
            crown_seconds = seconds if method == "crown" else crown_seconds
            self.check_crossing()
            least = min(float(b.min()) for b in self.bounds)
            self.steps.append({"step": method, "seconds": seconds, "proved": self.proved(),
                               "lower_bound": least if math.isfinite(least) else None})

    def complete(self, step: CompleteStep) -> Counterexample | None:
        open_regions = [OpenRegion(r, region, tuple((self.bounds[r] <= 0).nonzero().flatten().tolist()),
                                   self.bounds[r].clone(), self.falsifier.best_x[r].clone(),
                                   self.falsifier.best_value[r].clone())
                        for r, region in enumerate(self.prop.regions) if bool((self.bounds[r] <= 0).any())]
        started = time.perf_counter()
        outcome = step(self.net, self.prop, open_regions, self.deadline)
        for region, lower in zip(open_regions, outcome.lower):
            self.bounds[region.index] = torch.maximum(self.bounds[region.index], lower.to(torch.float64).cpu())
        self.check_crossing()
        cex = self.candidates(outcome.candidates)
        self.steps.append({"step": step.name, "seconds": time.perf_counter() - started, "proved": self.proved(),
                           "found": cex is not None})
        return cex


def _network(model: nn.Module | Network, prop: Property, input_shape: tuple[int, ...] | None) -> Network:
    net = model if isinstance(model, Network) else prepare_network(model, input_shape)
    if net.num_inputs != prop.num_inputs or net.num_outputs != prop.num_outputs:
        raise InvalidInputError(f"property {prop.name!r} has {prop.num_inputs} inputs and {prop.num_outputs} outputs; "
                                f"the model takes {net.num_inputs} inputs {net.input_shape} and gives "
                                f"{net.num_outputs} outputs")
    return net


def verify(model: nn.Module | Network, prop: Property, timeout: float, *, input_shape: tuple[int, ...] | None = None,
           options: VerifyOptions = VerifyOptions(), branch_and_bound: CompleteStep | None = None,
           seed: int = 0) -> VerificationResult:
    """Decide whether ``prop`` is violated by ``model`` within ``timeout`` seconds (see the module docstring).

    Args:
        model: a loaded model (:func:`mistered.models.load_model`) or a prepared :class:`~.network.Network`.
        prop: the property (:func:`~.vnnlib.read_vnnlib`, :func:`~.property.robustness_property`).
        timeout: seconds for the whole instance (preparing the network included).
        input_shape: the model's per-example input shape (ONNX models bring theirs).
        options: the steps' settings; branch_and_bound: the complete step (``None``: none).
        seed: the attack's random starts.

    Raises:
        InvalidInputError: the property does not fit the model; UnsoundResultError: an internal disagreement.
    """
    deadline = Deadline(timeout)
    net = _network(model, prop, input_shape)
    search = _Search(net, prop, options, deadline, seed)
    notes = [f"no bounds (the model cannot be traced): {net.graph_error}"] if net.graph is None else []
    cex = search.attack(options.first_rounds, deadline.within(options.first_share * timeout))
    if cex is None:
        search.bound()
    if cex is None and not search.proved() and branch_and_bound is not None and not deadline.expired():
        cex = search.complete(branch_and_bound)
    if cex is None and not search.proved():
        cex = search.attack(options.attack_rounds, deadline)
    status = "sat" if cex is not None else "unsat" if search.proved() else \
        "timeout" if deadline.expired() else "unknown"
    return VerificationResult(status, cex, search.bounds, list(search.falsifier.best_value), deadline.elapsed(),
                              search.steps, notes)
