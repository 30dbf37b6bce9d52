"""The bound graph: any ``nn.Module`` traced (torch.fx) into a small DAG of typed operations that the bound
engine (:mod:`mistered.certify.bounds`) understands.

Supported: Linear, Conv2d (stride, padding, dilation, groups), ConvTranspose2d, BatchNorm1d/2d (eval, folded),
ReLU / LeakyReLU / Hardtanh / ReLU6 / clamp (modules, ``F.*``, ``torch.*`` and tensor methods), residual addition
and subtraction of tensors, arithmetic with constants (normalisation, including ``mistered.models.Normalized``),
``torch.cat``, flatten / view / reshape / squeeze / unsqueeze / permute / transpose, AvgPool2d /
AdaptiveAvgPool2d / spatial means, MaxPool2d, Identity, Dropout (eval), mistered's L∞-dist layers (at ``p = inf``),
and the onnx2torch modules of the same operations (Gemm, MatMul, Add/Sub/Mul/Div, Flatten, Reshape, Transpose,
Concat, Clip, GlobalAveragePool). Anything else raises :class:`~mistered.errors.UnsupportedLayerError` naming the
operation and the source line that made it.

Example:
    >>> graph = trace_graph(model, (3, 32, 32))
    >>> graph.forward(x)        # (B, K): model(x) in eval mode
"""

from .graph import BoundGraph, Node
from .ops import (
    NONLINEAR, Affine, Cat, Conv2d, ConvTranspose2d, Input, Linear, LinfDist, MaxPool2d, Op, Permute,
    PiecewiseLinear, Reshape, Sum, Unfold,
)
from .trace import trace_graph

__all__ = [
    "BoundGraph", "Node", "trace_graph", "Op", "Input", "Linear", "Conv2d", "ConvTranspose2d", "Affine", "Sum",
    "Cat", "Reshape", "Permute", "Unfold", "PiecewiseLinear", "MaxPool2d", "LinfDist", "NONLINEAR",
]
