"""L∞-dist nets (Zhang et al. 2021/2022); their certificate (radius ``margin / 2`` in L∞) is
:func:`mistered.certify.lipschitz.linf_dist.certify_linf_dist`.

:class:`LinfDistNet` is the v2 architecture: an MLP of L∞-dist layers (mean shift on the hidden ones,
identity initialisation), whose outputs are negated distances ``raw = -y`` (each 1-Lipschitz in L∞ at
test time) times a learned positive scalar for the cross-entropy. If the top raw output exceeds the
runner-up by ``m``, no L∞ perturbation smaller than ``m / 2`` changes the prediction.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import InvalidInputError
from .layers import LinfDistLinear, linf_dist_layers, set_p

__all__ = ["LinfDistNet", "linf_dist_net", "linf_dist_layers", "set_p", "set_linf_dist_compiled"]


class LinfDistNet(nn.Module):
    """``(B, C, H, W)`` in ``[0, 1]`` -> ``(B, K)`` logits, an MLP of ``depth`` L∞-dist layers.

    Args:
        in_shape: ``(C, H, W)`` of the inputs, e.g. ``(1, 28, 28)`` or ``(3, 32, 32)``.
        num_classes: ``K``.
        depth: number of L∞-dist layers (``depth - 1`` hidden layers of ``width`` neurons, then the output layer).
        width: hidden width (v2 uses 5120).
        identity_val: identity initialisation value of the hidden layers; std: standard deviation of the
            initial weights. v2 uses 10 and 1 on standardised inputs (MNIST std 0.31); on ``[0, 1]`` pixels the
            same initialisation is 3 and 0.3 (the output layer gets no identity initialisation).

    Attributes:
        layers: the ``nn.Sequential`` (Flatten, L∞-dist layers); ``scale``: the learned output scalar.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        depth: int = 5,
        width: int = 5120,
        identity_val: float = 3.0,
        std: float = 0.3,
    ) -> None:
        super().__init__()
        if depth < 2 or width < 1:
            raise InvalidInputError(f"an L∞-dist net needs depth >= 2 and width >= 1, got depth={depth}, width={width}")
        pixels = math.prod(in_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        size = pixels
        for _ in range(depth - 1):
            layers.append(LinfDistLinear(size, width, mean_shift=True, identity_val=identity_val, std=std))
            size = width
        layers.append(LinfDistLinear(size, num_classes, mean_shift=False, bias=True, identity_val=None, std=std))
        self.layers = nn.Sequential(*layers)
        self.scale = nn.Parameter(torch.ones(1))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` negated output distances; each is 1-Lipschitz in L∞ (eval mode, ``p = inf``)."""
        return -self.layers(x)

    def logits_from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """The logits ``|scale| * raw`` (same arg-max as ``raw``)."""
        return raw * self.scale.abs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_raw(self.raw(x))


def linf_dist_net(
    in_channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    depth: int = 5,
    width: int = 5120,
    identity_val: float = 3.0,
    std: float = 0.3,
) -> LinfDistNet:
    """Registry builder of :class:`LinfDistNet` (``"linf-dist-net"``); defaults are v2's MNIST net (depth 5, width 5120).

    Use ``in_channels=3, image_size=32, depth=6`` for v2's CIFAR-10 net; smaller ``width``/``depth`` scale it down.
    """
    return LinfDistNet((in_channels, image_size, image_size), num_classes, depth, width, identity_val, std)


def set_linf_dist_compiled(model: nn.Module, enabled: bool) -> int:
    """Switch every L∞-dist layer of ``model`` to the compiled ``p = inf`` kernel (``enabled``) or the eager one.

    A runtime choice: the flag is a plain attribute, not in the state dict, so checkpoints never carry it
    (a loaded model starts eager). Both kernels give the same values and gradients; the compiled one is ~2.5x
    faster on CPU, compiles once per layer input width (~2-4 s; batch sizes never recompile) and falls back to the
    eager kernel with one logged warning when no compiler works (:mod:`~mistered.models.linf_dist.kernel`). Other models are left alone.

    Returns:
        The number of L∞-dist layers switched (0 for a model without any).
    """
    layers = linf_dist_layers(model)
    for layer in layers:
        layer.compiled = bool(enabled)
    return len(layers)
