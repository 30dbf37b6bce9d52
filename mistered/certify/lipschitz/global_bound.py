"""Upper bounds on the L2 Lipschitz constant of a network, layer by layer, composed over its structure.

Each linear layer (``nn.Linear``, ``nn.Conv2d``, average pooling) is bounded by its operator norm,
estimated by power iteration on the layer's own linear map and its transpose (computed by autograd),
with input-shaped vectors: for a convolution this is the norm of the convolution on the actual
input size, not the norm of the reshaped kernel (which can be below it, hence unsound).

Two modes:

* **training** (``LipschitzBound.forward()``): one power iteration per layer per call, the vectors
  kept between calls in buffers (Miyato et al.'s trick, as in Tsuzuku et al. 2018's LMT); the result
  is differentiable with respect to the weights (``sigma = u^T A v`` with ``u, v`` held fixed).
* **exact** (``LipschitzBound.exact()``): float64 Lanczos iteration (on ``A^T A``) run to convergence (relative change
  below ``tol``), then raised by the relative margin ``safety`` (power iteration approaches the norm from
  below; the margin covers the remaining ``~tol`` gap). Used for certification.

Composition: ``nn.Sequential`` multiplies, :class:`Residual` gives ``1 + L(body)``, 
:class:`mistered.models.normalized.Normalized` multiplies by ``1 / min(std)``.
1-Lipschitz layers (ReLU, Flatten, Dropout, max pooling without overlap ...) contribute their constant;
BatchNorm (running statistics) contributes ``max |gamma| / sqrt(var + eps)``. Any other layer raises
:class:`~mistered.errors.UnsupportedLayerError` naming it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UnsupportedLayerError
from ...models.normalized import Normalized
from ...validation import check_layered_model, model_device, model_dtype

__all__ = ["LipschitzBound", "Residual", "operator_norm", "check_bounded_model", "maxpool_constant"]

logger = logging.getLogger(__name__)

#: Activations and shape layers with a fixed Lipschitz constant (elementwise slopes bounded by it).
_CONSTANT_LAYERS: dict[type, Callable[[nn.Module], float]] = {
    nn.ReLU: lambda m: 1.0,
    nn.ReLU6: lambda m: 1.0,
    nn.Tanh: lambda m: 1.0,
    nn.Hardtanh: lambda m: 1.0,
    nn.Softplus: lambda m: 1.0,
    nn.Sigmoid: lambda m: 0.25,
    nn.LeakyReLU: lambda m: max(1.0, abs(m.negative_slope)),
    nn.ELU: lambda m: max(1.0, abs(m.alpha)),
    nn.Flatten: lambda m: 1.0,
    nn.Identity: lambda m: 1.0,
    nn.Dropout: lambda m: 1.0,
}
_SUPPORTED = "Linear, Conv2d, BatchNorm1d/2d, AvgPool2d, AdaptiveAvgPool2d, MaxPool2d, Sequential, Residual, " + ", ".join(
    t.__name__ for t in _CONSTANT_LAYERS
)


def check_bounded_model(model: object) -> nn.Module:
    """Refuse (:class:`~mistered.errors.UnsupportedLayerError`) a model whose layers cannot be read: not an
    ``nn.Module``, or a TorchScript / ``torch.fx`` one. :class:`LipschitzBound` names unsupported layers."""
    return check_layered_model(model, "LMT", f"layers with a known Lipschitz bound ({_SUPPORTED})")


class Residual(nn.Module):
    """``x + body(x)``: a residual block whose Lipschitz bound is ``1 + L(body)``.

    ``body`` must map ``(B, ...)`` to the same shape.
    """

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _PowerIteration(nn.Module):
    """The operator norm of one linear map ``v -> A v`` (bias-free), with a persistent input-shaped vector."""

    def __init__(self, name: str, layer: nn.Module | None, input_shape: tuple[int, ...], apply: Callable,
                 device: torch.device | None = None) -> None:
        super().__init__()
        self.name = name
        self._layer = [layer]  # not a submodule: the model owns it
        self._apply = apply
        start = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
        if device is None:
            param = next(layer.parameters(), None) if layer is not None else None
            device = param.device if param is not None else torch.device("cpu")
        self.register_buffer("vector", (start / start.norm()).to(device))

    def _step(self, v: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """One power iteration from the unit vector ``v``: returns ``(u, v')``, unit output and input vectors."""
        v = v.detach().to(dtype).requires_grad_(True)
        with torch.enable_grad():
            out = self._apply(v, dtype)
            u = out / out.norm().clamp_min(1e-30)
            (back,) = torch.autograd.grad(out, v, grad_outputs=u.detach())
        return u.detach(), (back / back.norm().clamp_min(1e-30)).detach()

    def sigma(self, iterations: int = 1) -> torch.Tensor:
        """Differentiable norm estimate after ``iterations`` steps from the stored vector (which is updated)."""
        v = self.vector
        for _ in range(iterations):
            _, v = self._step(v, v.dtype)
        self.vector.copy_(v)
        out = self._apply(v, v.dtype)
        return out.norm()

    def _gram(self, v: torch.Tensor) -> torch.Tensor:
        """``A^T A v`` in float64 for a flat vector ``v`` (the transpose by autograd)."""
        v = v.view(1, *self.vector.shape[1:]).requires_grad_(True)
        with torch.enable_grad():
            out = self._apply(v, torch.float64)
            (back,) = torch.autograd.grad(out, v, grad_outputs=out.detach())
        return back.flatten()

    @torch.no_grad()
    def converged(self, max_iterations: int, tol: float) -> float:
        """The float64 norm by Lanczos on ``A^T A`` (full reorthogonalisation), from the stored vector.

        Lanczos converges quickly even when many singular values lie close to the top one (as for
        convolutions, whose spectrum is nearly continuous), where plain power iteration crawls. Stops
        when the top Ritz value changes by less than ``tol`` (relative); the Ritz vector is stored back.
        """
        q = self.vector.double().flatten()
        basis = [q / q.norm()]
        alphas: list[float] = []
        betas: list[float] = []
        previous = value = 0.0
        for _ in range(min(max_iterations, q.numel())):
            w = self._gram(basis[-1])
            alphas.append(float(w @ basis[-1]))
            stacked = torch.stack(basis)
            for _ in range(2):  # reorthogonalise twice against every previous vector
                w = w - stacked.T @ (stacked @ w)
            tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
            if betas:
                off = torch.tensor(betas, dtype=torch.float64)
                tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
            eigenvalues, eigenvectors = torch.linalg.eigh(tridiagonal)
            value = float(eigenvalues[-1].clamp_min(0).sqrt())
            beta = float(w.norm())
            if abs(value - previous) <= tol * value or beta <= 1e-12 * max(value**2, 1e-300):
                break
            previous = value
            betas.append(beta)
            basis.append(w / beta)
        else:
            logger.warning("Lanczos for %s did not converge in %d iterations", self.name, max_iterations)
        top = stacked.T @ eigenvectors[:, -1]
        self.vector.copy_((top / top.norm()).view_as(self.vector).to(self.vector.dtype))
        return value


def _linear_apply(layer: nn.Linear) -> Callable:
    return lambda v, dtype: F.linear(v, layer.weight.to(dtype))


def _conv_apply(name: str, layer: nn.Conv2d) -> Callable:
    if layer.padding_mode != "zeros":
        raise UnsupportedLayerError(
            f"layer {name!r} ({layer}) uses padding_mode={layer.padding_mode!r}; only zero padding is bounded"
        )
    return lambda v, dtype: F.conv2d(v, layer.weight.to(dtype), None, layer.stride, layer.padding, layer.dilation, layer.groups)


def _pool_apply(layer: nn.Module) -> Callable:
    return lambda v, dtype: layer(v)


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    values = (value,) if isinstance(value, int) else tuple(value)
    return (values[0], values[-1])


def maxpool_constant(kernel: int | tuple[int, ...], stride: int | tuple[int, ...] | None,
                     dilation: int | tuple[int, ...] = 1) -> float:
    """The L2 Lipschitz constant of 2-D max pooling: each input lies in at most ``n_h * n_w`` windows
    (``n = min(k, ceil(((k - 1) d + 1) / s))`` per dimension), so ``||maxpool(x) - maxpool(y)|| <= sqrt(n_h n_w)
    ||x - y||``; ``stride`` ``None`` (or empty) is the kernel."""
    windows = 1
    for k, s, d in zip(_pair(kernel), _pair(stride or kernel), _pair(dilation)):
        windows *= min(k, math.ceil(((k - 1) * d + 1) / s))
    return math.sqrt(windows)


def _batchnorm_scale(name: str, layer: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    if layer.running_var is None:
        raise UnsupportedLayerError(
            f"layer {name!r} ({layer}) has no running statistics (track_running_stats=False), so it is not a fixed map"
        )
    scale = 1.0 / torch.sqrt(layer.running_var + layer.eps)
    if layer.weight is not None:
        scale = layer.weight.abs() * scale
    return scale.max()


@dataclass
class _Node:
    """One node of the bound expression: ``kind`` is ``op`` (index), ``const``, ``bn``, ``seq``, ``res``, ``scale``."""

    kind: str
    value: object = None
    children: tuple[_Node, ...] = ()


class LipschitzBound(nn.Module):
    """An upper bound on the L2 Lipschitz constant of ``model`` for inputs of shape ``input_shape``.

    Args:
        model: the network (images ``(B, *input_shape)`` to logits ``(B, K)``), built from supported
            layers (see the module docstring).
        input_shape: ``(C, H, W)`` (or ``(D,)``) of one input; convolution bounds depend on it.

    Call ``bound()`` (alias of ``forward``) in training for a cheap differentiable bound (one power
    iteration per layer per call) and :meth:`exact` for certification. With ``exclude_head=True`` the
    bound omits the final ``nn.Linear`` (:attr:`head`), for the pairwise (per class pair) bound.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(784, 20), nn.ReLU(), nn.Linear(20, 10))
        >>> bound = LipschitzBound(net, (1, 28, 28))
        >>> float(bound.exact()) > 0
        True
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        check_bounded_model(model)
        self.input_shape = tuple(int(s) for s in input_shape)
        shapes = _input_shapes(model, self.input_shape)
        self.operators = nn.ModuleList()
        self._bn: list[tuple[str, nn.Module]] = []
        self.head: nn.Linear | None = None
        self._head_node: _Node | None = None
        self._tree = self._build(model, "model", shapes)
        self._find_head(self._tree)

    # -- construction -------------------------------------------------------------------------
    def _build(self, module: nn.Module, name: str, shapes: dict[nn.Module, tuple[int, ...]]) -> _Node:
        if isinstance(module, nn.Sequential):
            return _Node("seq", children=tuple(self._build(m, f"{name}.{k}", shapes) for k, m in module.named_children()))
        if isinstance(module, Residual):
            return _Node("res", children=(self._build(module.body, f"{name}.body", shapes),))
        if isinstance(module, Normalized):
            inverse = float(1.0 / module.std.abs().min())
            return _Node("scale", inverse, (self._build(module.net, f"{name}.net", shapes),))
        if type(module) in _CONSTANT_LAYERS:
            return _Node("const", _CONSTANT_LAYERS[type(module)](module))
        if isinstance(module, nn.MaxPool2d):
            return _Node("const", maxpool_constant(module.kernel_size, module.stride, module.dilation))
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            _batchnorm_scale(name, module)  # fail early on a layer without running statistics
            self._bn.append((name, module))
            return _Node("bn", len(self._bn) - 1)
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            if module not in shapes:
                raise UnsupportedLayerError(f"layer {name!r} ({module}) is never called in the forward pass")
            if isinstance(module, nn.Linear):
                apply = _linear_apply(module)
            elif isinstance(module, nn.Conv2d):
                apply = _conv_apply(name, module)
            else:
                apply = _pool_apply(module)
            operator = _PowerIteration(name, module, shapes[module], apply)
            if next(module.parameters(), None) is None:  # a fixed map: its norm is a constant, computed once
                return _Node("const", operator.converged(500, 1e-10) * (1 + 1e-5))
            self.operators.append(operator)
            return _Node("op", len(self.operators) - 1)
        raise UnsupportedLayerError(
            f"layer {name!r} ({type(module).__name__}) has no known Lipschitz bound; supported layers: {_SUPPORTED}"
        )

    def _find_head(self, node: _Node) -> None:
        while node.kind == "seq" and node.children:
            node = node.children[-1]
        if node.kind == "scale":
            self._find_head(node.children[0])
        elif node.kind == "op" and isinstance(self.operators[node.value]._layer[0], nn.Linear):
            self._head_node = node
            self.head = self.operators[node.value]._layer[0]

    # -- evaluation ---------------------------------------------------------------------------
    def _evaluate(self, node: _Node, op_value: Callable[[int], torch.Tensor], exclude_head: bool) -> torch.Tensor | float:
        if node is self._head_node and exclude_head:
            return 1.0
        if node.kind == "op":
            return op_value(node.value)
        if node.kind == "const":
            return node.value
        if node.kind == "bn":
            return _batchnorm_scale(*self._bn[node.value])
        inner = [self._evaluate(child, op_value, exclude_head) for child in node.children]
        if node.kind == "seq":
            return math.prod(inner, start=1.0)
        if node.kind == "res":
            return 1.0 + inner[0]
        return node.value * inner[0]  # scale

    def _check_head(self, exclude_head: bool) -> None:
        if exclude_head and self.head is None:
            raise UnsupportedLayerError("the pairwise bound needs a network that ends with an nn.Linear layer")

    def forward(self, exclude_head: bool = False) -> torch.Tensor:
        """Differentiable bound (scalar tensor): one power iteration per layer, vectors updated in place."""
        self._check_head(exclude_head)
        values = [op.sigma(1) for op in self.operators]
        result = self._evaluate(self._tree, lambda i: values[i], exclude_head)
        return torch.as_tensor(result, dtype=torch.float32, device=self._device())

    bound = forward

    @torch.no_grad()
    def exact(self, exclude_head: bool = False, max_iterations: int = 500, tol: float = 1e-10, safety: float = 1e-5) -> torch.Tensor:
        """The bound in float64 with every power iteration run to convergence (scalar tensor, detached).

        Each layer norm is raised by the relative margin ``safety`` so that it is not below the true
        norm once the iteration has converged to ``tol``.
        """
        self._check_head(exclude_head)
        values = [op.converged(max_iterations, tol) * (1 + safety) for op in self.operators]
        result = self._evaluate(self._tree, lambda i: values[i], exclude_head)
        return torch.as_tensor(result, dtype=torch.float64, device=self._device()).detach().double()

    def _device(self) -> torch.device:
        return self.operators[0].vector.device if len(self.operators) else torch.device("cpu")


def _input_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[nn.Module, tuple[int, ...]]:
    """The per-example input shape of every leaf layer, recorded from one forward pass in eval mode."""
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(module: nn.Module, args: tuple) -> None:
        shapes.setdefault(module, tuple(args[0].shape[1:]))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules()]
    modes = [m.training for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=model_device(model), dtype=model_dtype(model)))
    finally:
        for hook in hooks:
            hook.remove()
        for m, mode in zip(model.modules(), modes):
            m.train(mode)
    return shapes


def operator_norm(layer: nn.Module, input_shape: tuple[int, ...], max_iterations: int = 500, tol: float = 1e-10) -> float:
    """The L2 operator norm of one linear layer (``Linear``, ``Conv2d``, average pooling; bias ignored) on
    inputs of shape ``input_shape``, by converged float64 power iteration (a value, not a bound: see
    :meth:`LipschitzBound.exact` for the inflated bound)."""
    bound = LipschitzBound(nn.Sequential(layer), input_shape)
    if not len(bound.operators):
        return float(bound._tree.children[0].value)
    return bound.operators[0].converged(max_iterations, tol)
