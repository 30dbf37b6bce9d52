"""What a training step minimises. The training loop is generic over an :class:`Objective`.

Standard and adversarial objectives live in this package; LMT and L∞-dist objectives live beside
them (``lmt.py``, ``linf_dist.py``) and plug into the same loop and the same ``mistered train``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

__all__ = ["Objective", "objective_state", "load_objective_state"]


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


def objective_state(objective: Objective) -> dict[str, torch.Tensor]:
    """The state a stateful objective (one with ``state_dict()``, e.g. LMT's power-iteration vectors) must
    carry across a resume; ``{}`` for stateless ones."""
    state_dict = getattr(objective, "state_dict", None)
    return dict(state_dict()) if callable(state_dict) else {}


def load_objective_state(objective: Objective, state: dict[str, torch.Tensor]) -> None:
    """Give a stateful objective back what :func:`objective_state` took (no-op when ``state`` is empty)."""
    if state:
        objective.load_state_dict(state)  # type: ignore[attr-defined]
