"""The JSON record every command writes, and the folder it goes to.

A record is schema-versioned and holds the settings, the inputs (model and data sources with their sha256,
the hash of the selected indices), the git commit of a checkout, package versions, device and timings.
Out folders are checked before any work starts and never overwritten silently.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import secrets
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .device import describe_device
from .errors import InvalidInputError
from .io import atomic_write_json

__all__ = [
    "SCHEMA_VERSION", "fraction", "finite_or_none", "package_versions", "git_info", "input_record", "make_record",
    "write_record", "default_out_dir", "prepare_out_dir",
]

SCHEMA_VERSION = 1
_PACKAGES = ("mistered", "torch", "torchvision", "kornia", "lpips", "piq", "torchattacks", "ortools", "numpy")


def fraction(mask: torch.Tensor) -> float:
    """The exact fraction of true entries of a bool tensor (``count / n`` in float64; 0.0 when empty),
    so that reported accuracies compare exactly across commands and with re-computations."""
    return int(mask.sum()) / mask.numel() if mask.numel() else 0.0


def finite_or_none(value: float) -> float | None:
    """``value``, or ``None`` where it is infinite or NaN (JSON has neither; e.g. the infinite certified radius
    of a model whose prediction no perturbation changes)."""
    return value if math.isfinite(value) else None


def package_versions() -> dict[str, str]:
    """Installed versions of mistered and the packages its results depend on."""
    versions = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_info(path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git checkout holding ``path`` (default: this package), or
    ``None`` when it is not in a checkout, not tracked by it (a package installed in a virtual environment that
    sits inside some other repository), or git is not installed. ``dirty``: tracked files have changes."""
    where = str(Path(path) if path is not None else Path(__file__).resolve().parent)

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", where, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit or git("ls-files", "--error-unmatch", ".") is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def input_record(model: torch.nn.Module | None = None, data: Any = None) -> dict[str, Any]:
    """Where a run's inputs came from: ``{"model": ModelSource.to_json() (spec, kind, sha256, weights and their
    sha256, model_args, the mean/std folded in), "data": DataSource.to_json(), "n": examples used,
    "indices_sha256": hash of the selected indices}``; keys whose object lacks the information are left out."""
    record: dict[str, Any] = {}
    source = getattr(model, "mistered_source", None)
    if source is not None:
        record["model"] = source.to_json()
    if data is not None:
        if getattr(data, "source", None) is not None:
            record["data"] = data.source.to_json()
        record["n"] = len(data)
        indices = getattr(data, "indices", None)
        if indices is not None:
            from .data import indices_hash

            record["indices_sha256"] = indices_hash(list(indices))
    return record


def make_record(
    command: str,
    settings: dict[str, Any],
    device: torch.device,
    timings: dict[str, float],
    summary: dict[str, Any],
    examples: list[dict[str, Any]] | None = None,
    *,
    inputs: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Assemble a results record (``schema_version``, ``command``, ``settings``, ``inputs`` (see
    :func:`input_record`), ``git`` (see :func:`git_info`), ``versions``, ``device``, ``timings`` in seconds,
    ``summary``, per-example ``examples`` and any ``extra`` sections)."""
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "inputs": inputs or {},
        "git": git_info(),
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


def default_out_dir(command: str, root: str | os.PathLike = "mistered-out") -> Path:
    """Create and return a new folder ``<root>/<command>-<UTC time>-<random>/``.

    The random suffix and the creation with ``exist_ok=False`` make two runs started in the same second
    (or by processes of one ``torchrun``) never share a folder.
    """
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    Path(root).mkdir(parents=True, exist_ok=True)
    while True:
        path = Path(root) / f"{command}-{stamp}-{secrets.token_hex(3)}"
        try:
            path.mkdir(exist_ok=False)
            return path
        except FileExistsError:
            continue


def prepare_out_dir(out: str | os.PathLike | None, command: str, *, resume: bool = False) -> Path:
    """Check (and create) the folder a run writes to, before any work starts.

    ``out=None`` makes a new :func:`default_out_dir`. An existing folder must be empty unless ``resume``
    (nothing is overwritten silently); ``resume`` needs an existing folder.

    Raises:
        InvalidInputError: the path is a file, cannot be created or written, already holds files (without
            ``resume``), or does not exist (with ``resume``).
    """
    if out is None:
        if resume:
            raise InvalidInputError("--resume needs the folder of the run to continue: --resume DIR or --out DIR")
        try:
            return default_out_dir(command)
        except OSError as error:
            raise InvalidInputError(f"cannot create the default out folder in {os.getcwd()!r} ({error.strerror}); "
                                    "pass --out DIR") from None
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InvalidInputError(f"--out {str(out)!r} is a file, not a folder; choose a folder")
    if resume and not path.is_dir():
        raise InvalidInputError(f"cannot resume {str(out)!r}: no such folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise InvalidInputError(f"--out {str(out)!r} cannot be written ({error.strerror or error}); "
                                "choose a folder you can write to") from None
    if not resume and any(path.iterdir()):
        raise InvalidInputError(f"--out {str(out)!r} already holds files; choose a new folder, or pass --resume to "
                                "continue the run saved there")
    return path
