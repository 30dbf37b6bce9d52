"""The Lipschitz-margin training objective (Tsuzuku, Sato & Sugiyama 2018).

Cross-entropy on logits whose non-target entries are raised by ``sqrt(2) * c * L`` (``L`` the L2
Lipschitz bound of the network, one power iteration per step, differentiable), so that a margin of
``sqrt(2) c L`` is demanded: at the end of training every correct example with zero loss would be
certified at radius about ``c``. With ``pairwise=True`` the non-target logit ``j`` is raised by
``c * ||W_y - W_j|| * L_body`` instead (last layer ``W``, ``L_body`` the bound of the layers before it).
``c`` rises linearly from 0 over the first ``warmup`` fraction of training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..certify.lipschitz.global_bound import LipschitzBound
from ..certify.lipschitz.graph_bound import GraphLipschitzBound, bound_for_model
from ..certify.lipschitz.lmt import pairwise_row_norms
from ..validation import check_nonnegative
from ..errors import InvalidInputError

__all__ = ["LMTObjective"]

_SQRT2 = 2.0**0.5


class LMTObjective:
    """LMT loss: ``objective(model, x, y, progress) -> (loss, logits)`` (see :class:`mistered.train.objectives.Objective`).

    Args:
        c: the target L2 radius (pixel units of ``[0, 1]`` images); ``c = 0`` is plain cross-entropy.
        warmup: fraction of training over which ``c`` rises linearly from 0 (``0`` for no warm-up).
        pairwise: the tighter last-layer pairwise bound.

    The Lipschitz bound (with its persistent power-iteration vectors) is built on the first call for the
    model and input shape, and reused.
    """

    def __init__(self, c: float = 1.0, warmup: float = 0.2, pairwise: bool = False) -> None:
        self.c = check_nonnegative(c, "LMT c")
        self.warmup = check_nonnegative(warmup, "LMT warmup")
        if self.warmup > 1:
            raise InvalidInputError(f"LMT warmup is a fraction of training in [0, 1], got {warmup}")
        self.pairwise = pairwise
        self._bound: LipschitzBound | GraphLipschitzBound | None = None
        self._key: tuple[int, tuple[int, ...]] | None = None
        self._pending_state: dict[str, torch.Tensor] = {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The power-iteration vectors of the bound (checkpointed so a resumed run is bitwise identical)."""
        if self._bound is None:
            return dict(self._pending_state)
        return {k: v.detach().clone() for k, v in self._bound.state_dict().items() if k.endswith(".vector")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the vectors of :meth:`state_dict`; applied when the bound is (re)built on the next call."""
        self._pending_state = dict(state)
        self._bound = None

    def current_c(self, progress: float) -> float:
        """``c`` at ``progress`` in ``[0, 1]`` (linear warm-up)."""
        if self.warmup == 0:
            return self.c
        return self.c * min(1.0, max(0.0, progress) / self.warmup)

    def bound_for(self, model: nn.Module, input_shape: tuple[int, ...]) -> LipschitzBound | GraphLipschitzBound:
        """The (cached) Lipschitz bound module of ``model`` (a DDP wrapper is looked through): layer by layer for
        ``nn.Sequential`` trees, over the traced graph for any other model (residual blocks, BatchNorm, pooling;
        see :func:`~mistered.certify.lipschitz.graph_bound.bound_for_model`)."""
        net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        key = (id(net), tuple(input_shape))
        if self._bound is None or self._key != key:
            self._bound = bound_for_model(net, input_shape)
            self._key = key
            if self._pending_state:
                self._bound.load_state_dict(self._pending_state, strict=False)
                self._pending_state = {}
        return self._bound

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        c = self.current_c(progress)
        if c == 0:
            return F.cross_entropy(logits, y), logits
        bound = self.bound_for(model, tuple(x.shape[1:]))
        others = 1.0 - F.one_hot(y, logits.shape[1]).to(logits.dtype)
        if self.pairwise:
            body = bound(exclude_head=True)
            row_norms = pairwise_row_norms(bound.head.weight)[y]  # (B, K): ||W_y - W_j||
            raise_by = c * body * row_norms * others
        else:
            raise_by = _SQRT2 * c * bound() * others
        return F.cross_entropy(logits + raise_by, y), logits
