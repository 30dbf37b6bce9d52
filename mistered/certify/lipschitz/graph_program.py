"""A model traced by ``torch.fx`` and run piece by piece on its live parameters, for the Lipschitz bound on any graph.

The bound graph (:mod:`mistered.certify.graph`) holds detached copies of the weights, which is right for bounds but
not for LMT training, whose bound must be differentiable with respect to the model's parameters. This module traces
the model with the same leaves as the bound graph (layers with a converter stay leaves; everything else is traced
through) and keeps the ``torch.fx`` graph, so that any run of consecutive nodes can be evaluated on the model's own
(live) layers: the Lipschitz bound's linear maps are such runs. Every run uses eval-mode semantics whatever the
model's mode (BatchNorm with its running statistics, Dropout the identity) and a batch of two, the batch size the
model was recorded with (so that sizes read in ``forward``, such as ``x.size(0)``, stay valid).

Example:
    >>> program = TracedProgram(model, (1, 28, 28))
    >>> env = program.constants()                  # weights and other input-free values, live
    >>> program.run(["conv1", "bn1"], {"x": batch_of_two}, env)
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ...models.batching import ChunkedModule
from ..graph.layers import module_converter
from ..graph.onnx import is_onnx2torch

__all__ = ["TracedProgram", "BATCH"]

#: The batch size every run uses (that of the recorded example).
BATCH = 2

_IN_PLACE = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
             operator.itruediv: operator.truediv}
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


class _LeafTracer(fx.Tracer):
    """The bound graph's leaves: layers with a converter and onnx2torch modules."""

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return module_converter(m) is not None or is_onnx2torch(m) or super().is_leaf_module(m, qualified_name)


class _Recorder(fx.Interpreter):
    """Runs the traced module, keeping every node's value by name."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        self.values[n.name] = value.clone() if isinstance(value, torch.Tensor) else value
        return value


def _attribute(root: nn.Module, target: str) -> Any:
    value: Any = root
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _execute(gm: fx.GraphModule, node: fx.Node, env: dict[str, Any]) -> Any:
    """``node``'s value from the values of its inputs in ``env`` (by name), with eval-mode layers and no in-place
    operation (the inputs may be leaves that require gradients)."""
    args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: env[n.name])
    if node.op == "get_attr":
        return _attribute(gm, node.target)
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return F.batch_norm(args[0], module.running_mean, module.running_var, module.weight, module.bias,
                                False, 0.0, module.eps)
        if isinstance(module, _DROPOUT):
            return args[0]
        return module(*args, **kwargs)
    if node.op == "call_function":
        return _IN_PLACE.get(node.target, node.target)(*args, **kwargs)
    if node.op == "call_method":
        name = node.target[:-1] if node.target.endswith("_") and not node.target.endswith("__") else node.target
        return getattr(args[0], name)(*args[1:], **kwargs)
    raise ValueError(f"cannot execute fx node {node.name} ({node.op})")  # pragma: no cover - placeholders, outputs


class TracedProgram:
    """``model`` traced by ``torch.fx`` (bound-graph leaves), its values recorded on a random batch of two.

    Args:
        model: any ``nn.Module`` that :func:`~mistered.certify.graph.trace_graph` accepts.
        input_shape: per-example input shape, e.g. ``(1, 28, 28)``.
        seed: of the random example input.

    Attributes:
        gm: the traced module; it shares the model's layers and parameters.
        values: every node's value on the example (tensors ``(2, ...)``), by node name.
        refs: names of the input-dependent tensor nodes (the input included), in topological order.
        nodes: every fx node by name.
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int], seed: int = 0) -> None:
        model = model.wrapped_module if isinstance(model, ChunkedModule) else model
        first = next(iter(list(model.parameters()) + list(model.buffers())), None)
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.get_default_dtype()
        device = first.device if first is not None else torch.device("cpu")
        generator = torch.Generator().manual_seed(seed)
        example = torch.rand(BATCH, *(int(s) for s in input_shape), generator=generator, dtype=dtype).to(device)
        modes = [m.training for m in model.modules()]
        model.eval()  # traced and recorded in eval mode: `self.training` in a forward reads False
        try:
            self.gm = fx.GraphModule(model, _LeafTracer().trace(model))
            with torch.no_grad():
                recorder = _Recorder(self.gm)
                recorder.run(example)
        finally:
            for m, mode in zip(model.modules(), modes):
                m.train(mode)
        self.nodes = {n.name: n for n in self.gm.graph.nodes}
        self.values = recorder.values
        self.refs: list[str] = []
        for n in self.gm.graph.nodes:
            if n.op == "placeholder" or (n.op != "output" and isinstance(self.values.get(n.name), torch.Tensor)
                                         and any(i.name in self.refs for i in n.all_input_nodes)):
                self.refs.append(n.name)
        self.output = next(n for n in self.gm.graph.nodes if n.op == "output").args[0].name

    @property
    def input(self) -> str:
        return self.refs[0]

    def ref_inputs(self, name: str) -> list[str]:
        """The input-dependent inputs of node ``name`` (each once, in order)."""
        return list(dict.fromkeys(i.name for i in self.nodes[name].all_input_nodes if i.name in self.refs))

    def consumers(self, name: str) -> list[str]:
        """The input-dependent nodes that take ``name`` as an input."""
        return [u.name for u in self.nodes[name].users if u.name in self.refs]

    def shape(self, name: str) -> tuple[int, ...]:
        """The per-example shape of node ``name``'s recorded value."""
        return tuple(self.values[name].shape[1:])

    def in_dtype(self, dtype: torch.dtype) -> fx.GraphModule:
        """A copy of the traced module in ``dtype`` (detached from the model: for the converged bound)."""
        return copy.deepcopy(self.gm).to(dtype)

    def constants(self, gm: fx.GraphModule | None = None) -> dict[str, Any]:
        """The value of every node that does not depend on the input, recomputed from ``gm``'s (default: the
        model's) live parameters, so that gradients reach them; sizes read from the input keep their recorded
        value."""
        gm = self.gm if gm is None else gm
        env: dict[str, Any] = {}
        for n in gm.graph.nodes:
            if n.op in ("placeholder", "output") or n.name in self.refs:
                continue
            if any(i.name in self.refs for i in n.all_input_nodes):
                env[n.name] = self.values[n.name]  # e.g. x.size(0): the recorded batch
            else:
                env[n.name] = _execute(gm, n, env)
        return env

    def run(self, names: Sequence[str], inputs: dict[str, torch.Tensor], env: dict[str, Any],
            gm: fx.GraphModule | None = None) -> torch.Tensor:
        """The value of the last of ``names`` (consecutive input-dependent nodes, in order) from the values of
        their other inputs (``inputs``, batches of :data:`BATCH`) and the constants ``env``."""
        gm = self.gm if gm is None else gm
        own = {n.name: n for n in gm.graph.nodes}
        local = {**env, **inputs}
        for name in names:
            local[name] = _execute(gm, own[name], local)
        return local[names[-1]]
