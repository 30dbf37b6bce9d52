"""Recognise a model or weights file by its content: magic bytes, zip member names, the safetensors
header, an ONNX protobuf parse. The file name's extension is never consulted.

Kinds: ``"torch-save"`` (a ``torch.save`` zip archive: a state dict, a mistered checkpoint or pickled
objects), ``"torch-legacy"`` (the pre-1.6 ``torch.save`` format), ``"pickle"`` (a bare Python pickle),
``"torchscript"``, ``"torch-export"`` (a ``torch.export.save`` ``.pt2`` archive), ``"safetensors"``,
``"onnx"``, ``"zip"`` (some other zip archive), ``"empty"`` and ``"unknown"``.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from pathlib import Path

from ..errors import CheckpointError

__all__ = [
    "EMPTY",
    "ONNX",
    "PICKLE",
    "SAFETENSORS",
    "TORCH_EXPORT",
    "TORCH_LEGACY",
    "TORCH_SAVE",
    "TORCHSCRIPT",
    "UNKNOWN",
    "ZIP",
    "KIND_NAMES",
    "archive_members",
    "sniff",
    "sniff_bytes",
]

TORCH_SAVE = "torch-save"
TORCH_LEGACY = "torch-legacy"
PICKLE = "pickle"
TORCHSCRIPT = "torchscript"
TORCH_EXPORT = "torch-export"
SAFETENSORS = "safetensors"
ONNX = "onnx"
ZIP = "zip"
EMPTY = "empty"
UNKNOWN = "unknown"

KIND_NAMES = {
    TORCH_SAVE: "a torch.save file",
    TORCH_LEGACY: "a torch.save file (legacy format)",
    PICKLE: "a Python pickle",
    TORCHSCRIPT: "a TorchScript archive",
    TORCH_EXPORT: "a torch.export .pt2 archive",
    SAFETENSORS: "a safetensors file",
    ONNX: "an ONNX model",
    ZIP: "a zip archive",
    EMPTY: "an empty file",
    UNKNOWN: "a file of unknown format",
}

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# torch.save's legacy format starts with the pickled magic number 0x1950a86a20f9469cfc6c (protocol 2, LONG1).
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_HEAD = 64
# first tag byte of ModelProto fields 2-8 (producer, version, domain, model_version, doc, graph, opset), 14, 20, 25
_ONNX_NEXT_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA}


def archive_members(archive: zipfile.ZipFile) -> list[str]:
    """Member names relative to the archive's one top-level folder (``torch.save`` and ``torch.export``
    put everything under ``<name>/``); unchanged when there is no single top folder."""
    names = archive.namelist()
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) == 1 and all("/" in name for name in names):
        return [name.split("/", 1)[1] for name in names]
    return names


def _zip_kind(members: list[str]) -> str:
    if "archive_format" in members or "serialized_exported_program.json" in members:
        return TORCH_EXPORT
    if any(m.startswith("models/") and m.endswith(".json") for m in members):
        return TORCH_EXPORT
    if "constants.pkl" in members and any(m.startswith("code/") for m in members):
        return TORCHSCRIPT
    if "data.pkl" in members:
        return TORCH_SAVE
    return ZIP


def _safetensors_kind(head: bytes, size: int, where: str) -> str | None:
    """``SAFETENSORS`` when ``head`` starts a safetensors file; raises when it starts one but is broken."""
    if len(head) < 9 or head[8:9] != b"{":
        return None
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len < 2 or header_len > 100_000_000:
        return None
    if header_len > size - 8:
        raise CheckpointError(f"{where} is a corrupt or truncated safetensors file (its header runs past the end)")
    return SAFETENSORS


def _check_safetensors_header(path: Path, where: str) -> None:
    with open(path, "rb") as file:
        (header_len,) = struct.unpack("<Q", file.read(8))
        header = file.read(header_len)
    try:
        parsed = json.loads(header)
    except (UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(
            f"{where} is a corrupt safetensors file (its JSON header does not parse: {error})"
        ) from None
    if not isinstance(parsed, dict):
        raise CheckpointError(f"{where} is a corrupt safetensors file (its header is not a JSON object)")


def _is_onnx(data: bytes) -> bool:
    """Whether ``data`` parses as an ONNX ModelProto with an IR version, an opset and a graph of nodes."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.ModelProto.FromString(data)
    except (DecodeError, ValueError, RuntimeError):
        return False
    return model.ir_version > 0 and len(model.opset_import) > 0 and len(model.graph.node) > 0


def _looks_like_onnx(head: bytes) -> bool:
    """Whether ``head`` starts as ONNX writers start a ModelProto: field 1 (``ir_version``, a small varint)
    followed by the tag of another ModelProto field (producer, domain, graph, opset_import...)."""
    return len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 30 and head[2] in _ONNX_NEXT_TAGS


def _head_kind(head: bytes) -> str | None:
    if head.startswith(_LEGACY_MAGIC):
        return TORCH_LEGACY
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return PICKLE
    return None


def _classify_zip(source: Path | io.BytesIO, where: str) -> str:
    """The kind of a file that starts with a zip header. Its directory must describe an archive that starts
    at byte 0: a truncated archive that holds another archive (``torch.export`` stores ``torch.save`` files
    inside) would otherwise be read as the inner one, whose directory is the last one left."""
    try:
        with zipfile.ZipFile(source) as archive:
            infos = archive.infolist()
            if infos and min(info.header_offset for info in infos) != 0:
                raise zipfile.BadZipFile("its directory does not describe the archive at the start of the file")
            return _zip_kind(archive_members(archive))
    except zipfile.BadZipFile as error:
        raise CheckpointError(f"{where} is corrupt or truncated (a broken zip archive: {error})") from None


def sniff_bytes(data: bytes, where: str) -> str:
    """The kind of an in-memory file (a member of an archive): a zip kind, ``"torch-legacy"``,
    ``"pickle"``, ``"empty"`` or ``"unknown"``; see :func:`sniff`."""
    if not data:
        return EMPTY
    if data.startswith(_ZIP_MAGIC):
        return _classify_zip(io.BytesIO(data), where)
    return _head_kind(data[:_HEAD]) or UNKNOWN


def sniff(path: str | os.PathLike, where: str | None = None) -> str:
    """The kind of the file at ``path``, from its content (see the module docstring for the kinds).

    ``where`` names the file in messages (default: its quoted path).

    Raises:
        CheckpointError: the file does not exist, or it starts like a zip archive or a safetensors
            file but is corrupt or truncated.
    """
    path = Path(path)
    where = where or repr(str(path))
    if not path.is_file():
        raise CheckpointError(f"{where} does not exist")
    size = path.stat().st_size
    if size == 0:
        return EMPTY
    with open(path, "rb") as file:
        head = file.read(_HEAD)
    if head.startswith(_ZIP_MAGIC):
        return _classify_zip(path, where)
    kind = _head_kind(head) or _safetensors_kind(head, size, where)
    if kind == SAFETENSORS:
        _check_safetensors_header(path, where)
    if kind is not None:
        return kind
    if not head.startswith(b"\x08"):  # protobuf writers put field 1 (ir_version, always set) first
        return UNKNOWN
    if _is_onnx(path.read_bytes()):
        return ONNX
    if _looks_like_onnx(head):
        raise CheckpointError(f"{where} is a corrupt or truncated ONNX model (it does not parse as an ONNX ModelProto)")
    return UNKNOWN
