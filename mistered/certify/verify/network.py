"""The network a property is verified on: the loaded model, its input shape, its bound graph and its ONNX file.

VNNLIB numbers the inputs ``X_i`` in the C order of the model's input tensor without its batch dimension; an ONNX
model's input shape is read from the file (``[1, 784, 1]`` -> ``(784, 1)``), any other model needs it given.
The bound graph (:func:`~mistered.certify.graph.trace_graph`) serves the bounds and the batched attack; a model
the tracer cannot handle is still attacked (through its own forward) but never proved.

Example:
    >>> net = prepare_network(load_model("mnist-net_256x2.onnx"))
    >>> net.input_shape, net.num_outputs, net.onnx_path
    ((784, 1), 10, 'mnist-net_256x2.onnx')
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...errors import InvalidInputError, MisteredError
from ..graph.graph import BoundGraph
from ..graph.trace import trace_graph

__all__ = ["Network", "prepare_network", "onnx_input_shape", "OnnxRunner", "AGREEMENT_TOLERANCE"]

#: The converted model and onnxruntime must agree on random inputs within this, relative to the outputs' size.
AGREEMENT_TOLERANCE = 1e-3

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Network:
    """A model ready for verification.

    Attributes:
        module: the model (eval mode), taking ``(B, *input_shape)``.
        input_shape: per-example input shape; ``num_inputs`` is its product.
        num_outputs: the length of the model's (flat) output.
        graph: its bound graph (float32, the model's device), or ``None`` where tracing failed.
        graph_error: why there is no graph (the tracer's one-line message), else ``None``.
        onnx_path: the ONNX file the model was loaded from (for the onnxruntime re-check), else ``None``; the
            converted model was checked to agree with onnxruntime on random inputs.
    """

    module: nn.Module
    input_shape: tuple[int, ...]
    num_outputs: int
    graph: BoundGraph | None
    graph_error: str | None
    onnx_path: str | None

    @property
    def num_inputs(self) -> int:
        return math.prod(self.input_shape)

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")


def onnx_input_shape(path: str) -> tuple[int, ...]:
    """The per-example input shape of the ONNX model at ``path`` (its input's dimensions after the batch one).

    Raises:
        InvalidInputError: the input has no fixed size after the batch dimension.
    """
    import onnx

    model = onnx.load(path, load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    [value] = [v for v in model.graph.input if v.name not in initializers]  # the loader checked there is one
    dims = value.type.tensor_type.shape.dim[1:]
    if not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
        raise InvalidInputError(f"{path}: the input's dimensions after the batch one must be fixed numbers, got "
                                f"{[d.dim_value or d.dim_param for d in dims]}")
    return tuple(int(d.dim_value) for d in dims)


class OnnxRunner:
    """onnxruntime on an ONNX file (one thread, CPU): ``(B, n)`` inputs to ``(B, m)`` float64 outputs, one example
    per call (VNN-COMP models often fix the batch to 1)."""

    def __init__(self, path: str, input_shape: tuple[int, ...]) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.input_shape = input_shape
        self.dtype = np.float64 if self.input.type == "tensor(double)" else np.float32

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for row in x.detach().to("cpu", torch.float64).numpy():
            feed = row.astype(self.dtype).reshape(1, *self.input_shape)
            outputs.append(np.asarray(self.session.run(None, {self.input.name: feed})[0], dtype=np.float64).reshape(-1))
        return torch.from_numpy(np.stack(outputs))


def _check_conversion(module: nn.Module, path: str, shape: tuple[int, ...], device: torch.device) -> None:
    """Raise unless the converted model agrees with onnxruntime on three random inputs in ``[0, 1]``."""
    x = torch.rand(3, math.prod(shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    with torch.no_grad():
        ours = module(x.to(device, dtype).reshape(3, *shape)).reshape(3, -1).to("cpu", torch.float64)
    theirs = OnnxRunner(path, shape)(x)
    gap = float((ours - theirs).abs().max()) if ours.shape == theirs.shape else math.inf
    if not gap <= AGREEMENT_TOLERANCE * (1 + float(theirs.abs().max())):
        raise InvalidInputError(f"{path}: the converted model disagrees with onnxruntime (largest output difference "
                                f"{gap:.3g}); it cannot be verified soundly")


def _traced(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[BoundGraph | None, str | None]:
    try:
        return trace_graph(module, input_shape), None
    except MisteredError as error:
        logger.warning("no bounds for this model (it will only be attacked): %s", error)
        return None, str(error)


def prepare_network(module: nn.Module, input_shape: tuple[int, ...] | None = None) -> Network:
    """The :class:`Network` of a loaded model (:func:`mistered.models.load_model`).

    Args:
        module: the model; an ONNX model (``module.mistered_source.kind == "onnx"``) brings its input shape.
        input_shape: the per-example input shape; required for models other than ONNX, and must agree with an
            ONNX model's own.

    Raises:
        InvalidInputError: no input shape, a shape that disagrees with the ONNX file's, or a model that fails on
            that shape or returns no ``(B, m)`` output.
    """
    source = getattr(module, "mistered_source", None)
    onnx_path = source.path if source is not None and source.kind == "onnx" else None
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    if onnx_path is not None:
        own = onnx_input_shape(onnx_path)
        if shape is not None and math.prod(shape) != math.prod(own):
            raise InvalidInputError(f"input shape {shape} does not match the ONNX model's {own}")
        shape = own
    if shape is None:
        raise InvalidInputError("the model's input shape is unknown: give it (e.g. --input-shape 1,28,28), or use "
                                "an ONNX model")
    module = module.eval()
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *shape, device=device))
    except Exception as error:  # noqa: BLE001 - any failure of the user's model on this shape is one line
        raise InvalidInputError(f"the model fails on inputs of shape (1, {', '.join(map(str, shape))}): "
                                f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"
                                ) from None
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != 1:
        raise InvalidInputError("the model must return one tensor of outputs (B, m)")
    if onnx_path is not None:
        _check_conversion(module, onnx_path, shape, device)
    graph, graph_error = _traced(module, shape)
    return Network(module, shape, out[0].numel(), graph, graph_error, onnx_path)
