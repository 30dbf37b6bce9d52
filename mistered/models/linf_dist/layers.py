"""L∞-dist neurons (Zhang et al. 2021, 2022): ``y_j = ||x - w_j||_p`` (``p = inf`` at test time).

Every such neuron is 1-Lipschitz in L∞, so is a network of them (mean shift subtracts a constant at
test time), which is what :mod:`mistered.models.linf_dist.nets` certifies. Training relaxes
``p`` from 8 upwards (the p-norm is smooth, the max is not), driven by the objective's schedule.

No ``(B, out, in)`` tensor is ever formed: memory is ``O(B * out)`` in the forward and the backward
pass. ``p = inf`` runs the max-distance kernel of :mod:`mistered.models.linf_dist.kernel` (eager chunked
reduction, or a ``torch.compile``-d fused one with ``compiled=True``: ~2.5x faster on CPU; bit-identical values
to ``torch.cdist``, an ``O(B * out)`` scatter as backward). For finite ``p`` a custom autograd
function works in chunks over the output neurons (at most ``chunk_elements`` values at a time,
recomputed in the backward pass) and rescales by the largest coordinate, so ``p`` in the hundreds
neither overflows nor underflows in float32 (``torch.cdist`` does).
Integer ``p`` (see :func:`fast_p`) is raised by repeated squaring and the backward uses
``sign(d) |u|^(p-1) = u (u^2)^((p-2)/2)`` with ``u = d / ||d||_p``: a few multiplies per element instead of
``pow`` (``exp`` + ``log``), ~5-7x faster fwd+bwd on CPU at p = 8..512 together with cache-sized chunks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InvalidInputError
from .kernel import max_dist

__all__ = [
    "linf_dist", "fast_p", "LinfDistLinear", "LinfDistConv2d", "MeanShift", "DEFAULT_CHUNK_ELEMENTS", "linf_dist_layers",
    "set_p", "certification_mode",
]

#: Upper bound on the elements of one ``(B, out_chunk, in)`` chunk (1 M floats = 4 MB: near the CPU caches; 16 M
#: floats measured 7x slower at p = 8 for B=128, in=784, out=1024).
DEFAULT_CHUNK_ELEMENTS = 1 << 20


def _chunks(batch: int, out: int, inp: int, chunk_elements: int) -> tuple[range, int]:
    """The chunk starts over the output neurons and the chunk length."""
    step = max(1, chunk_elements // max(1, batch * inp))
    return range(0, out, step), step


def fast_p(p: float) -> float:
    """The nearest norm that :func:`linf_dist` computes with multiplies only: ``p`` rounded to an integer (``>= 1``).

    A schedule that passes its ``p`` through this runs ~4x faster (B=128, in=784, out=1024, p = 24 vs 24.5) at a
    relative change of ``p`` below ``1 / (2 p)``; ``inf`` stays ``inf``.
    """
    return p if math.isinf(p) else float(max(1, round(p)))


def _int_pow_(r: torch.Tensor, n: int) -> torch.Tensor:
    """``r ** n`` for an integer ``n >= 1`` by repeated squaring (``r`` is overwritten and may be returned).

    A few multiplies per element instead of ``exp(n log r)``: ``n = 8`` costs 3 passes, ``n = 1000`` 14.
    """
    result = None
    while True:
        if n & 1:
            if n == 1 and result is None:  # a power of two: only squarings
                return r
            result = r.clone() if result is None else result.mul_(r)
        n >>= 1
        if not n:
            return result
        r = r.square_()


def _pow_(r: torch.Tensor, p: float) -> torch.Tensor:
    """``r ** p`` for ``r >= 0`` (``r`` is overwritten and may be returned): squarings for integer ``p``."""
    return _int_pow_(r, int(p)) if float(p).is_integer() and p >= 1 else r.pow_(p)


def _pnorm_chunk(diff: torch.Tensor, p: float) -> torch.Tensor:
    """``||diff||_p`` (finite ``p``) over the last dimension, scaled by the max for stability; ``diff`` ``(B, o, in)``."""
    magnitude = diff.abs_()  # in place: the chunk is not needed afterwards
    safe = magnitude.amax(dim=-1, keepdim=True).clamp_min(1e-30)
    powered = _pow_(magnitude.mul_(safe.reciprocal()), p)
    return (safe * powered.sum(dim=-1, keepdim=True).pow(1.0 / p)).squeeze(-1)


def _pnorm_coefficient(diff: torch.Tensor, norm: torch.Tensor, p: float) -> torch.Tensor:
    """``d||d||_p / dd = sign(d) (|d| / ||d||_p)^(p - 1)`` for a chunk ``diff`` ``(B, o, in)``, ``norm`` ``(B, o)``.

    ``diff`` is overwritten. With ``u = d / ||d||_p`` (``|u| <= 1``, so nothing overflows) an even integer ``p``
    gives ``u (u^2)^((p - 2) / 2)`` and an odd one ``u |u| (u^2)^((p - 3) / 2)``: multiplies only.
    """
    u = diff.mul_(norm.clamp_min(1e-30).reciprocal()[..., None])
    if float(p).is_integer() and p >= 3:
        even = int(p) % 2 == 0
        half = (int(p) - 2) // 2 if even else (int(p) - 3) // 2
        factor = _int_pow_(u.square(), half) if half else None
        if not even:
            factor = u.abs() if factor is None else factor.mul_(u.abs())
        return u if factor is None else factor.mul_(u)
    return u.abs().pow_(p - 1).mul_(u.sign_())


class _PNormDistFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, p: float, chunk_elements: int) -> torch.Tensor:
        batch, inp = x.shape
        out = weight.shape[0]
        result = x.new_empty(batch, out)
        starts, step = _chunks(batch, out, inp, chunk_elements)
        for s in starts:
            result[:, s : s + step] = _pnorm_chunk(x[:, None, :] - weight[None, s : s + step], p)
        ctx.save_for_backward(x, weight, result)
        ctx.p, ctx.chunk_elements = p, chunk_elements
        return result

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, result = ctx.saved_tensors
        batch, inp = x.shape
        out = weight.shape[0]
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        starts, step = _chunks(batch, out, inp, ctx.chunk_elements)
        for s in starts:
            diff = x[:, None, :] - weight[None, s : s + step]  # (B, o, in)
            coef = _pnorm_coefficient(diff, result[:, s : s + step], ctx.p).mul_(grad[:, s : s + step, None])
            if grad_x is not None:
                grad_x += coef.sum(dim=1)
            if grad_w is not None:
                torch.sum(coef, dim=0, out=grad_w[s : s + step]).neg_()
        return grad_x, grad_w, None, None


def linf_dist(
    x: torch.Tensor,
    weight: torch.Tensor,
    p: float = math.inf,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    compiled: bool = False,
) -> torch.Tensor:
    """``||x_b - w_j||_p`` for every example and neuron, without forming the ``(B, out, in)`` tensor.

    Args:
        x: ``(B, in)``.
        weight: ``(out, in)``.
        p: the norm, ``>= 1`` (``math.inf`` for the L∞-dist neuron itself).
        chunk_elements: at most this many values are held in one chunk.
        compiled: ``p = inf`` in float32 only: use the ``torch.compile``-d fused kernel (~2.5x faster on CPU; needs a
            C++ compiler; compiles for ~2-4 s once per input width, batch sizes never recompile). Falls back to the
            eager kernel, with a warning once, when compiling fails (see :mod:`~mistered.models.linf_dist.kernel`).

    For ``p = inf`` the values equal ``torch.cdist(x, weight, p=inf)`` bit for bit; the gradient goes to the first
    arg-max coordinate (``torch.cdist`` gives the full gradient to every tied coordinate, ``amax`` splits it: they
    differ only on exact ties).

    Returns:
        ``(B, out)``, differentiable in ``x`` and ``weight``.
    """
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise InvalidInputError(f"linf_dist needs x (B, in) and weight (out, in), got {tuple(x.shape)} and {tuple(weight.shape)}")
    if not p >= 1:
        raise InvalidInputError(f"the norm p must be >= 1, got {p}")
    if math.isinf(p):
        return max_dist(x, weight, chunk_elements, compiled)
    return _PNormDistFunction.apply(x, weight, float(p), int(chunk_elements))


class MeanShift(nn.Module):
    """Subtract the per-feature batch mean in training (running mean at test), like BatchNorm without scaling.

    Inputs ``(B, F)`` or ``(B, F, H, W)``; at test time a constant shift, so 1-Lipschitz in every norm.
    """

    def __init__(self, features: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0] + list(range(2, x.dim()))
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.training:
            mean = x.mean(dim=dims)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
        else:
            mean = self.running_mean
        return x - mean.view(shape)


class LinfDistLinear(nn.Module):
    """Dense L∞-dist layer: ``(B, in) -> (B, out)``, ``y_j = ||x - w_j||_p (- mean) (+ b_j)``.

    Args:
        in_features, out_features: sizes.
        mean_shift: subtract the batch (running) mean per output (hidden layers).
        bias: add a learned bias (the output layer).
        identity_val: identity initialisation: ``w_{j, i(j)} = -identity_val`` so that ``y_j = x_{i(j)} + identity_val``
            for inputs below ``identity_val`` in magnitude, with ``i(j) = j mod in`` when ``in <= out`` (v2) and the
            evenly spaced ``i(j) = floor(j in / out)`` when ``in > out`` (each neuron starts as one input); ``None``: none.
        std: standard deviation of the Gaussian initial weights.
        chunk_elements: memory bound of one chunk (see :func:`linf_dist`).

    The attribute ``p`` (default ``inf``) is the norm used; training schedules set it. The attribute ``compiled``
    (default ``False``; a runtime choice, not part of the state dict) selects the compiled ``p = inf`` kernel (see
    :func:`linf_dist`); :func:`~mistered.models.linf_dist.nets.set_linf_dist_compiled` switches a whole model and
    the CLI commands turn it on unless given ``--no-compile``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        mean_shift: bool = True,
        bias: bool = False,
        identity_val: float | None = 10.0,
        std: float = 1.0,
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.p = math.inf
        self.compiled = False
        self.chunk_elements = chunk_elements
        weight = torch.randn(out_features, in_features) * std
        if identity_val is not None:
            rows = torch.arange(out_features)
            columns = rows % in_features if in_features <= out_features else rows * in_features // out_features
            weight[rows, columns] = -identity_val
        self.weight = nn.Parameter(weight)
        self.mean_shift = MeanShift(out_features) if mean_shift else None
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def _post(self, y: torch.Tensor) -> torch.Tensor:
        if self.mean_shift is not None:
            y = self.mean_shift(y)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, *([1] * (y.dim() - 2)))
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._post(linf_dist(x, self.weight, self.p, self.chunk_elements, self.compiled))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class LinfDistConv2d(LinfDistLinear):
    """Convolutional L∞-dist layer: each output pixel is an L∞-dist neuron over its ``k x k`` input patch.

    ``(B, C_in, H, W) -> (B, C_out, H', W')`` with the usual convolution arithmetic (patches by ``F.unfold``,
    zero padding). Identity initialisation puts ``-identity_val`` at the patch centre of channel ``j mod C_in``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        mean_shift: bool = True,
        bias: bool = False,
        identity_val: float | None = 10.0,
        std: float = 1.0,
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    ) -> None:
        super().__init__(in_channels * kernel_size**2, out_channels, mean_shift, bias, None, std, chunk_elements)
        self.in_channels, self.kernel_size, self.stride, self.padding = in_channels, kernel_size, stride, padding
        if identity_val is not None and in_channels <= out_channels:
            with torch.no_grad():
                view = self.weight.view(out_channels, in_channels, kernel_size, kernel_size)
                rows = torch.arange(out_channels)
                view[rows, rows % in_channels, kernel_size // 2, kernel_size // 2] = -identity_val

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        patches = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)  # (B, C k k, L)
        out_h = (height + 2 * self.padding - self.kernel_size) // self.stride + 1
        out_w = (width + 2 * self.padding - self.kernel_size) // self.stride + 1
        rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])  # (B L, C k k)
        y = linf_dist(rows, self.weight, self.p, self.chunk_elements, self.compiled)
        y = y.view(batch, out_h * out_w, -1).transpose(1, 2).reshape(batch, -1, out_h, out_w)
        return self._post(y)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_features}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, bias={self.bias is not None}"
        )


def linf_dist_layers(model: nn.Module) -> list[LinfDistLinear]:
    """Every L∞-dist layer of ``model`` (dense and convolutional)."""
    return [m for m in model.modules() if isinstance(m, LinfDistLinear)]


def set_p(model: nn.Module, p: float) -> None:
    """Set the norm ``p`` of every L∞-dist layer of ``model``."""
    for layer in linf_dist_layers(model):
        layer.p = p


@contextmanager
def certification_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``p = inf`` inside the block; the previous state is restored after."""
    layers = linf_dist_layers(model)
    saved_p = [layer.p for layer in layers]
    modes = [m.training for m in model.modules()]
    model.eval()
    set_p(model, math.inf)
    try:
        yield
    finally:
        for layer, p in zip(layers, saved_p):
            layer.p = p
        for m, mode in zip(model.modules(), modes):
            m.train(mode)
