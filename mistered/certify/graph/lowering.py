"""Lowering of common layer families onto the bound graph's operations, shared by the module, function and ONNX
converters (each of which only extracts the parameters): activations, arithmetic with constants, reshapes,
pooling, convolutions and BatchNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .builder import Builder, Ref, Site, as_constant, unsupported
from .ops import Affine, Cat, Conv2d, Linear, MaxPool2d, Permute, PiecewiseLinear, Reshape, Sum

__all__ = [
    "relu", "leaky_relu", "clamp", "arithmetic", "reshape_like", "permute", "transpose", "cat", "pair",
    "avg_pool", "adaptive_avg_pool", "global_mean", "max_pool", "linear", "conv2d", "batch_norm",
]


def pair(value: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(3, 2) -> (3, 2)``."""
    if isinstance(value, int):
        return (value, value)
    values = tuple(int(v) for v in value)
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def relu(b: Builder, site: Site, x: Ref) -> Ref:
    return b.add(PiecewiseLinear(0.0, 0.0, (1.0,), (0.0,)), [x], site)


def leaky_relu(b: Builder, site: Site, x: Ref, negative_slope: float) -> Ref:
    a = float(negative_slope)
    return b.add(PiecewiseLinear(0.0, a, (1.0 - a,), (0.0,)), [x], site)


def clamp(b: Builder, site: Site, x: Ref, low: object, high: object) -> Ref:
    """``min(max(x, low), high)`` with constant (Python number) bounds, either of which may be ``None``."""
    if any(v is not None and not isinstance(v, (int, float)) for v in (low, high)):
        raise unsupported(site, "clamp bounds must be constant numbers")
    if low is not None and high is not None:
        if not low < high:
            raise unsupported(site, f"clamp needs min < max, got {low} and {high}")
        op = PiecewiseLinear(float(low), 0.0, (1.0, -1.0), (float(low), float(high)))
    elif low is not None:
        op = PiecewiseLinear(float(low), 0.0, (1.0,), (float(low),))
    elif high is not None:
        op = PiecewiseLinear(0.0, 1.0, (-1.0,), (float(high),))
    else:
        return x
    return b.add(op, [x], site)


def arithmetic(b: Builder, site: Site, name: str, left: object, right: object, alpha: float = 1.0) -> Ref:
    """``left <name> right`` for ``name`` in add, sub, mul, div, where at most the affine cases are allowed:
    a sum or difference of two graph values, or a graph value combined with a constant."""
    if alpha != 1.0:
        if name not in ("add", "sub"):
            raise unsupported(site, "alpha applies to add and sub only")
        right = b.add(Affine(b.constant(alpha), None), [right], site) if isinstance(right, Ref) else right * alpha
    if isinstance(left, Ref) and isinstance(right, Ref):
        if name not in ("add", "sub"):
            raise unsupported(site, "a product or quotient of two input-dependent tensors is not affine")
        if b.shape(left) != b.shape(right):
            raise unsupported(site, f"adding tensors of shapes {b.shape(left)} and {b.shape(right)} (broadcast)")
        return b.add(Sum((1.0, 1.0 if name == "add" else -1.0)), [left, right], site)
    if not isinstance(left, Ref):
        if name == "div":
            raise unsupported(site, "dividing by an input-dependent tensor is not affine")
        if name == "sub":  # c - x
            c = as_constant(left, b.shape(right), b, site)
            return b.add(Affine(b.constant(-1.0), c), [right], site)
        left, right = right, left  # add and mul commute
    c = as_constant(right, b.shape(left), b, site)
    ops = {"add": Affine(None, c), "sub": Affine(None, -c), "mul": Affine(c, None), "div": Affine(1.0 / c, None)}
    return b.add(ops[name], [left], site)


def reshape_like(b: Builder, site: Site, x: Ref) -> Ref:
    """Any reshape (view, flatten, squeeze ...): the target per-example shape is read off the model's value."""
    expected = site.expected
    if not isinstance(expected, torch.Tensor) or expected.dim() == 0 or expected.shape[0] != b.batch:
        raise unsupported(site, "a reshape that does not keep the batch dimension first")
    shape = tuple(expected.shape[1:])
    if shape == b.shape(x):
        return x
    return b.add(Reshape(shape), [x], site)


def permute(b: Builder, site: Site, x: Ref, dims: tuple[int, ...]) -> Ref:
    """``x.permute(*dims)`` (batch dimension included in ``dims``; it must stay first)."""
    rank = len(b.shape(x)) + 1
    dims = tuple(int(d) % rank for d in dims)
    if sorted(dims) != list(range(rank)) or dims[0] != 0:
        raise unsupported(site, "a permutation that moves the batch dimension")
    if dims == tuple(range(rank)):
        return x
    return b.add(Permute(tuple(d - 1 for d in dims[1:])), [x], site)


def transpose(b: Builder, site: Site, x: Ref, d0: int, d1: int) -> Ref:
    rank = len(b.shape(x)) + 1
    dims = list(range(rank))
    dims[d0 % rank], dims[d1 % rank] = dims[d1 % rank], dims[d0 % rank]
    return permute(b, site, x, tuple(dims))


def cat(b: Builder, site: Site, tensors: list[object], dim: int) -> Ref:
    if not tensors or not all(isinstance(t, Ref) for t in tensors):
        raise unsupported(site, "concatenating a constant tensor")
    rank = len(b.shape(tensors[0])) + 1
    if dim % rank == 0:
        raise unsupported(site, "concatenation along the batch dimension")
    return b.add(Cat(dim % rank - 1), tensors, site)


def _pooled_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _check_ceil_mode(site: Site, x_shape: tuple[int, ...], kernel, stride, padding, dilation=(1, 1)) -> None:
    """Raise unless the model's output has the floor-mode size (ceil mode adding a partial window)."""
    floor = tuple(_pooled_size(x_shape[1 + i], kernel[i], stride[i], padding[i], dilation[i]) for i in range(2))
    if tuple(site.expected.shape[-2:]) != floor:
        raise unsupported(site, "ceil_mode pooling with a partial window")


def avg_pool(b: Builder, site: Site, x: Ref, kernel, stride=None, padding=0, ceil_mode: bool = False,
             count_include_pad: bool = True, divisor_override: int | None = None) -> Ref:
    """Average pooling as a depthwise convolution (followed by a per-position scale when the padding is not
    counted)."""
    shape = b.shape(x)
    if len(shape) != 3:
        raise unsupported(site, f"2-D average pooling of a {len(shape) + 1}-D tensor")
    kernel = pair(kernel)
    stride = pair(stride) if stride not in (None, [], ()) else kernel
    padding = pair(padding)
    if ceil_mode:
        _check_ceil_mode(site, shape, kernel, stride, padding)
    channels = shape[0]
    area = kernel[0] * kernel[1]
    divisor = divisor_override or area
    counted = count_include_pad or padding == (0, 0) or divisor_override
    weight = torch.full((channels, 1, *kernel), 1.0 / divisor if counted else 1.0, dtype=b.dtype, device=b.device)
    out = b.add(Conv2d(weight, None, stride, padding, (1, 1), channels), [x], site)
    if counted:
        return out
    ones = torch.ones(1, 1, *shape[1:], dtype=b.dtype, device=b.device)
    cells = F.avg_pool2d(ones, kernel, stride, padding, count_include_pad=True) * area  # in-bounds cells per window
    return b.add(Affine(1.0 / cells[0], None), [out], site)


def adaptive_avg_pool(b: Builder, site: Site, x: Ref, output_size) -> Ref:
    shape = b.shape(x)
    if len(shape) != 3:
        raise unsupported(site, f"2-D adaptive pooling of a {len(shape) + 1}-D tensor")
    out = pair(output_size) if output_size is not None else shape[1:]
    out = tuple(shape[1 + i] if out[i] is None else out[i] for i in range(2))
    if shape[1] % out[0] or shape[2] % out[1]:
        raise unsupported(site, f"adaptive pooling from {shape[1:]} to {out}, sizes that do not divide")
    kernel = (shape[1] // out[0], shape[2] // out[1])
    return avg_pool(b, site, x, kernel, kernel)


def global_mean(b: Builder, site: Site, x: Ref, dims, keepdim: bool = False) -> Ref:
    """``x.mean(dims)`` over the two spatial dimensions of a ``(B, C, H, W)`` tensor."""
    shape = b.shape(x)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shape) != 3 or sorted(d % 4 for d in dims) != [2, 3]:
        raise unsupported(site, "a mean over other dimensions than the spatial ones of (B, C, H, W)")
    pooled = avg_pool(b, site, x, shape[1:], shape[1:])
    return pooled if keepdim else reshape_like(b, site, pooled)


def max_pool(b: Builder, site: Site, x: Ref, kernel, stride=None, padding=0, dilation=1,
             ceil_mode: bool = False, return_indices: bool = False) -> Ref:
    shape = b.shape(x)
    if return_indices or len(shape) != 3:
        raise unsupported(site, "max pooling returning indices or not 2-D")
    kernel = pair(kernel)
    stride = pair(stride) if stride not in (None, [], ()) else kernel
    padding, dilation = pair(padding), pair(dilation)
    if ceil_mode:
        _check_ceil_mode(site, shape, kernel, stride, padding, dilation)
    return b.add(MaxPool2d(kernel, stride, padding, dilation), [x], site)


def linear(b: Builder, site: Site, x: Ref, weight: object, bias: object) -> Ref:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not isinstance(bias, (torch.Tensor, type(None))):
        raise unsupported(site, "a linear layer with input-dependent or non-matrix weights")
    w = b.constant(weight)
    return b.add(Linear(w, None if bias is None else b.constant(bias)), [x], site)


def conv2d(b: Builder, site: Site, x: Ref, weight: object, bias: object, stride=1, padding=0, dilation=1,
           groups: int = 1) -> Ref:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or len(b.shape(x)) != 3:
        raise unsupported(site, "a convolution that is not 2-D with constant weights")
    kernel, dilation = tuple(weight.shape[-2:]), pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        else:  # "same" (stride 1): symmetric only
            total = [dilation[i] * (kernel[i] - 1) for i in range(2)]
            if any(t % 2 for t in total):
                raise unsupported(site, "'same' padding that is not symmetric")
            padding = (total[0] // 2, total[1] // 2)
    op = Conv2d(b.constant(weight), None if bias is None else b.constant(bias), pair(stride), pair(padding), dilation,
                int(groups))
    return b.add(op, [x], site)


def batch_norm(b: Builder, site: Site, x: Ref, mean: object, var: object, weight: object, bias: object,
               eps: float) -> Ref:
    """BatchNorm with running statistics (eval mode) folded into ``x * scale + shift`` per channel."""
    if not isinstance(mean, torch.Tensor) or not isinstance(var, torch.Tensor):
        raise unsupported(site, "BatchNorm without running statistics (track_running_stats=False) uses the batch")
    scale = 1.0 / torch.sqrt(b.constant(var) + eps)
    if weight is not None:
        scale = scale * b.constant(weight)
    shift = -b.constant(mean) * scale
    if bias is not None:
        shift = shift + b.constant(bias)
    view = (-1,) + (1,) * (len(b.shape(x)) - 1)
    return b.add(Affine(scale.reshape(view), shift.reshape(view)), [x], site)
