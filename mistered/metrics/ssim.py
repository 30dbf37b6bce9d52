"""SSIM per example, with the formula and defaults of ``piq.ssim``, computed with one separable filter pass.

``piq.ssim`` filters five maps (``x``, ``y``, ``x²``, ``y²``, ``xy``) with a 2-D 11x11 Gaussian in
five separate convolutions. Here the five maps are stacked and filtered once by two 1-D Gaussians
(the 2-D kernel is their outer product), which gives the same values several times faster.
Conventions (all as piq): images in ``[0, 1]`` (``data_range`` 1), Gaussian window 11, sigma 1.5,
``k1 = 0.01``, ``k2 = 0.03``, no padding ("valid" maps), images first average-pooled by
``f = round(min(H, W) / 256)`` when ``f > 1``, and the SSIM map averaged over space then channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError

__all__ = ["ssim", "ssim_distance", "SSIMDistance"]


def _gaussian_1d(kernel_size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(kernel_size, dtype=like.dtype, device=like.device) - (kernel_size - 1) / 2.0
    g = torch.exp(-coords.square() / (2 * sigma**2))
    return g / g.sum()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    kernel_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    downsample: bool = True,
) -> torch.Tensor:
    """Structural similarity per example, as ``piq.ssim(x, y, reduction="none")``.

    Args:
        x, y: image batches ``(B, C, H, W)`` in ``[0, 1]``, same shape; ``H, W >= kernel_size``
            (after the automatic downsampling of large images).
        kernel_size: side of the Gaussian window (odd).
        sigma: standard deviation of the Gaussian window, in pixels.
        k1, k2: SSIM's stabilising constants (``c1 = k1²``, ``c2 = k2²``).
        downsample: average-pool by ``f = round(min(H, W) / 256)`` when ``f > 1`` (shorter side >= 384), as piq does.

    Returns:
        ``(B,)`` SSIM in ``[-1, 1]``; 1 for identical images. Differentiable.

    Example:
        >>> x = torch.rand(2, 1, 28, 28)
        >>> ssim(x, x)
        tensor([1., 1.])
    """
    if x.shape != y.shape or x.dim() != 4:
        raise InvalidInputError(f"SSIM needs two (B, C, H, W) batches of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if kernel_size % 2 != 1:
        raise InvalidInputError(f"SSIM kernel_size must be odd, got {kernel_size}")
    factor = max(1, round(min(x.shape[-2:]) / 256))
    if factor > 1 and downsample:
        x, y = F.avg_pool2d(x, kernel_size=factor), F.avg_pool2d(y, kernel_size=factor)
    if min(x.shape[-2:]) < kernel_size:
        raise InvalidInputError(f"SSIM needs images of at least {kernel_size}x{kernel_size} pixels, got {tuple(x.shape[-2:])}")

    channels = x.shape[1]
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5C, H, W)
    g = _gaussian_1d(kernel_size, sigma, maps)
    groups = maps.shape[1]
    maps = F.conv2d(maps, g.view(1, 1, 1, -1).expand(groups, 1, 1, kernel_size), groups=groups)
    maps = F.conv2d(maps, g.view(1, 1, -1, 1).expand(groups, 1, kernel_size, 1), groups=groups)
    mu_x, mu_y, e_xx, e_yy, e_xy = maps.split(channels, dim=1)

    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    sigma_xx, sigma_yy, sigma_xy = e_xx - mu_xx, e_yy - mu_yy, e_xy - mu_xy
    c1, c2 = k1**2, k2**2
    contrast_structure = (2.0 * sigma_xy + c2) / (sigma_xx + sigma_yy + c2)
    ssim_map = (2.0 * mu_xy + c1) / (mu_xx + mu_yy + c1) * contrast_structure
    return ssim_map.mean(dim=(-1, -2)).mean(dim=1)


def ssim_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM(x, y)`` per example: ``(B, C, H, W)`` x2 in ``[0, 1]`` -> ``(B,)``, 0 for identical images."""
    return 1.0 - ssim(x, y)


class SSIMDistance(nn.Module):
    """Module form of :func:`ssim_distance`: ``forward(x, y) -> (B,)`` = ``1 - SSIM``."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ssim_distance(x, y)
