"""The ``p = inf`` kernel of L∞-dist neurons: ``||x_b - w_o||_inf`` for every example and neuron, with its gradient.

Two implementations give the same values (bit for bit, equal to ``torch.cdist(x, w, p=inf)``) and the same first
arg-max coordinate, so the same gradients, in ``O(B * out)`` memory:

* eager: ``(c, B, out)`` chunks of ``|x^T - w^T|`` reduced over their leading dimension (``c`` input coordinates at
  a time: vectorised elementwise maxima), the arg-max recovered afterwards (:func:`_max_abs_diff`);
* compiled: a ``torch.compile``-d fused reduction of packed ``(|d|, index)`` keys (:func:`_packed_max_abs_diff`),
  ~2.5x faster on CPU. It compiles once per input width (~2-4 s) with the batch and output dimensions dynamic, so
  batch-size changes (the last partial batch, evaluation batches) never recompile (:func:`_build_kernel`). When
  compiling fails (no C++ compiler, an unsupported backend) one warning is logged and the eager kernel is used
  for the rest of the process; float64 inputs always take the exact eager kernel.

The backward of :class:`_MaxDistFunction` routes each output's gradient to its arg-max coordinate: a scatter of
``O(B * out)`` work instead of ``torch.cdist``'s second pass over ``(B, out, in)``.
"""

from __future__ import annotations

import logging

import torch
import torch._dynamo.config as dynamo_config
import torch.fx.experimental._config as fx_config
from torch.autograd.function import once_differentiable

__all__ = ["max_dist", "compile_failure"]

logger = logging.getLogger(__name__)


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
    if rows >= batch:  # one block (also an empty batch)
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
    """The compiled kernel: the batch and output dimensions dynamic, the input width static.

    One compilation per input width serves every batch size (the last partial batch, evaluation batches) and
    every output width (a dimension of size 1 compiles one specialised variant). A static input width, the
    reduction's length, keeps the generated loop as fast as a fully static one (measured: a fully dynamic kernel
    is 1.6x slower). Dynamo also guards on what would recompile for nothing: duck shaping (a batch of 16 in a
    16-wide layer would share one symbol and guard on the equality; turned off) and the autograd state (grad mode,
    ``requires_grad``: the kernel always sees detached tensors without grad, :class:`_MaxDistFunction` does the
    backward). Its recompile limit is raised for this kernel only, to one graph per layer shape of several models.
    """
    kernel = torch.compile(_packed_max_abs_diff, dynamic=False)

    def run(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, weight = x.detach(), weight.detach()  # fresh aliases: the marks below never reach a Parameter
        torch._dynamo.maybe_mark_dynamic(x, 0)
        torch._dynamo.maybe_mark_dynamic(weight, 0)
        with torch.no_grad(), fx_config.patch(use_duck_shape=False), dynamo_config.patch(recompile_limit=_RECOMPILE_LIMIT):
            return kernel(x, weight)

    return run


#: Graphs the compiled kernel may hold (one per input width, and variants for sizes of 1) before calls run eagerly.
_RECOMPILE_LIMIT = 64


_KERNEL: dict = {}  # "kernel": the compiled function once built; "failed": the reason compiling is off for this process


def compile_failure() -> str | None:
    """Why the compiled kernel is off for this process (the compile error), or ``None`` if it has not failed."""
    return _KERNEL.get("failed")


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


def max_dist(x: torch.Tensor, weight: torch.Tensor, chunk_elements: int, compiled: bool = False) -> torch.Tensor:
    """``||x_b - w_o||_inf`` ``(B, out)`` for ``x`` ``(B, in)`` and ``weight`` ``(out, in)`` (shapes not checked).

    Args:
        chunk_elements: the eager kernel holds at most this many values at a time.
        compiled: use the compiled kernel (float32 only), falling back to the eager one as described above.

    Differentiable in ``x`` and ``weight`` (the gradient goes to the first arg-max coordinate) when either
    requires grad under grad mode; otherwise no arg-max is kept.
    """
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _MaxDistFunction.apply(x, weight, int(chunk_elements), bool(compiled))
    return _max_dist(x, weight, int(chunk_elements), False, bool(compiled))[0]
