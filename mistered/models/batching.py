"""Running a graph that accepts only some batch sizes on any batch size.

A ``torch.export`` program exported with a static batch dimension, or an ONNX model whose input
declares a fixed batch size, accepts only that many examples (a dynamic dimension may still have
bounds). :class:`ChunkedModule` runs such a graph in chunks of the largest accepted size and pads a
chunk that is too small by repeating its last example; the padded rows' outputs are dropped, so in
eval mode (examples independent of each other) the result is what one big batch would give, and
gradients flow to the inputs as usual. In training mode a chunk is never padded (padding would
change batch statistics): the batch size must then be a multiple of the accepted size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import InvalidInputError

__all__ = ["ChunkedModule", "run_in_chunks"]


def _pad(piece: torch.Tensor, size: int) -> torch.Tensor:
    """``piece`` ``(m, ...)`` grown to ``(size, ...)`` by repeating its last row (zeros when ``m == 0``)."""
    if piece.shape[0] == 0:
        return piece.new_zeros((size, *piece.shape[1:]))
    return torch.cat([piece, piece[-1:].expand(size - piece.shape[0], *piece.shape[1:])])


def run_in_chunks(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    low: int,
    high: int | None,
    training: bool,
) -> torch.Tensor:
    """``forward`` on ``x`` ``(B, ...)``, called only with batch sizes in ``[low, high]`` (``high=None``:
    no upper bound); returns the concatenated outputs ``(B, ...)``.

    Raises:
        InvalidInputError: in ``training`` mode, a chunk would need padding; or ``forward`` does not
            return one tensor.
    """
    batch = x.shape[0]
    if low <= batch and (high is None or batch <= high):
        return forward(x)
    chunk = batch if high is None else min(batch, high)
    outputs = []
    for start in range(0, max(batch, 1), max(chunk, 1)):
        piece = x[start : start + chunk]
        rows = piece.shape[0]
        if rows < low:
            if training:
                accepted = f"{low}" if high == low else f"{low} to {high if high is not None else 'any number'}"
                raise InvalidInputError(
                    f"the model runs batches of {accepted} examples; in training mode a batch of {rows} cannot be "
                    f"padded: use a batch size that is a multiple of {high or low}"
                )
            piece = _pad(piece, low)
        out = forward(piece)
        if not isinstance(out, torch.Tensor):
            raise InvalidInputError(f"the model returned a {type(out).__name__}, not a tensor of logits")
        outputs.append(out[:rows])
    return torch.cat(outputs)


class ChunkedModule(nn.Module):
    """``inner`` run through :func:`run_in_chunks` with the accepted batch sizes ``[low, high]``.

    The submodules, parameters and buffers of ``inner`` are registered on this module under their
    own names, so ``state_dict()`` keys are those of ``inner``, and ``.to()``/``.train()``/``.eval()``
    reach them; ``inner`` itself (:attr:`wrapped_module`) is held outside the module tree (an exported
    program's module refuses ``train()``). ``.to()`` also moves plain tensor attributes of ``inner``
    (lifted constants).

    Args:
        inner: a module mapping ``(b, C, H, W)`` to ``(b, K)`` for ``b`` in ``[low, high]``.
        low, high: the accepted batch sizes (``high=None``: no upper bound).

    Raises:
        InvalidInputError: ``inner`` has a top-level member whose name this wrapper uses itself.
    """

    def __init__(self, inner: nn.Module, low: int = 1, high: int | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "_wrapped_module", inner)
        self._batch_low, self._batch_high = max(1, int(low)), high
        members = [*inner._modules, *inner._parameters, *inner._buffers]
        taken = [name for name in members if hasattr(self, name)]
        if taken:
            raise InvalidInputError(f"the model has members named {taken}, names its wrapper uses")
        for name, child in inner.named_children():
            self.add_module(name, child)
        for name, param in inner._parameters.items():
            if param is not None:
                self.register_parameter(name, param)
        for name, buffer in inner._buffers.items():
            if buffer is not None:
                self.register_buffer(name, buffer, persistent=name not in inner._non_persistent_buffers_set)

    @property
    def wrapped_module(self) -> nn.Module:
        """The wrapped module (shares every parameter and buffer with this one)."""
        return self._wrapped_module

    @property
    def batch_sizes(self) -> tuple[int, int | None]:
        """The accepted batch sizes ``(low, high)`` of the wrapped module."""
        return self._batch_low, self._batch_high

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        super()._apply(fn, recurse)
        self._wrapped_module._parameters.update(self._parameters)
        self._wrapped_module._buffers.update(self._buffers)
        for module in self._wrapped_module.modules():
            for key, value in list(vars(module).items()):
                if isinstance(value, torch.Tensor):
                    object.__setattr__(module, key, fn(value))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, H, W)`` -> ``(B, K)``, for any ``B``."""
        return run_in_chunks(self._wrapped_module, x, self._batch_low, self._batch_high, self.training)

    def extra_repr(self) -> str:
        low, high = self.batch_sizes
        return f"batch_sizes=({low}, {high})"
