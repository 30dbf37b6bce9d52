"""``mistered lipschitz``: every local Lipschitz estimator, LipMIP included, on the same model and boxes."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..errors import InvalidInputError

__all__ = ["lipschitz", "plot_estimates"]


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


@click.command("lipschitz")
@click.option("--methods", default="all", show_default=True,
              help="Comma-separated estimators (naive, sampling, clever, fastlip, lp, lipmip) or 'all'.")
@click.option("--model", "model_spec", default="mnist-fc", show_default=True,
              help="Bundled model name or checkpoint path (a ReLU network of Linear/Conv2d/ReLU/Flatten/BatchNorm).")
@click.option("--data", "data_name", default="mnist-5k", show_default=True, help="Dataset (test split).")
@click.option("--radius", default=0.02, show_default=True, type=float,
              help="L-inf radius of the box around each input (pixels in [0, 1]). The bundled 784-20-20-10 net has "
                   "~16-24 unstable ReLUs at 0.02 (LipMIP: seconds) and 35-40 at 0.1 (LipMIP: minutes).")
@click.option("--norm", default="linf", show_default=True, type=click.Choice(["linf", "l1", "l2"]),
              help="Primal (input) norm; l2 only for naive, sampling, clever and fastlip.")
@click.option("--objective", default="margin", show_default=True, type=click.Choice(["margin", "vector"]),
              help="margin: predicted class minus runner-up; vector: all logits with the same norm.")
@click.option("--n", "n", default=3, show_default=True, type=int, help="Number of test examples.")
@click.option("--time-limit", default=30.0, show_default=True, type=float,
              help="Seconds per example for lipmip and lp; on timeout LipMIP reports a valid upper bound.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of sampling and CLEVER.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: ./mistered-out/lipschitz-<time>/].")
def lipschitz(methods: str, model_spec: str, data_name: str, radius: float, norm: str, objective: str, n: int,
              time_limit: float, seed: int, out_dir: str | None) -> None:
    """Compare local Lipschitz estimators (LipMIP is exact) on the same model and L-inf boxes."""
    from rich.console import Console
    from rich.table import Table

    from ..certify.local_lipschitz import METHODS, EstimatorOptions, estimate_lipschitz
    from ..data import load_dataset
    from ..models import load_model
    from ..results import default_out_dir, make_record, write_record
    from ..validation import check_nonnegative

    names = list(METHODS) if methods.strip() == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise InvalidInputError(f"unknown --methods {unknown or methods!r}; choose from {', '.join(METHODS)} or 'all'")
    if n < 1:
        raise InvalidInputError(f"--n must be a positive integer, got {n}")
    check_nonnegative(radius, "--radius")
    check_nonnegative(time_limit, "--time-limit")
    started = time.perf_counter()
    model = load_model(model_spec, device="cpu")
    data = load_dataset(data_name, "test").subset(n)
    options = EstimatorOptions(seed=seed, time_limit=time_limit)
    console = Console(stderr=True)
    estimates = []
    for name in names:
        with console.status(f"{name} on {n} example(s)"):
            estimates.append(estimate_lipschitz(model, data.images, radius, norm, objective, name, options=options))

    rows = [{"method": e.method, "kind": e.kind, "mean_value": float(e.value.mean()), "seconds": e.seconds,
             "values": e.value.tolist(), "status": e.status} for e in estimates]
    table = Table(title=f"local Lipschitz · {model_spec} · {objective} · {norm} · radius {radius} · n={n}")
    for column in ("method", "kind", "mean value", "per example", "time (s)", "status"):
        table.add_column(column, justify="right" if column in ("mean value", "time (s)") else "left")
    for row in rows:
        statuses = sorted(set(row["status"]))
        table.add_row(row["method"], row["kind"], f"{row['mean_value']:.4g}",
                      " ".join(f"{v:.4g}" for v in row["values"]), f"{row['seconds']:.2f}", ",".join(statuses))
    Console().print(table)

    out = Path(out_dir) if out_dir is not None else default_out_dir("lipschitz")
    settings = {"methods": names, "model": model_spec, "data": data_name, "radius": radius, "norm": norm,
                "objective": objective, "n": n, "time_limit": time_limit, "seed": seed, "clip": None}
    timings = {e.method: e.seconds for e in estimates} | {"total": time.perf_counter() - started}
    examples = [{"label": int(data.labels[i]), **{e.method: float(e.value[i]) for e in estimates}} for i in range(n)]
    import torch

    record = make_record("lipschitz", settings, torch.device("cpu"), timings, {"methods": rows}, examples=examples)
    json_path = write_record(out, record)
    png_path = plot_estimates(rows, out / "lipschitz.png", table.title)
    Console().print(f"wrote {json_path} and {png_path}")
