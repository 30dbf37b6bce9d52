"""``mistered certify``: certified robustness of a model.

Methods (one entry of :data:`METHODS` each, with its default model, norm, radii and runner):

* ``lmt``: Lipschitz-margin L2 radii (one forward pass; the bound is computed once);
* ``linf-dist``: L∞ radii ``margin / 2`` of an L∞-dist net;
* ``exact``: exact minimal distances (slow; a few examples) of any piecewise-linear ReLU network, by the search
  ``--search`` names: ``regions`` (GeoCert through the linear regions), ``branch`` (branch and bound over ReLU
  splits), ``mip`` (one MILP per class; L∞/L1), ``auto`` (the faster per norm); ``geocert`` is its deprecated
  alias (``--search regions`` unless ``--search`` is given);
* ``smoothing``: randomized smoothing's probabilistic L2 radii (any model; forward passes only);
* ``ibp``, ``crown``, ``alpha-crown``: the bound engine on the traced graph of any supported network
  (:mod:`mistered.certify.bounds`), in L∞, L2 or L1.

The fast methods stream the examples in batches and print certified accuracy at each ``--eps``; every method
writes ``results.json``, ``config.yaml`` and a plot. Finished batches (exact: examples) are saved under
``state/`` so ``--resume`` skips them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..errors import InvalidInputError
from .common import Run, check_positive, start_run
from .options import data_options, eps_option, model_options, parse_radii, run_options

__all__ = ["certify", "METHODS", "MethodSpec"]


@dataclass(frozen=True)
class MethodSpec:
    """A certification method of the command: its bundled default model, norm, default radii and examples, and
    its runner ``run(run, model, data, eps, options) -> None``."""

    model: str
    norm: str
    eps: tuple[float, ...]
    n: int | None
    run: Callable[..., None]


#: The bound engine's methods: any traced network, any norm.
BOUND_METHODS = ("ibp", "crown", "alpha-crown")
#: Their default radii per norm (pixel units of [0, 1] images).
BOUND_EPS = {"linf": (0.005, 0.01, 0.02), "l2": (0.1, 0.25, 0.5), "l1": (0.5, 1.0, 2.0)}


def _certifier(run: Run, method: str, model, data, resolved: dict[str, Any]) -> Callable[..., Any]:
    """``certify(x, y, first_row) -> Certificate`` for one batch, by ``method``."""
    import torch

    o = run.options
    if method == "smoothing":
        from ..certify.smoothing import smooth

        smoothed = smooth(model, o["sigma"], batch=o["noise_batch"])
        return lambda a, b, first: smoothed.certify(
            a, b, n0=o["n0"], n=o["samples"], alpha=o["alpha"],
            generator=torch.Generator().manual_seed(o["seed"] * 2**32 + first))
    if method in BOUND_METHODS:
        from ..certify.bounds import certify_bounds
        from ..certify.graph import trace_graph

        graph = trace_graph(model, tuple(data.sample_shape))
        return lambda a, b, first: certify_bounds(graph, a, b, eps=resolved["eps"], norm=resolved["norm"],
                                                  method=method)
    if method == "lmt":
        from ..certify.lipschitz.lmt import LMTCertifier

        lmt = LMTCertifier(model)
        return lambda a, b, first: lmt.certify(a, b)
    from ..certify.lipschitz.linf_dist import certify_linf_dist

    return lambda a, b, first: certify_linf_dist(model, a, b)


def _certify_fast(run: Run, method: str, model, data, state, resolved: dict[str, Any]) -> Any:
    """Certify ``data`` batch by batch with the library's LMT or L∞-dist certifier; one Certificate of all.

    Each batch's results are copied into tensors of all ``N`` examples allocated up front: a long-lived small
    tensor per batch would sit between the batches' large image buffers on the C heap and keep memory from
    being given back (peak memory then grows with ``N``; measured, see docs/cli.md)."""
    import torch

    from ..certify.certificate import Certificate
    from ..sharding import shard_batches

    certify = _certifier(run, method, model, data, resolved)
    n, batch_size = len(data), run.options["batch_size"]
    columns = {"radius": torch.empty(n), "upper": torch.empty(n), "predictions": torch.empty(n, dtype=torch.int64),
               "labels": torch.empty(n, dtype=torch.int64)}
    status, seconds, first = [], 0.0, None
    with run.progress(f"certify {method}", n) as bar:
        for index, x, y in shard_batches(data, batch_size):
            rows = slice(index * batch_size, index * batch_size + len(y))
            key = f"certify|{rows.start}-{rows.stop}"
            part = state.load(key)
            if part is None:
                cert = certify(x.to(run.device), y.to(run.device), rows.start)
                part = {**{k: getattr(cert, k).detach().cpu() for k in columns}, "status": list(cert.status),
                        "seconds": cert.seconds, "method": cert.method, "norm": cert.norm,
                        "details": {k: v for k, v in cert.details.items() if isinstance(v, (int, float, str))}}
                state.save(key, part)
            for name, column in columns.items():
                column[rows] = part[name]
            status += part["status"]
            seconds += part["seconds"]
            first = first or part
            bar.advance(len(y))
    return Certificate(method=first["method"], norm=first["norm"], status=status, seconds=seconds,
                       details=first["details"], **columns)


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


def _run_fast(run: Run, model, data, eps_list: list[float], resolved: dict[str, Any]) -> None:
    from ..models.linf_dist.kernel import compile_failure
    from ..models.linf_dist.nets import set_linf_dist_compiled
    from ..evaluate.state import open_state
    from ..results import finite_or_none, make_record

    method, started = run.options["method"], time.perf_counter()
    if method == "linf-dist":
        set_linf_dist_compiled(model, run.options["compile"])
    settings = run.settings(resolved, norm=resolved["norm"])
    if method == "linf-dist" and run.options["compile"] and compile_failure() is not None:
        settings["compile_failure"] = compile_failure()
    state = open_state(run.out, {"settings": settings, "inputs": run.inputs}, run.resuming, what="certification")
    cert = _certify_fast(run, method, model, data, state, resolved)
    correct = cert.predictions == cert.labels
    summary = {
        "n": len(cert.status),
        "clean_accuracy": float(correct.float().mean()),
        "certified_accuracy": {f"{e:g}": cert.certified_accuracy(e) for e in eps_list},
        "median_radius_correct": finite_or_none(float(cert.radius[correct].median())) if bool(correct.any()) else 0.0,
        **({"lipschitz": cert.details["lipschitz"]} if "lipschitz" in cert.details else {}),
    }
    model_name = resolved["model"]
    table = Table(title=f"{method} ({cert.norm}) · {model_name} · {data.name} (n={summary['n']}), "
                        f"clean {summary['clean_accuracy']:.3f}")
    table.add_column(f"eps ({cert.norm})", justify="right")
    table.add_column("certified accuracy", justify="right")
    for key, value in summary["certified_accuracy"].items():
        table.add_row(key, f"{value:.4f}")
    Console().print(table)
    examples = cert.to_json()
    for row, index in zip(examples, getattr(data, "indices", range(len(data)))):
        row.update(index=int(index), radius=finite_or_none(row["radius"]))
    timings = {"certify": cert.seconds, "total": time.perf_counter() - started}
    record = make_record("certify", settings, run.device, timings, summary, examples=examples, inputs=run.inputs,
                         norm=cert.norm)
    json_path = run.write(record, resolved)
    png_path = _plot(cert, eps_list, run.out / "certified.png", f"{method}: {model_name} on {data.name}")
    Console().print(f"wrote {json_path} and {png_path}")


def _run_exact(run: Run, model, data, eps_list: list[float], resolved: dict[str, Any]) -> None:
    from .certify_geocert import run_exact

    record = run_exact(run, model, data, resolved)
    search = record["settings"]["search"]
    table = Table(title=f"exact distance ({record['settings']['norm']}, {search} search)")
    searched = "regions" if search == "regions" else "nodes"
    for column in ("#", "label", "pred", "status", "radius", "upper", searched, "seconds"):
        table.add_column(column)
    for row in record["examples"]:
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        table.add_row(str(row["index"]), str(row["label"]), str(row["prediction"]), row["status"], fmt(row["radius"]),
                      fmt(row["upper"]), str(row["n_regions"]), f"{row['seconds']:.2f}")
    Console().print(table)
    Console().print(f"results: {run.out / 'results.json'}  histogram: {run.out / 'radii.png'}")


#: method name -> its spec; adding a method is one entry here.
METHODS: dict[str, MethodSpec] = {
    "lmt": MethodSpec("mnist-lmt", "l2", (0.1, 0.3, 0.5, 1.0), None, _run_fast),
    "linf-dist": MethodSpec("mnist-linf-dist", "linf", (0.1, 0.2, 0.3), None, _run_fast),
    "exact": MethodSpec("mnist-fc", "l2", (), 3, _run_exact),
    "geocert": MethodSpec("mnist-fc", "l2", (), 3, _run_exact),  # deprecated: exact --search regions
    "smoothing": MethodSpec("mnist-cnn", "l2", (0.25, 0.5, 0.75, 1.0), 100, _run_fast),
    **{name: MethodSpec("mnist-cnn", "linf", BOUND_EPS["linf"], 100, _run_fast) for name in BOUND_METHODS},
}
#: Methods that take any --norm (the others certify one norm only).
ANY_NORM = ("exact", "geocert", *BOUND_METHODS)
#: Methods that report each example's exact radius (no --eps).
EXACT_METHODS = ("exact", "geocert")


def _deprecated_geocert(search: str | None) -> str:
    """``--method geocert``: warn with the new spelling; it means ``--search regions`` unless one was given."""
    search = search or "regions"
    click.echo(f"warning: --method geocert is deprecated; use --method exact --search {search} (geocert now runs "
               "--search regions, GeoCert through the linear regions, unless --search says otherwise)", err=True)
    return search


@click.command("certify")
@click.option("--method", type=click.Choice(list(METHODS)), default="lmt", show_default=True)
@eps_option(extra_help=" Certified accuracy at each [default: lmt 0.1,0.3,0.5,1; linf-dist 0.1,0.2,0.3; smoothing "
            "0.25,0.5,0.75,1; ibp/crown/alpha-crown linf 0.005,0.01,0.02, l2 0.1,0.25,0.5, l1 0.5,1,2]; exact reports "
            "each example's exact radius.")
@click.option("--norm", type=click.Choice(["l1", "l2", "linf"]), default=None,
              help="exact: norm [l2]; ibp/crown/alpha-crown: norm [linf]; lmt and smoothing are l2, linf-dist linf.")
@click.option("--time-limit", type=float, default=20.0, show_default=True,
              help="exact: seconds per example; a search that reaches it reports its proved lower bound and best "
                   "adversarial distance (status timeout).")
@click.option("--search", type=click.Choice(["auto", "regions", "branch", "mip"]), default=None,
              help="exact: through the linear regions (GeoCert), branch and bound over ReLU splits, or one MILP per "
                   "class (linf/l1) - the same exact radius; auto (the default) = what the benchmark measured faster "
                   "per norm (today branch and bound).")
@click.option("--compile/--no-compile", "compile", default=False, show_default=True,
              help="linf-dist: the compiled p = inf kernel of the L-inf-dist layers (same radii; pays ~2-4 s of "
                   "compiling per layer width, so it wins only on large test sets; falls back to the eager kernel "
                   "with a warning when no C++ compiler works).")
@click.option("--sigma", type=float, default=None, help="smoothing: the noise level (pixel units), required.")
@click.option("--n0", type=int, default=100, show_default=True, help="smoothing: selection draws per example.")
@click.option("--samples", type=int, default=10_000, show_default=True, help="smoothing: estimation draws per example (Cohen et al.'s n).")
@click.option("--alpha", type=float, default=0.001, show_default=True, help="smoothing: each radius fails with probability at most alpha.")
@click.option("--noise-batch", type=int, default=1000, show_default=True, help="smoothing: noisy inputs per forward pass.")
@model_options(default="the method's bundled model: mnist-lmt, mnist-linf-dist or mnist-fc")
@data_options(n_default=None, n_note="; 3 for exact")
@run_options(batch_size=500)
def certify(**options: Any) -> None:
    """Certify robustness: LMT (L2), L∞-dist nets (L∞), exact minimal distances, randomized smoothing (L2), or the
    bound engine (IBP, CROWN, α-CROWN) on any traced network."""
    method = options["method"]
    if method == "geocert":
        options["search"] = _deprecated_geocert(options["search"])
    elif options["search"] is not None and method != "exact":
        raise InvalidInputError(f"--search applies to --method exact, not {method}")
    spec = METHODS[method]
    check_positive(n=options["n"], batch_size=options["batch_size"])
    norm = options["norm"]
    if method not in ANY_NORM and norm is not None and norm != spec.norm:
        raise InvalidInputError(f"--method {method} certifies the {spec.norm} norm only, got --norm {norm}")
    norm = norm or spec.norm
    eps_list = list(parse_radii(options["eps"]) or (BOUND_EPS[norm] if method in BOUND_METHODS else spec.eps))
    if method in EXACT_METHODS and eps_list:
        raise InvalidInputError(f"--eps does not apply to --method {method}: it reports each example's exact radius")
    if options["search"] == "mip" and norm == "l2":
        raise InvalidInputError("--search mip handles --norm linf or l1 (L2 needs a MIQP); use --search branch")
    if method in EXACT_METHODS and not options["time_limit"] > 0:
        raise InvalidInputError(f"--time-limit must be positive seconds, got {options['time_limit']}")
    if method == "smoothing" and options["sigma"] is None:
        raise InvalidInputError("--method smoothing needs --sigma, the noise level the model was trained with (e.g. 0.25)")
    n = options["n"] if options["n"] is not None else spec.n
    resolved = {"model": options["model"] or spec.model, "eps": eps_list, "n": n, "norm": norm}
    with start_run(f"certify-{method}", options) as run:
        model, data = run.load_inputs(spec.model, n=n)
        spec.run(run, model, data, eps_list, resolved)
