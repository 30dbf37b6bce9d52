"""Weights-only loading of ``torch.save`` files, and why a file was refused, told from its content.

``torch.load(..., weights_only=True)`` never runs code from the file. When it fails, the file is
examined without unpickling it (``pickletools`` walks the opcodes; zip CRCs are checked) to say
whether it is corrupt or holds pickled Python objects that mistered will not unpickle.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from ..errors import CheckpointError
from .sniff import PICKLE, TORCH_LEGACY, archive_members

__all__ = ["load_weights_only", "pickle_globals"]

_STRING_OPS = {
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_EXT_OPS = {"EXT1", "EXT2", "EXT4"}
# What torch.save writes for tensors and plain containers; every other global is named in a refusal.
_PLAIN_MODULES = ("torch._utils", "torch._tensor", "torch.serialization", "torch.storage", "torch.nn.parameter")
_PLAIN_GLOBALS = {
    "collections.OrderedDict",
    "builtins.set",
    "builtins.frozenset",
    "builtins.bytearray",
    "builtins.slice",
    "builtins.complex",
    "torch.Size",
    "torch.device",
}
_LEGACY_PICKLES = 4  # magic number, protocol version, system info, then the object


def _one_pickle_globals(stream: IO[bytes]) -> Iterator[str]:
    """The ``module.name`` globals one pickle on ``stream`` refers to (raises ``ValueError`` when malformed)."""
    recent: list[str | None] = []
    memo: dict[int, str | None] = {}
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            yield str(arg).replace(" ", ".")
        elif name == "STACK_GLOBAL":
            module, attr = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
            yield f"{module}.{attr}" if isinstance(module, str) and isinstance(attr, str) else "<unknown global>"
        elif name in _EXT_OPS:
            yield f"<extension code {arg}>"
        if name in _STRING_OPS:
            recent.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
        elif name in _PUT_OPS or name == "MEMOIZE":
            memo[len(memo) if name == "MEMOIZE" else int(arg)] = recent[-1] if recent else None
        elif name in _GET_OPS:
            recent.append(memo.get(int(arg)))
        else:
            recent.append(None)
        del recent[:-2]


def pickle_globals(stream: IO[bytes], count: int = 1) -> list[str]:
    """The globals referred to by the next ``count`` pickles on ``stream``, in order, without unpickling.

    Raises:
        ValueError: a pickle is malformed or truncated.
    """
    found: list[str] = []
    for _ in range(count):
        found += [g for g in _one_pickle_globals(stream) if g not in found]
    return found


def _is_plain(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    module = "builtins" if module == "__builtin__" else module  # protocol 2 names builtins the Python 2 way
    name = f"{module}.{attr}"
    if name in _PLAIN_GLOBALS or module in _PLAIN_MODULES:
        return True
    return module == "torch" and (attr.endswith("Storage") or isinstance(getattr(torch, attr, None), torch.dtype))


def _globals_of(source: Path | bytes, kind: str) -> list[str]:
    """Every global the file's pickles refer to; raises ``ValueError``/``BadZipFile`` when it is corrupt."""
    opened = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    with opened as file:
        if kind == PICKLE:
            return pickle_globals(file)
        if kind == TORCH_LEGACY:
            return pickle_globals(file, _LEGACY_PICKLES)
        with zipfile.ZipFile(file) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"member {bad!r} fails its CRC check")
            names = dict(zip(archive_members(archive), archive.namelist()))
            if "data.pkl" not in names:
                raise ValueError("it has no data.pkl")
            with archive.open(names["data.pkl"]) as pickled:
                return pickle_globals(io.BytesIO(pickled.read()))


def _refusal(source: Path | bytes, kind: str, where: str, error: BaseException | None) -> CheckpointError:
    """The error for a file that ``weights_only=True`` would not (or did not) load, decided from its content."""
    try:
        names = _globals_of(source, kind)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as problem:
        return CheckpointError(f"{where} is corrupt or truncated ({problem})")
    objects = [name for name in names if not _is_plain(name)]
    if objects:
        shown = ", ".join(objects[:4]) + (f" and {len(objects) - 4} more" if len(objects) > 4 else "")
        return CheckpointError(
            f"{where} was refused: it holds pickled Python objects ({shown}), and unpickling them could run "
            "code; mistered reads only tensors and plain containers (weights_only=True). Save "
            "model.state_dict() instead and give the architecture with --model file.py:Class --weights FILE"
        )
    if kind == PICKLE:
        return CheckpointError(
            f"{where} is a bare Python pickle, not a torch.save or safetensors file; mistered does not unpickle it"
        )
    detail = str(error).strip().splitlines()[0] if error is not None and str(error).strip() else "unreadable"
    return CheckpointError(f"{where} is corrupt or unreadable ({detail})")


def load_weights_only(source: Path | bytes, kind: str, where: str) -> Any:
    """``torch.load(source, weights_only=True, map_location="cpu")`` for a ``torch.save`` file.

    Args:
        source: the file, or its bytes (a member of an archive).
        kind: its kind from :mod:`~mistered.models.sniff` (``"torch-save"``, ``"torch-legacy"`` or ``"pickle"``).
        where: how to name it in messages, e.g. ``"weights 'w.pt'"``.

    Raises:
        CheckpointError: a bare pickle (never unpickled), pickled Python objects (naming their classes),
            or a corrupt or truncated file (saying so).
    """
    if kind == PICKLE:
        raise _refusal(source, kind, where, None)
    try:
        opened = io.BytesIO(source) if isinstance(source, bytes) else source
        return torch.load(opened, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure of the safe loader is explained from the content
        raise _refusal(source, kind, where, error) from None
