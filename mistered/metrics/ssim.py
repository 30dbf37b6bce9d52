"""SSIM and MS-SSIM per example, with the formulas and defaults of ``piq``, and their dissimilarities.

Both are **similarities**: 1 for identical images, lower for more different ones. A budget bounds a
**dissimilarity**: ``dssim = 1 - SSIM`` and ``ms-dssim = 1 - MS-SSIM`` (0 for identical images).
(Some tools call ``(1 - SSIM) / 2`` DSSIM; here it is ``1 - SSIM``, in ``[0, 2]``.)

``piq.ssim`` filters five maps (``x``, ``y``, ``x²``, ``y²``, ``xy``) with a 2-D 11x11 Gaussian in
five separate convolutions. Here the five maps are stacked and filtered once by two 1-D Gaussians
(the 2-D kernel is their outer product), which gives the same values several times faster.
Conventions (all as piq): images in ``[0, 1]`` (``data_range`` 1), Gaussian window 11, sigma 1.5,
``k1 = 0.01``, ``k2 = 0.03``, no padding ("valid" maps), the SSIM map averaged over space then
channels; SSIM average-pools images by ``f = round(min(H, W) / 256)`` when ``f > 1``; MS-SSIM uses
the paper's five scale weights and piq's downsampling (replicate-pad odd sides, 2x2 average pool).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError

__all__ = ["ssim", "ms_ssim", "ssim_distance", "ms_ssim_distance", "ms_ssim_levels", "SSIMDistance",
           "MS_SSIM_WEIGHTS", "SSIM_WINDOW", "gaussian_filter", "ssim_from_moments"]

#: The side of SSIM's Gaussian window (as piq and Wang et al. 2004): the smallest image side SSIM measures.
SSIM_WINDOW = 11

#: Scale weights of MS-SSIM (Wang et al. 2003), finest scale first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_1d(kernel_size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(kernel_size, dtype=like.dtype, device=like.device) - (kernel_size - 1) / 2.0
    g = torch.exp(-coords.square() / (2 * sigma**2))
    return g / g.sum()


def _check_pair(x: torch.Tensor, y: torch.Tensor, what: str, kernel_size: int) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise InvalidInputError(f"{what} needs two (B, C, H, W) batches of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if kernel_size % 2 != 1:
        raise InvalidInputError(f"{what} kernel_size must be odd, got {kernel_size}")


def gaussian_filter(maps: torch.Tensor, kernel_size: int = SSIM_WINDOW, sigma: float = 1.5) -> torch.Tensor:
    """Each channel of ``maps`` ``(B, C, H, W)`` filtered by SSIM's Gaussian window, without padding (two 1-D passes).

    Returns ``(B, C, H - kernel_size + 1, W - kernel_size + 1)``.
    """
    g = _gaussian_1d(kernel_size, sigma, maps)
    groups = maps.shape[1]
    maps = F.conv2d(maps, g.view(1, 1, 1, -1).expand(groups, 1, 1, kernel_size), groups=groups)
    return F.conv2d(maps, g.view(1, 1, -1, 1).expand(groups, 1, kernel_size, 1), groups=groups)


def ssim_from_moments(mu_x: torch.Tensor, mu_y: torch.Tensor, e_xx: torch.Tensor, e_yy: torch.Tensor,
                      e_xy: torch.Tensor, k1: float = 0.01, k2: float = 0.03) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and its contrast-structure term averaged over space, ``(B, C)`` each, from the local moments
    (Gaussian-filtered ``x``, ``y``, ``x²``, ``y²``, ``xy``; see :func:`gaussian_filter`)."""
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    sigma_xx, sigma_yy, sigma_xy = e_xx - mu_xx, e_yy - mu_yy, e_xy - mu_xy
    c1, c2 = k1**2, k2**2
    contrast_structure = (2.0 * sigma_xy + c2) / (sigma_xx + sigma_yy + c2)
    ssim_map = (2.0 * mu_xy + c1) / (mu_xx + mu_yy + c1) * contrast_structure
    return ssim_map.mean(dim=(-1, -2)), contrast_structure.mean(dim=(-1, -2))


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor, kernel_size: int, sigma: float, k1: float, k2: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel, SSIM and its contrast-structure term averaged over space: two ``(B, C)`` tensors (piq's ``_ssim_per_channel``)."""
    if min(x.shape[-2:]) < kernel_size:
        raise InvalidInputError(f"SSIM needs images of at least {kernel_size}x{kernel_size} pixels, got {tuple(x.shape[-2:])}")
    moments = gaussian_filter(torch.cat([x, y, x * x, y * y, x * y], dim=1), kernel_size, sigma)  # (B, 5C, ., .)
    return ssim_from_moments(*moments.split(x.shape[1], dim=1), k1=k1, k2=k2)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    kernel_size: int = SSIM_WINDOW,
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
    _check_pair(x, y, "SSIM", kernel_size)
    factor = max(1, round(min(x.shape[-2:]) / 256))
    if factor > 1 and downsample:
        x, y = F.avg_pool2d(x, kernel_size=factor), F.avg_pool2d(y, kernel_size=factor)
    return _ssim_and_cs(x, y, kernel_size, sigma, k1, k2)[0].mean(dim=1)


def ms_ssim_levels(height: int, width: int, kernel_size: int = SSIM_WINDOW) -> int:
    """How many MS-SSIM scales an ``height x width`` image has room for: at most 5, each coarser scale
    still at least ``kernel_size`` pixels (side ``>= (kernel_size - 1) * 2**(levels - 1) + 1``)."""
    levels = 0
    while levels < len(MS_SSIM_WEIGHTS) and min(height, width) >= (kernel_size - 1) * 2**levels + 1:
        levels += 1
    return levels


def ms_ssim(x: torch.Tensor, y: torch.Tensor, kernel_size: int = SSIM_WINDOW, sigma: float = 1.5, k1: float = 0.01,
            k2: float = 0.03) -> torch.Tensor:
    """Multi-scale SSIM per example, as ``piq.multi_scale_ssim(x, y, scale_weights=w, reduction="none")``.

    With all five scales (images of at least ``161x161`` for an 11-pixel window), ``w`` is the paper's
    :data:`MS_SSIM_WEIGHTS`. A smaller image keeps only the finest scales it has room for
    (:func:`ms_ssim_levels`: 2 for a 28x28 digit) with their weights renormalised to sum to 1, which is
    what piq computes for those weights; at least two scales are needed (sides of 21 pixels or more).

    Args:
        x, y: image batches ``(B, C, H, W)`` in ``[0, 1]``, same shape.
        kernel_size, sigma, k1, k2: as :func:`ssim`.

    Returns:
        ``(B,)`` MS-SSIM in ``[0, 1]``; 1 for identical images. Differentiable.
    """
    _check_pair(x, y, "MS-SSIM", kernel_size)
    levels = ms_ssim_levels(*x.shape[-2:], kernel_size=kernel_size)
    if levels < 2:
        need = (kernel_size - 1) * 2 + 1
        raise InvalidInputError(f"MS-SSIM needs images of at least {need}x{need} pixels for two scales "
                                f"(window {kernel_size}), got {tuple(x.shape[-2:])}; use ssim instead")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=x.dtype, device=x.device)
    weights = weights / weights.sum()
    terms = []
    for level in range(levels):
        if level > 0:
            pad = max(x.shape[2] % 2, x.shape[3] % 2)
            if pad:
                x, y = F.pad(x, [pad, 0, pad, 0], mode="replicate"), F.pad(y, [pad, 0, pad, 0], mode="replicate")
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        ssim_value, contrast_structure = _ssim_and_cs(x, y, kernel_size, sigma, k1, k2)
        terms.append(ssim_value if level == levels - 1 else contrast_structure)
    stacked = torch.relu(torch.stack(terms, dim=0))  # (levels, B, C)
    return (stacked ** weights.view(-1, 1, 1)).prod(dim=0).mean(dim=1)


def ssim_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``dssim = 1 - SSIM(x, y)`` per example: ``(B, C, H, W)`` x2 in ``[0, 1]`` -> ``(B,)`` in ``[0, 2]``, 0 for identical images."""
    return 1.0 - ssim(x, y)


def ms_ssim_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``ms-dssim = 1 - MS-SSIM(x, y)`` per example: ``(B,)`` in ``[0, 1]``, 0 for identical images."""
    return 1.0 - ms_ssim(x, y)


class SSIMDistance(nn.Module):
    """Module form of the SSIM dissimilarities: ``forward(x, y) -> (B,)`` = ``1 - SSIM`` (or ``1 - MS-SSIM``).

    Args:
        multiscale: ``False`` for ``dssim``, ``True`` for ``ms-dssim``.
    """

    def __init__(self, multiscale: bool = False) -> None:
        super().__init__()
        self.multiscale = bool(multiscale)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ms_ssim_distance(x, y) if self.multiscale else ssim_distance(x, y)

    def extra_repr(self) -> str:
        return f"multiscale={self.multiscale}"
