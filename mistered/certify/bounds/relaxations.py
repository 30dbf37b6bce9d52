"""Linear relaxations of the nonlinear operations, applied to a linear form during backward propagation.

To bound ``<coef, f(z)>`` from below, each output neuron with a non-negative coefficient is replaced by a linear
lower bound of ``f`` and each with a negative one by a linear upper bound, valid over the input box ``[l, u]``:

* ReLU terms (every :class:`~mistered.certify.graph.ops.PiecewiseLinear` is a sum of ``relu(z - t)``): CROWN's
  relaxation, as auto_LiRPA's default: above, the chord ``u (z - l) / (u - l)``; below, ``alpha * z`` with the
  adaptive slope ``alpha = 1`` if ``u > -l`` else ``0`` (CROWN) or an optimised ``alpha`` in ``[0, 1]``
  (α-CROWN, :class:`Slopes`). Stable neurons are exact. A Hardtanh is relaxed as its two ReLU terms (not by its
  own convex hull), a LeakyReLU exactly as auto_LiRPA does (its linear part passes through).
* Max pooling (auto_LiRPA's relaxation): below, the input with the largest lower bound; above, that same input if
  its lower bound reaches every other input's upper bound, else the constant largest upper bound.
* L∞-dist neurons and any operation bounded by intervals only: the constants ``l_out`` / ``u_out``.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from ..graph import ops
from ..graph.graph import Node
from .forms import Form
from .interval import Box

__all__ = ["Slopes", "AdaptiveSlopes", "relax", "relax_constant", "relu_chord"]


class Slopes(Protocol):
    """Lower-relaxation slopes of ReLU terms for one backward pass."""

    def lower(self, node: str, piece: int, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Slopes in ``[0, 1]`` of ``relu(y) >= slope * y`` for ``y`` in ``[lo, hi]`` ``(B, *shape)``: a tensor
        broadcasting to ``(R, B, *shape)``; only unstable neurons' values are used."""


class AdaptiveSlopes:
    """CROWN's adaptive choice: slope 1 where ``hi > -lo`` (the chord's slope exceeds 1/2), else 0; the same for
    every backward pass (:meth:`bind` returns itself)."""

    def lower(self, node: str, piece: int, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return (relu_chord(lo, hi)[0] > 0.5).to(lo.dtype)

    def bind(self, start: str, rows: torch.Tensor) -> AdaptiveSlopes:
        return self


def relu_chord(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper relaxation ``relu(y) <= slope * y + intercept`` on ``[lo, hi]`` (exact for stable neurons), computed
    as auto_LiRPA does (``hi`` kept ``1e-8`` above ``min(lo, 0)``)."""
    lo_r = lo.clamp(max=0)
    hi_r = torch.maximum(hi.clamp(min=0), lo_r + 1e-8)
    slope = hi_r / (hi_r - lo_r)
    return slope, -lo_r * slope


def _piecewise_linear(node: Node, form: Form, box: Box, slopes: Slopes) -> tuple[Form, torch.Tensor]:
    op: ops.PiecewiseLinear = node.op
    lo, hi = box
    coef = form.coef
    new = coef * op.slope if op.slope else None
    const = coef.flatten(2).sum(-1) * op.offset if op.offset else coef.new_zeros(coef.shape[:2])
    for k, (w, t) in enumerate(zip(op.weights, op.breaks)):
        c = coef if w == 1 else coef * w
        l, u = (lo, hi) if t == 0 else (lo - t, hi - t)
        up_slope, up_icpt = relu_chord(l, u)
        low_slope = torch.where((l < 0) & (u > 0), slopes.lower(node.name, k, l, u), (l >= 0).to(l.dtype))
        low_w, up_w = form.gather(low_slope), form.gather(up_slope)
        term = c * torch.where(c >= 0, low_w, up_w)
        new = term if new is None else new + term
        neg = form.like(c.clamp(max=0))
        const = const + neg.dot(up_icpt if t == 0 else up_icpt - up_slope * t)
        if t != 0:
            const = const - form.like(c.clamp(min=0)).dot(low_slope * t)
    return form.like(new), const


def _pool_windows(x: torch.Tensor, op: ops.MaxPool2d) -> torch.Tensor:
    """``(B, C, k_h k_w, L)``: each pooling window of ``x`` ``(B, C, H, W)``, padding as ``-inf``."""
    p_h, p_w = op.padding
    padded = F.pad(x, (p_w, p_w, p_h, p_h), value=float("-inf")) if p_h or p_w else x
    cols = F.unfold(padded, op.kernel, op.dilation, 0, op.stride)
    return cols.reshape(x.shape[0], x.shape[1], op.kernel[0] * op.kernel[1], -1)


def _max_pool(node: Node, form: Form, box: Box) -> tuple[Form, torch.Tensor]:
    op: ops.MaxPool2d = node.op
    lo, hi = box
    coef = form.dense()
    batch, channels, height, width = lo.shape
    lows, highs = _pool_windows(lo, op), _pool_windows(hi, op)
    best = lows.argmax(dim=2, keepdim=True)  # (B, C, 1, L): the input with the largest lower bound
    best_low = lows.gather(2, best)[:, :, 0]
    others_high = highs.scatter(2, best, float("-inf")).amax(dim=2)
    decided = (best_low >= others_high).to(lo.dtype)  # y = x_best on the whole box
    top = highs.amax(dim=2)
    flat = coef.flatten(3)  # (R, B, C, L)
    pos = flat.clamp(min=0)
    neg = flat - pos
    weight = pos + neg * decided
    const = torch.einsum("rbcl,bcl->rb", neg, (1 - decided) * top)
    # Flat index of each window's chosen input in the padded map.
    out_w = coef.shape[-1]
    k_row, k_col = best[:, :, 0] // op.kernel[1], best[:, :, 0] % op.kernel[1]
    position = torch.arange(best.shape[-1], device=lo.device)
    row = (position // out_w) * op.stride[0] + k_row * op.dilation[0]
    col = (position % out_w) * op.stride[1] + k_col * op.dilation[1]
    padded_w = width + 2 * op.padding[1]
    index = (row * padded_w + col).expand_as(weight)
    padded = coef.new_zeros(*coef.shape[:3], (height + 2 * op.padding[0]) * padded_w)
    padded = padded.scatter_add(-1, index, weight).reshape(*coef.shape[:3], height + 2 * op.padding[0], padded_w)
    p_h, p_w = op.padding
    return Form(padded[..., p_h:p_h + height, p_w:p_w + width]), const


def relax_constant(form: Form, out_box: Box) -> torch.Tensor:
    """``(R, B)``: the lower bound of ``<form, y>`` over the box ``y`` in ``[l_out, u_out]``."""
    return form.like(form.coef.clamp(min=0)).dot(out_box[0]) + form.like(form.coef.clamp(max=0)).dot(out_box[1])


def relax(node: Node, form: Form, in_box: Box, out_box: Box, slopes: Slopes) -> tuple[Form | None, torch.Tensor]:
    """The form on ``node``'s input (``None``: none, the bound is a constant) and the constant ``(R, B)`` with
    ``<form, node(z)> >= <form_in, z> + const`` for every ``z`` in ``in_box``; ``out_box`` is the node's own
    output box."""
    if isinstance(node.op, ops.PiecewiseLinear):
        return _piecewise_linear(node, form, in_box, slopes)
    if isinstance(node.op, ops.MaxPool2d):
        return _max_pool(node, form, in_box)
    return None, relax_constant(form, out_box)
