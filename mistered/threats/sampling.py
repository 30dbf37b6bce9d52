"""Bilinear resampling on normalised grids (``grid_sample``, ``align_corners=True``), exact for identity warps.

``torch.nn.functional.grid_sample`` is one fused operation forward and backward (the threats' warps
run several times per attack step), but it un-normalises coordinates in float, so even an identity
grid is off by round-off (about 1e-6). :func:`sample` therefore returns the input bit for bit for the
examples the caller flags as identity warps (a zero flow, a zero rotation): the threats' ``scale_(0)``
contract relies on it, and the gradient there is still ``grid_sample``'s (one-sided differences at
pixel centres).
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["identity_grid", "affine_grid", "sample"]

Padding = Literal["zeros", "border"]


def identity_grid(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """``(1, H, W, 2)``: each pixel's own ``(x, y)`` position in ``[-1, 1]`` (``align_corners=True``).

    Exactly what ``F.affine_grid`` makes for the identity matrix (``linspace(-1, 1)`` per axis, 0 for a
    single pixel), so an identity affine grid equals it bit for bit. Cached per size, dtype and device:
    treat it as read-only.
    """
    return _homogeneous_grid(height, width, like.dtype, like.device)[..., :2].view(1, height, width, 2)


@functools.lru_cache(maxsize=32)
def _homogeneous_grid(height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(1, H * W, 3)``: ``(x, y, 1)`` per pixel, row-major, as ``F.affine_grid``'s base grid."""

    def axis(size: int) -> torch.Tensor:
        if size == 1:
            return torch.zeros(1, dtype=dtype, device=device)
        return torch.linspace(-1.0, 1.0, size, dtype=dtype, device=device)

    rows, cols = torch.meshgrid(axis(height), axis(width), indexing="ij")
    return torch.stack((cols, rows, torch.ones_like(rows)), dim=-1).view(1, height * width, 3)


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, H, W), align_corners=True)`` with the base grid cached: ``(B, H, W, 2)``.

    Args:
        theta: ``(B, 2, 3)``, output positions to source positions in ``[-1, 1]`` coordinates.
    """
    base = _homogeneous_grid(height, width, theta.dtype, theta.device)
    return torch.matmul(base, theta.transpose(1, 2)).view(-1, height, width, 2)


def sample(x: torch.Tensor, grid: torch.Tensor, padding: Padding = "zeros", still: torch.Tensor | None = None
           ) -> torch.Tensor:
    """``out[b, :, i, j] = x[b, :, at grid[b, i, j]]``, bilinear, ``align_corners=True``.

    Args:
        x: images ``(B, C, H, W)``.
        grid: sampling positions ``(B, H, W, 2)`` as ``(x, y)`` in ``[-1, 1]`` from the first to the last
            pixel centre (``-1 + 2 * column / (W - 1)``), as ``F.grid_sample`` takes them.
        padding: ``"zeros"`` (outside pixels are 0, black) or ``"border"`` (positions clamped to the image).
        still: ``(B,)`` bool, the examples whose grid is the identity (:func:`identity_grid`).

    Returns:
        ``(B, C, H, W)``, differentiable in ``x`` and ``grid``; equal to ``x`` bit for bit for the ``still`` examples.
    """
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=True)
    if still is None or not bool(still.any()):
        return warped
    # the value of x for an identity warp, the gradient of the warp
    return torch.where(still.view(-1, 1, 1, 1), x + (warped - warped.detach()), warped)
