"""The canonical piecewise-linear form of a ReLU network: affine layers with a ReLU after every layer but the last.

Exact certifiers (GeoCert, LipMIP) and interval bounds work on this form, not on ``nn.Module``\\ s. It is built
from an ``nn.Sequential`` of ``Linear``, ``Conv2d`` (unrolled into its dense matrix), ``Flatten``, ``ReLU`` and
``BatchNorm1d/2d`` (eval statistics, folded), possibly nested and possibly wrapped in a
:class:`mistered.models.Normalized` (``.net``, ``.mean``, ``.std``; the normalisation is folded into the first
affine layer). Consecutive affine layers are merged, so the form has one layer per ReLU plus the output layer.
Any other piecewise-linear network (custom ``forward``, residual additions, pooling, concatenation ...) is traced
and lowered onto the same form by :mod:`.piecewise_lowering`.

Example:
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> pl = PiecewiseLinearNet.from_module(net, (1, 2, 2))
    >>> pl.layer_sizes
    [4, 3, 2]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import InvalidInputError, UnsupportedLayerError
from ...validation import check_layered_model

__all__ = ["PiecewiseLinearNet", "SUPPORTED_LAYERS", "check_piecewise_model"]

#: The layer types :meth:`PiecewiseLinearNet.from_module` understands.
SUPPORTED_LAYERS = (
    "Sequential, Linear, Conv2d, Flatten, ReLU, BatchNorm1d, BatchNorm2d (eval statistics), Identity, "
    "Dropout (identity at eval), a Normalized(net, mean, std) wrapper"
)
_CHUNK = 2048  # basis vectors pushed through a convolution at once when unrolling it


def check_piecewise_model(model: object) -> nn.Module:
    """Refuse (:class:`~mistered.errors.UnsupportedLayerError`) a model whose layers cannot be read: not an
    ``nn.Module``, or a TorchScript / ``torch.fx`` one. :meth:`PiecewiseLinearNet.from_module` names unsupported
    layers."""
    return check_layered_model(model, "the piecewise-linear form (GeoCert, the MIP distance, LipMIP)", SUPPORTED_LAYERS)


@dataclass
class PiecewiseLinearNet:
    """``f(x) = W_L relu(... relu(W_1 x + b_1) ...) + b_L`` on flattened inputs.

    Attributes:
        weights: ``[W_1, ..., W_L]``, ``W_i`` of shape ``(n_i, n_{i-1})``; ``n_0`` is the flattened input size.
        biases: ``[b_1, ..., b_L]``, ``b_i`` of shape ``(n_i,)``.
        input_shape: the shape of one unflattened input, e.g. ``(1, 28, 28)`` or ``(d,)``.
        carried: ``None`` (a plain chain), or per hidden layer a ``(n_i,)`` bool mask of the neurons that carry a
            value through the layer (:mod:`.piecewise_lowering`: a residual branch, the ``a`` of ``max(a, b)``)
            rather than decide a ReLU of the model; searches never need to split them.
    """

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    input_shape: tuple[int, ...]
    carried: list[torch.Tensor] | None = None

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if not self.weights or len(self.weights) != len(self.biases):
            raise InvalidInputError(
                f"a PiecewiseLinearNet needs as many biases as weights (at least one), got "
                f"{len(self.weights)} weights and {len(self.biases)} biases"
            )
        expected = math.prod(self.input_shape)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.dim() != 2 or b.shape != (w.shape[0],) or w.shape[1] != expected:
                raise InvalidInputError(
                    f"layer {i}: weight {tuple(w.shape)} and bias {tuple(b.shape)} do not chain with "
                    f"an input of size {expected}"
                )
            expected = w.shape[0]
        if self.carried is not None and [tuple(m.shape) for m in self.carried] != [(w.shape[0],) for w in self.weights[:-1]]:
            raise InvalidInputError("carried must hold one (n_i,) mask per hidden layer")

    # ------------------------------------------------------------------ basic properties
    @property
    def layer_sizes(self) -> list[int]:
        """``[n_0, n_1, ..., n_L]``: input size, hidden widths, number of outputs."""
        return [self.weights[0].shape[1]] + [w.shape[0] for w in self.weights]

    @property
    def in_features(self) -> int:
        return self.weights[0].shape[1]

    @property
    def out_features(self) -> int:
        return self.weights[-1].shape[0]

    @property
    def num_hidden(self) -> int:
        """Number of ReLU layers."""
        return len(self.weights) - 1

    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    def to(self, *args: Any, **kwargs: Any) -> PiecewiseLinearNet:
        """A copy moved/cast like ``Tensor.to`` (e.g. ``net.to(torch.float64)``, ``net.to("cuda")``)."""
        return PiecewiseLinearNet(
            [w.to(*args, **kwargs) for w in self.weights], [b.to(*args, **kwargs) for b in self.biases], self.input_shape,
            self.carried,
        )

    # ------------------------------------------------------------------ evaluation
    def flatten_input(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *input_shape)`` or ``(B, n_0)`` -> ``(B, n_0)`` in the net's dtype."""
        flat = x.flatten(1) if x.dim() > 1 else x.reshape(1, -1)
        if flat.shape[1] != self.in_features:
            raise InvalidInputError(
                f"input of shape {tuple(x.shape)} does not match the network's input shape {self.input_shape}"
            )
        return flat.to(self.dtype)

    def pre_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[z_1, ..., z_L]``: every layer's pre-activation ``(B, n_i)``; ``z_L`` are the logits."""
        h = self.flatten_input(x)
        out = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = torch.addmm(b, h, w.T)
            out.append(z)
            if i < self.num_hidden:
                h = z.clamp_min(0)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_L)`` of a batch ``(B, *input_shape)`` or ``(B, n_0)``."""
        return self.pre_activations(x)[-1]

    __call__ = forward

    def activation_pattern(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[(B, n_i) bool]`` per hidden layer: which ReLUs are active (pre-activation > 0)."""
        return [z > 0 for z in self.pre_activations(x)[:-1]]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_module(cls, module: nn.Module, input_shape: tuple[int, ...] | list[int]) -> PiecewiseLinearNet:
        """Convert an ``nn.Sequential`` of :data:`SUPPORTED_LAYERS` into its canonical form (any other ReLU network:
        :func:`~mistered.certify.graph.piecewise_lowering.as_plnet`, which lowers its traced graph).

        Args:
            module: the network; BatchNorm layers contribute their running statistics (eval behaviour).
            input_shape: the shape of one input without the batch dimension, e.g. ``(1, 28, 28)``.

        Raises:
            UnsupportedLayerError: naming the first layer outside :data:`SUPPORTED_LAYERS`.
        """
        check_piecewise_model(module)
        input_shape = tuple(int(s) for s in input_shape)
        param = next(iter(module.parameters()), None)
        dtype = param.dtype if param is not None else torch.get_default_dtype()
        device = param.device if param is not None else torch.device("cpu")
        builder = _Builder(input_shape, dtype, device)
        with torch.no_grad():
            builder.add(module, "")
            weights, biases = builder.finish()
        return cls(weights, biases, input_shape)


class _Builder:
    """Accumulates the affine map since the last ReLU (``None`` = identity) and the layers finished so far."""

    def __init__(self, input_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        self.shape = input_shape
        self.dtype, self.device = dtype, device
        self.w: torch.Tensor | None = None  # (n_cur, n_in_of_block) or None for identity
        self.b = torch.zeros(math.prod(input_shape), dtype=dtype, device=device)
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        self.after_relu = False

    # affine composition helpers ------------------------------------------------------
    def _matrix(self) -> torch.Tensor:
        if self.w is not None:
            return self.w
        return torch.eye(self.b.numel(), dtype=self.dtype, device=self.device)

    def _compose_linear_map(self, apply, out_shape: tuple[int, ...]) -> None:
        """Compose with a linear (bias-free) map ``apply`` acting on a batch of tensors of shape ``self.shape``."""
        w = self._matrix()
        cols = []
        for start in range(0, w.shape[1], _CHUNK):
            block = w[:, start : start + _CHUNK].T.reshape(-1, *self.shape)
            cols.append(apply(block).reshape(block.shape[0], -1).T)
        self.w = torch.cat(cols, dim=1)
        self.b = apply(self.b.reshape(1, *self.shape)).reshape(-1)
        self.shape = out_shape
        self.after_relu = False

    def _scale_shift(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Compose with ``x -> scale * x + shift`` (both flattened to ``self.shape``)."""
        self.w = scale[:, None] * self._matrix()
        self.b = scale * self.b + shift
        self.after_relu = False

    def _channelwise(self, scale: torch.Tensor, shift: torch.Tensor, where: str, layer: str) -> None:
        scale = scale.reshape(-1).to(self.dtype)
        shift = shift.reshape(-1).to(self.dtype)
        channels = self.shape[0]
        if scale.numel() == 1:
            scale, shift = scale.expand(channels), shift.expand(channels)
        if scale.numel() != channels:
            raise UnsupportedLayerError(
                f"{where} ({layer}) has {scale.numel()} channels but its input has shape {self.shape}"
            )
        spatial = math.prod(self.shape[1:])
        self._scale_shift(scale.repeat_interleave(spatial), shift.repeat_interleave(spatial))

    # layers ----------------------------------------------------------------------------
    def add(self, module: nn.Module, position: str) -> None:
        where = f"layer {position}" if position else "the network"
        name = type(module).__name__
        if all(hasattr(module, a) for a in ("net", "mean", "std")) and isinstance(module.net, nn.Module):
            mean = torch.as_tensor(module.mean, dtype=self.dtype, device=self.device)
            std = torch.as_tensor(module.std, dtype=self.dtype, device=self.device)
            self._channelwise(1.0 / std, -mean / std, where, name)
            self.add(module.net, position)
        elif isinstance(module, nn.Sequential):
            for i, child in enumerate(module):
                self.add(child, f"{position}.{i}" if position else str(i))
        elif isinstance(module, nn.Linear):
            if len(self.shape) != 1:
                raise UnsupportedLayerError(
                    f"{where} (Linear) receives an unflattened input of shape {self.shape}; add nn.Flatten() before it"
                )
            w = module.weight.to(self.dtype)
            self.w = w if self.w is None else w @ self.w
            self.b = w @ self.b + (module.bias.to(self.dtype) if module.bias is not None else 0)
            self.shape = (w.shape[0],)
            self.after_relu = False
        elif isinstance(module, nn.Conv2d):
            self._add_conv(module, where)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if module.running_mean is None or module.running_var is None:
                raise UnsupportedLayerError(f"{where} ({name}) has no running statistics (track_running_stats=False)")
            scale = torch.rsqrt(module.running_var.to(self.dtype) + module.eps)
            if module.weight is not None:
                scale = scale * module.weight.to(self.dtype)
            shift = -module.running_mean.to(self.dtype) * scale
            if module.bias is not None:
                shift = shift + module.bias.to(self.dtype)
            self._channelwise(scale, shift, where, name)
        elif isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                raise UnsupportedLayerError(f"{where} (Flatten) must flatten from dim 1 to -1")
            self.shape = (math.prod(self.shape),)
        elif isinstance(module, nn.ReLU):
            if self.after_relu and self.w is None:
                return  # relu(relu(x)) == relu(x)
            self.weights.append(self._matrix().clone())
            self.biases.append(self.b.clone())
            self.w, self.b = None, torch.zeros(self.b.numel(), dtype=self.dtype, device=self.device)
            self.after_relu = True
        elif isinstance(module, (nn.Identity, nn.Dropout)):
            return
        else:
            raise UnsupportedLayerError(
                f"{where} ({name}) is not supported by the piecewise-linear form; supported: {SUPPORTED_LAYERS}"
            )

    def _add_conv(self, conv: nn.Conv2d, where: str) -> None:
        if len(self.shape) != 3:
            raise UnsupportedLayerError(f"{where} (Conv2d) needs a (C, H, W) input, got shape {self.shape}")
        if conv.padding_mode != "zeros":
            raise UnsupportedLayerError(f"{where} (Conv2d) uses padding_mode={conv.padding_mode!r}; only 'zeros'")
        weight = conv.weight.to(self.dtype)

        def apply(t: torch.Tensor) -> torch.Tensor:
            return nn.functional.conv2d(t, weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)

        probe = apply(torch.zeros(1, *self.shape, dtype=self.dtype, device=self.device))
        self._compose_linear_map(apply, tuple(probe.shape[1:]))
        if conv.bias is not None:
            self.b = self.b + conv.bias.to(self.dtype).repeat_interleave(math.prod(self.shape[1:]))

    def finish(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(self.shape) != 1:
            self.shape = (math.prod(self.shape),)
        if self.after_relu or self.w is not None or not self.weights:
            self.weights.append(self._matrix().clone())
            self.biases.append(self.b.clone())
        return self.weights, self.biases
