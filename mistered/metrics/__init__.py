"""Distances and similarities between image batches: Lp, LPIPS (AlexNet, VGG16, a network's own features), SSIM.

Every **distance** maps two batches ``(B, C, H, W)`` in ``[0, 1]`` to a ``(B,)`` tensor, 0 for identical
images, growing with the difference; budgets (``|lpips<=0.05``) bound distances:

==============  ===============================================================  ==========
name            what                                                             range
==============  ===============================================================  ==========
``linf``        ``max |x - y|``, pixel units                                     ``[0, 1]``
``l2``, ``l1``  norms of ``x - y`` over ``C*H*W``, pixel units                   ``[0, inf)``
``lpips``       LPIPS v0.1 with the ImageNet AlexNet trunk (= ``lpips-alex``)     ``[0, inf)``
``lpips-vgg``   LPIPS v0.1 with the ImageNet VGG16 trunk                          ``[0, inf)``
``lpips-self``  Laidlaw et al.'s LPIPS in the attacked model's own activations    ``[0, inf)``
``lpips-net``   the same in a given feature extractor's activations               ``[0, inf)``
``dssim``       ``1 - SSIM``                                                      ``[0, 2]``
``ms-dssim``    ``1 - MS-SSIM``                                                   ``[0, 1]``
==============  ===============================================================  ==========

The **similarities** ``ssim`` and ``ms-ssim`` are 1 for identical images (:func:`similarity`). Where a
distance is expected (a budget, :func:`distance`), ``ssim`` is the deprecated name of ``dssim``: it still
works, with a warning that says so. ``lpips-self`` and ``lpips-net`` need their network: pass it as
``features`` (the classifier for ``lpips-self``, the extractor for ``lpips-net``).

Example:
    >>> x = torch.zeros(2, 1, 28, 28)
    >>> distance("linf", x, x + 0.1)
    tensor([0.1000, 0.1000])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

from ..device import resolve_device
from ..errors import InvalidInputError
from .features import FeatureDistance, ModelActivations, feature_layers
from .lp import LP_NORMS, LpDistance, l1_distance, l2_distance, linf_distance
from .lpips import LPIPS_NETS, LPIPSDistance, get_lpips, lpips_distance
from .ssim import SSIMDistance, ms_ssim, ms_ssim_distance, ssim, ssim_distance

__all__ = [
    "METRICS", "DISTANCES", "SIMILARITIES", "METRIC_RANGES", "FEATURE_METRICS", "DEPRECATED_NAMES",
    "canonical_metric", "check_bound", "distance", "similarity", "get_distance", "reference_distance",
    "linf_distance", "l2_distance", "l1_distance", "lpips_distance", "ssim", "ms_ssim", "ssim_distance",
    "ms_ssim_distance", "LpDistance", "LPIPSDistance", "SSIMDistance", "FeatureDistance", "ModelActivations",
    "feature_layers", "get_lpips", "LPIPS_NETS",
]

#: The distances :func:`distance`, :func:`get_distance` and budgets accept.
DISTANCES = ("linf", "l2", "l1", "lpips", "lpips-alex", "lpips-vgg", "lpips-self", "lpips-net", "dssim", "ms-dssim")
#: Kept for callers of the first API: the distance names.
METRICS = DISTANCES
#: The similarities :func:`similarity` accepts (1 = identical).
SIMILARITIES = ("ssim", "ms-ssim")
#: The distances that need a network passed as ``features``.
FEATURE_METRICS = ("lpips-self", "lpips-net")
#: Old distance names -> the distance they mean.
DEPRECATED_NAMES = {"ssim": "dssim"}
#: ``(low, high)``: every value of the distance lies in this interval.
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "linf": (0.0, 1.0), "dssim": (0.0, 2.0), "ms-dssim": (0.0, 1.0),
    **{name: (0.0, math.inf) for name in ("l2", "l1", "lpips", "lpips-alex", "lpips-vgg", "lpips-self", "lpips-net")},
}
_LPIPS_NET = {"lpips": "alex", "lpips-alex": "alex", "lpips-vgg": "vgg"}
_DISSIMILARITY = {"ssim": "dssim", "ms-ssim": "ms-dssim"}


def canonical_metric(name: str) -> str:
    """``name`` as a distance name: unknown names are an error, deprecated ones warn and are translated.

    Raises:
        InvalidInputError: ``name`` is not a distance (the message lists them, and says which
            similarity names mean what).
    """
    if name in DEPRECATED_NAMES:
        new = DEPRECATED_NAMES[name]
        warnings.warn(f"'{name}' as a distance or budget is deprecated: it means {new} = 1 - SSIM (0 = identical), "
                      f"so '{name}<=b' allows SSIM >= 1 - b; write '{new}<=b'", FutureWarning, stacklevel=3)
        return new
    if name not in DISTANCES:
        hint = f" ('{name}' is a similarity; its distance is '{_DISSIMILARITY[name]}')" if name in _DISSIMILARITY else ""
        raise InvalidInputError(f"unknown distance {name!r}{hint}; choose one of {', '.join(DISTANCES)}")
    return name


def check_bound(name: str, bound: float) -> float:
    """``bound`` as a float after checking it lies in the range of the distance ``name`` (:data:`METRIC_RANGES`)."""
    low, high = METRIC_RANGES[canonical_metric(name)]
    value = float(bound)
    if not (low <= value <= high):  # NaN fails too
        raise InvalidInputError(f"a {name} bound must lie in [{low:g}, {high:g}] (the range of {name}), got {bound!r}")
    return value


def _feature_distance(name: str, features: nn.Module | None) -> FeatureDistance:
    if features is None:
        what = "the attacked model" if name == "lpips-self" else "a feature extractor (--lpips-net file.py:Name)"
        raise InvalidInputError(f"{name} measures in the activations of {what}, and none was given; "
                                "pass it as features= (mistered.threats.bind_features does it for a threat)")
    if name == "lpips-self":
        return FeatureDistance(ModelActivations(features), name)
    return FeatureDistance(features, name)


def get_distance(name: str, device: str | torch.device | None = None, features: nn.Module | None = None) -> nn.Module:
    """The distance ``name`` as a module whose ``forward(x, y)`` returns ``(B,)``, differentiable.

    The LPIPS trunks return the shared frozen network for ``device`` (``None``: CUDA when present,
    else CPU); ``lpips-self``/``lpips-net`` wrap ``features``; the others hold no weights.
    """
    name = canonical_metric(name)
    if name in _LPIPS_NET:
        return get_lpips(device, _LPIPS_NET[name])
    if name in FEATURE_METRICS:
        return _feature_distance(name, features)
    resolve_device(device)  # an unusable device is an error for every metric alike
    if name in ("dssim", "ms-dssim"):
        return SSIMDistance(multiscale=name == "ms-dssim")
    return LpDistance(name)


def distance(name: str, x: torch.Tensor, y: torch.Tensor, features: nn.Module | None = None) -> torch.Tensor:
    """The distance ``name`` between ``x`` and ``y`` (``(B, C, H, W)`` in ``[0, 1]``) per example, ``(B,)``."""
    name = canonical_metric(name)
    if name in _LPIPS_NET:
        return lpips_distance(x, y, _LPIPS_NET[name])
    if name in FEATURE_METRICS:
        return _feature_distance(name, features)(x, y)
    if name == "dssim":
        return ssim_distance(x, y)
    if name == "ms-dssim":
        return ms_ssim_distance(x, y)
    return LP_NORMS[name](x, y)


def similarity(name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The similarity ``name`` (``"ssim"`` or ``"ms-ssim"``) per example, ``(B,)``: 1 for identical images."""
    if name not in SIMILARITIES:
        raise InvalidInputError(f"unknown similarity {name!r}; choose one of {', '.join(SIMILARITIES)}")
    return ssim(x, y) if name == "ssim" else ms_ssim(x, y)


def reference_distance(name: str, reference: torch.Tensor, features: nn.Module | None = None
                       ) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """A function measuring many image batches against one fixed ``reference`` ``(B, C, H, W)``.

    ``measure(y, rows)`` returns ``distance(name, reference[rows], y)``, shape ``(len(rows),)``
    (``rows`` a ``LongTensor`` of example indices, or ``None`` for all ``B``). For the LPIPS
    distances the reference's features are computed once, which halves the cost of every later call.
    The reference gets no gradient; ``y`` does.
    """
    name = canonical_metric(name)
    reference = reference.detach()
    if name in _LPIPS_NET or name in FEATURE_METRICS:
        module = get_distance(name, reference.device, features)
        with torch.no_grad():
            computed = module.features(reference)

        def measure(y: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
            if rows is None:
                chosen = computed
            else:
                chosen = computed[rows] if isinstance(computed, torch.Tensor) else [f[rows] for f in computed]
            return module.distance_from_features(chosen, y)

        return measure
    return lambda y, rows=None: distance(name, reference if rows is None else reference[rows], y)
