"""Bilinear resampling at pixel coordinates, exact at integer coordinates (so identity warps return their input).

``torch.nn.functional.grid_sample`` takes normalised coordinates and un-normalises them in float,
so even an identity grid is off by round-off (about 1e-6). Sampling directly at pixel coordinates
``(px, py)`` gives weights of exactly 0 and 1 at integer positions: the identity is bit-exact, which
the threats' ``scale_(0)`` contract relies on. Semantics match ``grid_sample(..., align_corners=True)``.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["bilinear_sample"]

Padding = Literal["zeros", "border"]


def bilinear_sample(x: torch.Tensor, px: torch.Tensor, py: torch.Tensor, padding: Padding = "zeros") -> torch.Tensor:
    """``out[b, :, i, j] = x[b, :, py[b, i, j], px[b, i, j]]``, bilinearly interpolated.

    Args:
        x: images ``(B, C, H, W)``.
        px: horizontal source coordinates ``(B, H_out, W_out)``, pixels (column ``0`` to ``W - 1``).
        py: vertical source coordinates ``(B, H_out, W_out)``, pixels (row ``0`` to ``H - 1``).
        padding: ``"zeros"`` (outside pixels are 0, black) or ``"border"`` (coordinates clamped to the image).

    Returns:
        ``(B, C, H_out, W_out)``; differentiable in ``x``, ``px`` and ``py``.
    """
    batch, channels, height, width = x.shape
    if padding == "border":
        px = px.clamp(0, width - 1)
        py = py.clamp(0, height - 1)
    x0 = px.detach().floor()
    y0 = py.detach().floor()
    wx = (px - x0).unsqueeze(1)
    wy = (py - y0).unsqueeze(1)
    flat = x.reshape(batch, channels, height * width)
    out_shape = (batch, channels, *px.shape[1:])
    out = None
    for dy, weight_y in ((0, 1 - wy), (1, wy)):
        rows = y0 + dy
        for dx, weight_x in ((0, 1 - wx), (1, wx)):
            cols = x0 + dx
            index = (rows.clamp(0, height - 1) * width + cols.clamp(0, width - 1)).long()
            values = flat.gather(2, index.view(batch, 1, -1).expand(batch, channels, -1)).view(out_shape)
            if padding == "zeros":
                inside = (rows >= 0) & (rows <= height - 1) & (cols >= 0) & (cols <= width - 1)
                values = values * inside.unsqueeze(1).to(values.dtype)
            term = weight_y * weight_x * values
            out = term if out is None else out + term
    return out
