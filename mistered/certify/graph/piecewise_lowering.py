"""Lowering any piecewise-linear bound graph (:mod:`.graph`) to the chain form of :mod:`.piecewise`.

A traced network (residual additions, BatchNorm, convolutions, average and max pooling, concatenation, reshapes,
constant normalisation, LeakyReLU / Hardtanh ...) is rewritten, exactly, as ``W_L relu(... relu(W_1 x + b_1))``:

1. every operation becomes *primitives*: affine maps of one or more earlier values (dense matrices, pushed
   through the operation's own ``forward``) and elementwise ReLUs. A scalar activation
   ``offset + slope x + sum_k w_k relu(x - t_k)`` keeps its ReLU terms; max pooling is a tournament of pairwise
   maxima ``max(a, b) = a + relu(b - a)`` over each window (``ceil(log2(k))`` ReLU layers for ``k`` cells);
2. each value gets a *stage*: the number of ReLU layers on its longest path from the input. All ReLUs of one
   stage form one hidden layer of the chain;
3. a value needed after the layer that follows it (a residual branch, the ``a`` of a pairwise max, the input of
   a LeakyReLU's linear part) is *carried* through that layer exactly: ``relu(v) = v`` where ``v`` is known
   non-negative (a non-negative combination of ReLU outputs), else, on a bounded ``domain``,
   ``relu(v - l) + l`` with ``l`` an interval lower bound of ``v`` over the domain (a ReLU that is always active
   there: every search and bound sees it as stable and never splits it), else ``relu(v) - relu(-v)``.
   :attr:`~.piecewise.PiecewiseLinearNet.carried` marks these neurons.

The chain equals the graph's function everywhere when ``domain`` is ``None``, and on the ``domain`` box otherwise
(the exact searches lower with their own domain, the pixel box). The L∞-dist layers are not lowered.

Example:
    >>> net = lower_module(model, (1, 28, 28), domain=(0.0, 1.0))   # any traceable ReLU network
    >>> net.layer_sizes, [m.sum() for m in net.carried]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UnsupportedLayerError
from . import ops
from .graph import BoundGraph, Node
from .piecewise import PiecewiseLinearNet, check_piecewise_model

__all__ = ["as_plnet", "lower_graph", "lower_module", "MAX_DENSE_ENTRIES"]

_AFFINE = (ops.Linear, ops.Conv2d, ops.ConvTranspose2d, ops.Affine, ops.Sum, ops.Cat, ops.Reshape, ops.Permute,
           ops.Unfold)
_MARGIN = 1e-6  # relative slack under an interval lower bound: a shifted carry stays provably active
#: The most entries a lowering's dense matrices may hold together (512 MiB in float64) before it is refused.
MAX_DENSE_ENTRIES = 1 << 26


@dataclass
class _Prim:
    """An affine map ``offset + sum_i mats[i] @ value(inputs[i])`` (``relu=False``) or ``relu(value(inputs[0]))``;
    values are flat ``(size,)`` vectors per example."""

    inputs: list[int]
    size: int
    relu: bool = False
    mats: list[torch.Tensor] = field(default_factory=list)
    offset: torch.Tensor | None = None
    stage: int = 0


class _Prims:
    """The primitive DAG in topological order (index 0: the input)."""

    def __init__(self, size: int, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.items = [_Prim([], size)]

    def affine(self, inputs: list[int], mats: list[torch.Tensor], offset: torch.Tensor | None = None) -> int:
        size = mats[0].shape[0]
        offset = torch.zeros(size, dtype=self.dtype) if offset is None else offset.reshape(size)
        stage = max(self.items[i].stage for i in inputs)
        self.items.append(_Prim(list(inputs), size, False, list(mats), offset, stage))
        return len(self.items) - 1

    def relu(self, x: int) -> int:
        self.items.append(_Prim([x], self.items[x].size, True, stage=self.items[x].stage + 1))
        return len(self.items) - 1

    def eye(self, n: int) -> torch.Tensor:
        return torch.eye(n, dtype=self.dtype)


def _affine_op(prims: _Prims, node: Node, inputs: list[int], shapes: list[tuple[int, ...]]) -> int:
    """An affine operation as dense matrices, one per input (``forward`` on basis vectors minus its offset)."""
    op = node.op.to(dtype=prims.dtype)
    zeros = [torch.zeros(1, *s, dtype=prims.dtype) for s in shapes]
    offset = op.forward(*zeros).reshape(-1)
    mats = []
    for i, shape in enumerate(shapes):
        n = math.prod(shape)
        args = [z.expand(n, *z.shape[1:]) for z in zeros]
        args[i] = prims.eye(n).reshape(n, *shape)
        mats.append((op.forward(*args).reshape(n, -1) - offset).T.contiguous())
    return prims.affine(inputs, mats, offset)


def _activation(prims: _Prims, op: ops.PiecewiseLinear, x: int) -> int:
    """``offset + slope x + sum_k w_k relu(x - t_k)``: ReLU primitives plus one affine combination."""
    n = prims.items[x].size
    eye = prims.eye(n)
    if op.offset == 0 and op.slope == 0 and op.weights == (1.0,) and op.breaks == (0.0,):
        return prims.relu(x)
    inputs, mats = [], []
    if op.slope:
        inputs.append(x), mats.append(op.slope * eye)
    for w, t in zip(op.weights, op.breaks):
        if w:
            shifted = x if t == 0 else prims.affine([x], [eye], torch.full((n,), -t, dtype=prims.dtype))
            inputs.append(prims.relu(shifted)), mats.append(w * eye)
    if not inputs:
        inputs, mats = [x], [0 * eye]
    return prims.affine(inputs, mats, torch.full((n,), float(op.offset), dtype=prims.dtype))


def _window_slots(op: ops.MaxPool2d, shape: tuple[int, ...]) -> torch.Tensor:
    """``(k, n_out)`` flat input indices of each pooling window's cells; a padded cell repeats a valid one."""
    channels = shape[0]
    index = torch.arange(1, math.prod(shape) + 1, dtype=torch.float64).reshape(1, *shape)
    cols = F.unfold(index, op.kernel, op.dilation, op.padding, op.stride)  # (1, C k, L), 0 = padding
    slots = cols.reshape(channels, -1, cols.shape[-1]).permute(1, 0, 2).reshape(-1, channels * cols.shape[-1])
    slots = slots.long() - 1
    first = slots.clamp_min(-1).max(0).values  # a valid cell of every window
    return torch.where(slots < 0, first.expand_as(slots), slots)


def _max_pool(prims: _Prims, op: ops.MaxPool2d, x: int, shape: tuple[int, ...]) -> int:
    """A tournament of pairwise maxima ``max(a, b) = a + relu(b - a)`` over every window at once."""
    slots = _window_slots(op, shape)
    n_in, n_out = math.prod(shape), slots.shape[1]
    rows = torch.arange(n_out)
    values = []
    for slot in slots:
        select = torch.zeros(n_out, n_in, dtype=prims.dtype)
        select[rows, slot] = 1.0
        values.append(prims.affine([x], [select]))
    eye = prims.eye(n_out)
    while len(values) > 1:
        paired = []
        for a, b in zip(values[0::2], values[1::2]):
            gap = prims.relu(prims.affine([b, a], [eye, -eye]))
            paired.append(prims.affine([a, gap], [eye, eye]))
        values = paired + values[len(paired) * 2:]
    return values[0]


def _to_prims(graph: BoundGraph, dtype: torch.dtype) -> tuple[_Prims, int]:
    """The graph as primitives; returns them and the output's index."""
    prims = _Prims(graph.input.numel, dtype)
    index: dict[str, int] = {graph.input.name: 0}
    for node in list(graph)[1:]:
        inputs = [index[i] for i in node.inputs]
        shapes = [graph[i].shape for i in node.inputs]
        if isinstance(node.op, _AFFINE):
            index[node.name] = _affine_op(prims, node, inputs, shapes)
        elif isinstance(node.op, ops.PiecewiseLinear):
            index[node.name] = _activation(prims, node.op, inputs[0])
        elif isinstance(node.op, ops.MaxPool2d):
            index[node.name] = _max_pool(prims, node.op, inputs[0], shapes[0])
        else:
            where = f" at {node.source}" if node.source else ""
            raise UnsupportedLayerError(
                f"{type(node.op).__name__} (node {node.name}{where}) has no exact piecewise-linear chain form; "
                "supported: ReLU networks with affine layers, residual additions, concatenation, reshapes, "
                "average and max pooling, LeakyReLU, Hardtanh"
            )
    return prims, index[graph.output]


class _Chain:
    """The chain built so far: finished layers, the current basis ``h_s`` (its interval box on ``domain``) and
    every live value as an affine form ``(M, c)`` in it."""

    def __init__(self, prims: _Prims, domain: tuple[float, float] | None) -> None:
        n = prims.items[0].size
        self.prims, self.domain = prims, domain
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        self.carried: list[torch.Tensor] = []
        self.forms: dict[int, tuple[torch.Tensor, torch.Tensor]] = {0: (prims.eye(n), torch.zeros(n, dtype=prims.dtype))}
        self.box = None if domain is None else (torch.full((n,), float(domain[0]), dtype=prims.dtype),
                                                 torch.full((n,), float(domain[1]), dtype=prims.dtype))

    def evaluate(self, k: int) -> None:
        """The affine form of primitive ``k`` (an affine one) from its inputs' forms."""
        p = self.prims.items[k]
        m = sum(a @ self.forms[i][0] for a, i in zip(p.mats, p.inputs))
        c = sum(a @ self.forms[i][1] for a, i in zip(p.mats, p.inputs)) + p.offset
        self.forms[k] = (m, c)

    def _lower(self, m: torch.Tensor, c: torch.Tensor) -> torch.Tensor | None:
        """Interval lower bound of ``m h + c`` over the current box, or ``None`` without a domain."""
        if self.box is None:
            return None
        lo, hi = self.box
        centre, radius = (lo + hi) / 2, (hi - lo) / 2
        return m @ centre + c - m.abs() @ radius

    def next_layer(self, relus: list[int], carry: list[int]) -> None:
        """Close the current basis: one ReLU layer computing the ReLU primitives ``relus`` and carrying the
        values ``carry`` exactly; every form is rewritten in the new basis."""
        rows_m, rows_c, marks, new_forms = [], [], [], {}
        width = 0

        def add(m: torch.Tensor, c: torch.Tensor, carried: bool) -> torch.Tensor:
            nonlocal width
            rows_m.append(m), rows_c.append(c)
            marks.append(torch.full((m.shape[0],), carried, dtype=torch.bool))
            width += m.shape[0]
            return torch.arange(width - m.shape[0], width)

        for k in relus:
            m, c = self.forms[self.prims.items[k].inputs[0]]
            new_forms[k] = (add(m, c, False), None)
        for k in carry:
            new_forms[k] = self._carry(k, add)
        self.weights.append(torch.cat(rows_m))
        self.biases.append(torch.cat(rows_c))
        self.carried.append(torch.cat(marks))
        if self.box is not None:
            lo = self._lower(self.weights[-1], self.biases[-1])
            hi = -self._lower(-self.weights[-1], -self.biases[-1])
            self.box = (lo.clamp_min(0), hi.clamp_min(0))
        eye = self.prims.eye(width)
        self.forms = {}
        for k, (rows, shift) in new_forms.items():
            if isinstance(rows, tuple):  # a carried pair: relu(v) - relu(-v)
                m = eye[rows[0]] - eye[rows[1]]
            else:
                m = eye[rows]
            self.forms[k] = (m, torch.zeros(m.shape[0], dtype=m.dtype) if shift is None else shift)

    def _carry(self, k: int, add) -> tuple:
        """The neurons that carry value ``k`` through the next layer, and how to read it back."""
        m, c = self.forms[k]
        nonnegative = bool(self.weights) and bool((m >= 0).all() and (c >= 0).all())
        lower = None if nonnegative else self._lower(m, c)
        if nonnegative or (lower is not None and bool((lower >= 0).all())):
            return add(m, c, True), None
        if lower is not None:  # relu(v - l) + l with l below v's lower bound: always active on the domain
            shift = torch.minimum(lower - _MARGIN * (1 + lower.abs()), torch.zeros_like(lower))
            return add(m, c - shift, True), shift
        return (add(m, c, True), add(-m, -c, True)), None


def _carried_values(prims: _Prims, stage: int) -> list[int]:
    """Values of stage ``<= stage`` that a primitive of a later stage needs as they are (not as a ReLU's input
    at ``stage + 1``)."""
    needed = set()
    for p in prims.items:
        if p.stage <= stage:
            continue
        for i in p.inputs:
            if prims.items[i].stage <= stage and not (p.relu and p.stage == stage + 1):
                needed.add(i)
    return sorted(needed)


def _check_size(graph: BoundGraph, max_entries: int) -> None:
    """Refuse a graph whose operations' dense matrices would hold more than ``max_entries`` entries."""
    entries = sum(node.numel * graph[i].numel for node in graph for i in node.inputs)
    if entries > max_entries:
        raise UnsupportedLayerError(
            f"the network is too large for the dense piecewise-linear chain form ({entries:,} matrix entries, at "
            f"most {max_entries:,}); exact searches and LipMIP need a small network"
        )


def lower_graph(graph: BoundGraph, domain: tuple[float, float] | None = None,
                dtype: torch.dtype = torch.float64, max_entries: int = MAX_DENSE_ENTRIES) -> PiecewiseLinearNet:
    """The chain form of a piecewise-linear bound graph (see the module docstring).

    Args:
        graph: a traced network (:func:`~mistered.certify.graph.trace_graph`) with ``(B, K)`` outputs.
        domain: ``(lo, hi)``: the box of inputs the chain must agree on (values carried through a layer are then
            shifted to stay active); ``None``: agree everywhere (carried values that may be negative take two
            neurons).
        dtype: of the chain's weights (the lowering itself computes in it).
        max_entries: the most entries the operations' dense matrices may hold (memory guard).

    Returns:
        A :class:`~.piecewise.PiecewiseLinearNet` on the CPU with ``input_shape = graph.input_shape`` and
        ``carried`` marking, per hidden layer, the neurons that carry a value rather than decide a ReLU.

    Raises:
        UnsupportedLayerError: an operation without an exact chain form (the L∞-dist layers), named with its node
            and source line; an output that is not ``(B, K)``; a network over ``max_entries``.
    """
    if len(graph.output_shape) != 1:
        raise UnsupportedLayerError(
            f"the piecewise-linear chain form needs a model with (B, K) outputs, got per-example output shape "
            f"{graph.output_shape} (a Linear layer on an unflattened input? add nn.Flatten() before it)"
        )
    _check_size(graph, max_entries)
    graph = graph.to("cpu", dtype)
    prims, output = _to_prims(graph, dtype)
    chain = _Chain(prims, domain)
    last = prims.items[output].stage
    for stage in range(last + 1):
        for k, p in enumerate(prims.items):
            if k and p.stage == stage and not p.relu:
                chain.evaluate(k)
        if stage < last:
            relus = [k for k, p in enumerate(prims.items) if p.relu and p.stage == stage + 1]
            chain.next_layer(relus, _carried_values(prims, stage))
    m, c = chain.forms[output]
    carried = chain.carried
    return PiecewiseLinearNet(chain.weights + [m], chain.biases + [c], graph.input_shape, carried or None)


def lower_module(module: nn.Module, input_shape: tuple[int, ...], domain: tuple[float, float] | None = None,
                 dtype: torch.dtype = torch.float64) -> PiecewiseLinearNet:
    """:func:`lower_graph` of ``module``'s traced graph (:func:`~mistered.certify.graph.trace_graph`: anything it
    does not support raises :class:`~mistered.errors.UnsupportedLayerError` naming the operation and its source
    line) for inputs of per-example shape ``input_shape``."""
    from .trace import trace_graph

    return lower_graph(trace_graph(module, tuple(int(s) for s in input_shape)), domain, dtype)


def as_plnet(model_or_net: nn.Module | PiecewiseLinearNet, input_shape: tuple[int, ...],
             domain: tuple[float, float] | None = None) -> PiecewiseLinearNet:
    """The canonical chain form of any ReLU network: ``model_or_net`` as is when it already is one; an
    ``nn.Sequential`` of the chain's layers directly (:meth:`~.piecewise.PiecewiseLinearNet.from_module`);
    anything else (custom ``forward``, residual additions, pooling, concatenation ...) through its traced graph
    (:func:`lower_module`), agreeing with the model on ``domain`` (``None``: everywhere), in the model's dtype and
    device. An operation with no piecewise-linear form raises
    :class:`~mistered.errors.UnsupportedLayerError` naming it (and its source line)."""
    if isinstance(model_or_net, PiecewiseLinearNet):
        return model_or_net
    check_piecewise_model(model_or_net)  # (a TorchScript model: said as such, not as an untraceable one)
    try:
        return PiecewiseLinearNet.from_module(model_or_net, input_shape)
    except UnsupportedLayerError:
        param = next(iter(model_or_net.parameters()), None)
        dtype = param.dtype if param is not None else torch.get_default_dtype()
        device = param.device if param is not None else torch.device("cpu")
        return lower_module(model_or_net, input_shape, domain).to(device=device, dtype=dtype)
