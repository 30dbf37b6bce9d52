"""A small CIFAR-sized ResNet (``3x32x32 -> 10``) used by the speed benchmarks; no weights are shipped."""

from __future__ import annotations

import torch
from torch import nn

from .normalized import Normalized

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "BasicBlock", "cifar_resnet"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (1x1 conv-BN shortcut when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)``."""
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def cifar_resnet(num_classes: int = 10, width: int = 16, blocks_per_stage: int = 1) -> Normalized:
    """ResNet for ``(B, 3, 32, 32)`` images in ``[0, 1]`` -> ``(B, num_classes)`` logits.

    A 3x3 stem of ``width`` channels, three stages of ``blocks_per_stage`` basic blocks with
    ``width, 2*width, 4*width`` channels at 32x32, 16x16 and 8x8, global average pooling and a linear
    layer; CIFAR-10 normalisation inside. The defaults give about 78,000 parameters.
    """
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    channels = width
    for stage in range(3):
        out_channels = width * 2**stage
        for block in range(blocks_per_stage):
            layers.append(BasicBlock(channels, out_channels, stride=2 if stage > 0 and block == 0 else 1))
            channels = out_channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return Normalized(nn.Sequential(*layers), CIFAR10_MEAN, CIFAR10_STD)
