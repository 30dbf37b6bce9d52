"""Backward propagation of linear forms through the graph's affine operations (their transposes).

Forms on an operation's output (a :class:`~.forms.Form`, ``R`` rows per example) become forms on its inputs plus a
constant ``(R, B)`` from the biases: ``<form, op(x)> = sum_k <form_k, x_k> + const``. Convolutions are transposed
by the opposite convolution with the batch and row dimensions merged; on windowed forms they act on each row's
window (which grows by the kernel) and elementwise operations on the matching cut of their parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..graph import ops
from ..graph.graph import Node
from .forms import Form

__all__ = ["transpose", "AFFINE"]

Forms = tuple[list[Form], torch.Tensor | None]


def _merged(coef: torch.Tensor) -> torch.Tensor:
    """``(R, B, *shape) -> (R B, *shape)``."""
    return coef.reshape(-1, *coef.shape[2:])


def _split(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(R B, *shape) -> (R, B, *shape)`` with ``like``'s ``R`` and ``B``."""
    return flat.reshape(like.shape[0], like.shape[1], *flat.shape[1:])


def _channel_bias(coef: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """``(R, B)``: ``sum_{c, h, w} coef[r, b, c, h, w] * bias[c]`` (cells outside a window's grid are zero)."""
    return None if bias is None else torch.einsum("rbc,c->rb", coef.sum(dim=(-2, -1)), bias)


def _linear(op: ops.Linear, form: Form, shapes: list[tuple[int, ...]]) -> Forms:
    coef = form.dense()
    const = None if op.bias is None else (coef @ op.bias).reshape(*coef.shape[:2], -1).sum(-1)
    return [Form(coef @ op.weight)], const


def _conv(op: ops.Conv2d, form: Form, shapes: list[tuple[int, ...]]) -> Forms:
    coef = form.coef
    const = _channel_bias(coef, op.bias)
    if form.windowed:  # every input cell any window cell reads, then the cells in the padding dropped
        flat = F.conv_transpose2d(_merged(coef), op.weight, None, op.stride, 0, 0, op.groups, op.dilation)
        origin = form.origin * torch.tensor(op.stride, device=form.origin.device) - torch.tensor(
            op.padding, device=form.origin.device)
        return [Form(_split(flat, coef), origin, tuple(shapes[0][-2:])).masked().compact()], const
    in_h, in_w = shapes[0][-2:]
    k_h, k_w = op.weight.shape[-2:]
    out_h, out_w = coef.shape[-2:]
    extra = (in_h - ((out_h - 1) * op.stride[0] - 2 * op.padding[0] + op.dilation[0] * (k_h - 1) + 1),
             in_w - ((out_w - 1) * op.stride[1] - 2 * op.padding[1] + op.dilation[1] * (k_w - 1) + 1))
    flat = F.conv_transpose2d(_merged(coef), op.weight, None, op.stride, op.padding, extra, op.groups, op.dilation)
    return [Form(_split(flat, coef))], const


def _conv_transpose(op: ops.ConvTranspose2d, form: Form, shapes: list[tuple[int, ...]]) -> Forms:
    coef = form.dense()
    flat = F.conv2d(_merged(coef), op.weight, None, op.stride, op.padding, op.dilation, op.groups)
    return [Form(_split(flat, coef))], _channel_bias(coef, op.bias)


def _affine(op: ops.Affine, form: Form, shapes: list[tuple[int, ...]]) -> Forms:
    const = None if op.shift is None else form.dot(op.shift)
    return [form if op.scale is None else form.like(form.coef * form.gather(op.scale))], const


def _sum(op: ops.Sum, form: Form, shapes: list[tuple[int, ...]]) -> Forms:
    return [form if c == 1 else form.like(form.coef * c) for c in op.coefficients], None


def _cat(op: ops.Cat, form: Form, shapes: list[tuple[int, ...]]) -> Forms:
    sizes = [s[op.dim] for s in shapes]
    if form.windowed and op.dim == 0:  # channels: the windows stay
        return [form.like(part) for part in torch.split(form.coef, sizes, dim=2)], None
    return [Form(part) for part in torch.split(form.dense(), sizes, dim=op.dim + 2)], None


def _reshape(op: ops.Reshape, form: Form, shapes: list[tuple[int, ...]]) -> Forms:
    coef = form.dense()
    return [Form(coef.reshape(*coef.shape[:2], *shapes[0]))], None


def _permute(op: ops.Permute, form: Form, shapes: list[tuple[int, ...]]) -> Forms:
    inverse = sorted(range(len(op.dims)), key=lambda i: op.dims[i])
    return [Form(form.dense().permute(0, 1, *(d + 2 for d in inverse)))], None


def _unfold(op: ops.Unfold, form: Form, shapes: list[tuple[int, ...]]) -> Forms:
    coef = form.dense()
    flat = F.fold(_merged(coef), shapes[0][-2:], op.kernel, op.dilation, op.padding, op.stride)
    return [Form(_split(flat, coef))], None


#: Affine operation type -> its backward rule.
AFFINE: dict[type, Callable[..., Forms]] = {
    ops.Linear: _linear, ops.Conv2d: _conv, ops.ConvTranspose2d: _conv_transpose, ops.Affine: _affine,
    ops.Sum: _sum, ops.Cat: _cat, ops.Reshape: _reshape, ops.Permute: _permute, ops.Unfold: _unfold,
}


def transpose(node: Node, form: Form, input_shapes: list[tuple[int, ...]]) -> Forms:
    """Forms on ``node``'s inputs and the constant ``(R, B)`` (or ``None``) with
    ``<form, node(x)> = sum_k <forms_k, x_k> + const``."""
    return AFFINE[type(node.op)](node.op, form, input_shapes)
