"""One interface over the local Lipschitz estimators LipMIP is compared with (Jordan & Dimakis 2020, Table 1).

Example:
    >>> est = estimate_lipschitz(load_model("mnist-fc"), x0, radius=0.1, norm="linf", method="lipmip")
    >>> est.value, est.kind, est.status        # (B,) exact constants, "exact", ["exact", ...]

All methods bound or estimate ``L = max_{x in B} max_{c in C} ||J(x)^T c||_*`` (see
:mod:`~mistered.certify.lipschitz.local.directions`) over the box ``B = {x : ||x - x0||_∞ <= radius}``:

=========  ========  ==========================================================================
method     kind      what
=========  ========  ==========================================================================
naive      upper     product of layer operator norms (global, ignores the box)
sampling   lower     largest gradient dual norm at random points of the box (and x0)
clever     estimate  CLEVER (Weng et al. 2018): reverse-Weibull location of sampled batch maxima
fastlip    upper     Fast-Lip (Weng et al. 2018): interval bounds on the Jacobian from interval bounds
lp         upper     the LP relaxation of the LipMIP MIP (backward encoding)
lipmip     exact     LipMIP: the MIP solved exactly (a valid upper bound, status "timeout", on a time limit)
=========  ========  ==========================================================================
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ....errors import InvalidInputError
from ....validation import check_inputs, check_nonnegative
from ...bounds.chain_interval import interval_bounds, linf_box
from ...graph.piecewise import PiecewiseLinearNet
from ...graph.piecewise_lowering import as_plnet
from .directions import DUAL_NORMS, OutputDirections, max_dual_norm, resolve_objective
from .jacobian import fastlip_bound, jacobians
from .lipmip import solve_lipmip

__all__ = ["LipschitzEstimate", "EstimatorOptions", "METHODS", "KINDS", "estimate_lipschitz", "as_plnet"]

log = logging.getLogger(__name__)

KINDS = ("exact", "upper", "lower", "estimate")
_CHUNK = 256  # points per Jacobian batch when sampling


@dataclass
class LipschitzEstimate:
    """The result of one estimator on a batch.

    Attributes:
        method: the estimator name (a key of :data:`METHODS`).
        value: ``(B,)`` the constant, bound or estimate per example (float64).
        kind: ``"exact"``, ``"upper"`` (a sound upper bound), ``"lower"`` (a sound lower bound) or
            ``"estimate"`` (neither).
        seconds: wall-clock time for the whole batch.
        status: per example, ``"ok"``, ``"exact"`` or ``"timeout"`` (then ``value`` is a valid upper bound).
        details: method extras (``lower``/``upper`` bounds and per-example times for the MIPs, sample counts...).
    """

    method: str
    value: torch.Tensor
    kind: str
    seconds: float
    status: list[str]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EstimatorOptions:
    """Settings the estimators share; each reads only its own.

    Attributes:
        seed: seed of the sampling estimators' ``torch.Generator``.
        samples: points per example for ``sampling``.
        clever_batches, clever_batch_size: CLEVER's number of batches and points per batch.
        time_limit: seconds per example for ``lipmip`` and ``lp`` (``None``: no limit).
        solver: the MIP backend of ``lipmip`` (default HIGHS through highspy; SCIP or CBC through OR-Tools) or the
            OR-Tools LP backend of ``lp`` (default GLOP).
        mip_gap: relative gap at which LipMIP counts as solved.
        formulation: LipMIP's encoding, ``"auto"``, ``"forward"`` or ``"backward"`` (see
            :func:`~mistered.certify.lipschitz.local.lipmip.solve_lipmip`). ``lp`` always relaxes the backward
            (LipMIP paper's) encoding, whose relaxation is the tighter of the two on wide inputs.
        bounds: pre-activation bounds behind the stable-neuron sets and big-M constants of ``lipmip`` and
            ``lp``: ``"crown"`` (linear relaxation intersected with intervals; tighter, fewer binaries, faster),
            ``"interval"`` (IBP only), ``"lp"`` (CROWN tightened by LP, tangent big-M too) or ``"auto"`` (``"lp"``
            when CROWN leaves many unstable neurons, else ``"crown"``). All are valid, so the exact value does not
            depend on it.
    """

    seed: int = 0
    samples: int = 1000
    clever_batches: int = 50
    clever_batch_size: int = 64
    time_limit: float | None = None
    solver: str | None = None
    mip_gap: float = 1e-6
    formulation: str = "auto"
    bounds: str = "auto"


_Estimator = Callable[[PiecewiseLinearNet, torch.Tensor, torch.Tensor, OutputDirections, str, EstimatorOptions], tuple]


def _operator_norm(w: torch.Tensor, norm: str) -> torch.Tensor:
    """``||W||_{p->p}``: max abs row sum (L∞), max abs column sum (L1), spectral norm (L2)."""
    if norm == "linf":
        return w.abs().sum(1).max()
    if norm == "l1":
        return w.abs().sum(0).max()
    return torch.linalg.matrix_norm(w, ord=2)


def _naive(net, lower, upper, directions, norm, opts):
    hidden = math.prod(float(_operator_norm(w, norm)) for w in net.weights[:-1])
    last = net.weights[-1].expand(lower.shape[0], 1, -1, -1)
    return max_dual_norm(last, directions, norm)[:, 0] * hidden, {}


def _uniform_points(lower: torch.Tensor, upper: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` uniform points in each box -> ``(B, count, d)``."""
    u = torch.rand(lower.shape[0], count, lower.shape[1], generator=generator, dtype=lower.dtype)
    return lower[:, None] + u.to(lower.device) * (upper - lower)[:, None]


def _gradient_norms(net, points: torch.Tensor, directions: OutputDirections, norm: str) -> torch.Tensor:
    """``max_c ||J(x)^T c||_*`` at ``points (B, S, d)`` -> ``(B, S)``, in chunks of points."""
    batch, count, dim = points.shape
    out = []
    for start in range(0, count, _CHUNK):
        chunk = points[:, start : start + _CHUNK]
        jac = jacobians(net, chunk.reshape(-1, dim)).reshape(batch, chunk.shape[1], net.out_features, dim)
        out.append(max_dual_norm(jac, directions, norm))
    return torch.cat(out, dim=1)


def _sampling(net, lower, upper, directions, norm, opts):
    generator = torch.Generator().manual_seed(opts.seed)
    points = _uniform_points(lower, upper, opts.samples, generator)
    centre = ((lower + upper) / 2)[:, None]
    norms = _gradient_norms(net, torch.cat([centre, points], dim=1), directions, norm)
    return norms.amax(1), {"samples": opts.samples + 1}


def _clever(net, lower, upper, directions, norm, opts):
    from scipy import stats

    generator = torch.Generator().manual_seed(opts.seed)
    values, fits = [], []
    count = opts.clever_batches * opts.clever_batch_size
    norms = _gradient_norms(net, _uniform_points(lower, upper, count, generator), directions, norm)
    maxima = norms.reshape(lower.shape[0], opts.clever_batches, opts.clever_batch_size).amax(2).cpu().double().numpy()
    for row in maxima:
        top = float(row.max())
        if float(row.min()) >= top * (1 - 1e-9):  # all batch maxima equal (one linear piece): nothing to fit
            values.append(top)
            fits.append("constant")
            continue
        try:
            _, loc, _ = stats.weibull_max.fit(row, loc=top * 1.01 + 1e-12)
            values.append(float(loc) if math.isfinite(loc) and loc > 0 else top)
            fits.append("weibull")
        except (RuntimeError, ValueError, FloatingPointError) as error:  # a failed fit falls back to the max
            log.warning("CLEVER reverse-Weibull fit failed (%s); using the sample maximum", error)
            values.append(top)
            fits.append("failed")
    value = torch.tensor(values, dtype=torch.float64, device=lower.device)
    return value, {"fits": fits, "batches": opts.clever_batches, "batch_size": opts.clever_batch_size}


def _fastlip(net, lower, upper, directions, norm, opts):
    return fastlip_bound(net, interval_bounds(net, lower, upper), directions, norm), {}


def _mip(relax: bool) -> _Estimator:
    def run(net, lower, upper, directions, norm, opts):
        solutions = [
            solve_lipmip(
                net, lower[i], upper[i], directions.select(i), norm, relax=relax, solver=opts.solver,
                time_limit=opts.time_limit, mip_gap=opts.mip_gap,
                formulation="backward" if relax else opts.formulation, bounds=opts.bounds,
            )
            for i in range(lower.shape[0])
        ]
        value = torch.tensor([s.value for s in solutions], dtype=torch.float64)
        details = {
            "lower": [s.lower for s in solutions],
            "upper": [s.upper for s in solutions],
            "example_seconds": [s.seconds for s in solutions],
            "maximisers": [s.x for s in solutions],
            "stats": [s.stats for s in solutions],
        }
        statuses = [s.status if (s.status == "timeout" or not relax) else "ok" for s in solutions]
        return value, details, statuses

    return run


#: method name -> (estimator, kind)
METHODS: dict[str, tuple[_Estimator, str]] = {
    "naive": (_naive, "upper"),
    "sampling": (_sampling, "lower"),
    "clever": (_clever, "estimate"),
    "fastlip": (_fastlip, "upper"),
    "lp": (_mip(relax=True), "upper"),
    "lipmip": (_mip(relax=False), "exact"),
}


def _domain(x0: torch.Tensor, radius: float, clip: tuple[float, float] | None) -> tuple[float, float] | None:
    """A scalar box ``(lo, hi)`` holding every example's box: where a model other than a plain chain is lowered to
    agree (values it carries through a ReLU layer are then single, always-active neurons, so LipMIP's generalised
    derivatives stay those of the model); ``None`` for an empty batch."""
    if x0.numel() == 0:
        return None
    lo, hi = float(x0.min()) - radius, float(x0.max()) + radius
    return (lo, hi) if clip is None else (max(lo, clip[0]), min(hi, clip[1]))


def estimate_lipschitz(
    model_or_net: nn.Module | PiecewiseLinearNet,
    x0: torch.Tensor,
    radius: float,
    norm: str = "linf",
    objective: object = "margin",
    method: str = "lipmip",
    *,
    clip: tuple[float, float] | None = None,
    options: EstimatorOptions | None = None,
) -> LipschitzEstimate:
    """Bound, estimate or compute the local Lipschitz constant around each ``x0``.

    Args:
        model_or_net: a piecewise-linear network (an ``nn.Sequential`` of the chain's layers, or any graph
            :mod:`~mistered.certify.graph.piecewise_lowering` lowers: residual blocks, pooling, cat ...; lowered to
            agree with the model on the examples' boxes) or its
            :class:`~mistered.certify.graph.piecewise.PiecewiseLinearNet`.
        x0: ``(B, *input_shape)`` box centres, in the network's input units (finite; any floating dtype, computed
            in the net's dtype; ``B = 0`` gives an empty estimate).
        radius: L∞ radius of the box, in input units (pixels in [0, 1] for images).
        norm: primal norm ``"linf"`` or ``"l1"`` (``"l2"`` for naive, sampling, clever and fastlip only).
        objective: see :func:`~mistered.certify.lipschitz.local.directions.resolve_objective`;
            ``"margin"`` = predicted class minus runner-up at ``x0``.
        method: a key of :data:`METHODS`.
        clip: intersect the box with ``[lo, hi]`` (e.g. ``(0.0, 1.0)`` for images); ``None``: no clipping,
            as in the LipMIP paper.
        options: :class:`EstimatorOptions` (seed, samples, time limit, solver...).

    Returns:
        A :class:`LipschitzEstimate`; ``value`` has shape ``(B,)``.
    """
    if method not in METHODS:
        raise InvalidInputError(f"unknown Lipschitz method {method!r}; choose from {sorted(METHODS)}")
    if norm not in DUAL_NORMS:
        raise InvalidInputError(f"norm must be one of {tuple(DUAL_NORMS)}, got {norm!r}")
    check_nonnegative(radius, "radius")
    options = options or EstimatorOptions()
    if options.time_limit is not None:
        check_nonnegative(options.time_limit, "time_limit")
    x0 = check_inputs(x0, images=False, domain=None, name="x0")
    net = as_plnet(model_or_net, tuple(x0.shape[1:]), domain=_domain(x0, radius, clip))
    start = time.perf_counter()
    x0 = net.flatten_input(x0.detach().to(net.device))
    estimator, kind = METHODS[method]
    if x0.shape[0] == 0:  # an empty batch: an empty estimate
        return LipschitzEstimate(method, torch.zeros(0, dtype=torch.float64), kind, 0.0, [])
    with torch.no_grad():
        directions = resolve_objective(objective, net(x0), norm)
        lower, upper = linf_box(x0, radius, clip=clip)
        value, details, *status = estimator(net, lower, upper, directions, norm, options)
    statuses = status[0] if status else ["ok"] * x0.shape[0]
    details.setdefault("objective", directions.description)
    return LipschitzEstimate(
        method, value.detach().double().cpu(), kind, time.perf_counter() - start, statuses, details
    )
