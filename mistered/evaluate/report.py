"""The evaluation's outputs: table rows for the terminal and ``robustness.png`` (accuracy against each swept budget)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["table_columns", "table_rows", "robustness_figure", "plot_robustness"]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def table_columns(summary: dict[str, Any]) -> list[str]:
    """Column headers: threat, clean, empirical, exact, then one per certifier that ran."""
    methods = list(dict.fromkeys(m for p in summary["points"] for m in p["certified"]))
    return ["threat", "clean", "empirical (attacks)", "exact", *[f"certified {m}" for m in methods]]


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row per evaluation point plus one per union level; accuracies with 3 decimals, ``—`` where none.

    The exact column shows ``acc vs attacks acc (n=m)``, both on the certifier's subset of the first m examples;
    a certified column run on a subset shows ``count / n`` over all n (a lower bound) and adds ``(n=m)``.
    """
    n = summary["n"]
    methods = table_columns(summary)[4:]
    rows = []
    for point in summary["points"]:
        exact = point["exact"]
        exact_text = "—" if exact is None else (
            f"{_fmt(exact['accuracy'])} vs attacks {_fmt(exact['empirical_on_subset'])} (n={exact['n']})"
            if exact["accuracy"] is not None
            else f"{exact['undecided']} undecided (n={exact['n']})")
        certified = []
        for column in methods:
            entry = point["certified"].get(column.removeprefix("certified "))
            certified.append("—" if entry is None else _fmt(entry["accuracy"]) + ("" if entry["n"] == n else f" (n={entry['n']})"))
        rows.append([point["threat"], _fmt(summary["clean_accuracy"]), _fmt(point["robust_accuracy"]), exact_text, *certified])
    for level in summary["union"]:
        rows.append([" ∪ ".join(level["threats"]), _fmt(summary["clean_accuracy"]), _fmt(level["robust_accuracy"]), "—",
                     *(["—"] * len(methods))])
    return rows


def robustness_figure(summary: dict[str, Any], title: str = "") -> Figure:
    """Accuracy against the swept budget, one panel per curve (``series`` of the summary's points; the x axis is
    the budget that varies, labelled with its name and unit): the empirical (attack) curve, the exact search's points
    and the certified curves where a certifier ran (additive threats), clean accuracy as a dotted line."""
    from matplotlib.figure import Figure

    curves = list(dict.fromkeys(p["series"] for p in summary["points"] if p["series"] is not None))
    fig = Figure(figsize=(5.0 * max(len(curves), 1), 4.0))
    axes = fig.subplots(1, max(len(curves), 1), squeeze=False)[0]
    for ax, curve in zip(axes, curves):
        points = sorted((p for p in summary["points"] if p["series"] == curve), key=lambda p: p["budget"])
        _plot_curve(ax, points, summary["clean_accuracy"])
        axis = points[0]
        ax.set_xlabel(f"{axis['axis']} ({axis['axis_unit']})")
        name = curve if len(curve) <= 40 else curve[:39] + "…"
        ax.set_title(name if curve == axis["axis"] else f"{name}, {axis['axis']} varied", fontsize=9)
    if not curves:
        axes[0].text(0.5, 0.5, "no budget swept: give --sweep NAME=v1,v2 or several --threat values\n"
                     "that differ in one budget (bare linf/l2 are swept over --eps)", ha="center", va="center",
                     fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _plot_curve(ax: Any, points: list[dict[str, Any]], clean_accuracy: float) -> None:
    """One panel: ``points`` of one curve sorted by their ``budget``."""
    budget = [p["budget"] for p in points]
    ax.axhline(clean_accuracy, color="gray", linestyle=":", label="clean")
    ax.plot(budget, [p["robust_accuracy"] for p in points], "o-", color="tab:red", label="empirical (attacks)")
    exact = [(p["budget"], p["exact"]["accuracy"]) for p in points if p["exact"] and p["exact"]["accuracy"] is not None]
    if exact:
        n_exact = next(p["exact"]["n"] for p in points if p["exact"])
        ax.plot(*zip(*exact), "D", color="black", markersize=7, label=f"exact (first {n_exact})")
        on_subset = [(p["budget"], p["exact"]["empirical_on_subset"]) for p in points
                     if p["exact"] and p["exact"]["accuracy"] is not None]
        ax.plot(*zip(*on_subset), "o", mfc="none", color="tab:red", markersize=10,
                label=f"attacks on the same {n_exact}")
    for method in dict.fromkeys(m for p in points for m in p["certified"]):
        values = [(p["budget"], p["certified"][method]["accuracy"]) for p in points if method in p["certified"]]
        ax.plot(*zip(*values), "s--", label=f"certified ({method})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_robustness(summary: dict[str, Any], path: Path, title: str = "") -> Path:
    """Write :func:`robustness_figure` to ``path`` (PNG, no display needed); returns ``path``."""
    fig = robustness_figure(summary, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
