"""Measure the largest tensor any operator produces: how memory claims (e.g. "never materialises B×out×in") are checked."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["LargestTensor"]


class LargestTensor(TorchDispatchMode):
    """Context manager recording the largest tensor produced inside it, forward and backward.

    Attributes:
        numel: elements of the largest tensor seen; ``bytes``: its size in bytes.

    Example:
        >>> a, b = torch.ones(3, 40), torch.ones(40, 5)
        >>> with LargestTensor() as meter:
        ...     _ = a @ b
        >>> meter.numel, meter.bytes
        (15, 60)
    """

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.numel = max(self.numel, tensor.numel())
                self.bytes = max(self.bytes, tensor.numel() * tensor.element_size())
        return out
