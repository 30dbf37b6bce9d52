"""Linear forms on a node's output during backward propagation, dense or windowed.

A dense form is ``coef`` ``(R, B, *shape)``: ``R`` forms per example. A *windowed* form on a ``(C, H, W)`` node keeps
each row's coefficients only in a window of the ``H x W`` grid: ``coef`` ``(R, B, C, h, w)`` and ``origin``
``(R, 2)``, the grid position of each row's window (entries outside the grid are zero). A form that starts at
one neuron of a convolutional layer is non-zero only in that neuron's receptive field, which grows by the kernel
size per convolution: windows make the cost of CROWN's intermediate bounds proportional to the receptive fields
rather than to the whole feature maps (auto_LiRPA's "patches" mode, here one window per row).

Convolutions, elementwise operations, residual additions and channel concatenations act on windows directly;
anything else first turns the form dense (:meth:`Form.dense`). A window as large as its grid is turned dense.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Form"]


@dataclass(frozen=True)
class Form:
    """Forms on a node's output: dense (``origin is None``) or windowed (see the module docstring).

    Attributes:
        coef: ``(R, B, *shape)`` dense, or ``(R, B, C, h, w)`` windowed.
        origin: ``(R, 2)`` int64 window positions (top, left) in the grid, or ``None``.
        grid: ``(H, W)`` of the node (windowed forms only).
    """

    coef: torch.Tensor
    origin: torch.Tensor | None = None
    grid: tuple[int, int] | None = None

    @property
    def windowed(self) -> bool:
        return self.origin is not None

    def like(self, coef: torch.Tensor) -> Form:
        """A form with the same windows and new coefficients of the same window size."""
        return Form(coef, self.origin, self.grid)

    def _flat_index(self, pad: tuple[int, int]) -> torch.Tensor:
        """``(R, h w)`` flat positions of every window cell in the grid padded by ``pad = (h, w)`` on each side (a
        window wholly outside the grid, all zeros, is moved to its edge)."""
        h, w = self.coef.shape[-2:]
        top = self.origin[:, :1].clamp(-h, self.grid[0])
        left = self.origin[:, 1:].clamp(-w, self.grid[1])
        rows = top + pad[0] + torch.arange(h, device=self.origin.device)  # (R, h)
        cols = left + pad[1] + torch.arange(w, device=self.origin.device)  # (R, w)
        return (rows[:, :, None] * (self.grid[1] + 2 * pad[1]) + cols[:, None, :]).reshape(rows.shape[0], -1)

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Per-neuron ``values`` aligned with ``coef``: ``(B, C, H, W)``, ``(C, H, W)`` or per row ``(R, B, C, H, W)``
        are cut into each row's window (zero outside the grid); constants broadcasting along the grid
        (``(C, 1, 1)``, scalars) and any values of a dense form are returned as they are."""
        if not self.windowed or values.dim() < 2 or values.shape[-2:] == (1, 1):
            return values
        if values.dim() == self.coef.dim() - 2:  # (C, H, W): the same for every example
            values = values[None]
        h, w = self.coef.shape[-2:]
        padded = F.pad(values, (w, w, h, h))
        top = self.origin[:, 0].clamp(-h, self.grid[0]) + h
        left = self.origin[:, 1].clamp(-w, self.grid[1]) + w
        *lead, height, width = padded.shape
        stride = padded.stride()
        positions = (height - h + 1, width - w + 1)
        if values.dim() == self.coef.dim():  # one set of values per row: windows of row r's own values
            view = padded.as_strided((lead[0], *positions, *lead[1:], h, w),
                                     (stride[0], stride[-2], stride[-1], *stride[1:-2], stride[-2], stride[-1]))
            return view[torch.arange(lead[0], device=top.device), top, left]
        view = padded.as_strided((*positions, *lead, h, w), (stride[-2], stride[-1], *stride[:-2], *stride[-2:]))
        unique, inverse = self._windows
        if unique is None:
            return view[top, left]  # (R, B, C, h, w), contiguous
        # Rows sharing a window (the channels and signs of one position) share one cut: copy blocks, not cells.
        return view[top[unique], left[unique]].index_select(0, inverse)

    @functools.cached_property
    def _windows(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(first, inverse)``: one row per distinct window and each row's window among them, or ``(None, None)``
        when every row has its own window."""
        key = self.origin[:, 0] * (self.grid[1] + 2 * self.coef.shape[-1] + 1) + self.origin[:, 1]
        distinct, inverse = torch.unique(key, return_inverse=True)
        if distinct.numel() == key.numel():
            return None, None
        first = torch.full_like(distinct, key.numel()).scatter_reduce(
            0, inverse, torch.arange(key.numel(), device=key.device), "amin")
        return first, inverse

    def dense(self) -> torch.Tensor:
        """``(R, B, *shape)`` the dense coefficients."""
        if not self.windowed:
            return self.coef
        r, b, c, h, w = self.coef.shape
        height, width = self.grid
        canvas = self.coef.new_zeros(r, b * c, (height + 2 * h) * (width + 2 * w))
        index = self._flat_index((h, w))[:, None, :].expand(r, b * c, h * w)
        canvas = canvas.scatter(-1, index, self.coef.reshape(r, b * c, h * w))
        canvas = canvas.reshape(r, b, c, height + 2 * h, width + 2 * w)
        return canvas[..., h:h + height, w:w + width]

    def dot(self, values: torch.Tensor) -> torch.Tensor:
        """``(R, B)``: ``sum <coef[r, b], values>`` for per-neuron ``values`` (``(B, *shape)``, ``(R, B, *shape)``
        or broadcasting constants)."""
        values = self.gather(values)
        if values.shape == self.coef.shape[1:]:  # one value per example and neuron: no temporary
            return torch.einsum("rbn,bn->rb", self.coef.flatten(2), values.flatten(1))
        return (self.coef * values).flatten(2).sum(-1)

    def masked(self) -> Form:
        """The form with window cells outside the grid set to zero."""
        h, w = self.coef.shape[-2:]
        rows = self.origin[:, :1] + torch.arange(h, device=self.origin.device)
        cols = self.origin[:, 1:] + torch.arange(w, device=self.origin.device)
        inside = ((rows >= 0) & (rows < self.grid[0]))[:, :, None] & ((cols >= 0) & (cols < self.grid[1]))[:, None, :]
        return self.like(self.coef * inside[:, None, None].to(self.coef.dtype))

    def compact(self) -> Form:
        """Dense once a window covers the whole grid (cheaper from then on)."""
        if self.windowed and self.coef.shape[-2] * self.coef.shape[-1] >= self.grid[0] * self.grid[1]:
            return Form(self.dense())
        return self

    def __add__(self, other: Form) -> Form:
        if not (self.windowed and other.windowed):
            return Form(self.dense() + other.dense())
        shift = other.origin - self.origin
        if not bool((shift == shift[:1]).all()):  # windows not at a fixed offset: add densely
            return Form(self.dense() + other.dense())
        dy, dx = (int(v) for v in shift[0])
        (h1, w1), (h2, w2) = self.coef.shape[-2:], other.coef.shape[-2:]
        top, left = min(0, dy), min(0, dx)
        height, width = max(h1, dy + h2) - top, max(w1, dx + w2) - left
        first = F.pad(self.coef, (-left, width - w1 + left, -top, height - h1 + top))
        second = F.pad(other.coef, (dx - left, width - w2 - dx + left, dy - top, height - h2 - dy + top))
        origin = self.origin + torch.tensor([top, left], device=self.origin.device)
        return Form(first + second, origin, self.grid).compact()

    @staticmethod
    def units(rows: torch.Tensor, batch: int, shape: tuple[int, ...], like: torch.Tensor,
              windowed: bool = True) -> Form:
        """``+e_i`` then ``-e_i`` for each flat neuron index in ``rows`` ``(k,)`` of a node of per-example
        ``shape``: ``2k`` forms, windowed ``1 x 1`` at each neuron for a ``(C, H, W)`` node."""
        k = rows.numel()
        ar = torch.arange(k, device=rows.device)
        sign = torch.cat([torch.ones(k), -torch.ones(k)]).to(like)[:, None]
        both = torch.cat([rows, rows])
        if len(shape) != 3 or not windowed:
            coef = like.new_zeros(2 * k, batch, math.prod(shape))
            coef[torch.cat([ar, ar + k]), :, both] = sign.expand(-1, batch)
            return Form(coef.reshape(2 * k, batch, *shape))
        channels, height, width = shape
        coef = like.new_zeros(2 * k, batch, channels, 1, 1)
        coef[torch.cat([ar, ar + k]), :, both // (height * width), 0, 0] = sign.expand(-1, batch)
        spatial = both % (height * width)
        origin = torch.stack([spatial // width, spatial % width], dim=1)
        return Form(coef, origin, (height, width)).compact()
