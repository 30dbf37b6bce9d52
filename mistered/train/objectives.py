"""What a training step minimises. The training loop is generic over an :class:`Objective`.

Standard and adversarial objectives live in this package; LMT and L∞-dist objectives live beside
them (``lmt.py``, ``linf_dist.py``) and plug into the same loop and the same ``mistered train``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

__all__ = ["Objective"]


class Objective(Protocol):
    """A training loss. ``progress`` is the fraction of training done, in ``[0, 1]`` (for schedules
    such as LMT's warm-up of ``c`` or the p-relaxation of L∞-dist nets).

    Called as ``objective(model, x, y, progress)`` with ``x`` of shape ``(B, C, H, W)`` in ``[0, 1]``
    and ``y`` of shape ``(B,)``; returns ``(loss, logits)``: the scalar loss to minimise and the
    ``(B, K)`` logits used for the training accuracy.
    """

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float
    ) -> tuple[torch.Tensor, torch.Tensor]: ...
