"""The hybrid L∞-dist net (Zhang et al. 2021): an L∞-dist backbone followed by a small ReLU head.

Every backbone feature is 1-Lipschitz in L∞ (eval mode, ``p = inf``), so an input perturbation of L∞
size ``eps`` keeps each feature in ``[f(x) - eps, f(x) + eps]``. Interval bound propagation through the
head (hidden layer by :func:`~mistered.certify.bounds.chain_interval.interval_bounds`, the output layer directly on the
margins ``logit_y - logit_j``) then bounds the margins from below; the example is certified at ``eps`` when
every such bound is positive. The certified radius is found per example by a batched bisection on ``eps``
and is always a value that was verified (interval bounds grow with the box, so every smaller ``eps`` is
verified too).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import InvalidInputError
from .layers import LinfDistLinear

__all__ = ["LinfDistHybrid", "linf_dist_hybrid"]


class LinfDistHybrid(nn.Module):
    """``(B, C, H, W)`` in ``[0, 1]`` -> ``(B, K)`` logits: ``depth`` L∞-dist layers of ``width``, then Linear-ReLU-Linear.

    Args:
        in_shape: ``(C, H, W)`` of the inputs.
        num_classes: ``K``.
        depth: number of L∞-dist layers in the backbone (each with mean shift and identity initialisation).
        width: width of every backbone layer (the feature dimension).
        head_hidden: hidden width of the head.
        identity_val, std: initialisation of the L∞-dist layers (see :class:`~mistered.models.linf_dist.layers.LinfDistLinear`).

    Attributes:
        backbone: ``nn.Sequential(Flatten, LinfDistLinear, ...)`` producing ``(B, width)`` features, each
            1-Lipschitz in L∞ in eval mode at ``p = inf``; ``head``: ``nn.Sequential(Linear, ReLU, Linear)``.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        depth: int = 3,
        width: int = 256,
        head_hidden: int = 128,
        identity_val: float = 3.0,
        std: float = 0.3,
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1 or head_hidden < 1:
            raise InvalidInputError(
                f"a hybrid L∞-dist net needs depth >= 1, width >= 1 and head_hidden >= 1, "
                f"got depth={depth}, width={width}, head_hidden={head_hidden}"
            )
        layers: list[nn.Module] = [nn.Flatten()]
        size = math.prod(in_shape)
        for _ in range(depth):
            layers.append(LinfDistLinear(size, width, mean_shift=True, identity_val=identity_val, std=std))
            size = width
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(width, head_hidden), nn.ReLU(), nn.Linear(head_hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def linf_dist_hybrid(
    in_channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    depth: int = 3,
    width: int = 256,
    head_hidden: int = 128,
    identity_val: float = 3.0,
    std: float = 0.3,
) -> LinfDistHybrid:
    """Registry builder of :class:`LinfDistHybrid` (``"linf-dist-hybrid"``)."""
    return LinfDistHybrid((in_channels, image_size, image_size), num_classes, depth, width, head_hidden, identity_val, std)
