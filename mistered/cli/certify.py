"""``mistered certify``: certified robustness of a model.

Methods (one entry of :data:`METHODS` each, with its default model, norm and runner):

* ``lmt``: Lipschitz-margin L2 radii (one forward pass; the bound is computed once);
* ``linf-dist``: L∞ radii ``margin / 2`` of an L∞-dist net;
* ``geocert``: exact minimal distances (slow; a few examples).

The fast methods print certified accuracy at each ``--eps`` and write ``results.json`` and
``certified.png`` (certified accuracy against eps, and the distribution of radii).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ..errors import InvalidInputError

__all__ = ["certify", "METHODS", "MethodSpec"]


@dataclass(frozen=True)
class MethodSpec:
    """A certification method of the command: its bundled default model, norm, default eps list, runner."""

    model: str
    norm: str
    eps: str
    run: Callable[..., None]


def _certify_fast(method: str, model, x, y, batch_size: int):
    """Certify ``(x, y)`` in batches with the library's LMT or L∞-dist certifier; one concatenated Certificate."""
    import torch

    from ..certify.certificate import Certificate
    from ..certify.linf_dist_nets import certify_linf_dist
    from ..certify.lmt import LMTCertifier

    certify = LMTCertifier(model).certify if method == "lmt" else (lambda a, b: certify_linf_dist(model, a, b))
    device = next(model.parameters()).device
    parts = [certify(x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)) for i in range(0, len(y), batch_size)]
    return Certificate(
        method=parts[0].method, norm=parts[0].norm,
        radius=torch.cat([c.radius for c in parts]), upper=torch.cat([c.upper for c in parts]),
        status=[s for c in parts for s in c.status], predictions=torch.cat([c.predictions for c in parts]),
        labels=torch.cat([c.labels for c in parts]), seconds=sum(c.seconds for c in parts), details=parts[0].details,
    )


def _plot(cert, eps_list: list[float], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    correct = (cert.predictions == cert.labels).numpy()
    radii = cert.radius.numpy()
    grid = np.linspace(0, max(max(eps_list), float(radii.max()) if radii.size else 0.0) * 1.05 + 1e-9, 200)
    curve = [(correct & (radii > e)).mean() for e in grid]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(grid, curve)
    left.scatter(eps_list, [cert.certified_accuracy(e) for e in eps_list], color="C3", zorder=3)
    left.set(xlabel=f"eps ({cert.norm})", ylabel="certified accuracy", ylim=(0, 1), title=title)
    right.hist(radii[correct], bins=40)
    right.set(xlabel=f"certified radius ({cert.norm}), correct examples", ylabel="examples", title="radii")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _run_fast(method: str, model_spec: str, data: str, n: int | None, eps: str, out: str | None, device: str | None,
              batch_size: int, compile_kernel: bool = False, **_: object) -> None:
    from ..certify.linf_dist_kernel import compile_failure
    from ..certify.linf_dist_nets import set_linf_dist_compiled
    from ..data import load_dataset
    from ..device import resolve_device
    from ..models import load_model
    from ..results import default_out_dir, make_record, write_record

    eps_list = _parse_eps(eps)
    started = time.perf_counter()
    dev = resolve_device(device)
    model = load_model(model_spec, device=dev)
    if method == "linf-dist":
        set_linf_dist_compiled(model, compile_kernel)
    dataset = load_dataset(data, "test")
    dataset = dataset.subset(n) if n is not None else dataset
    setup = time.perf_counter() - started
    cert = _certify_fast(method, model, dataset.images, dataset.labels, batch_size)
    correct = cert.predictions == cert.labels
    summary = {
        "n": len(cert.status),
        "clean_accuracy": float(correct.float().mean()),
        "certified_accuracy": {f"{e:g}": cert.certified_accuracy(e) for e in eps_list},
        "median_radius_correct": float(cert.radius[correct].median()) if bool(correct.any()) else 0.0,
        **({"lipschitz": cert.details["lipschitz"]} if "lipschitz" in cert.details else {}),
    }
    table = Table(title=f"{method} ({cert.norm}) · {model_spec} · {data} (n={summary['n']}), clean {summary['clean_accuracy']:.3f}")
    table.add_column(f"eps ({cert.norm})", justify="right")
    table.add_column("certified accuracy", justify="right")
    for key, value in summary["certified_accuracy"].items():
        table.add_row(key, f"{value:.4f}")
    Console().print(table)
    out_dir = Path(out) if out is not None else default_out_dir(f"certify-{method}")
    settings = {"method": method, "model": model_spec, "data": data, "n": summary["n"], "eps": eps_list,
                "batch_size": batch_size, "device": str(dev)}
    if method == "linf-dist":
        settings["compile"] = compile_kernel
        if compile_kernel and compile_failure() is not None:
            settings["compile_failure"] = compile_failure()
    timings = {"setup": setup, "certify": cert.seconds, "total": time.perf_counter() - started}
    record = make_record("certify", settings, dev, timings, summary, examples=cert.to_json(), norm=cert.norm)
    json_path = write_record(out_dir, record)
    png_path = _plot(cert, eps_list, out_dir / "certified.png", f"{method}: {model_spec} on {data}")
    Console().print(f"wrote {json_path} and {png_path}")


def _run_geocert(method: str, model_spec: str, data: str, n: int | None, eps: str, out: str | None, device: str | None,
                 norm: str, time_limit: float, seed: int, search: str, **_: object) -> None:
    from .certify_geocert import run_geocert

    record, out_dir = run_geocert(model_spec, data, 3 if n is None else n, norm, time_limit, out, device, seed,
                                  search)
    table = Table(title=f"GeoCert ({norm}, {record['settings']['search']} search)")
    searched = "regions" if record["settings"]["search"] == "regions" else "nodes"
    for column in ("#", "label", "pred", "status", "radius", "upper", searched, "seconds"):
        table.add_column(column)
    for i, row in enumerate(record["examples"]):
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        table.add_row(str(i), str(row["label"]), str(row["prediction"]), row["status"], fmt(row["radius"]),
                      fmt(row["upper"]), str(row["n_regions"]), f"{row['seconds']:.2f}")
    Console().print(table)
    Console().print(f"results: {out_dir / 'results.json'}  histogram: {out_dir / 'radii.png'}")


#: method name -> its spec; adding a method is one entry here.
METHODS: dict[str, MethodSpec] = {
    "lmt": MethodSpec("mnist-lmt", "l2", "0.1,0.3,0.5,1.0", _run_fast),
    "linf-dist": MethodSpec("mnist-linf-dist", "linf", "0.1,0.2,0.3", _run_fast),
    "geocert": MethodSpec("mnist-fc", "l2", "", _run_geocert),
}


def _parse_eps(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidInputError(f"--eps must be comma-separated numbers such as 0.1,0.3, got {text!r}") from None
    if not values or any(not v >= 0 or v == float("inf") for v in values):
        raise InvalidInputError(f"--eps needs finite non-negative radii such as 0.1,0.3, got {text!r}")
    return values


@click.command("certify")
@click.option("--method", type=click.Choice(list(METHODS)), default="lmt", show_default=True)
@click.option("--model", "model_spec", default=None, help="Bundled name or checkpoint [default: the method's bundled model].")
@click.option("--data", default="mnist-5k", show_default=True, help="Dataset (test split).")
@click.option("--eps", default=None, help="Comma-separated radii for lmt/linf-dist [default: per method].")
@click.option("--n", type=int, default=None, help="Number of test images [default: all for lmt/linf-dist, 3 for geocert].")
@click.option("--norm", type=click.Choice(["l1", "l2", "linf"]), default=None, help="geocert: norm [l2]; lmt is l2, linf-dist linf.")
@click.option("--time-limit", type=float, default=20.0, show_default=True, help="geocert: seconds per example.")
@click.option("--search", type=click.Choice(["auto", "regions", "branch"]), default="auto", show_default=True,
              help="geocert: through the linear regions, or branch and bound over ReLU splits (same exact radius); "
                   "auto = branch in linf/l1, regions in l2 (the faster on MNIST-sized nets).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=500, show_default=True, help="lmt/linf-dist: examples per batch.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output folder [default: mistered-out/certify-<method>-<time>].")
@click.option("--device", default=None, help="cpu, cuda or auto (default).")
@click.option("--compile/--no-compile", "compile_kernel", default=False, show_default=True,
              help="linf-dist: the compiled p = inf kernel of the L-inf-dist layers (same radii; pays ~2-4 s of "
                   "compiling per layer width, so it wins only on large test sets; falls back to the eager kernel "
                   "with a warning when no C++ compiler works).")
def certify(method, model_spec, data, eps, n, norm, time_limit, search, seed, batch_size, out, device,
            compile_kernel) -> None:
    """Certify robustness: LMT (L2), L∞-dist nets (L∞) or GeoCert (exact)."""
    spec = METHODS[method]
    if n is not None and n < 1:
        raise InvalidInputError(f"--n must be at least 1, got {n}")
    if batch_size < 1:
        raise InvalidInputError(f"--batch-size must be at least 1, got {batch_size}")
    if method != "geocert" and norm is not None and norm != spec.norm:
        raise InvalidInputError(f"--method {method} certifies the {spec.norm} norm only, got --norm {norm}")
    if method == "geocert" and eps is not None:
        raise InvalidInputError("--eps applies to lmt and linf-dist; geocert reports each example's exact radius")
    spec.run(method=method, model_spec=model_spec or spec.model, data=data, n=n, eps=eps or spec.eps, out=out,
             device=device, batch_size=batch_size, norm=norm or spec.norm, time_limit=time_limit, seed=seed,
             search=search, compile_kernel=compile_kernel)
