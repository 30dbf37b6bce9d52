"""Device selection: CUDA when present, CPU otherwise; a device this machine lacks is an error naming what it has."""

from __future__ import annotations

import torch

from .errors import InvalidInputError

__all__ = ["resolve_device", "describe_device", "available_devices"]


def _accelerators() -> dict[str, int]:
    """Device type -> number of devices of that type usable here (CUDA, MPS, XPU)."""
    counts = {"cuda": torch.cuda.device_count() if torch.cuda.is_available() else 0}
    mps = getattr(torch.backends, "mps", None)
    counts["mps"] = 1 if mps is not None and mps.is_available() else 0
    xpu = getattr(torch, "xpu", None)
    counts["xpu"] = xpu.device_count() if xpu is not None and xpu.is_available() else 0
    return counts


def available_devices() -> list[str]:
    """The devices this machine can run on, e.g. ``["cpu"]`` or ``["cpu", "cuda:0", "cuda:1"]``."""
    names = ["cpu"]
    for kind, count in _accelerators().items():
        names += [kind] if kind == "mps" and count else [f"{kind}:{i}" for i in range(count)]
    return names


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The ``torch.device`` for ``device``, checked against this machine.

    ``None`` or ``"auto"`` gives ``cuda`` when available, else ``cpu``. Any other name must be a device this
    machine has: ``"cpu"``, ``"cuda"``/``"cuda:N"`` with ``N`` below the GPU count, ``"mps"`` where MPS is
    available, ``"xpu"``/``"xpu:N"`` likewise.

    Raises:
        InvalidInputError: an unknown name (e.g. ``"gpu"``) or a device this machine lacks, naming what it has.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    available = ", ".join(["auto", *available_devices()])
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidInputError(f"unknown device {str(device)!r}; available here: {available}") from None
    if resolved.type == "cpu":
        return resolved
    count = _accelerators().get(resolved.type)
    if count is None:
        raise InvalidInputError(f"device {str(device)!r} is not supported; available here: {available}")
    if count == 0:
        raise InvalidInputError(
            f"device {str(device)!r} was asked for but this machine has no {resolved.type.upper()} device; "
            f"available here: {available}"
        )
    if resolved.index is not None and resolved.index >= count:
        raise InvalidInputError(
            f"device {str(device)!r} was asked for but this machine has {count} {resolved.type.upper()} device(s); "
            f"available here: {available}"
        )
    return resolved


def describe_device(device: torch.device) -> str:
    """A human-readable description, e.g. ``"cuda:0 (NVIDIA H100)"`` or ``"cpu (2 threads)"``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
