"""Distances between image batches: Lp, LPIPS (real AlexNet trunk) and SSIM — batched, differentiable.

Every distance maps two batches ``(B, C, H, W)`` in ``[0, 1]`` to a ``(B,)`` tensor, 0 for identical
images, growing with the difference: ``"linf"``, ``"l2"``, ``"l1"`` (pixel units), ``"lpips"``
(LPIPS-alex v0.1, see :mod:`mistered.metrics.lpips`) and ``"ssim"`` (``1 - SSIM``).

Example:
    >>> x = torch.zeros(2, 1, 28, 28)
    >>> distance("linf", x, x + 0.1)
    tensor([0.1000, 0.1000])
"""

from __future__ import annotations

import torch
from torch import nn

from collections.abc import Callable

from ..device import resolve_device
from ..errors import InvalidInputError
from .lp import LP_NORMS, LpDistance, l1_distance, l2_distance, linf_distance
from .lpips import LPIPSDistance, get_lpips, lpips_distance
from .ssim import SSIMDistance, ssim, ssim_distance

__all__ = [
    "METRICS",
    "distance",
    "get_distance",
    "reference_distance",
    "linf_distance",
    "l2_distance",
    "l1_distance",
    "lpips_distance",
    "ssim",
    "ssim_distance",
    "LpDistance",
    "LPIPSDistance",
    "SSIMDistance",
    "get_lpips",
]

#: The names :func:`distance` and :func:`get_distance` accept.
METRICS = ("linf", "l2", "l1", "lpips", "ssim")


def _check_name(name: str) -> str:
    if name not in METRICS:
        raise InvalidInputError(f"unknown distance {name!r}; choose one of {', '.join(METRICS)}")
    return name


def get_distance(name: str, device: str | torch.device | None = None) -> nn.Module:
    """The distance ``name`` as a module whose ``forward(x, y)`` returns ``(B,)``, differentiable.

    ``"lpips"`` returns the shared frozen network for ``device`` (``None``: CUDA when present, else
    CPU); the other distances hold no weights and run on their inputs' device.
    """
    _check_name(name)
    if name == "lpips":
        return get_lpips(device)
    resolve_device(device)  # an unusable device is an error for every metric alike
    if name == "ssim":
        return SSIMDistance()
    return LpDistance(name)


def distance(name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The distance ``name`` between ``x`` and ``y`` (``(B, C, H, W)`` in ``[0, 1]``) per example, ``(B,)``."""
    _check_name(name)
    if name == "lpips":
        return lpips_distance(x, y)
    if name == "ssim":
        return ssim_distance(x, y)
    return LP_NORMS[name](x, y)


def reference_distance(name: str, reference: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """A function measuring many image batches against one fixed ``reference`` ``(B, C, H, W)``.

    ``measure(y, rows)`` returns ``distance(name, reference[rows], y)``, shape ``(len(rows),)``
    (``rows`` a ``LongTensor`` of example indices, or ``None`` for all ``B``). For ``"lpips"`` the
    reference's AlexNet features are computed once, which halves the cost of every later call.
    The reference gets no gradient; ``y`` does.
    """
    _check_name(name)
    reference = reference.detach()
    if name != "lpips":
        return lambda y, rows=None: distance(name, reference if rows is None else reference[rows], y)
    module = get_lpips(reference.device)
    with torch.no_grad():
        features = module.features(reference)

    def measure(y: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        chosen = features if rows is None else [f[rows] for f in features]
        return module.distance_from_features(chosen, y)

    return measure
