"""L∞-dist neurons (Zhang et al. 2021, 2022): ``y_j = ||x - w_j||_p`` (``p = inf`` at test time).

Every such neuron is 1-Lipschitz in L∞, so is a network of them (mean shift subtracts a constant at
test time), which is what :mod:`mistered.certify.linf_dist_nets` certifies. Training relaxes
``p`` from 8 upwards (the p-norm is smooth, the max is not), driven by the objective's schedule.

No ``(B, out, in)`` tensor is ever formed: memory is ``O(B * out)`` in the forward and the backward
pass. For ``p = inf`` the forward reduces ``(c, B, out)`` chunks over their leading dimension (``c`` input
coordinates at a time: vectorised elementwise maxima; 2-3x faster than ``torch.cdist``, bit-identical values) and
keeps each output's arg-max coordinate (``(B, out)`` int64), so that the backward is a scatter of ``O(B * out)``
work instead of ``torch.cdist``'s second pass over ``(B, out, in)``; an opt-in ``torch.compile``-d kernel fuses
values and arg-max into one loop (another ~2.5x on CPU). For finite ``p`` a custom autograd
function works in chunks over the output neurons (at most ``chunk_elements`` values at a time,
recomputed in the backward pass) and rescales by the largest coordinate, so ``p`` in the hundreds
neither overflows nor underflows in float32 (``torch.cdist`` does).
Integer ``p`` (see :func:`fast_p`) is raised by repeated squaring and the backward uses
``sign(d) |u|^(p-1) = u (u^2)^((p-2)/2)`` with ``u = d / ||d||_p``: a few multiplies per element instead of
``pow`` (``exp`` + ``log``), ~5-7x faster fwd+bwd on CPU at p = 8..512 together with cache-sized chunks.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch import nn

from ..errors import InvalidInputError

__all__ = ["linf_dist", "fast_p", "LinfDistLinear", "LinfDistConv2d", "MeanShift", "DEFAULT_CHUNK_ELEMENTS"]

#: Upper bound on the elements of one ``(B, out_chunk, in)`` chunk (1 M floats = 4 MB: near the CPU caches; 16 M
#: floats measured 7x slower at p = 8 for B=128, in=784, out=1024).
DEFAULT_CHUNK_ELEMENTS = 1 << 20

logger = logging.getLogger(__name__)


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


def _max_abs_diff_block(x: torch.Tensor, weight: torch.Tensor, chunk_elements: int, with_index: bool):
    """``max_i |x_bi - w_oi|`` ``(b, out)`` for rows ``x`` ``(b, in)``, and its first arg-max ``i`` (int64) or None.

    The reduction runs over the *leading* dimension of ``(c, b, out)`` chunks of ``|x^T - w^T|`` (``c`` input
    coordinates at a time), so that the max is a vectorised elementwise max of contiguous rows; the chunk buffer is
    reused. With ``with_index`` the chunk holding the max is tracked (strict ``>``: the first among ties) and the
    arg-max inside it is found afterwards by comparing its ``c`` candidates with the max: ``O(b * out * c)`` work.
    """
    batch, inp = x.shape
    out = weight.shape[0]
    step = max(1, min(inp, chunk_elements // max(1, batch * out)))
    xt, wt = x.t().contiguous(), weight.t().contiguous()  # (in, b), (in, out)
    buffer = x.new_empty(step, batch, out)
    values = x.new_zeros(batch, out)  # |d| >= 0, so 0 is a neutral start
    chunk = x.new_zeros(batch, out) if with_index else None  # chunk numbers, exact in floating point
    better = x.new_empty(batch, out) if with_index else None  # 1.0 where a chunk beats the max so far
    for k, s in enumerate(range(0, inp, step)):
        e = min(inp, s + step)
        diff = torch.sub(xt[s:e, :, None], wt[s:e, None, :], out=buffer[: e - s]).abs_()
        top = diff.amax(dim=0)
        if chunk is not None:  # chunk = k where better: arithmetic, as masked_fill_ / where are ~8x slower on CPU
            chunk.addcmul_(torch.gt(top, values, out=better), torch.rsub(chunk, k))
        torch.maximum(values, top, out=values)
    if chunk is None:
        return values, None
    chunk = chunk.long()
    index = chunk  # overwritten below: every (b, o) has a hit in its chunk
    for j in reversed(range(step)):  # descending: the first hit in the chunk is written last
        candidate = (chunk * step + j).clamp_max_(inp - 1)
        hit = (x.gather(1, candidate) - weight.gather(1, candidate.t()).t()).abs_() == values
        index = torch.where(hit, candidate, index)
    return values, index


def _max_abs_diff(x: torch.Tensor, weight: torch.Tensor, chunk_elements: int, with_index: bool):
    """:func:`_max_abs_diff_block` over row blocks small enough that a chunk covers at least 8 input coordinates."""
    batch, out = x.shape[0], weight.shape[0]
    rows = max(1, min(batch, chunk_elements // (8 * out)))
    if rows == batch:
        return _max_abs_diff_block(x, weight, chunk_elements, with_index)
    parts = [_max_abs_diff_block(x[r : r + rows], weight, chunk_elements, with_index) for r in range(0, batch, rows)]
    values = torch.cat([v for v, _ in parts])
    return values, (torch.cat([i for _, i in parts]) if with_index else None)


class _NotCompiled(RuntimeError):
    """Raised when dynamo runs :func:`_packed_max_abs_diff` eagerly (e.g. past its recompile limit)."""


def _packed_max_abs_diff(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Values ``(B, out)`` and first arg-max ``(B, out)`` int64 in one fused reduction (float32, compiled only).

    The key ``bits(|d|) << 32 | (in - 1 - i)`` orders like ``|d|`` (non-negative floats order like their bits), ties
    going to the smallest ``i``, so one int64 max gives both exactly. Inductor fuses it into a single loop; run
    eagerly it would form ``(B, out, in)`` keys, hence the guard.
    """
    if not torch.compiler.is_compiling():
        raise _NotCompiled
    inp = x.shape[1]
    bits = (x[:, None, :] - weight[None]).abs().view(torch.int32).to(torch.int64)
    key = ((bits << 32) | torch.arange(inp - 1, -1, -1, device=x.device)).amax(dim=-1)
    return (key >> 32).to(torch.int32).view(torch.float32), (inp - 1) - (key & 0xFFFFFFFF)


def _build_kernel():
    return torch.compile(_packed_max_abs_diff, dynamic=False)


_KERNEL: dict = {}  # "kernel": the compiled function once built; "failed": the reason compiling is off for this process


def _compiled_max_abs_diff(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`_packed_max_abs_diff` compiled, or ``None`` (float64, no working compiler, dynamo fell back)."""
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or "failed" in _KERNEL:
        return None
    try:
        if "kernel" not in _KERNEL:
            _KERNEL["kernel"] = _build_kernel()
        return _KERNEL["kernel"](x, weight)
    except _NotCompiled:
        return None
    except Exception as error:  # no C++ compiler, unsupported backend...: torch raises several types
        _KERNEL["failed"] = repr(error)
        logger.warning("torch.compile of the L-inf-dist kernel failed (%s); using the eager chunked kernel", error)
        return None


def _max_dist(x: torch.Tensor, weight: torch.Tensor, chunk_elements: int, with_index: bool, compiled: bool):
    result = _compiled_max_abs_diff(x, weight) if compiled else None
    return result if result is not None else _max_abs_diff(x, weight, chunk_elements, with_index)


class _MaxDistFunction(torch.autograd.Function):
    """``||x_b - w_o||_inf`` with a backward that routes each output's gradient to its (first) arg-max coordinate."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, chunk_elements: int, compiled: bool) -> torch.Tensor:
        values, index = _max_dist(x, weight, chunk_elements, True, compiled)
        ctx.save_for_backward(x, weight, index)
        return values

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight, index = ctx.saved_tensors  # index (B, out): i* per example and neuron
        signed = torch.sign(x.gather(1, index) - weight.gather(1, index.t()).t()).mul_(grad)  # (B, out)
        grad_x = torch.zeros_like(x).scatter_add_(1, index, signed) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight).scatter_add_(1, index.t(), signed.t().neg()) if ctx.needs_input_grad[1] else None
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
        compiled: ``p = inf`` in float32 only: use a ``torch.compile``-d fused kernel (~2.5x faster on CPU; needs a
            C++ compiler, first call per shape compiles for ~1-4 s). Falls back to the eager kernel, with a warning
            once, when compiling fails.

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
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            return _MaxDistFunction.apply(x, weight, int(chunk_elements), bool(compiled))
        return _max_dist(x, weight, int(chunk_elements), False, compiled)[0]
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

    The attribute ``p`` (default ``inf``) is the norm used; training schedules set it. Setting ``compiled = True``
    opts into the compiled ``p = inf`` kernel (see :func:`linf_dist`).
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
