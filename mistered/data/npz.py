"""``.npz`` datasets. An uncompressed member (``np.savez``) is read in place, only the rows a batch needs.

An ``.npz`` is a zip of ``.npy`` files. A member stored without compression is a plain ``.npy`` at a known
offset inside the zip, so rows are read from the file at ``offset + i * row_bytes`` with ``os.preadv``; the
process's memory stays flat however large the file (the pages go to the kernel's page cache, not to the
process, as they would with ``np.memmap``). A compressed member (``np.savez_compressed``) is loaded whole.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from .arrays import ArrayDataset, from_arrays, pick_keys
from .dataset import DataSource

__all__ = ["StoredArray", "load_npz"]

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then file name and extra field lengths at bytes 26-29
_LOCAL_SIGNATURE = b"PK\x03\x04"


class StoredArray:
    """A C-ordered array stored raw at ``offset`` in ``path``, indexed by int64 arrays along its first axis.

    ``array[index]`` reads the rows ``index`` (any order, repeats allowed) with one ``preadv`` per run of
    consecutive rows, straight into a fresh ``np.ndarray`` of shape ``(len(index), *shape[1:])``.
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self._file = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}  # file handles do not pickle (DataLoader workers re-open)

    def _read_into(self, first: int, buffer: memoryview) -> None:
        """Fill ``buffer`` (whole rows) with the rows from ``first`` on."""
        if self._file is None:
            self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 (kept open for the dataset's life)
        position = self.offset + first * self.row_bytes
        if hasattr(os, "preadv"):
            done = os.preadv(self._file.fileno(), [buffer], position)
        else:  # Windows: no positional reads
            self._file.seek(position)
            done = self._file.readinto(buffer)
        if done != len(buffer):
            last = first + len(buffer) // self.row_bytes - 1
            raise InvalidInputError(f"{str(self.path)!r} is truncated: rows {first}..{last} are missing")

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        rows = np.empty((len(index), *self.shape[1:]), dtype=self.dtype)
        buffer = memoryview(rows).cast("B")
        breaks = [0, *(np.flatnonzero(np.diff(ordered) != 1) + 1).tolist(), len(index)]
        for start, stop in zip(breaks[:-1], breaks[1:]):
            if stop > start:
                self._read_into(int(ordered[start]), buffer[start * self.row_bytes : stop * self.row_bytes])
        if np.array_equal(order, np.arange(len(index))):
            return rows
        out = np.empty_like(rows)
        out[order] = rows
        return out


def _member_data_start(file, info: zipfile.ZipInfo, path: Path) -> int:
    file.seek(info.header_offset)
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(file.read(_LOCAL_HEADER.size))
    if signature != _LOCAL_SIGNATURE:
        raise InvalidInputError(f"{path.name}: member {info.filename!r} has a corrupt zip header")
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


def _stored_member(path: Path, info: zipfile.ZipInfo) -> StoredArray | None:
    """The member as a :class:`StoredArray`, or ``None`` if it cannot be read in place (Fortran order...)."""
    with open(path, "rb") as file:
        start = _member_data_start(file, info, path)
        file.seek(start)
        try:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(file)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(file)
            else:
                return None
        except ValueError as error:
            raise InvalidInputError(f"{path.name}: member {info.filename!r} is not a valid .npy: {error}") from None
        offset = file.tell()
    if fortran_order or dtype.hasobject or not shape:
        return None
    array = StoredArray(path, offset, tuple(shape), dtype)
    if offset - start + array.row_bytes * shape[0] > info.file_size:
        raise InvalidInputError(f"{path.name}: member {info.filename!r} is truncated")
    return array


def _load_member(path: Path, key: str):
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:  # object arrays (pickles) are refused
        raise InvalidInputError(f"{path.name}: cannot read {key!r}: {error}") from None


def _open_images(path: Path, archive: zipfile.ZipFile, key: str) -> tuple[object, str]:
    info = archive.getinfo(f"{key}.npy")
    stored = _stored_member(path, info) if info.compress_type == zipfile.ZIP_STORED else None
    if stored is not None:
        return stored, f"{path.name}: {key!r} is stored uncompressed and is read in place, a batch at a time"
    why = "compressed" if info.compress_type != zipfile.ZIP_STORED else "not a plain C-ordered array"
    return _load_member(path, key), (
        f"{path.name}: {key!r} is {why}, so it was loaded whole into memory (save with np.savez to stream it)"
    )


def load_npz(path: Path, split: str, spec: str) -> ArrayDataset:
    """Load ``path`` (an ``.npz`` of images and labels) as an :class:`~mistered.data.arrays.ArrayDataset`.

    Keys: see :func:`~mistered.data.arrays.pick_keys`; layouts: see :func:`~mistered.data.arrays.detect_layout`.

    Raises:
        InvalidInputError: not a zip/npz, no images or labels key (the message lists the keys found), bad
            dtypes or shapes, float pixels outside ``[0, 1]``.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise InvalidInputError(f"{str(path)!r} is not a readable .npz file: {error}") from None
    with archive:
        keys = [n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy")]
        image_key, label_key, note = pick_keys(keys, split, path.name)
        images, how = _open_images(path, archive, image_key)
    source = DataSource("npz", spec, split, str(path.resolve()), (note, how))
    return from_arrays(images, _load_member(path, label_key), name=f"npz:{path} ({split})", source=source,
                       what=path.name)
