"""``mistered lipschitz``: every local Lipschitz estimator, LipMIP included, on the same model and boxes.

The examples stream in batches; each estimator's finished batch is saved under ``state/`` so ``--resume``
skips it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ..errors import InvalidInputError
from .common import check_positive, start_run
from .options import data_options, eps_option, model_options, parse_radii, run_options

__all__ = ["lipschitz", "plot_estimates"]

_DEFAULT_RADIUS = 0.02


def plot_estimates(rows: list[dict], path: Path, title: str) -> Path:
    """A bar per method (mean value over examples, log scale) annotated with its time; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"exact": "tab:green", "upper": "tab:red", "lower": "tab:blue", "estimate": "tab:grey"}
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [r["method"] for r in rows]
    values = [max(r["mean_value"], 1e-12) for r in rows]
    bars = ax.bar(names, values, color=[colours[r["kind"]] for r in rows])
    for bar, row in zip(bars, rows):
        ax.annotate(f"{row['seconds']:.2g} s", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("Lipschitz value (mean over examples)")
    ax.set_title(title, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    ax.legend(handles, list(colours), fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _radius(eps: tuple[str, ...], radius: float | None) -> float:
    """The box radius: one ``--eps`` value (or the deprecated ``--radius``), default 0.02."""
    radii = parse_radii(eps)
    if len(radii) > 1:
        raise InvalidInputError(f"lipschitz takes one --eps radius, got {len(radii)}")
    if radii and radius is not None:
        raise InvalidInputError("--radius is the old name of --eps; give one of them")
    return radii[0] if radii else (radius if radius is not None else _DEFAULT_RADIUS)


@click.command("lipschitz")
@click.option("--methods", default="all", show_default=True,
              help="Comma-separated estimators (naive, sampling, clever, fastlip, lp, lipmip) or 'all'.")
@eps_option(default=str(_DEFAULT_RADIUS),
            extra_help=" Here one value: the L-inf radius of the box around each input. The bundled 784-20-20-10 "
                       "net has ~16-24 unstable ReLUs at 0.02 (LipMIP: seconds) and 35-40 at 0.1 (LipMIP: minutes).")
@click.option("--radius", type=float, default=None, hidden=True, help="Deprecated: --eps.")
@click.option("--norm", default="linf", show_default=True, type=click.Choice(["linf", "l1", "l2"]),
              help="Primal (input) norm; l2 only for naive, sampling, clever and fastlip.")
@click.option("--objective", default="margin", show_default=True, type=click.Choice(["margin", "vector"]),
              help="margin: predicted class minus runner-up; vector: all logits with the same norm.")
@click.option("--time-limit", default=30.0, show_default=True, type=float,
              help="Seconds per example for lipmip and lp; on timeout LipMIP reports a valid upper bound.")
@model_options(default="mnist-fc (a ReLU network of Linear/Conv2d/ReLU/Flatten/BatchNorm)")
@data_options(n_default=3)
@run_options(batch_size=50)
def lipschitz(**options: Any) -> None:
    """Compare local Lipschitz estimators (LipMIP is exact) on the same model and L-inf boxes."""
    from ..certify.lipschitz.local import METHODS
    from ..validation import check_nonnegative

    text = options["methods"]
    names = list(METHODS) if text.strip() == "all" else [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise InvalidInputError(f"unknown --methods {unknown or text!r}; choose from {', '.join(METHODS)} or 'all'")
    check_positive(n=options["n"], batch_size=options["batch_size"])
    radius = check_nonnegative(_radius(options["eps"], options["radius"]), "--eps")
    check_nonnegative(options["time_limit"], "--time-limit")
    started = time.perf_counter()
    with start_run("lipschitz", options) as run:
        model, data = run.load_inputs("mnist-fc")
        resolved = {"model": options["model"] or "mnist-fc", "methods": ",".join(names), "eps": [radius]}
        settings = run.settings(resolved, clip=None)
        estimates = _estimate_all(run, model, data, names, radius, settings)
        _report(run, data, estimates, settings, resolved, radius, started)


def _report(run, data, estimates: dict[str, dict], settings: dict[str, Any], resolved: dict[str, Any],
            radius: float, started: float) -> None:
    """The table, results.json, config.yaml and lipschitz.png."""
    from rich.console import Console
    from rich.table import Table

    from ..results import make_record

    options = run.options
    rows = [{"method": name, "kind": e["kind"], "mean_value": float(e["value"].mean()), "seconds": e["seconds"],
             "values": e["value"].tolist(), "status": e["status"]} for name, e in estimates.items()]
    title = (f"local Lipschitz · {resolved['model']} · {options['objective']} · {options['norm']} · radius {radius}"
             f" · n={len(data)}")
    table = Table(title=title)
    for column in ("method", "kind", "mean value", "per example", "time (s)", "status"):
        table.add_column(column, justify="right" if column in ("mean value", "time (s)") else "left")
    for row in rows:
        table.add_row(row["method"], row["kind"], f"{row['mean_value']:.4g}",
                      " ".join(f"{v:.4g}" for v in row["values"]), f"{row['seconds']:.2f}",
                      ",".join(sorted(set(row["status"]))))
    Console().print(table)
    timings = {name: e["seconds"] for name, e in estimates.items()} | {"total": time.perf_counter() - started}
    indices = [int(i) for i in getattr(data, "indices", range(len(data)))]
    examples = [{"index": indices[i], "label": int(data.labels[i]),
                 **{name: float(e["value"][i]) for name, e in estimates.items()}} for i in range(len(data))]
    record = make_record("lipschitz", settings, run.device, timings, {"methods": rows}, examples=examples,
                         inputs=run.inputs)
    json_path = run.write(record, resolved)
    png_path = plot_estimates(rows, run.out / "lipschitz.png", title)
    Console().print(f"wrote {json_path} and {png_path}")


def _estimate_all(run, model, data, names: list[str], radius: float, settings: dict[str, Any]) -> dict[str, dict]:
    """Every estimator on every batch (resumable): ``{method: {"value" (N,), "kind", "seconds", "status"}}``."""
    import torch

    from ..certify.lipschitz.local import EstimatorOptions, estimate_lipschitz
    from ..evaluate.state import open_state
    from ..sharding import shard_batches

    options = EstimatorOptions(seed=run.options["seed"], time_limit=run.options["time_limit"])
    state = open_state(run.out, {"settings": settings, "inputs": run.inputs}, run.resuming, what="estimation")
    batch_size = run.options["batch_size"]
    parts: dict[str, list[dict]] = {name: [] for name in names}
    with run.progress("lipschitz", len(data) * len(names)) as bar:
        for index, x, _ in shard_batches(data, batch_size):
            for name in names:
                key = f"lipschitz|{name}|{index * batch_size}-{index * batch_size + len(x)}"
                part = state.load(key)
                if part is None:
                    bar.describe(f"lipschitz: {name}")
                    e = estimate_lipschitz(model, x.to(run.device), radius, run.options["norm"],
                                           run.options["objective"], name, options=options)
                    part = {"value": e.value.cpu(), "kind": e.kind, "seconds": e.seconds, "status": list(e.status)}
                    state.save(key, part)
                parts[name].append(part)
                bar.advance(len(x))
    return {name: {"value": torch.cat([p["value"] for p in ps]), "kind": ps[0]["kind"],
                   "seconds": sum(p["seconds"] for p in ps), "status": [s for p in ps for s in p["status"]]}
            for name, ps in parts.items()}
