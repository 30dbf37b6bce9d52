"""Converters of ``nn.Module`` layers (torch.nn and mistered's L∞-dist layers) onto bound-graph operations.

Each converter takes the builder, the conversion site, the module and the call's arguments (graph values as
:class:`~.builder.Ref`, everything else as constants) and returns the reference to the layer's output. The
layers listed in :data:`MODULE_CONVERTERS` are traced as leaves; other modules are traced through.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ...models.linf_dist.layers import LinfDistConv2d, LinfDistLinear, MeanShift
from . import lowering as low
from .builder import Builder, Ref, Site, unsupported
from .ops import Affine, ConvTranspose2d, LinfDist, Permute, Reshape, Unfold

__all__ = ["MODULE_CONVERTERS", "module_converter"]

Converter = Callable[..., Ref]


def _single(args: tuple, site: Site) -> Ref:
    if len(args) != 1 or not isinstance(args[0], Ref):
        raise unsupported(site, "a layer called with other arguments than one input tensor")
    return args[0]


def _alias(b: Builder, site: Site, m: nn.Module, *args, **kwargs) -> Ref:
    return _single(args, site)


def _linear(b: Builder, site: Site, m: nn.Linear, *args) -> Ref:
    return low.linear(b, site, _single(args, site), m.weight, m.bias)


def _conv2d(b: Builder, site: Site, m: nn.Conv2d, *args) -> Ref:
    if m.padding_mode != "zeros":
        raise unsupported(site, f"padding_mode={m.padding_mode!r} (only zero padding)")
    return low.conv2d(b, site, _single(args, site), m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)


def _conv_transpose2d(b: Builder, site: Site, m: nn.ConvTranspose2d, *args, **kwargs) -> Ref:
    if kwargs.get("output_size") is not None or len(args) > 1:
        raise unsupported(site, "ConvTranspose2d called with output_size")
    op = ConvTranspose2d(b.constant(m.weight), None if m.bias is None else b.constant(m.bias), low.pair(m.stride),
                         low.pair(m.padding), low.pair(m.output_padding), low.pair(m.dilation), m.groups)
    return b.add(op, [_single(args[:1], site)], site)


def _batch_norm(b: Builder, site: Site, m: nn.modules.batchnorm._BatchNorm, *args) -> Ref:
    return low.batch_norm(b, site, _single(args, site), m.running_mean, m.running_var, m.weight, m.bias, m.eps)


def _relu(b: Builder, site: Site, m: nn.Module, *args) -> Ref:
    return low.relu(b, site, _single(args, site))


def _leaky_relu(b: Builder, site: Site, m: nn.LeakyReLU, *args) -> Ref:
    return low.leaky_relu(b, site, _single(args, site), m.negative_slope)


def _hardtanh(b: Builder, site: Site, m: nn.Hardtanh, *args) -> Ref:
    return low.clamp(b, site, _single(args, site), float(m.min_val), float(m.max_val))


def _flatten(b: Builder, site: Site, m: nn.Module, *args) -> Ref:
    return low.reshape_like(b, site, _single(args, site))


def _avg_pool(b: Builder, site: Site, m: nn.AvgPool2d, *args) -> Ref:
    return low.avg_pool(b, site, _single(args, site), m.kernel_size, m.stride, m.padding, m.ceil_mode,
                        m.count_include_pad, m.divisor_override)


def _adaptive_avg_pool(b: Builder, site: Site, m: nn.AdaptiveAvgPool2d, *args) -> Ref:
    return low.adaptive_avg_pool(b, site, _single(args, site), m.output_size)


def _max_pool(b: Builder, site: Site, m: nn.MaxPool2d, *args) -> Ref:
    return low.max_pool(b, site, _single(args, site), m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                        m.return_indices)


def _check_linf_dist(site: Site, m: LinfDistLinear) -> None:
    if not math.isinf(m.p):
        raise unsupported(site, f"an L∞-dist layer with p = {m.p:g}; bounds hold at p = inf (set_p(model, math.inf))")


def _linf_dist_shift(b: Builder, m: LinfDistLinear, channels_shape: tuple[int, ...]) -> torch.Tensor | None:
    """The constant added after the distances (``- running_mean + bias``), shaped to broadcast, or ``None``."""
    shift = None
    if m.mean_shift is not None:
        shift = -b.constant(m.mean_shift.running_mean)
    if m.bias is not None:
        shift = b.constant(m.bias) if shift is None else shift + b.constant(m.bias)
    return None if shift is None else shift.reshape(channels_shape)


def _linf_dist_linear(b: Builder, site: Site, m: LinfDistLinear, *args) -> Ref:
    _check_linf_dist(site, m)
    x = _single(args, site)
    out = b.add(LinfDist(b.constant(m.weight)), [x], site)
    shift = _linf_dist_shift(b, m, (-1,))
    return out if shift is None else b.add(Affine(None, shift), [out], site)


def _linf_dist_conv2d(b: Builder, site: Site, m: LinfDistConv2d, *args) -> Ref:
    """Patches (:class:`~.ops.Unfold`), distances over each patch, back to ``(C_out, H', W')``."""
    _check_linf_dist(site, m)
    x = _single(args, site)
    out_shape = tuple(site.expected.shape[1:])
    patches = b.add(Unfold(low.pair(m.kernel_size), low.pair(m.stride), low.pair(m.padding)), [x], site)
    rows = b.add(Permute((1, 0)), [patches], site)  # (L, C k k)
    dist = b.add(LinfDist(b.constant(m.weight)), [rows], site)  # (L, C_out)
    out = b.add(Reshape(out_shape), [b.add(Permute((1, 0)), [dist], site)], site)
    shift = _linf_dist_shift(b, m, (-1, 1, 1))
    return out if shift is None else b.add(Affine(None, shift), [out], site)


def _mean_shift(b: Builder, site: Site, m: MeanShift, *args) -> Ref:
    x = _single(args, site)
    shape = (-1,) + (1,) * (len(b.shape(x)) - 1)
    return b.add(Affine(None, -b.constant(m.running_mean).reshape(shape)), [x], site)


#: Layer type -> converter (exact types; subclasses are looked up along their MRO by :func:`module_converter`).
MODULE_CONVERTERS: dict[type, Converter] = {
    nn.Linear: _linear,
    nn.Conv2d: _conv2d,
    nn.ConvTranspose2d: _conv_transpose2d,
    nn.BatchNorm1d: _batch_norm,
    nn.BatchNorm2d: _batch_norm,
    nn.ReLU: _relu,
    nn.LeakyReLU: _leaky_relu,
    nn.Hardtanh: _hardtanh,  # nn.ReLU6 is a Hardtanh subclass
    nn.Flatten: _flatten,
    nn.Unflatten: _flatten,
    nn.AvgPool2d: _avg_pool,
    nn.AdaptiveAvgPool2d: _adaptive_avg_pool,
    nn.MaxPool2d: _max_pool,
    nn.Identity: _alias,
    nn.Dropout: _alias,
    nn.Dropout1d: _alias,
    nn.Dropout2d: _alias,
    nn.AlphaDropout: _alias,
    LinfDistConv2d: _linf_dist_conv2d,
    LinfDistLinear: _linf_dist_linear,
    MeanShift: _mean_shift,
}


def module_converter(module: nn.Module) -> Converter | None:
    """The converter of ``module``'s type, or of its nearest registered base class when the subclass keeps that
    class's ``forward`` (a subclass with its own ``forward`` is traced through instead); ``None`` if neither."""
    for cls in type(module).__mro__:
        if cls in MODULE_CONVERTERS:
            return MODULE_CONVERTERS[cls] if type(module).forward is cls.forward else None
    return None
