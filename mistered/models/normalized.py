"""``Normalized``: the wrapper that puts input normalisation inside the model.

Threats and attacks work on images in ``[0, 1]``; a network trained on standardised inputs is
wrapped so that it takes ``[0, 1]`` images directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InvalidInputError

__all__ = ["Normalized"]


class Normalized(nn.Module):
    """``forward(x) = net((x - mean) / std)`` with per-channel ``mean`` and ``std``.

    Args:
        net: the network on standardised inputs, ``(B, C, H, W) -> (B, K)`` logits.
        mean: per-channel means, length ``C`` (one value is broadcast to every channel).
        std: per-channel standard deviations, length ``C``, all positive.

    Attributes:
        net: the wrapped network (certifiers read its layers).
        mean, std: buffers of shape ``(C,)``; they travel with ``.to(device)`` and the state dict.

    Example:
        >>> model = Normalized(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), mean=[0.1307], std=[0.3081])
        >>> model(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.shape != std_t.shape or mean_t.numel() == 0:
            raise InvalidInputError(f"mean and std must have one value per channel, got {mean} and {std}")
        if not bool((std_t > 0).all()) or not bool(torch.isfinite(mean_t).all()):
            raise InvalidInputError(f"std must be positive and mean finite, got mean={mean}, std={std}")
        self.net = net
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, H, W)`` in ``[0, 1]`` -> logits ``(B, K)``."""
        shape = (1, -1, 1, 1)
        return self.net((x - self.mean.view(shape)) / self.std.view(shape))

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"
