"""Tracing an ``nn.Module`` into a :class:`~.graph.BoundGraph`.

The model is traced symbolically with ``torch.fx`` (layers with a converter, and onnx2torch's modules, stay
leaves; everything else is traced through, so custom ``forward`` code, ``F.relu``, ``x.view(...)`` and residual
additions are seen). torch.fx rather than torch.export: its graph keeps the model's own layers and functions
(``nn.Conv2d``, ``F.relu``) instead of ATen operators, which is what the converters and the error messages name,
and an onnx2torch model (itself an fx ``GraphModule``) traces the same way.

The traced model is then run on a random example input (two examples, so that an operation mixing examples
shows), recording every value: values that do not depend on the input are constants (weights, shapes,
normalisation buffers), and every input-dependent operation is converted (:mod:`.layers`, :mod:`.functional`,
:mod:`.onnx`) and checked against the model's value on the example. An operation without a converter, or whose
conversion disagrees with the model, raises :class:`~mistered.errors.UnsupportedLayerError` naming the operation
and the source line that made it. The graph is the model's function in eval mode (BatchNorm with running
statistics, Dropout off); the model's own mode is restored afterwards.
"""

from __future__ import annotations

import os
import re
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ...errors import InvalidInputError, UnsupportedLayerError
from ...models.batching import ChunkedModule
from .builder import Builder, Ref, Site, unsupported
from .functional import FUNCTION_CONVERTERS, METHOD_CONVERTERS
from .graph import BoundGraph
from .layers import module_converter
from .onnx import is_onnx2torch, onnx_converter
from .simplify import simplify

__all__ = ["trace_graph"]

_TORCH_DIR = os.path.dirname(torch.__file__)
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')


class _Tracer(fx.Tracer):
    """Keeps convertible layers and onnx2torch modules as leaves and records the source of every node."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return module_converter(m) is not None or is_onnx2torch(m) or super().is_leaf_module(m, qualified_name)


class _Recorder(fx.Interpreter):
    """Runs the traced module, keeping every node's value."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        self.values[n] = value.clone() if isinstance(value, torch.Tensor) else value  # (in-place ops follow)
        return value


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in zip(model.modules(), modes):
            m.train(mode)


def _own_frame(frames: list[tuple[str, str, str, str]]) -> str:
    """The innermost of ``(path, line, function, code)`` frames in the model's own code (not torch's, not this
    package's), as ``"file:line in function: code"``, or ``""``."""
    own = [f for f in frames if not f[0].startswith(_TORCH_DIR) and os.sep + "certify" + os.sep + "graph" not in f[0]]
    if not own:
        return ""
    path, line, function, code = own[-1]
    return f"{os.path.basename(path)}:{line} in {function}: {code.strip()}"


def _source(node: fx.Node) -> str:
    """Where the model's code made ``node`` (from the stack trace fx recorded)."""
    return _own_frame(_FRAME.findall(node.meta.get("stack_trace") or ""))


def _function_name(target: Any) -> str:
    module = (getattr(target, "__module__", None) or "torch").replace("_operator", "operator")
    module = "F" if module == "torch.nn.functional" else module.split(".")[0]
    return f"{module}.{getattr(target, '__name__', repr(target))}"


def _describe(node: fx.Node, root: nn.Module) -> tuple[str, Any]:
    """A readable name of ``node``'s operation and its converter (``None`` if there is none)."""
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        converter = module_converter(module) or onnx_converter(module)
        kind = type(module).__name__
        kind = f"nn.{kind}" if type(module).__module__.startswith("torch.nn") else kind
        path = node.target.removeprefix("model").removeprefix(".") or "the model itself"
        what = f"{kind} (module '{path}')"
        return what, None if converter is None else (lambda b, site, *a, **k: converter(b, site, module, *a, **k))
    if node.op == "call_function":
        return _function_name(node.target), FUNCTION_CONVERTERS.get(node.target)
    if node.op == "call_method":
        return f"Tensor.{node.target}", METHOD_CONVERTERS.get(node.target)
    return f"{node.op} {node.target}", None


def _agrees(ours: torch.Tensor, theirs: Any) -> bool:
    if not isinstance(theirs, torch.Tensor) or ours.shape != theirs.shape:
        return False
    scale = 1.0 + float(theirs.abs().max()) if theirs.numel() else 1.0
    return bool(((ours - theirs).abs() <= 1e-4 * scale).all())


def _convert(gm: fx.GraphModule, values: dict[fx.Node, Any], b: Builder) -> Ref:
    """Convert every input-dependent node of ``gm``; returns the reference to the output."""
    refs: dict[fx.Node, Ref] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":  # the one input of _Root
            refs[node] = b.input
            continue
        if node.op == "output":
            result = node.args[0]
            if not isinstance(result, fx.Node) or result not in refs:
                raise UnsupportedLayerError("bounds need a model that returns one input-dependent tensor")
            return refs[result]
        value = values[node]
        if not isinstance(value, torch.Tensor) or not any(i in refs for i in node.all_input_nodes):
            continue  # a constant: weights, buffers, shapes
        what, converter = _describe(node, gm)
        site = Site(what, _source(node), value)
        if converter is None:
            raise unsupported(site)
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: refs[n] if n in refs else values[n])
        ref = converter(b, site, *args, **kwargs)
        if not _agrees(b.value(ref), value):
            raise unsupported(site, "its conversion does not reproduce the model's value")
        refs[node] = ref
    raise UnsupportedLayerError("the traced model has no output")  # pragma: no cover - fx graphs always have one


class _Root(nn.Module):
    """Holds the model as a submodule, so that a model that is itself a layer (an ``nn.Conv2d``) stays a leaf."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)


def _trace(model: nn.Module) -> fx.GraphModule:
    tracer = _Tracer()
    try:
        graph = tracer.trace(_Root(model))
    except UnsupportedLayerError:
        raise
    except Exception as error:  # fx raises TraceError, TypeError, RuntimeError ... on untraceable code
        message = " ".join(str(error).split())[:300]
        frames = [(f.filename, str(f.lineno), f.name, f.line or "") for f in traceback.extract_tb(error.__traceback__)]
        where = _own_frame(frames)
        raise UnsupportedLayerError(
            f"cannot trace {type(model).__name__} with torch.fx{' at ' + where if where else ''} "
            f"({type(error).__name__}: {message}); bounds need a forward without data-dependent control flow"
        ) from None
    return fx.GraphModule(tracer.root, graph)


def trace_graph(model: nn.Module, input_shape: Sequence[int], seed: int = 0,
                dtype: torch.dtype | None = None) -> BoundGraph:
    """The bound graph of ``model``'s eval-mode function on inputs of per-example shape ``input_shape``.

    Args:
        model: any ``nn.Module`` with one tensor input and one tensor output, built from supported operations
            (see :mod:`mistered.certify.graph`), including onnx2torch models (a fixed-batch one as the loader wraps
            it, :class:`~mistered.models.batching.ChunkedModule`: its inner graph is traced).
        input_shape: e.g. ``(1, 28, 28)``.
        seed: of the random example input the conversion is checked on.
        dtype: of the example input and the graph's constants (default: the model's floating-point parameters',
            else torch's default dtype).

    Returns:
        A :class:`BoundGraph` on the model's device and dtype, with elementwise affine maps folded.

    Raises:
        UnsupportedLayerError: an operation without a bound rule (named, with its source line), a model torch.fx
            cannot trace, or a conversion that does not reproduce the model's output.
        InvalidInputError: an invalid ``input_shape``.
    """
    if not input_shape or any(int(s) < 1 for s in input_shape):
        raise InvalidInputError(f"input_shape must be positive sizes such as (1, 28, 28), got {tuple(input_shape)}")
    # a fixed-batch export (ONNX, torch.export) runs in chunks; the graph it wraps is the same function, traceable
    model = model.wrapped_module if isinstance(model, ChunkedModule) else model
    first = next(iter(list(model.parameters()) + list(model.buffers())), None)
    if dtype is None:
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.get_default_dtype()
    device = first.device if first is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    example = torch.rand(2, *(int(s) for s in input_shape), generator=generator, dtype=dtype).to(device)
    with _eval_mode(model), torch.no_grad():
        gm = _trace(model)
        recorder = _Recorder(gm)
        expected = recorder.run(example)
        builder = Builder(example)
        output = _convert(gm, recorder.values, builder)
        graph = simplify(BoundGraph(builder.nodes, output.name))
        if not _agrees(graph.forward(example), expected):
            raise UnsupportedLayerError("the simplified bound graph does not reproduce the model's output")
    return graph
