"""The work behind ``mistered certify --method exact`` (and its deprecated alias ``geocert``): exact radii,
results.json and a histogram.

An exact search certifies a handful of examples (the selection is small), one at a time: each finished example is
saved under ``state/`` so ``--resume`` skips it, and the progress counts examples.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..certify.exact import AUTO_SEARCH, exact_distance
from ..results import finite_or_none, make_record

__all__ = ["run_exact"]


def run_exact(run: Any, model: torch.nn.Module, data: Any, resolved: dict[str, Any]) -> dict[str, Any]:
    """Certify every example of ``data`` (a small selection) exactly; write results.json, config.yaml and
    radii.png into ``run.out`` (a :class:`~mistered.cli.common.Run`); returns the record.

    ``--seed`` is recorded only (the searches are deterministic); ``--time-limit`` is per example, in seconds;
    ``--search``: "regions", "branch", "mip" or "auto" (``None``: auto; see
    :func:`~mistered.certify.exact.exact_distance`).
    """
    from ..evaluate.state import open_state

    norm, time_limit = resolved["norm"], run.options["time_limit"]
    search = run.options["search"] or "auto"
    search = AUTO_SEARCH[norm] if search == "auto" else search
    resolved = {**resolved, "search": search}
    settings = run.settings(resolved, method="exact")
    state = open_state(run.out, {"settings": settings, "inputs": run.inputs}, run.resuming, what="certification")
    start = time.perf_counter()
    indices = [int(i) for i in getattr(data, "indices", range(len(data)))]
    examples = []
    with run.progress(f"exact ({norm}, {search})", len(data)) as bar:
        for position in range(len(data)):
            key = f"exact|{position}"
            row = state.load(key)
            if row is None:
                x, y = data.get_batch([position])
                row = _certify_one(model, x.to(run.device), y, norm, time_limit, search)
                state.save(key, row)
            examples.append({"index": indices[position], **row})
            bar.advance(1)
    exact = [r["radius"] for r in examples if r["status"] == "exact" and r["radius"] is not None]
    summary = {
        "n": len(examples),
        "exact": sum(r["status"] == "exact" for r in examples),
        "timeout": sum(r["status"] == "timeout" for r in examples),
        "misclassified": sum(r["status"] == "misclassified" for r in examples),
        "median_radius": float(torch.tensor(exact).median()) if exact else None,
        "median_seconds": float(torch.tensor([r["seconds"] for r in examples]).median()),
    }
    record = make_record("certify", settings, run.device, {"total": time.perf_counter() - start}, summary, examples,
                         inputs=run.inputs)
    run.write(record, resolved)
    _histogram([r["radius"] for r in examples if r["radius"] is not None], norm, run.out / "radii.png")
    return record


def _certify_one(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, time_limit: float,
                 search: str) -> dict[str, Any]:
    """The exact search on one example ``x`` ``(1, C, H, W)``: its JSON row (radius ``None`` where not finite)."""
    cert = exact_distance(model, x, y, norm, search=search, time_limit=time_limit)
    row = cert.to_json()[0]
    seed_distance = cert.details["seed_distance"][0]
    row.update(n_regions=cert.details["n_regions"][0], n_lp_solves=cert.details["n_lp_solves"][0],
               seconds=cert.details["seconds"][0], seed_distance=finite_or_none(seed_distance))
    row["radius"] = finite_or_none(row["radius"])
    return row


def _histogram(radii: list[float], norm: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(radii, bins=max(5, len(radii) // 2) if radii else 5, color="tab:blue")
    ax.set_xlabel(f"minimal adversarial distance ({norm})")
    ax.set_ylabel("examples")
    ax.set_title("exact radii")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
