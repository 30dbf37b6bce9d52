"""``exact_distance``: exact minimal adversarial distances of a batch, by the search the caller names.

* ``search="regions"``: GeoCert through the linear regions (:func:`~.geocert.geocert`);
* ``search="branch"``: branch and bound over ReLU splits (:func:`~.branch.branch_and_bound_distance`);
* ``search="mip"``: one MILP per target class (:func:`~.mip.mindist_mip`; L∞ and L1 only);
* ``search="auto"``: per norm, what ``benchmarks/exact_distance.py`` measured faster (:data:`AUTO_SEARCH`).

Any piecewise-linear network the bound graph traces (residual additions, BatchNorm, pooling, concatenation ...)
is lowered to the chain form first (:mod:`mistered.certify.graph.piecewise_lowering`, exact on the pixel box).
A network with more than :data:`MAX_EXACT_NEURONS` ReLU neurons is not lowered (its dense chain alone would take
gigabytes and no exact search would finish): its examples get the bound engine's certified radius (IBP, then
CROWN bisection steps while the time limit allows) as an anytime lower bound, status ``certified`` (bisection
finished) or ``timeout``.

Every example's ``time_limit`` covers its whole search; the shared set-up (lowering, seed search) is timed in
``details["setup_seconds"]``.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from ...errors import InvalidInputError
from ...validation import check_batch, check_inputs, check_logits, check_nonnegative
from ..bounds import certified_radius, margin_lower_bounds
from ..bounds.certify import default_upper
from ..certificate import Certificate
from ..graph import ops
from ..graph.graph import BoundGraph
from ..graph.piecewise import PiecewiseLinearNet, check_piecewise_model
from ..graph.piecewise_lowering import as_plnet
from ..graph.trace import trace_graph
from .boundary_search import FlatModel, boundary_search
from .branch import branch_and_bound_distance
from .geocert import geocert
from .mip import mindist_mip
from .region_search import NORMS, GeoCertResult

__all__ = ["exact_distance", "certify_geocert", "relu_neurons", "SEARCHES", "AUTO_SEARCH", "MAX_EXACT_NEURONS", "PIXEL_DOMAIN"]

logger = logging.getLogger(__name__)

SEARCHES = ("auto", "regions", "branch", "mip")
#: ``search="auto"``: per norm, the search that solved more MNIST-sized examples in the benchmark
AUTO_SEARCH = {"linf": "branch", "l1": "branch", "l2": "branch"}
#: ReLU neurons (nonlinear outputs of the traced graph) above which no exact search is attempted
MAX_EXACT_NEURONS = 4000


def relu_neurons(graph: BoundGraph) -> int:
    """The number of ReLU-like neurons of a traced graph for one example: each one a possible split of an exact
    search (the size of its piecewise-linear chain form, carried values aside)."""
    return sum(node.numel for node in graph if isinstance(node.op, ops.NONLINEAR))
PIXEL_DOMAIN = (0.0, 1.0)
_ORDER = {"l1": 1, "l2": 2, "linf": float("inf")}


def exact_distance(
    model: torch.nn.Module | PiecewiseLinearNet,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str = "l2",
    *,
    search: str = "auto",
    time_limit: float | None = None,
    x_adv: torch.Tensor | None = None,
    seed_search: bool = True,
) -> Certificate:
    """Exact minimal ``norm`` distances (pixel units) from each ``x`` to another class, within ``[0, 1]``.

    Args:
        model: a piecewise-linear ReLU network (any traceable one, see the module docstring) or its chain form.
        x: ``(B, *input_shape)`` in [0, 1]; y: ``(B,)`` labels in ``[0, K)``.
        norm: "l1", "l2" or "linf".
        search: "auto", "regions", "branch" or "mip" (see the module docstring).
        time_limit: seconds per example; a search that reaches it reports its anytime bounds, status ``timeout``.
        x_adv: ``(B, *input_shape)`` known adversarial inputs (e.g. an attack's) seeding the upper bounds.
        seed_search: also seed with :func:`~.boundary_search.boundary_search` (all examples at once).

    Returns:
        A :class:`~mistered.certify.certificate.Certificate` (method ``"exact"``): ``radius`` the proved lower
        bound, ``upper`` the distance of the best adversarial point found; status ``exact`` (equal),
        ``timeout``, ``certified`` (a lower bound only: too large a network) or ``misclassified`` (radius 0).
        ``details``: per-example ``n_regions`` (regions or nodes), ``n_lp_solves``, ``seconds``,
        ``seed_distance``; ``search``, ``setup_seconds``.
    """
    search = _check(norm, search, time_limit)
    x, y = check_batch(x, y, images=False)
    if x_adv is not None and check_inputs(x_adv, images=False, name="x_adv").shape != x.shape:
        raise InvalidInputError(f"x_adv must have the shape of x, {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    start = time.perf_counter()
    if not isinstance(model, PiecewiseLinearNet):
        graph = trace_graph(check_piecewise_model(model), tuple(x.shape[1:]))
        neurons = relu_neurons(graph)
        if neurons > MAX_EXACT_NEURONS:
            return _engine_bounds(graph, x, y, norm, time_limit, x_adv, neurons, start)
    net = as_plnet(model, tuple(x.shape[1:]), PIXEL_DOMAIN).to(torch.float64)
    flat = net.flatten_input(x.cpu() if net.device.type == "cpu" else x).to(net.device)
    logits = net(flat)
    check_logits(logits, y.to(logits.device), what="the network")
    preds = logits.argmax(1).cpu()
    seeds, seed_dist = _seeds(net, flat, norm, x_adv, seed_search)
    setup = time.perf_counter() - start
    rows = []
    for i, yi in enumerate(y.tolist()):
        if int(preds[i]) != int(yi):
            rows.append((0.0, 0.0, "misclassified", 0, 0, 0.0))
            continue
        r = _solve(search, net, flat[i].cpu(), norm, time_limit, seeds[i], seed_dist[i])
        rows.append((r.lower, r.upper, r.status, r.n_regions, r.n_lp_solves, r.seconds))
    details = {"n_regions": [r[3] for r in rows], "n_lp_solves": [r[4] for r in rows],
               "seconds": [r[5] for r in rows], "seed_distance": seed_dist, "search": search, "setup_seconds": setup}
    return Certificate("exact", norm, torch.tensor([r[0] for r in rows], dtype=torch.float64),
                       torch.tensor([r[1] for r in rows], dtype=torch.float64), [r[2] for r in rows], preds,
                       y.cpu().clone(), time.perf_counter() - start, details)


def _check(norm: str, search: str, time_limit: float | None) -> str:
    """Validate the options; returns the search that runs (``auto`` resolved)."""
    if norm not in NORMS:
        raise InvalidInputError(f"norm must be one of {NORMS}, got {norm!r}")
    if search not in SEARCHES:
        raise InvalidInputError(f"search must be one of {SEARCHES}, got {search!r}")
    if search == "mip" and norm == "l2":
        raise InvalidInputError("search 'mip' handles norm 'linf' or 'l1' (L2 needs a MIQP); use 'branch' or 'regions'")
    if time_limit is not None:
        check_nonnegative(time_limit, "time_limit")
    return AUTO_SEARCH[norm] if search == "auto" else search


def _seeds(net: PiecewiseLinearNet, flat: torch.Tensor, norm: str, x_adv: torch.Tensor | None,
           seed_search: bool) -> tuple[list[torch.Tensor | None], list[float]]:
    """Per example, the nearer of ``x_adv`` and the boundary search's point, and its distance (``inf``: none)."""
    seeds = [x_adv[i].reshape(-1).to(flat) if x_adv is not None else None for i in range(len(flat))]
    dist = [float(torch.linalg.vector_norm(s - xi, ord=_ORDER[norm])) if s is not None else math.inf
            for s, xi in zip(seeds, flat)]
    if seed_search and len(flat):
        found, found_dist = boundary_search(net, flat, norm)
        for i in range(len(flat)):
            if float(found_dist[i]) < dist[i]:
                seeds[i], dist[i] = found[i], float(found_dist[i])
    return seeds, dist


def _solve(search: str, net: PiecewiseLinearNet, x: torch.Tensor, norm: str, time_limit: float | None,
           seed: torch.Tensor | None, seed_dist: float) -> GeoCertResult:
    """One example's search, as a :class:`~.region_search.GeoCertResult`."""
    seed = None if seed is None else seed.cpu()
    if search != "mip":
        solve = geocert if search == "regions" else branch_and_bound_distance
        return solve(net, x, norm=norm, time_limit=time_limit, x_adv=seed)
    result = mindist_mip(net, x, norm=norm, time_limit=time_limit,
                         upper_bound=seed_dist if np.isfinite(seed_dist) else None)
    upper, point = result.upper, result.x_adv
    if point is None and seed is not None and seed_dist <= upper:  # nothing strictly nearer than the seed
        upper, point = seed_dist, seed.reshape(net.input_shape)
    return GeoCertResult(result.lower, upper, result.status, point, result.predicted, norm, 0, 0, result.seconds)


def _engine_bounds(graph: BoundGraph, x: torch.Tensor, y: torch.Tensor, norm: str, time_limit: float | None,
                   x_adv: torch.Tensor | None, neurons: int, start: float) -> Certificate:
    """Too large for an exact search: per example, the engine's certified radius (IBP bisection, then CROWN
    bisection steps until ``time_limit``) as the lower bound and the nearer of ``x_adv`` and the boundary search's
    point as the upper bound."""
    logger.warning("%d ReLU neurons is too many for an exact search (at most %d): reporting the bound engine's "
                   "certified radius (a lower bound) instead", neurons, MAX_EXACT_NEURONS)
    x = x.to(device=graph.device, dtype=graph.dtype)
    with torch.no_grad():
        logits = graph.forward(x)
    check_logits(logits, y.to(logits.device), what="the network")
    preds = logits.argmax(1).cpu()
    lower, upper, status, seconds = [], [], [], []
    for i in range(x.shape[0]):
        began = time.perf_counter()
        deadline = math.inf if time_limit is None else began + time_limit
        if int(preds[i]) != int(y[i]):
            lower.append(0.0), upper.append(0.0), status.append("misclassified"), seconds.append(0.0)
            continue
        top = _adversarial_distance(graph, x[i], x_adv, i, int(preds[i]), norm)
        lo, finished = _anytime_radius(graph, x[i:i + 1], y[i:i + 1], norm, top, deadline)
        lower.append(lo), upper.append(top), status.append("certified" if finished else "timeout")
        seconds.append(time.perf_counter() - began)
    details = {"n_regions": [0] * len(lower), "n_lp_solves": [0] * len(lower), "seconds": seconds,
               "seed_distance": upper, "search": "bounds", "setup_seconds": 0.0, "neurons": neurons}
    return Certificate("exact", norm, torch.tensor(lower, dtype=torch.float64),
                       torch.tensor(upper, dtype=torch.float64), status, preds, y.cpu().clone(),
                       time.perf_counter() - start, details)


def _adversarial_distance(graph: BoundGraph, x: torch.Tensor, x_adv: torch.Tensor | None, i: int, c: int,
                          norm: str) -> float:
    """The distance of the nearer of ``x_adv[i]`` (if the model classifies it other than ``c``) and the boundary
    search's point (local forms by autograd) from ``x``; ``inf`` if neither."""
    best = boundary_search(FlatModel(graph.forward, graph.input_shape), x[None], norm)[1][0].item()
    if x_adv is not None:
        point = x_adv[i:i + 1].to(x)
        if int(graph.forward(point).argmax(1)) != c:
            best = min(best, float(torch.linalg.vector_norm((point[0] - x).flatten(), ord=_ORDER[norm])))
    return best


def _anytime_radius(graph: BoundGraph, x: torch.Tensor, y: torch.Tensor, norm: str, top: float,
                    deadline: float) -> tuple[float, bool]:
    """A certified radius: IBP bisection, then CROWN from there, doubling the radius while CROWN proves it and
    bisecting (geometrically) once it fails, 16 bounds at most; a bound is started only if one twice as long as
    the last would end before ``deadline`` (CROWN's cost grows with the radius). Returns the radius and whether
    the search finished."""
    top = min(top, default_upper(norm, graph.input_shape))
    lo = float(certified_radius(graph, x, y, norm, method="ibp", upper=top, steps=16)[0])
    hi, step = math.inf, 0.0
    for _ in range(16):
        mid = (2 * lo if lo > 0 else top / 1024) if math.isinf(hi) else math.sqrt(lo * hi) if lo > 0 else hi / 16
        if mid >= top:  # nothing beyond the known adversarial distance to prove
            mid = math.sqrt(lo * top) if lo > 0 else top / 2
            hi = top
        began = time.perf_counter()
        if began + 2 * step >= deadline:
            return lo, False
        if bool((margin_lower_bounds(graph, x, y, mid, norm, "crown") > 0).all()):
            lo = mid
        else:
            hi = mid
        step = time.perf_counter() - began
    return lo, True


#: The batch entry point's name before it said what runs (``search`` does now); kept for old code.
certify_geocert = exact_distance
