"""The operations of a bound graph: small typed records that know their forward function and nothing else.

Every operation acts on a batch: inputs ``(B, *shape_in)``, output ``(B, *shape_out)``, with the batch dimension
first and untouched (the per-example ``shape`` of a node never includes it). Parameters are tensors on the graph's
device; :meth:`Op.to` moves them. What an operation means for bounds (its interval rule, its transpose, its linear
relaxation) lives in :mod:`mistered.certify.bounds`, so the graph knows nothing of bounds.

The set is deliberately small: a traced model's layers are lowered onto it (:mod:`.converters`):

* affine in one input: :class:`Linear`, :class:`Conv2d` (average pooling becomes a depthwise one),
  :class:`ConvTranspose2d`, :class:`Affine` (an elementwise ``x * scale + shift``: BatchNorm in eval, normalisation,
  arithmetic with constants), :class:`Reshape`, :class:`Permute`, :class:`Unfold`;
* affine in several inputs: :class:`Sum` (residual additions, differences), :class:`Cat`;
* nonlinear: :class:`PiecewiseLinear` (ReLU, LeakyReLU, Hardtanh, clamp), :class:`MaxPool2d`, :class:`LinfDist`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...models.linf_dist.layers import linf_dist

__all__ = [
    "Op", "Input", "Linear", "Conv2d", "ConvTranspose2d", "Affine", "Sum", "Cat", "Reshape", "Permute", "Unfold",
    "PiecewiseLinear", "MaxPool2d", "LinfDist", "NONLINEAR",
]

Pair = tuple[int, int]


@dataclass(frozen=True, eq=False)
class Op:
    """Base class: ``forward(*inputs)`` on batched tensors; parameters are the dataclass's tensor fields."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Op:
        """A copy with every floating-point tensor field moved to ``device`` / cast to ``dtype``."""
        changes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                changes[f.name] = value.to(device=device, dtype=dtype if value.is_floating_point() else None)
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Input(Op):
    """The graph's input (the perturbed image)."""


@dataclass(frozen=True, eq=False)
class Linear(Op):
    """``x @ weight.T + bias`` over the last dimension: ``(B, *, in) -> (B, *, out)``; weight ``(out, in)``."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


@dataclass(frozen=True, eq=False)
class Conv2d(Op):
    """2-D convolution ``(B, C_in, H, W) -> (B, C_out, H', W')`` with zero padding; weight
    ``(C_out, C_in / groups, k, k)``."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


@dataclass(frozen=True, eq=False)
class ConvTranspose2d(Op):
    """Transposed 2-D convolution; weight ``(C_in, C_out / groups, k, k)`` as in ``nn.ConvTranspose2d``."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    output_padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)


@dataclass(frozen=True, eq=False)
class Affine(Op):
    """Elementwise ``x * scale + shift``; ``scale`` and ``shift`` (either may be ``None``) broadcast against the
    per-example shape without enlarging it, e.g. ``(C, 1, 1)`` for a folded BatchNorm2d."""

    scale: torch.Tensor | None
    shift: torch.Tensor | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            x = x * self.scale
        return x if self.shift is None else x + self.shift


@dataclass(frozen=True, eq=False)
class Sum(Op):
    """``sum_k coefficients[k] * inputs[k]`` of inputs of one shape (a residual addition is ``(1.0, 1.0)``)."""

    coefficients: tuple[float, ...]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = inputs[0] * self.coefficients[0]
        for c, x in zip(self.coefficients[1:], inputs[1:]):
            out = out + c * x
        return out


@dataclass(frozen=True, eq=False)
class Cat(Op):
    """Concatenation along the per-example dimension ``dim`` (0 = the first dimension after the batch)."""

    dim: int

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat(inputs, dim=self.dim + 1)


@dataclass(frozen=True, eq=False)
class Reshape(Op):
    """Reshape every example to ``shape`` (flatten, view, reshape, squeeze, unsqueeze)."""

    shape: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


@dataclass(frozen=True, eq=False)
class Permute(Op):
    """Permute the per-example dimensions: output dimension ``i`` is input dimension ``dims[i]``."""

    dims: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, *(d + 1 for d in self.dims))


@dataclass(frozen=True, eq=False)
class Unfold(Op):
    """``F.unfold``: ``(B, C, H, W) -> (B, C k_h k_w, L)`` sliding patches, zero padding (a selection: linear)."""

    kernel: Pair
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.unfold(x, self.kernel, self.dilation, self.padding, self.stride)


@dataclass(frozen=True, eq=False)
class PiecewiseLinear(Op):
    """A scalar piecewise-linear activation applied elementwise, written with ReLUs:

    ``f(x) = offset + slope * x + sum_k weights[k] * relu(x - breaks[k])``.

    ReLU is ``(0, 0, (1,), (0,))``; LeakyReLU(a) is ``(0, a, (1 - a,), (0,))``; Hardtanh(lo, hi) is
    ``(lo, 0, (1, -1), (lo, hi))``. Bounds relax each ReLU term on its own (CROWN's triangle relaxation).
    """

    offset: float
    slope: float
    weights: tuple[float, ...]
    breaks: tuple[float, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x * self.slope if self.slope else None
        for w, t in zip(self.weights, self.breaks):
            term = torch.relu(x - t) if t else torch.relu(x)
            term = term if w == 1 else term * w
            out = term if out is None else out + term
        out = torch.zeros_like(x) if out is None else out
        return out + self.offset if self.offset else out

    @property
    def monotone(self) -> bool:
        """Whether ``f`` is non-decreasing (every segment's slope is ``>= 0``)."""
        slope, order = self.slope, sorted(range(len(self.breaks)), key=lambda k: self.breaks[k])
        slopes = [slope]
        for k in order:
            slope += self.weights[k]
            slopes.append(slope)
        return min(slopes) >= 0

    def value(self, x: float) -> float:
        """``f(x)`` for a Python float (``±inf`` allowed where the limit exists)."""
        out = self.offset + (self.slope * x if self.slope else 0.0)
        return out + sum(w * max(x - t, 0.0) for w, t in zip(self.weights, self.breaks) if w)


@dataclass(frozen=True, eq=False)
class MaxPool2d(Op):
    """2-D max pooling ``(B, C, H, W) -> (B, C, H', W')`` (padding counts as ``-inf``; no ceil mode)."""

    kernel: Pair
    stride: Pair
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.kernel, self.stride, self.padding, self.dilation)


@dataclass(frozen=True, eq=False)
class LinfDist(Op):
    """L∞-dist neurons over the last dimension: ``y_j = max_i |x_i - weight_ji|``, ``(B, *, in) -> (B, *, out)``.

    Each output is 1-Lipschitz in L∞ (Zhang et al. 2021); mean shift and bias are separate :class:`Affine` ops.
    """

    weight: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        return linf_dist(flat, self.weight, math.inf).reshape(*x.shape[:-1], self.weight.shape[0])


#: The operations whose bounds need a relaxation (and so the bounds of their input).
NONLINEAR = (PiecewiseLinear, MaxPool2d, LinfDist)
