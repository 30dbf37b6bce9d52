"""Per-example attack losses, all to be *maximised*: cross-entropy, the Carlini-Wagner margin, and targeted variants.

Every loss takes logits ``(B, K)`` and labels ``(B,)`` (the true class, or the target class for the
targeted variants) and returns a ``(B,)`` tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError

__all__ = ["LossFn", "cross_entropy", "margin", "targeted_cross_entropy", "targeted_margin", "get_loss", "LOSSES"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the true class, ``(B,)``: larger means further from being classified as ``labels``."""
    return F.cross_entropy(logits, labels, reduction="none")


def _best_other(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The largest logit among the classes other than ``labels``, ``(B,)``."""
    masked = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return masked.amax(dim=1)


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CW margin ``max_{j != y} z_j - z_y``, ``(B,)``: positive exactly when the example is misclassified."""
    return _best_other(logits, labels) - logits.gather(1, labels[:, None]).squeeze(1)


def targeted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative cross-entropy of the target class, ``(B,)``: larger means closer to predicting ``targets``."""
    return -F.cross_entropy(logits, targets, reduction="none")


def targeted_margin(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``z_t - max_{j != t} z_j``, ``(B,)``: positive exactly when the target class wins."""
    return -margin(logits, targets)


#: name -> (untargeted loss, targeted loss)
LOSSES: dict[str, tuple[LossFn, LossFn]] = {
    "ce": (cross_entropy, targeted_cross_entropy),
    "margin": (margin, targeted_margin),
}


def get_loss(name: str, targeted: bool = False) -> LossFn:
    """The loss called ``name`` (``"ce"`` or ``"margin"``), in its targeted form if ``targeted``."""
    if name not in LOSSES:
        raise InvalidInputError(f"unknown attack loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name][1 if targeted else 0]
