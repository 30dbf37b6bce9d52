"""How memory claims (e.g. "never materialises B×out×in") are checked: the largest tensor any operator produces,
and, for code a dispatch mode cannot see (``torch.compile``-d kernels), the growth of the process's peak RSS."""

from __future__ import annotations

import re
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["LargestTensor", "peak_rss_growth"]


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


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"{field}:\s+(\d+)", status.read()).group(1))


def peak_rss_growth(fn: Callable[[], object]) -> int | None:
    """Bytes by which the process's peak resident memory during ``fn()`` exceeds its resident memory before.

    The kernel's peak (``VmHWM``) is reset through ``/proc/self/clear_refs`` first. Tensors above glibc's mmap
    threshold (32 MB at most) get fresh pages, so a large intermediate shows at its full size, compiled or not
    (the allocations of inductor's generated code are invisible to a TorchDispatchMode, not to the RSS).
    Linux only: returns ``None`` where the peak cannot be reset.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return None
    before = _rss_kib("VmRSS")
    fn()
    return (_rss_kib("VmHWM") - before) * 1024
