"""``evaluate``: empirical vs certified robustness of one model in one report (see the package docstring)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks.result import AttackResult, measure_distances
from ..data.labeled import LabeledImages
from ..device import resolve_device
from ..errors import InvalidInputError
from ..io import atomic_torch_save
from ..results import fraction, make_record, write_record
from .certified import exact_accuracy, run_certifier
from .empirical import AUTOATTACK_MODES, PointOutcome, build_ensemble, predict, run_point
from .plan import CERTIFIERS, CertifierSpec, plan_certifiers
from .plots import plot_examples
from .points import DEFAULT_EPS, build_points, union_levels
from .report import plot_robustness
from .sanity import check_model_outputs, check_soundness, masking_warning
from .state import EvaluationState

__all__ = ["EvaluateConfig", "evaluate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateConfig:
    """What to evaluate and how hard to try (every field is recorded and part of the resume check).

    Attributes:
        threats: ``--threats`` entries (see :mod:`.points`); eps: ε list per swept norm.
        certify: certifier names (keys of :data:`~mistered.evaluate.plan.CERTIFIERS`).
        steps, restarts: attack iterations and PGD restarts; autoattack: ``standard|fast|off``;
        square_queries: gradient-free check (0: off); cw: Carlini-Wagner for L2.
        geocert_n: examples GeoCert certifies (the first ones); geocert_time: its seconds per example.
        batch_size: examples per chunk (the unit saved for resuming); seed: the attacks' seed.
    """

    threats: tuple[str, ...] = ("linf", "l2")
    eps: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_EPS))
    certify: tuple[str, ...] = tuple(CERTIFIERS)
    steps: int = 20
    restarts: int = 1
    autoattack: str = "fast"
    square_queries: int = 50
    cw: bool = False
    geocert_n: int = 3
    geocert_time: float = 5.0
    batch_size: int = 50
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`InvalidInputError` naming the first bad option."""
        for name in ("steps", "restarts", "batch_size"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        for name in ("square_queries", "geocert_n"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not self.geocert_time > 0:
            raise InvalidInputError(f"--geocert-time must be positive seconds, got {self.geocert_time}")
        if self.autoattack not in AUTOATTACK_MODES:
            raise InvalidInputError(f"--autoattack must be one of {', '.join(AUTOATTACK_MODES)}, got {self.autoattack!r}")


def _point_summary(point, outcome: PointOutcome, clean_correct: torch.Tensor) -> dict[str, Any]:
    return {"threat": point.label, "entry": point.entry, "eps": point.eps, "norm": point.norm,
            "robust_accuracy": fraction(outcome.robust), "attacks": outcome.robust_after,
            "gradient_free_wins": outcome.gradient_free_wins, "certified": {}, "exact": None}


def evaluate(model: nn.Module, data: LabeledImages, out_dir: str | Path, config: EvaluateConfig | None = None, *,
             resume: bool = False, model_name: str = "model", device: str | torch.device | None = None,
             certifiers: Mapping[str, CertifierSpec] = CERTIFIERS, on_chunk: Callable[[str], None] | None = None,
             ) -> dict[str, Any]:
    """Evaluate ``model`` on ``data`` (all of it) and write the report into ``out_dir``.

    Writes ``results.json`` (the record returned), ``adversarial.pt`` (``{"x", "labels", "x_adv": {threat: (N, C, H, W)},
    "union": {"level<i>": ...}}``, load it with :func:`mistered.io.safe_torch_load`), ``robustness.png``,
    ``examples.png`` and ``state/`` (finished chunks; ``resume=True`` skips them).

    Args:
        model: images ``(B, C, H, W)`` in ``[0, 1]`` -> logits ``(B, K)``; put in eval mode.
        data: the examples, ``N = len(data)``.
        config: see :class:`EvaluateConfig`.
        resume: continue the evaluation saved in ``out_dir`` (same settings required).
        model_name: how the model is named in the settings (its spec or path).
        certifiers: the available certifiers (default the built-in ones).
        on_chunk: called with each chunk's key after it is saved (progress reporting).

    Raises:
        UnsoundResultError: a certifier certified an example an attack fooled within the certified radius.
        InvalidInputError: bad options, or a resume with different settings.
    """
    config = config or EvaluateConfig()
    config.validate()
    started = time.perf_counter()
    param = next(model.parameters(), None)
    dev = resolve_device(device) if device is not None else (param.device if param is not None else torch.device("cpu"))
    points = build_points(config.threats, config.eps)
    unknown = [m for m in config.certify if m not in certifiers]
    if unknown:  # before any attack runs
        raise InvalidInputError(f"unknown certifier(s) {unknown}; choose from {', '.join(certifiers)}")
    settings = {"model": model_name, "data": data.name, "n": len(data), **asdict(config), "device": str(dev)}
    settings["eps"] = {k: list(v) for k, v in config.eps.items()}
    settings["threats"], settings["certify"] = list(config.threats), list(config.certify)
    out = Path(out_dir)
    state = EvaluationState(out, settings, resume=resume)
    model.eval()
    x, y = data.images.cpu(), data.labels.cpu()
    clean_logits = predict(model, x, config.batch_size, dev)
    clean_correct = clean_logits.argmax(dim=1) == y
    warnings = check_model_outputs(model, x[: config.batch_size].to(dev), y[: config.batch_size].to(dev), data.num_classes)
    timings: dict[str, float] = {}

    outcomes: list[PointOutcome] = []
    summaries: list[dict[str, Any]] = []
    for point in points:
        members = build_ensemble(model, point.threat, data.num_classes, min(x.shape[2:]), steps=config.steps, restarts=config.restarts,
                                 autoattack=config.autoattack, square_queries=config.square_queries, cw=config.cw,
                                 seed=config.seed, device=dev)
        outcome = run_point(point.label, members, model, x, y, clean_correct, state, config.batch_size, dev, on_chunk)
        outcomes.append(outcome)
        summaries.append(_point_summary(point, outcome, clean_correct))
        timings.update({f"attack {point.label} {name}": s for name, s in outcome.seconds.items()})
        warning = masking_warning(point.label, outcome.gradient_free_wins, int(clean_correct.sum()))
        if warning:
            warnings.append(warning)

    norms = list(dict.fromkeys(p.norm for p in points if p.norm is not None))
    plans = plan_certifiers(model, tuple(x.shape[1:]), norms, config.certify, certifiers)
    radii: dict[str, torch.Tensor] = {}
    for plan in (p for p in plans if p.applies):
        cert = run_certifier(plan, certifiers, model, x, y, state, config.batch_size, config.geocert_n,
                             config.geocert_time, dev, on_chunk)
        timings[f"certify {plan.method} {plan.norm}"] = cert.seconds
        radii[f"{plan.method}/{plan.norm}"] = cert.radius
        m = cert.radius.shape[0]
        for point, outcome, summary in zip(points, outcomes, summaries):
            if point.norm != plan.norm:
                continue
            distance = measure_distances(x, outcome.x_adv, (plan.norm,))[plan.norm]
            check_soundness(point.label, cert, outcome.fooled & clean_correct, distance)
            # a certifier run on the first m examples only proves those: over all n it is a lower bound of count / n
            certified = cert.certified_at(point.eps)
            summary["certified"][plan.method] = {"accuracy": float(certified.sum()) / len(data), "n": m,
                                                 "subset_accuracy": cert.certified_accuracy(point.eps)}
            if certifiers[plan.method].exact:
                accuracy, undecided = exact_accuracy(cert, point.eps)
                summary["exact"] = {"accuracy": accuracy, "n": m, "undecided": undecided, "method": plan.method,
                                    "empirical_on_subset": fraction(outcome.robust[:m])}

    levels = union_levels(points)
    union_adv: dict[str, torch.Tensor] = {}
    union_summary = []
    for level, indices in enumerate(levels):
        robust = torch.stack([outcomes[i].robust for i in indices]).all(dim=0)
        x_adv = outcomes[indices[0]].x_adv.clone()
        for i in reversed(indices):  # the first threat that fooled an example provides its x_adv
            x_adv[~outcomes[i].robust] = outcomes[i].x_adv[~outcomes[i].robust]
        union_adv[f"level{level}"] = x_adv
        union_summary.append({"level": level, "threats": [points[i].label for i in indices],
                              "robust_accuracy": fraction(robust)})

    summary = {"n": len(data), "clean_accuracy": fraction(clean_correct), "points": summaries,
               "union": union_summary, "certifiers": [p.to_json() for p in plans], "warnings": warnings}
    examples = [{"index": i, "label": int(y[i]), "clean_prediction": int(clean_logits[i].argmax()),
                 "robust": {p.label: bool(o.robust[i]) for p, o in zip(points, outcomes)},
                 "radius": {k: float(r[i]) for k, r in radii.items() if i < r.shape[0]}} for i in range(len(data))]
    out.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(out / "adversarial.pt", {"x": x, "labels": y, "x_adv": {p.label: o.x_adv for p, o in zip(points, outcomes)},
                                               "union": union_adv})
    plot_robustness(summary, out / "robustness.png", title=f"{model_name} · {data.name} (n={len(data)})")
    strongest = union_adv[f"level{len(levels) - 1}"] if levels else outcomes[-1].x_adv
    adv_logits = predict(model, strongest, config.batch_size, dev)
    grid = AttackResult(x=x, x_adv=strongest, labels=y, logits=adv_logits, clean_logits=clean_logits,
                        success=adv_logits.argmax(dim=1) != y, distances={}, sizes={},
                        alternative=torch.zeros_like(y))
    plot_examples(grid, out / "examples.png")
    timings["total"] = time.perf_counter() - started
    record = make_record("evaluate", settings, dev, timings, summary, examples=examples)
    write_record(out, record)
    return record
