"""Reader and writer for the IDX format of MNIST and Fashion-MNIST (plain or gzip-compressed).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), the
dimensions as big-endian 32-bit integers, then the data in C order, big-endian.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..io import atomic_write

__all__ = ["read_idx", "write_idx"]

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES: dict[str, int] = {dtype.newbyteorder("=").str[1:]: code for code, dtype in _DTYPES.items()}


def _read_bytes(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            return file.read()
    except (OSError, EOFError) as error:
        raise InvalidInputError(f"cannot read IDX file {str(path)!r}: {error}") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` is decompressed) into an array in native byte order.

    Returns:
        e.g. ``uint8`` of shape ``(N, 28, 28)`` for an image file, ``(N,)`` for a label file.

    Raises:
        InvalidInputError: the file is not a well-formed IDX file (the message says why).
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise InvalidInputError(f"{str(path)!r} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = _DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InvalidInputError(f"IDX file {str(path)!r} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise InvalidInputError(
            f"IDX file {str(path)!r} holds {len(raw) - header} data bytes but its header {shape} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Atomically write ``array`` (uint8, int8, int16, int32, float32 or float64) as IDX; ``.gz`` compresses."""
    array = np.ascontiguousarray(array)
    key = array.dtype.newbyteorder("=").str[1:]
    if key not in _CODES:
        raise InvalidInputError(
            f"IDX cannot store dtype {array.dtype}; use one of uint8, int8, int16, int32, float32, float64"
        )
    code = _CODES[key]
    payload = (
        bytes([0, 0, code, array.ndim])
        + np.asarray(array.shape, dtype=">u4").tobytes()
        + array.astype(_DTYPES[code]).tobytes()
    )
    path = Path(path)
    data = gzip.compress(payload, mtime=0) if path.suffix == ".gz" else payload
    return atomic_write(path, lambda f: f.write(data))
