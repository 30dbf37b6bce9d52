"""Which certifier applies to which model and threat, and why the others do not.

A :class:`CertifierSpec` names a certifier, the norms it certifies, a check that returns the reason it
cannot handle a model (``None`` when it can) and a factory for the function that certifies a batch.
The built-in ones (:data:`CERTIFIERS`):

* ``lmt`` — L2, any model :class:`~mistered.certify.lipschitz.global_bound.LipschitzBound` supports (sound on every
  such model, tight only on LMT-trained ones);
* ``linf-dist`` — L∞, L∞-dist nets only;
* ``exact`` — L2 and L∞, exact minimal distances (:func:`~mistered.certify.exact.exact_distance`, its automatic
  search) on piecewise-linear (ReLU) nets with at most :data:`MAX_EXACT_RELUS` ReLUs, on the first ``exact_n``
  examples; ``geocert`` is its deprecated name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..certify.certificate import Certificate
from ..errors import InvalidInputError, UnsupportedLayerError
from ..validation import describe_model

__all__ = ["CertifierSpec", "CertifierPlan", "CERTIFIERS", "MAX_EXACT_RELUS", "plan_certifiers"]

#: Certify a batch ``(x (B, C, H, W), y (B,)) -> Certificate``.
CertifyFn = Callable[[torch.Tensor, torch.Tensor], Certificate]

#: Above this many ReLUs an exact search over linear regions is hopeless on a CPU budget.
MAX_EXACT_RELUS = 2000


@dataclass(frozen=True)
class CertifierSpec:
    """A certifier the evaluation can run.

    Attributes:
        name: e.g. ``"lmt"``.
        norms: the norms it certifies (``"linf"``, ``"l2"``).
        check: ``check(model, input_shape) -> reason or None``: why it cannot certify ``model`` (``None``: it can).
        build: ``build(model, norm, time_limit) -> certify(x, y)``; ``time_limit`` is seconds per example.
        exact: its radii can be exact (status ``"exact"``): it gives the exact robust accuracy.
        subset: it runs on the first ``exact_n`` examples only (expensive), one example per saved chunk.
    """

    name: str
    norms: tuple[str, ...]
    check: Callable[[nn.Module, tuple[int, ...]], str | None]
    build: Callable[[nn.Module, str, float], CertifyFn]
    exact: bool = False
    subset: bool = False


@dataclass(frozen=True)
class CertifierPlan:
    """One certifier for one norm: whether it runs, and if not, why."""

    method: str
    norm: str
    applies: bool
    reason: str = ""

    def to_json(self) -> dict[str, object]:
        return {"method": self.method, "norm": self.norm, "applies": self.applies, "reason": self.reason}


def _lmt_check(model: nn.Module, input_shape: tuple[int, ...]) -> str | None:
    from ..certify.lipschitz.graph_bound import bound_for_model

    try:
        bound_for_model(model, input_shape)
    except (UnsupportedLayerError, InvalidInputError) as error:
        return f"no Lipschitz bound for this model: {error}"
    return None


def _lmt_build(model: nn.Module, norm: str, time_limit: float) -> CertifyFn:
    from ..certify.lipschitz.lmt import LMTCertifier

    return LMTCertifier(model).certify


def _linf_dist_check(model: nn.Module, input_shape: tuple[int, ...]) -> str | None:
    from ..models.linf_dist.nets import LinfDistNet

    return None if isinstance(model, LinfDistNet) else f"needs an L∞-dist net, got {describe_model(model)}"


def _linf_dist_build(model: nn.Module, norm: str, time_limit: float) -> CertifyFn:
    from ..certify.lipschitz.linf_dist import certify_linf_dist

    return lambda x, y: certify_linf_dist(model, x, y)


def _exact_check(model: nn.Module, input_shape: tuple[int, ...]) -> str | None:
    from ..certify.exact import relu_neurons
    from ..certify.graph.piecewise import check_piecewise_model
    from ..certify.graph.piecewise_lowering import lower_module
    from ..certify.graph.trace import trace_graph

    try:
        relus = relu_neurons(trace_graph(check_piecewise_model(model), input_shape))
        if relus > MAX_EXACT_RELUS:
            return (f"{relus} ReLUs is too many for an exact search (at most {MAX_EXACT_RELUS}); "
                    "use a small fully connected net such as mnist-fc")
        lower_module(model, input_shape, domain=(0.0, 1.0))
    except (UnsupportedLayerError, InvalidInputError) as error:
        return f"not a piecewise-linear ReLU net: {error}"
    return None


def _exact_build(model: nn.Module, norm: str, time_limit: float) -> CertifyFn:
    from ..certify.exact import PIXEL_DOMAIN, exact_distance
    from ..certify.graph.piecewise import PiecewiseLinearNet
    from ..certify.graph.piecewise_lowering import as_plnet

    nets: dict[tuple[int, ...], PiecewiseLinearNet] = {}

    def certify(x: torch.Tensor, y: torch.Tensor) -> Certificate:
        shape = tuple(x.shape[1:])
        if shape not in nets:
            nets[shape] = as_plnet(model, shape, PIXEL_DOMAIN)
        return exact_distance(nets[shape], x, y, norm=norm, time_limit=time_limit)

    return certify


CERTIFIERS: dict[str, CertifierSpec] = {
    "lmt": CertifierSpec("lmt", ("l2",), _lmt_check, _lmt_build),
    "linf-dist": CertifierSpec("linf-dist", ("linf",), _linf_dist_check, _linf_dist_build),
    "exact": CertifierSpec("exact", ("l2", "linf"), _exact_check, _exact_build, exact=True, subset=True),
}


#: deprecated certifier names -> today's
_RENAMED = {"geocert": "exact"}


def _renamed(method: str) -> str:
    if method in _RENAMED:
        warnings.warn(f"the certifier {method!r} is now called {_RENAMED[method]!r}", DeprecationWarning, stacklevel=3)
    return _RENAMED.get(method, method)


def plan_certifiers(model: nn.Module, input_shape: tuple[int, ...], norms: list[str] | tuple[str, ...],
                    methods: list[str] | tuple[str, ...],
                    certifiers: Mapping[str, CertifierSpec] = CERTIFIERS) -> list[CertifierPlan]:
    """One :class:`CertifierPlan` per requested method and evaluated norm (in that order).

    Args:
        model: the model, in eval mode.
        input_shape: ``(C, H, W)`` of one input.
        norms: the norms of the additive threats being evaluated (``"linf"``, ``"l2"``).
        methods: certifier names (keys of ``certifiers``).
        certifiers: the available certifiers.

    Raises:
        InvalidInputError: an unknown method name.
    """
    methods = [_renamed(m) for m in methods]
    unknown = [m for m in methods if m not in certifiers]
    if unknown:
        raise InvalidInputError(f"unknown certifier(s) {unknown}; choose from {', '.join(certifiers)}")
    plans: list[CertifierPlan] = []
    for method in methods:
        spec = certifiers[method]
        reason = None
        for norm in norms:
            if norm not in spec.norms:
                plans.append(CertifierPlan(method, norm, False, f"{method} certifies {'/'.join(spec.norms)} balls only"))
                continue
            if reason is None:
                reason = spec.check(model, input_shape) or ""
            plans.append(CertifierPlan(method, norm, not reason, reason))
        if not norms:
            plans.append(CertifierPlan(method, "-", False, "no linf/l2 additive threat is evaluated"))
    return plans
