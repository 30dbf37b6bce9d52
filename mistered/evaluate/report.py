"""The evaluation's outputs: table rows for the terminal and ``robustness.png`` (accuracy against ε)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["table_columns", "table_rows", "plot_robustness"]


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


def plot_robustness(summary: dict[str, Any], path: Path, title: str = "") -> Path:
    """Accuracy against ε, one panel per swept norm: the empirical (attack) curve above, GeoCert's exact points,
    the certified curves below, and clean accuracy as a dotted line. Written with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms = list(dict.fromkeys(p["norm"] for p in summary["points"] if p["eps"] is not None))
    fig, axes = plt.subplots(1, max(len(norms), 1), figsize=(5.0 * max(len(norms), 1), 4.0), squeeze=False)
    for ax, norm in zip(axes[0], norms):
        points = [p for p in summary["points"] if p["eps"] is not None and p["norm"] == norm]
        eps = [p["eps"] for p in points]
        ax.axhline(summary["clean_accuracy"], color="gray", linestyle=":", label="clean")
        ax.plot(eps, [p["robust_accuracy"] for p in points], "o-", color="tab:red", label="empirical (attacks)")
        exact = [(p["eps"], p["exact"]["accuracy"]) for p in points if p["exact"] and p["exact"]["accuracy"] is not None]
        if exact:
            n_exact = next(p["exact"]["n"] for p in points if p["exact"])
            ax.plot(*zip(*exact), "D", color="black", markersize=7, label=f"exact (GeoCert, first {n_exact})")
            on_subset = [(p["eps"], p["exact"]["empirical_on_subset"]) for p in points
                         if p["exact"] and p["exact"]["accuracy"] is not None]
            ax.plot(*zip(*on_subset), "o", mfc="none", color="tab:red", markersize=10,
                    label=f"attacks on the same {n_exact}")
        methods = list(dict.fromkeys(m for p in points for m in p["certified"]))
        for method in methods:
            values = [(p["eps"], p["certified"][method]["accuracy"]) for p in points if method in p["certified"]]
            ax.plot(*zip(*values), "s--", label=f"certified ({method})")
        ax.set_xlabel(f"ε ({norm})")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if not norms:
        axes[0][0].text(0.5, 0.5, "no swept (linf/l2) threat", ha="center", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
