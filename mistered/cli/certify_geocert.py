"""The work behind ``mistered certify --method geocert``: exact radii, a table, results.json and a histogram."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from ..certify.geocert import AUTO_SEARCH, NORMS, SEARCHES, certify_geocert
from ..device import resolve_device
from ..errors import InvalidInputError
from ..results import default_out_dir, make_record, write_record

__all__ = ["run_geocert"]


def run_geocert(
    model_spec: str | None = "mnist-fc",
    data: str = "mnist-5k",
    n: int = 3,
    norm: str = "l2",
    time_limit: float = 20.0,
    out: str | Path | None = None,
    device: str | None = None,
    seed: int = 0,
    search: str = "auto",
) -> tuple[dict, Path]:
    """Certify the first ``n`` test images of ``data`` with GeoCert; returns the record and the output folder.

    ``seed`` is recorded only (GeoCert is deterministic). ``time_limit`` is per example, in seconds. ``search``:
    "regions", "branch" or "auto" (see :func:`~mistered.certify.geocert.certify_geocert`).
    """
    from ..data import load_dataset
    from ..models import load_model

    if norm not in NORMS:
        raise InvalidInputError(f"--norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if search not in SEARCHES:
        raise InvalidInputError(f"--search must be one of {', '.join(SEARCHES)}, got {search!r}")
    if n < 1:
        raise InvalidInputError(f"--n must be at least 1, got {n}")
    if not time_limit > 0:
        raise InvalidInputError(f"--time-limit must be positive seconds, got {time_limit}")
    dev = resolve_device(device)
    model = load_model(model_spec or "mnist-fc", device=dev)
    images = load_dataset(data, split="test").subset(n)
    start = time.perf_counter()
    search = AUTO_SEARCH[norm] if search == "auto" else search
    cert = certify_geocert(model, images.images.to(dev), images.labels, norm=norm, time_limit=time_limit,
                           search=search)
    out_dir = Path(out) if out is not None else default_out_dir("certify-geocert")
    examples = cert.to_json()
    stats = (cert.details[k] for k in ("n_regions", "n_lp_solves", "seconds", "seed_distance"))
    for row, regions, solves, seconds, seed_dist in zip(examples, *stats):
        row.update(n_regions=regions, n_lp_solves=solves, seconds=seconds,
                   seed_distance=seed_dist if math.isfinite(seed_dist) else None)
        if not math.isfinite(row["radius"]):
            row["radius"] = None
    exact = [r["radius"] for r in examples if r["status"] == "exact" and r["radius"] is not None]
    summary = {
        "n": n,
        "exact": sum(s == "exact" for s in cert.status),
        "timeout": sum(s == "timeout" for s in cert.status),
        "misclassified": sum(s == "misclassified" for s in cert.status),
        "median_radius": float(torch.tensor(exact).median()) if exact else None,
        "median_seconds": float(torch.tensor(cert.details["seconds"]).median()),
    }
    settings = {"method": "geocert", "model": model_spec or "mnist-fc", "data": data, "n": n, "norm": norm,
                "time_limit": time_limit, "seed": seed, "search": search}
    record = make_record("certify", settings, dev, {"total": time.perf_counter() - start}, summary, examples)
    write_record(out_dir, record)
    _histogram([r["radius"] for r in examples if r["radius"] is not None], norm, out_dir / "radii.png")
    return record, out_dir


def _histogram(radii: list[float], norm: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(radii, bins=max(5, len(radii) // 2) if radii else 5, color="tab:blue")
    ax.set_xlabel(f"minimal adversarial distance ({norm})")
    ax.set_ylabel("examples")
    ax.set_title("GeoCert exact radii")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
