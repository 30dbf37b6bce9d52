"""Per-example Lp distances between two image batches.

Each function takes ``x`` and ``y`` of the same shape ``(B, ...)`` and returns a ``(B,)`` tensor:
the norm of ``x - y`` over all non-batch dimensions, in pixel units (images in ``[0, 1]``).
They are differentiable (the L∞ and L2 subgradients at ``x == y`` are zero).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidInputError

__all__ = ["linf_distance", "l2_distance", "l1_distance", "LpDistance", "LP_NORMS"]


def _difference(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if x.shape != y.shape:
        raise InvalidInputError(f"distance needs two batches of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() < 2:
        raise InvalidInputError(f"distance needs batches of shape (B, ...), got {tuple(x.shape)}")
    return (x - y).flatten(1)


def linf_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max |x - y|`` per example: ``(B, ...)`` x2 -> ``(B,)``."""
    return _difference(x, y).abs().amax(dim=1)


def l2_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``||x - y||_2`` per example: ``(B, ...)`` x2 -> ``(B,)`` (zero gradient at ``x == y``)."""
    squared = _difference(x, y).square().sum(dim=1)
    # sqrt has an infinite derivative at 0: route zero distances around it
    positive = squared > 0
    return torch.where(positive, squared.clamp_min(1e-30).sqrt(), torch.zeros_like(squared))


def l1_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``||x - y||_1`` per example: ``(B, ...)`` x2 -> ``(B,)``."""
    return _difference(x, y).abs().sum(dim=1)


LP_NORMS = {"linf": linf_distance, "l2": l2_distance, "l1": l1_distance}


class LpDistance(nn.Module):
    """Module form of the Lp distances: ``forward(x, y) -> (B,)``.

    Args:
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
    """

    def __init__(self, norm: str) -> None:
        super().__init__()
        if norm not in LP_NORMS:
            raise InvalidInputError(f"unknown Lp norm {norm!r}; choose one of {sorted(LP_NORMS)}")
        self.norm = norm
        self._fn = LP_NORMS[norm]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._fn(x, y)

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}"
