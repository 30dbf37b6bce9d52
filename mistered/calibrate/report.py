"""What a calibration shows a person: the presets' budgets against the data, table rows and a histogram PNG."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..threats import PRESETS, Additive, PerceptualBudget, Sequence, Threat, Union, parse_threat
from . import MetricCalibration

__all__ = ["PresetBudget", "preset_budgets", "check_presets", "table_rows", "plot_histograms", "TABLE_COLUMNS"]


@dataclass(frozen=True)
class PresetBudget:
    """One image-distance budget of a preset: ``metric(x, x_adv) <= budget`` (an additive norm or a perceptual bound)."""

    preset: str
    metric: str
    budget: float


def _budgets(threat: Threat) -> Iterable[tuple[str, float]]:
    if isinstance(threat, PerceptualBudget):
        yield threat.metric, threat.bound
        yield from _budgets(threat.threat)
    elif isinstance(threat, Additive):
        yield threat.norm, threat.eps
    elif isinstance(threat, Sequence):
        for component in threat.components:
            yield from _budgets(component)
    elif isinstance(threat, Union):
        for choice in threat.choices:
            yield from _budgets(choice)


def preset_budgets(names: Iterable[str] | None = None) -> list[PresetBudget]:
    """Every image-distance budget of the presets ``names`` (default: all of :data:`~mistered.threats.PRESETS`).

    Geometric budgets (angles, shifts, flows) are not distances between images and are not listed;
    an additive part inside a chain is (its norm bounds the last step, not the whole chain: see the docs).
    """
    return [PresetBudget(name, metric, bound) for name in (names or PRESETS)
            for metric, bound in dict.fromkeys(_budgets(parse_threat(name)))]


def _key(metric: str) -> str:
    """``lpips`` and ``lpips-alex`` are one distance."""
    return "lpips" if metric == "lpips-alex" else metric


def check_presets(calibrations: dict[str, MetricCalibration], names: Iterable[str] | None = None) -> list[dict]:
    """For each preset budget in a calibrated distance: the budget, the largest sensible budget, and whether it is below."""
    by_distance = {_key(cal.metric): cal for cal in calibrations.values()}
    rows = []
    for entry in preset_budgets(names):
        calibration = by_distance.get(_key(entry.metric))
        if calibration is not None:
            largest = calibration.largest_budget
            rows.append({"preset": entry.preset, "metric": entry.metric, "budget": entry.budget,
                         "largest_budget": largest, "below": entry.budget < largest})
    return rows


#: Columns of :func:`table_rows`.
TABLE_COLUMNS = ("distance", "benign p50", "benign p99", "nearest same p50", "largest budget = nearest other p1",
                 "nearest other p50", "other pairs p50")


def table_rows(calibrations: dict[str, MetricCalibration]) -> list[tuple[str, ...]]:
    """One row per distance, formatted (see :data:`TABLE_COLUMNS`); "p1 of the nearest different class" is the largest budget."""
    rows = []
    for name, cal in calibrations.items():
        summary = cal.to_json()
        label = cal.metric if cal.similarity is None else f"{cal.metric} = 1-{cal.similarity.upper()}"
        cells = (summary["benign_all"].get("p50"), summary["benign_all"].get("p99"),
                 summary["nearest_same_class"].get("p50"), cal.largest_budget,
                 summary["nearest_different_class"]["p50"], summary["different_class_pairs"]["p50"])
        rows.append((label, *("—" if value is None else f"{value:.4g}" for value in cells)))
    return rows


def plot_histograms(calibrations: dict[str, MetricCalibration], path: Path, presets: list[dict] | None = None) -> Path:
    """One panel per distance: histograms of benign changes, nearest same-class and nearest different-class
    neighbours, a line at the largest budget (1st percentile of the nearest different class) and one per preset budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(calibrations)
    cols = min(count, 2)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    for ax, cal in zip(axes.flat, calibrations.values()):
        same = cal.nearest_same[~cal.nearest_same.isnan()]
        series = (("benign changes", cal.benign_all, "tab:green"), ("nearest same class", same, "tab:blue"),
                  ("nearest different class", cal.nearest_different, "tab:red"))
        top = float(torch.quantile(torch.cat([s.flatten().double() for _, s, _ in series]), 0.995))
        bins = torch.linspace(0.0, max(top, 1e-12), 50).tolist()
        for label, values, colour in series:
            ax.hist(values.flatten().clamp(max=top).cpu().numpy(), bins=bins, alpha=0.5, density=True, label=label,
                    color=colour)
        ax.axvline(cal.largest_budget, color="black", linestyle="--", label=f"p1 nearest different: {cal.largest_budget:.3g}")
        for row in presets or []:
            if _key(row["metric"]) == _key(cal.metric) and row["budget"] <= top:
                ax.axvline(row["budget"], color="tab:purple", linestyle=":", label=f"{row['preset']}: {row['budget']:.3g}")
        ax.set_title(cal.metric if cal.similarity is None else f"{cal.metric} = 1 - {cal.similarity.upper()}")
        ax.set_xlabel("distance (nearest neighbour / to the changed image)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
