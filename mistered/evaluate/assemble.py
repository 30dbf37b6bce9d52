"""Putting an evaluation together: the per-batch results, merged in order, become the summary and examples.

The batches may come from several processes (:mod:`mistered.sharding`); merged in batch order they are the
same as one process's, so everything computed here is too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..certify.certificate import Certificate
from ..results import fraction
from .certified import as_certificate, exact_accuracy
from .plan import CertifierPlan, CertifierSpec
from .points import EvalPoint, union_levels
from .sanity import masking_warning

__all__ = ["Merged", "merge_chunks", "summarize", "union_examples"]


@dataclass
class Merged:
    """All ``N`` examples' results, in order.

    Attributes:
        x: clean images ``(N, C, H, W)``; y: labels ``(N,)``; clean_logits: ``(N, K)``.
        outcomes: per point ``{"x_adv" (N, C, H, W), "fooled" (N,), "robust" (N,), "robust_after" {attack:
            accuracy}, "wins" int, "seconds" {attack: s}}``.
        certificates: ``{"method/norm": Certificate}`` of the certifiers that ran (the first ``m <= N`` examples).
        warnings: the sanity warnings about the model.
    """

    x: torch.Tensor
    y: torch.Tensor
    clean_logits: torch.Tensor
    outcomes: list[dict[str, Any]]
    certificates: dict[str, Certificate]
    warnings: list[str]

    @property
    def clean_correct(self) -> torch.Tensor:
        return self.clean_logits.argmax(dim=1) == self.y


def merge_chunks(chunks: list[dict[str, Any]], points: list[EvalPoint], plans: list[CertifierPlan]) -> Merged:
    """Concatenate the per-batch payloads (in batch order) of every point and certifier."""
    y = torch.cat([c["y"] for c in chunks])
    n = y.shape[0]
    outcomes = []
    for i in range(len(points)):
        parts = [c["points"][i] for c in chunks]
        names = list(parts[0]["robust_count"])
        outcomes.append({
            "x_adv": torch.cat([p["x_adv"] for p in parts]), "fooled": torch.cat([p["fooled"] for p in parts]),
            "robust": torch.cat([p["robust"] for p in parts]),
            "robust_after": {k: sum(p["robust_count"][k] for p in parts) / max(n, 1) for k in names},
            "wins": sum(p["wins"] for p in parts), "seconds": {k: sum(p["seconds"][k] for p in parts) for k in names},
        })
    certificates = {}
    for plan in (p for p in plans if p.applies):
        key = f"{plan.method}/{plan.norm}"
        certificates[key] = as_certificate(plan, [c["certs"][key] for c in chunks if key in c["certs"]], y)
    return Merged(torch.cat([c["x"] for c in chunks]), y, torch.cat([c["clean_logits"] for c in chunks]), outcomes,
                  certificates, [w for c in chunks for w in c["warnings"]])


def summarize(merged: Merged, points: list[EvalPoint], plans: list[CertifierPlan],
              certifiers: Mapping[str, CertifierSpec]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(summary, union_adv)``: the per-point, certified, exact and union accuracies (see ``evaluate``), and the
    union levels' adversarial examples ``{"level<i>": (N, C, H, W)}``."""
    n = merged.y.shape[0]
    clean_correct = merged.clean_correct
    warnings = list(merged.warnings)
    summaries = []
    for point, outcome in zip(points, merged.outcomes):
        axis = {"axis": point.axis.name, "axis_unit": point.axis.unit, "budget": point.axis.value} if point.axis \
            else {"axis": None, "axis_unit": None, "budget": None}
        summaries.append({"threat": point.label, "entry": point.entry, "eps": point.eps, "norm": point.norm,
                          "series": point.series, **axis,
                          "robust_accuracy": fraction(outcome["robust"]), "attacks": outcome["robust_after"],
                          "gradient_free_wins": outcome["wins"], "certified": {}, "exact": None})
        warning = masking_warning(point.label, outcome["wins"], int(clean_correct.sum()))
        if warning:
            warnings.append(warning)
    for plan in (p for p in plans if p.applies):
        cert = merged.certificates[f"{plan.method}/{plan.norm}"]
        m = cert.radius.shape[0]
        for point, outcome, summary in zip(points, merged.outcomes, summaries):
            if point.norm != plan.norm:
                continue
            # a certifier run on the first m examples only proves those: over all n it is a lower bound of count / n
            certified = cert.certified_at(point.eps)
            summary["certified"][plan.method] = {"accuracy": float(certified.sum()) / n, "n": m,
                                                 "subset_accuracy": cert.certified_accuracy(point.eps)}
            if certifiers[plan.method].exact:
                accuracy, undecided = exact_accuracy(cert, point.eps)
                summary["exact"] = {"accuracy": accuracy, "n": m, "undecided": undecided, "method": plan.method,
                                    "empirical_on_subset": fraction(outcome["robust"][:m])}
    union_adv: dict[str, torch.Tensor] = {}
    union_summary = []
    for level, indices in enumerate(union_levels(points)):
        robust, x_adv = union_examples(merged, indices)
        union_adv[f"level{level}"] = x_adv
        union_summary.append({"level": level, "threats": [points[i].label for i in indices],
                              "robust_accuracy": fraction(robust)})
    summary = {"n": n, "clean_accuracy": fraction(clean_correct), "points": summaries, "union": union_summary,
               "certifiers": [p.to_json() for p in plans], "warnings": warnings}
    return summary, union_adv


def union_examples(merged: Merged, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(robust (N,), x_adv (N, C, H, W))`` of the union of the points ``indices``: robust where every point is;
    the first point that fooled an example provides its ``x_adv`` (the first point's where none did)."""
    outcomes = [merged.outcomes[i] for i in indices]
    robust = torch.stack([o["robust"] for o in outcomes]).all(dim=0)
    x_adv = outcomes[0]["x_adv"].clone()
    for outcome in reversed(outcomes):
        x_adv[~outcome["robust"]] = outcome["x_adv"][~outcome["robust"]]
    return robust, x_adv
