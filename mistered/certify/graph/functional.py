"""Converters of functions (``F.relu``, ``torch.cat``, ``operator.add`` ...) and tensor methods (``x.relu()``,
``x.view(...)`` ...) onto bound-graph operations. Arguments arrive as in the call: graph values as
:class:`~.builder.Ref`, everything else as constants.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import lowering as low
from .builder import Builder, Ref, Site, unsupported

__all__ = ["FUNCTION_CONVERTERS", "METHOD_CONVERTERS"]

Converter = Callable[..., Ref]


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: object = None) -> object:
    """Argument ``name`` of a call, given at position ``index`` or by keyword."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _tensor(args: tuple, site: Site) -> Ref:
    if not args or not isinstance(args[0], Ref):
        raise unsupported(site, "its first argument is not the input-dependent tensor")
    return args[0]


def _alias(b: Builder, site: Site, *args, **kwargs) -> Ref:
    return _tensor(args, site)


def _relu(b: Builder, site: Site, *args, **kwargs) -> Ref:
    return low.relu(b, site, _tensor(args, site))


def _leaky_relu(b: Builder, site: Site, *args, **kwargs) -> Ref:
    return low.leaky_relu(b, site, _tensor(args, site), _arg(args, kwargs, 1, "negative_slope", 0.01))


def _hardtanh(b: Builder, site: Site, *args, **kwargs) -> Ref:
    low_, high = _arg(args, kwargs, 1, "min_val", -1.0), _arg(args, kwargs, 2, "max_val", 1.0)
    return low.clamp(b, site, _tensor(args, site), low_, high)


def _relu6(b: Builder, site: Site, *args, **kwargs) -> Ref:
    return low.clamp(b, site, _tensor(args, site), 0.0, 6.0)


def _clamp(b: Builder, site: Site, *args, **kwargs) -> Ref:
    return low.clamp(b, site, _tensor(args, site), _arg(args, kwargs, 1, "min"), _arg(args, kwargs, 2, "max"))


def _dropout(b: Builder, site: Site, *args, **kwargs) -> Ref:
    if _arg(args, kwargs, 2, "training", True):
        raise unsupported(site, "dropout with training=True is random")
    return _tensor(args, site)


def _arithmetic(name: str) -> Converter:
    def convert(b: Builder, site: Site, *args, **kwargs) -> Ref:
        if len(args) != 2:
            raise unsupported(site, "arithmetic with other than two operands")
        return low.arithmetic(b, site, name, args[0], args[1], float(kwargs.get("alpha", 1.0)))

    return convert


def _neg(b: Builder, site: Site, *args, **kwargs) -> Ref:
    return low.arithmetic(b, site, "mul", _tensor(args, site), -1.0)


def _cat(b: Builder, site: Site, *args, **kwargs) -> Ref:
    return low.cat(b, site, list(_arg(args, kwargs, 0, "tensors")), int(_arg(args, kwargs, 1, "dim", 0)))


def _reshape(b: Builder, site: Site, *args, **kwargs) -> Ref:
    return low.reshape_like(b, site, _tensor(args, site))


def _permute(b: Builder, site: Site, *args, **kwargs) -> Ref:
    dims = args[1:] if len(args) > 2 else _arg(args, kwargs, 1, "dims")
    return low.permute(b, site, _tensor(args, site), tuple(dims))


def _transpose(b: Builder, site: Site, *args, **kwargs) -> Ref:
    return low.transpose(b, site, _tensor(args, site), int(_arg(args, kwargs, 1, "dim0")),
                         int(_arg(args, kwargs, 2, "dim1")))


def _mean(b: Builder, site: Site, *args, **kwargs) -> Ref:
    dims = _arg(args, kwargs, 1, "dim")
    if dims is None:
        raise unsupported(site, "a mean over all dimensions (the batch included)")
    return low.global_mean(b, site, _tensor(args, site), dims, bool(_arg(args, kwargs, 2, "keepdim", False)))


def _avg_pool(b: Builder, site: Site, *args, **kwargs) -> Ref:
    names = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
    defaults = (None, None, 0, False, True, None)
    values = [_arg(args, kwargs, i + 1, n, d) for i, (n, d) in enumerate(zip(names, defaults))]
    return low.avg_pool(b, site, _tensor(args, site), *values)


def _adaptive_avg_pool(b: Builder, site: Site, *args, **kwargs) -> Ref:
    return low.adaptive_avg_pool(b, site, _tensor(args, site), _arg(args, kwargs, 1, "output_size"))


def _max_pool(b: Builder, site: Site, *args, **kwargs) -> Ref:
    names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    defaults = (None, None, 0, 1, False, False)
    values = [_arg(args, kwargs, i + 1, n, d) for i, (n, d) in enumerate(zip(names, defaults))]
    return low.max_pool(b, site, _tensor(args, site), *values)


def _linear(b: Builder, site: Site, *args, **kwargs) -> Ref:
    return low.linear(b, site, _tensor(args, site), _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias"))


def _matmul(b: Builder, site: Site, *args, **kwargs) -> Ref:
    """``x @ W`` with a constant matrix ``W`` ``(in, out)``: a linear layer with weight ``W.T``."""
    weight = _arg(args, kwargs, 1, "other")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise unsupported(site, "a matrix product with other than a constant matrix on the right")
    return low.linear(b, site, _tensor(args, site), weight.T, None)


def _conv2d(b: Builder, site: Site, *args, **kwargs) -> Ref:
    names = ("weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = (None, None, 1, 0, 1, 1)
    values = [_arg(args, kwargs, i + 1, n, d) for i, (n, d) in enumerate(zip(names, defaults))]
    return low.conv2d(b, site, _tensor(args, site), *values)


def _batch_norm(b: Builder, site: Site, *args, **kwargs) -> Ref:
    names = ("running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
    defaults = (None, None, None, None, False, 0.1, 1e-5)
    mean, var, weight, bias, training, _, eps = [_arg(args, kwargs, i + 1, n, d) for i, (n, d) in
                                                 enumerate(zip(names, defaults))]
    if training:
        raise unsupported(site, "batch_norm with training=True uses the batch's statistics")
    return low.batch_norm(b, site, _tensor(args, site), mean, var, weight, bias, float(eps))


#: Function -> converter.
FUNCTION_CONVERTERS: dict[Callable, Converter] = {
    F.relu: _relu, torch.relu: _relu, F.leaky_relu: _leaky_relu, F.hardtanh: _hardtanh, F.relu6: _relu6,
    torch.clamp: _clamp, torch.clip: _clamp, F.dropout: _dropout,
    operator.add: _arithmetic("add"), torch.add: _arithmetic("add"), operator.sub: _arithmetic("sub"),
    torch.sub: _arithmetic("sub"), operator.mul: _arithmetic("mul"), torch.mul: _arithmetic("mul"),
    operator.truediv: _arithmetic("div"), torch.div: _arithmetic("div"), operator.neg: _neg, torch.neg: _neg,
    operator.iadd: _arithmetic("add"), operator.isub: _arithmetic("sub"), operator.imul: _arithmetic("mul"),
    operator.itruediv: _arithmetic("div"),
    torch.cat: _cat, torch.concat: _cat, torch.flatten: _reshape, torch.reshape: _reshape, torch.squeeze: _reshape,
    torch.unsqueeze: _reshape, torch.permute: _permute, torch.transpose: _transpose, torch.mean: _mean,
    F.avg_pool2d: _avg_pool, F.adaptive_avg_pool2d: _adaptive_avg_pool, F.max_pool2d: _max_pool, F.linear: _linear,
    operator.matmul: _matmul, torch.matmul: _matmul, F.conv2d: _conv2d, F.batch_norm: _batch_norm,
}

#: Tensor method name -> converter (``args[0]`` is the tensor itself).
METHOD_CONVERTERS: dict[str, Converter] = {
    "relu": _relu, "relu_": _relu, "clamp": _clamp, "clip": _clamp, "clamp_": _clamp, "add": _arithmetic("add"),
    "sub": _arithmetic("sub"), "mul": _arithmetic("mul"), "div": _arithmetic("div"), "neg": _neg,
    "add_": _arithmetic("add"), "sub_": _arithmetic("sub"), "mul_": _arithmetic("mul"), "div_": _arithmetic("div"),
    "view": _reshape, "reshape": _reshape, "flatten": _reshape, "squeeze": _reshape, "unsqueeze": _reshape,
    "permute": _permute, "transpose": _transpose, "contiguous": _alias, "clone": _alias, "mean": _mean,
}
