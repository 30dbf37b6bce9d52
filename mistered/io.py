"""Atomic file writes and safe checkpoint loading.

Every file mistered writes goes to a temporary file in the destination folder, is flushed to disk,
then renamed into place (``os.replace`` is atomic on POSIX and Windows): a process killed half-way
never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from .errors import CheckpointError

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "atomic_torch_save", "safe_torch_load"]


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, then rename it onto ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give (the umask is honoured).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp_name, _default_file_mode())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (NaN/inf are refused: they are not JSON)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically ``torch.save`` ``obj`` (tensors, dicts, lists, numbers, strings only)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``; any failure becomes a :class:`CheckpointError`.

    A file that holds arbitrary pickled objects (which could run code when unpickled) is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unpickling failed"
        raise CheckpointError(
            f"checkpoint {str(path)!r} was refused: it is corrupt or holds objects other than tensors and "
            f"plain containers (possibly a hostile pickle); only weights-only checkpoints are loaded ({first_line})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or truncated: {error}") from None
