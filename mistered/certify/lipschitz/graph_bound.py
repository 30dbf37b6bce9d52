"""An upper bound on the L2 Lipschitz constant of any traceable network, composed node by node over its graph.

The model is traced (:class:`~.graph_program.TracedProgram`; every operation first checked by
:func:`~mistered.certify.graph.trace_graph`, whose errors name an unsupported operation and its source line) and
each input-dependent node's Lipschitz bound follows from its inputs' in topological order:

* a run of single-input affine nodes (Linear, Conv2d, ConvTranspose2d, BatchNorm, AvgPool, arithmetic with
  constants, flatten / reshape / permute, Identity, Dropout) is **one** linear map ``A`` (a BatchNorm after a
  convolution is folded into it): ``L(out) = ||A|| L(in)``, ``||A||`` by power iteration on ``A`` and its transpose
  (autograd) on the actual input size, ``A v = f(v) - f(0)`` evaluated on the model's own live layers;
* a node with several inputs (residual ``a + b``, ``a - b``, ``cat``): ``sum_k ||A_k|| L(in_k)``, ``A_k`` its partial
  map in input ``k``; for ``cat`` (disjoint outputs) ``sqrt(sum_k (||A_k|| L(in_k))^2)``;
* ReLU-like activations: their largest absolute slope (1 for ReLU, Hardtanh, clamp; ``max(1, |a|)`` for
  LeakyReLU(a)); max pooling: ``sqrt`` of the most windows an input lies in
  (:func:`~.global_bound.maxpool_constant`).

As :class:`~.global_bound.LipschitzBound`: ``forward()`` is the training bound (one power iteration per map per
call, the vectors kept between calls, differentiable in the model's parameters); :meth:`GraphLipschitzBound.exact`
the certification bound (float64 Lanczos to convergence, raised by a relative ``safety`` margin). The L∞-dist
layers are refused (their L2 bound is useless; certify them in L∞).

:func:`bound_for_model` picks the layer-by-layer :class:`~.global_bound.LipschitzBound` for models it reads
(``nn.Sequential`` / :class:`~.global_bound.Residual` / ``Normalized`` trees: today's numbers) and this one for
everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from ...errors import InvalidInputError, UnsupportedLayerError
from ...models.normalized import Normalized
from ..graph import trace_graph
from ..graph.builder import Builder, Ref, Site
from ..graph.functional import FUNCTION_CONVERTERS, METHOD_CONVERTERS
from ..graph.layers import module_converter
from ..graph.onnx import onnx_converter
from ..graph.ops import LinfDist, MaxPool2d, Op, PiecewiseLinear
from .global_bound import LipschitzBound, Residual, _PowerIteration, check_bounded_model, maxpool_constant
from .graph_program import BATCH, TracedProgram

__all__ = ["GraphLipschitzBound", "bound_for_model", "is_layered", "lipschitz_bound"]

_CATS = (torch.cat, torch.concat)


@dataclass
class _Map:
    """A linear map ``v -> f(.., v, ..) - f(.., 0, ..)``: the fx nodes ``nodes`` run in order, input ``varied`` of
    ``inputs`` set to ``v`` and the others to zero."""

    nodes: list[str]
    inputs: tuple[str, ...]
    varied: int = 0


@dataclass
class _Step:
    """The bound of node ``name`` from its ``inputs``: through maps (one per input) or a ``constant`` factor."""

    name: str
    inputs: tuple[str, ...]
    maps: tuple[int, ...] = ()
    constant: float = 1.0
    cat: bool = False


def _what(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"{type(gm.get_submodule(node.target)).__name__} (module '{node.target}')"
    return getattr(node.target, "__name__", str(node.target))


def _is_cat(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` concatenates its inputs (``torch.cat`` or onnx2torch's Concat): outputs disjoint per input."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__ == "OnnxConcat"
    return node.op == "call_function" and node.target in _CATS


def _converter(gm: fx.GraphModule, node: fx.Node) -> Callable | None:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        convert = module_converter(module) or onnx_converter(module)
        return None if convert is None else (lambda b, site, *a, **k: convert(b, site, module, *a, **k))
    if node.op == "call_function":
        return FUNCTION_CONVERTERS.get(node.target)
    return METHOD_CONVERTERS.get(node.target) if node.op == "call_method" else None


def _lowered(program: TracedProgram, name: str, ref: str) -> list[tuple[Op, tuple[int, ...]]]:
    """The bound-graph operations node ``name`` (of one input-dependent input ``ref``) lowers to, each with the
    per-example shape of its input."""
    node = program.nodes[name]
    convert = _converter(program.gm, node)
    if convert is None:  # pragma: no cover - trace_graph has converted every node already
        raise UnsupportedLayerError(f"no Lipschitz bound for {_what(program.gm, node)}")
    builder = Builder(program.values[ref])
    args, kwargs = fx.node.map_arg((node.args, node.kwargs),
                                   lambda n: Ref("input") if n.name == ref else program.values[n.name])
    convert(builder, Site(_what(program.gm, node), "", program.values[name]), *args, **kwargs)
    shapes = {n.name: n.shape for n in builder.nodes}
    return [(n.op, shapes[n.inputs[0]]) for n in builder.nodes[1:]]


def _largest_slope(op: PiecewiseLinear) -> float:
    """The largest absolute slope of a piecewise-linear activation's segments."""
    slope, slopes = op.slope, [abs(op.slope)]
    for k in sorted(range(len(op.breaks)), key=lambda k: op.breaks[k]):
        slope += op.weights[k]
        slopes.append(abs(slope))
    return max(slopes)


def _fixed_norm(op: Op, shape: tuple[int, ...]) -> float:
    """The converged L2 norm (raised by ``1e-5``) of a weight-free linear operation of the bound graph."""
    def apply(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        moved = op.to(dtype=dtype)
        return moved.forward(v) - moved.forward(torch.zeros_like(v))

    return _PowerIteration("fixed", None, shape, apply).converged(500, 1e-10) * (1 + 1e-5)


def _constant(ops: list[tuple[Op, tuple[int, ...]]], where: str) -> float:
    """The Lipschitz constant of a nonlinear node lowered to ``ops``."""
    constant = 1.0
    for op, shape in ops:
        if isinstance(op, LinfDist):
            raise UnsupportedLayerError(
                f"the L∞-dist layer {where} has no useful L2 Lipschitz bound; certify L∞-dist nets with "
                "--method linf-dist"
            )
        if isinstance(op, PiecewiseLinear):
            constant *= _largest_slope(op)
        elif isinstance(op, MaxPool2d):
            constant *= maxpool_constant(op.kernel, op.stride, op.dilation)
        else:
            constant *= _fixed_norm(op, shape)
    return constant


class GraphLipschitzBound(nn.Module):
    """An upper bound on the L2 Lipschitz constant of ``model`` (any supported graph) on inputs of ``input_shape``.

    Args:
        model: ``(B, *input_shape) -> (B, K)``; any ``nn.Module`` :func:`~mistered.certify.graph.trace_graph`
            accepts except the L∞-dist layers (see the module docstring).
        input_shape: ``(C, H, W)`` or ``(D,)`` of one input.

    :attr:`head` is the final ``nn.Linear`` when the model ends with one (``None`` otherwise): ``exclude_head=True``
    bounds everything before it, for the pairwise bound.

    Raises:
        UnsupportedLayerError: an operation without a bound (named, with its source line where the model's code
            made it), prefixed by the model's class name.
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        name = type(model).__name__
        try:
            trace_graph(model, self.input_shape)
            self.program = TracedProgram(model, self.input_shape)
            out = self.program.nodes[self.program.output]
            head = self.program.gm.get_submodule(out.target) if out.op == "call_module" else None
            self._head = [head if isinstance(head, nn.Linear) else None]  # a list: the model owns the layer
            self._maps: list[_Map] = []
            self._steps = self._plan()
        except UnsupportedLayerError as error:
            raise UnsupportedLayerError(f"no L2 Lipschitz bound for {name}: {error}") from None
        device = self.program.values[self.program.input].device
        self.operators = nn.ModuleList(
            _PowerIteration(m.nodes[-1], None, self.program.shape(m.inputs[m.varied]), self._applier(m), device)
            for m in self._maps
        )
        self._runtime: tuple[fx.GraphModule, dict, torch.dtype] | None = None

    @property
    def head(self) -> nn.Linear | None:
        """The model's final ``nn.Linear`` (``None`` when it ends otherwise)."""
        return self._head[0]

    # -- construction -------------------------------------------------------------------------
    def _plan(self) -> list[_Step]:
        """The steps in topological order; runs of single-input affine nodes become one map (the head, a final
        ``nn.Linear``, stays a map of its own for the pairwise bound)."""
        program, steps = self.program, {}
        for name in program.refs[1:]:
            refs = tuple(program.ref_inputs(name))
            node = program.nodes[name]
            if len(refs) > 1:
                first = len(self._maps)
                self._maps.extend(_Map([name], refs, k) for k in range(len(refs)))
                steps[name] = _Step(name, refs, tuple(range(first, first + len(refs))), cat=_is_cat(program.gm, node))
                continue
            ops = _lowered(program, name, refs[0])
            if any(isinstance(op, (PiecewiseLinear, MaxPool2d, LinfDist)) for op, _ in ops):
                steps[name] = _Step(name, refs, constant=_constant(ops, _what(program.gm, node)))
                continue
            previous = steps.get(refs[0])
            is_head = name == program.output and self.head is not None
            if (previous is not None and previous.maps and len(previous.inputs) == 1
                    and program.consumers(refs[0]) == [name] and not is_head):
                self._maps[previous.maps[0]].nodes.append(name)  # one more node of the same linear map
                del steps[refs[0]]
                steps[name] = _Step(name, previous.inputs, previous.maps)
            else:
                self._maps.append(_Map([name], refs))
                steps[name] = _Step(name, refs, (len(self._maps) - 1,))
        return list(steps.values())

    def _applier(self, piece: _Map) -> Callable[[torch.Tensor, torch.dtype], torch.Tensor]:
        def apply(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
            gm, env, own = self._runtime
            v = v.to(own)
            inputs = {}
            for k, name in enumerate(piece.inputs):
                zero = torch.zeros(1, *self.program.shape(name), dtype=own, device=v.device)
                inputs[name] = torch.cat([v if k == piece.varied else zero, zero.expand(BATCH - 1, *zero.shape[1:])])
            out = self.program.run(piece.nodes, inputs, env, gm)
            return out[:1] - out[1:2]

        return apply

    # -- evaluation ---------------------------------------------------------------------------
    def _compose(self, norms: list[torch.Tensor | float], exclude_head: bool) -> torch.Tensor | float:
        bound: dict[str, torch.Tensor | float] = {self.program.input: 1.0}
        for step in self._steps:
            if not step.maps:
                bound[step.name] = step.constant * bound[step.inputs[0]]
                continue
            terms = [norms[m] * bound[i] for m, i in zip(step.maps, step.inputs)]
            if step.cat:
                bound[step.name] = sum(t * t for t in terms) ** 0.5
            else:
                bound[step.name] = sum(terms[1:], terms[0])
        if exclude_head:
            return bound[self.program.ref_inputs(self.program.output)[0]]
        return bound[self.program.output]

    def _check_head(self, exclude_head: bool) -> None:
        if exclude_head and self.head is None:
            raise UnsupportedLayerError("the pairwise bound needs a network that ends with an nn.Linear layer")

    def forward(self, exclude_head: bool = False) -> torch.Tensor:
        """Differentiable bound (scalar tensor): one power iteration per map, vectors updated in place."""
        self._check_head(exclude_head)
        dtype = self.program.values[self.program.input].dtype
        self._runtime = (self.program.gm, self.program.constants(), dtype)
        try:
            norms = [op.sigma(1) for op in self.operators]
        finally:
            self._runtime = None
        result = self._compose(norms, exclude_head)
        return torch.as_tensor(result, dtype=torch.float32, device=self.operators[0].vector.device
                               if len(self.operators) else None)

    bound = forward

    @torch.no_grad()
    def exact(self, exclude_head: bool = False, max_iterations: int = 500, tol: float = 1e-10,
              safety: float = 1e-5) -> torch.Tensor:
        """The bound in float64, every power iteration run to convergence and raised by the relative ``safety``
        margin (scalar tensor, detached)."""
        self._check_head(exclude_head)
        gm = self.program.in_dtype(torch.float64)
        self._runtime = (gm, self.program.constants(gm), torch.float64)
        try:
            norms = [op.converged(max_iterations, tol) * (1 + safety) for op in self.operators]
        finally:
            self._runtime = None
        return torch.as_tensor(self._compose(norms, exclude_head), dtype=torch.float64).detach()


def is_layered(model: nn.Module) -> bool:
    """Whether ``model`` is a tree of ``nn.Sequential`` / :class:`~.global_bound.Residual` / ``Normalized``
    containers over leaf layers, which :class:`~.global_bound.LipschitzBound` reads layer by layer."""
    containers = (nn.Sequential, Residual, Normalized)
    return all(isinstance(m, containers) or next(m.children(), None) is None for m in model.modules())


def bound_for_model(model: nn.Module, input_shape: Sequence[int]) -> LipschitzBound | GraphLipschitzBound:
    """The L2 Lipschitz bound module of ``model``: :class:`~.global_bound.LipschitzBound` for layered models (see
    :func:`is_layered`; unchanged numbers and messages), :class:`GraphLipschitzBound` for any other graph.

    Raises:
        UnsupportedLayerError: TorchScript / fx models (whose layers cannot be read), unsupported operations.
        InvalidInputError: an invalid ``input_shape``.
    """
    check_bounded_model(model)
    if not input_shape or any(int(s) < 1 for s in input_shape):
        raise InvalidInputError(f"input_shape must be positive sizes such as (1, 28, 28), got {tuple(input_shape)}")
    if is_layered(model):
        return LipschitzBound(model, tuple(int(s) for s in input_shape))
    return GraphLipschitzBound(model, input_shape)


def lipschitz_bound(model: nn.Module, input_shape: Sequence[int]) -> float:
    """The certification-mode (``exact()``) L2 Lipschitz bound of ``model`` on inputs of ``input_shape``, from
    :func:`bound_for_model`: layer by layer for ``nn.Sequential`` trees, over the traced graph otherwise."""
    return float(bound_for_model(model, input_shape).exact())
