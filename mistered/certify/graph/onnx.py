"""Converters of the modules onnx2torch makes from an ONNX graph (its own ``Onnx*`` classes; the standard layers
it emits, ``nn.Conv2d``, ``nn.Linear``, ``nn.ReLU`` ..., go through :mod:`.layers`).

Looked up by class name, so onnx2torch is never imported here. Constant operands (``OnnxConstant`` outputs,
weights of ``Gemm`` and ``MatMul``, shapes of ``Reshape``) arrive as constants, folded by the tracer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from . import lowering as low
from .builder import Builder, Ref, Site, unsupported

__all__ = ["ONNX_CONVERTERS", "onnx_converter", "is_onnx2torch"]

Converter = Callable[..., Ref]


def _first(args: tuple, site: Site) -> Ref:
    if not args or not isinstance(args[0], Ref):
        raise unsupported(site, "its first input is not the input-dependent tensor")
    return args[0]


def _binary(b: Builder, site: Site, m: nn.Module, *args) -> Ref:
    if getattr(m, "broadcast", None) == 1 and getattr(m, "axis", None) is not None:
        raise unsupported(site, "ONNX's legacy axis broadcast")
    name = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "_onnx_div": "div"}.get(m.math_op_function.__name__)
    if name is None or len(args) != 2:
        raise unsupported(site, f"ONNX binary operation {m.math_op_function.__name__}")
    return low.arithmetic(b, site, name, args[0], args[1])


def _gemm(b: Builder, site: Site, m: nn.Module, *args) -> Ref:
    """``alpha * x @ B + beta * C`` with constant ``B`` and ``C``: a linear layer."""
    x = _first(args, site)
    weight = args[1] if len(args) > 1 else None
    bias = args[2] if len(args) > 2 else None
    if m.trans_a or not isinstance(weight, torch.Tensor) or isinstance(bias, Ref):
        raise unsupported(site, "Gemm with a transposed input or input-dependent weights")
    weight = (weight if m.trans_b else weight.T) * m.alpha
    return low.linear(b, site, x, weight, None if bias is None else bias * m.beta)


def _matmul(b: Builder, site: Site, m: nn.Module, *args) -> Ref:
    x = _first(args, site)
    if len(args) != 2 or not isinstance(args[1], torch.Tensor) or args[1].dim() != 2:
        raise unsupported(site, "MatMul with other than a constant matrix on the right")
    return low.linear(b, site, x, args[1].T, None)


def _reshape(b: Builder, site: Site, m: nn.Module, *args) -> Ref:
    return low.reshape_like(b, site, _first(args, site))


def _transpose(b: Builder, site: Site, m: nn.Module, *args) -> Ref:
    x = _first(args, site)
    perm = m.perm if m.perm is not None else list(range(len(b.shape(x)) + 1))[::-1]
    return low.permute(b, site, x, tuple(perm))


def _concat(b: Builder, site: Site, m: nn.Module, *args) -> Ref:
    return low.cat(b, site, list(args), int(m.axis))


def _clip(b: Builder, site: Site, m: nn.Module, *args) -> Ref:
    bound = lambda v: None if v is None else float(v)  # noqa: E731
    return low.clamp(b, site, _first(args, site), bound(m.min_val), bound(m.max_val))


def _global_average_pool(b: Builder, site: Site, m: nn.Module, *args) -> Ref:
    return low.global_mean(b, site, _first(args, site), (2, 3), keepdim=True)


def _identity(b: Builder, site: Site, m: nn.Module, *args) -> Ref:
    return _first(args, site)


#: onnx2torch class name -> converter.
ONNX_CONVERTERS: dict[str, Converter] = {
    "OnnxBinaryMathOperation": _binary,
    "OnnxGemm": _gemm,
    "OnnxMatMul": _matmul,
    "OnnxReshape": _reshape,
    "OnnxFlatten": _reshape,
    "OnnxSqueezeStaticAxes": _reshape,
    "OnnxUnsqueezeStaticAxes": _reshape,
    "OnnxTranspose": _transpose,
    "OnnxConcat": _concat,
    "OnnxClip": _clip,
    "OnnxGlobalAveragePool": _global_average_pool,
    "OnnxGlobalAveragePoolWithKnownInputShape": _global_average_pool,
    "OnnxCopyIdentity": _identity,
}


def is_onnx2torch(module: nn.Module) -> bool:
    """Whether ``module`` is one of onnx2torch's own classes."""
    return type(module).__module__.startswith("onnx2torch.")


def onnx_converter(module: nn.Module) -> Converter | None:
    """The converter of an onnx2torch module, or ``None`` (also for modules that are not onnx2torch's)."""
    return ONNX_CONVERTERS.get(type(module).__name__) if is_onnx2torch(module) else None
