"""The JSON record every command writes: schema-versioned, with settings, versions, device and timings."""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .device import describe_device
from .io import atomic_write_json

__all__ = ["SCHEMA_VERSION", "fraction", "package_versions", "make_record", "write_record", "default_out_dir"]

SCHEMA_VERSION = 1
_PACKAGES = ("mistered", "torch", "torchvision", "kornia", "lpips", "piq", "torchattacks", "ortools", "numpy")


def fraction(mask: torch.Tensor) -> float:
    """The exact fraction of true entries of a bool tensor (``count / n`` in float64; 0.0 when empty),
    so that reported accuracies compare exactly across commands and with re-computations."""
    return int(mask.sum()) / mask.numel() if mask.numel() else 0.0


def package_versions() -> dict[str, str]:
    """Installed versions of mistered and the packages its results depend on."""
    versions = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def make_record(
    command: str,
    settings: dict[str, Any],
    device: torch.device,
    timings: dict[str, float],
    summary: dict[str, Any],
    examples: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Assemble a results record (``schema_version``, ``command``, ``settings``, ``versions``, ``device``,
    ``timings`` in seconds, ``summary``, per-example ``examples`` and any ``extra`` sections)."""
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "versions": package_versions(),
        "device": {"name": describe_device(device), "platform": platform.platform()},
        "timings": timings,
        "summary": summary,
    }
    record.update(extra)
    if examples is not None:
        record["examples"] = examples
    return record


def write_record(out_dir: str | Path, record: dict[str, Any], name: str = "results.json") -> Path:
    """Atomically write ``record`` to ``out_dir/name``; returns the path."""
    return atomic_write_json(Path(out_dir) / name, record)


def default_out_dir(command: str) -> Path:
    """``./mistered-out/<command>-<UTC time>/``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("mistered-out") / f"{command}-{stamp}"
