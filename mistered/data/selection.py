"""Which examples a run uses: ``select`` (``--n``, ``--indices``), the :class:`Selection` view, ``indices_hash``."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInputError
from .dataset import LabeledDataset

__all__ = ["Selection", "select", "read_indices", "indices_hash"]


class Selection(LabeledDataset):
    """Some examples of ``parent``, in the order of :attr:`indices`; read on demand like the parent.

    Attributes:
        parent: the dataset selected from (never itself a :class:`Selection`: selections of selections
            are flattened, so :attr:`indices` always index the loaded dataset).
        indices: ``list[int]`` into ``parent``, distinct.
        notes: what the user must be told about the selection (e.g. ``--n`` larger than the dataset).
    """

    def __init__(self, parent: LabeledDataset, indices: list[int], notes: tuple[str, ...] = ()) -> None:
        super().__init__(parent.name, parent.num_classes, parent.sample_shape, parent.source)
        self.parent, self.indices, self.notes = parent, indices, notes
        self._index = torch.tensor(indices, dtype=torch.int64)
        self._labels = parent.labels[self._index]

    @property
    def labels(self) -> torch.Tensor:
        """int64 ``(n,)``: the parent's labels at :attr:`indices`."""
        return self._labels

    def images_at(self, index: torch.Tensor) -> torch.Tensor:
        """float32 ``(B, C, H, W)``: the parent's images at ``indices[index]``."""
        return self.parent.images_at(self._index[index])


def read_indices(path: str | os.PathLike) -> list[int]:
    """Indices from a file: ``.npy`` (an integer array), a JSON list, or text with one integer per line.

    Blank lines and lines starting with ``#`` are skipped in text files.

    Raises:
        InvalidInputError: a missing or unreadable file, or an entry that is not an integer (named).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"indices file {str(path)!r} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise InvalidInputError(f"{path.name}: not a readable .npy array: {error}") from None
        if array.ndim != 1 or array.dtype.kind not in "iu":
            raise InvalidInputError(
                f"{path.name}: indices must be a 1-D integer array, got {array.dtype} {array.shape}"
            )
        return array.tolist()
    text = path.read_text()
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise InvalidInputError(f"{path.name}: not a valid JSON list: {error}") from None
        bad = next((i for i, v in enumerate(values) if not isinstance(v, int) or isinstance(v, bool)), None)
        if bad is not None:
            raise InvalidInputError(f"{path.name}: entry {bad} of the JSON list is not an integer: {values[bad]!r}")
        return values
    indices = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                indices.append(int(line))
            except ValueError:
                raise InvalidInputError(f"{path.name}: line {number} is not an integer: {line!r}") from None
    return indices


def _check_indices(indices: Sequence[int], n: int, name: str) -> list[int]:
    """``indices`` as ints; raises InvalidInputError naming the first negative, out-of-range or repeated one."""
    seen: dict[int, int] = {}
    checked = []
    for position, value in enumerate(indices):
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise InvalidInputError(f"index {value!r} at position {position} is not an integer")
        value = int(value)
        if value < 0:
            raise InvalidInputError(f"index {value} at position {position} is negative")
        if value >= n:
            raise InvalidInputError(
                f"index {value} at position {position} is out of range for the {n} examples of {name} (0..{n - 1})"
            )
        if value in seen:
            raise InvalidInputError(f"index {value} appears twice, at positions {seen[value]} and {position}")
        seen[value] = position
        checked.append(value)
    return checked


def select(
    dataset: LabeledDataset, n: int | None = None, indices: Sequence[int] | str | os.PathLike | None = None
) -> Selection:
    """The examples a run uses: ``indices`` (a list or a file, see :func:`read_indices`), then the first ``n``.

    Args:
        dataset: what to select from (a :class:`Selection` is flattened into its parent).
        n: keep the first ``n`` (of ``indices`` if given, else of the dataset); more than there are keeps
            them all and says so in ``notes``. ``None``: all.
        indices: positions in ``dataset``, in the order to use them; negative, out-of-range and repeated
            indices are refused.

    Raises:
        InvalidInputError: a bad index (the first one is named), ``n < 1``, or an empty selection.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, Integral) or n < 1):
        raise InvalidInputError(f"n must be a positive integer, got {n!r}")
    if isinstance(indices, (str, os.PathLike)):
        chosen = _check_indices(read_indices(indices), len(dataset), dataset.name)
    elif indices is not None:
        values = indices.tolist() if isinstance(indices, (torch.Tensor, np.ndarray)) else list(indices)
        chosen = _check_indices(values, len(dataset), dataset.name)
    else:
        chosen = list(range(len(dataset)))
    what = "indices" if indices is not None else "examples"
    notes = ()
    if n is not None and n > len(chosen):
        notes = (f"--n {n} is larger than the {len(chosen)} {what}: all {len(chosen)} are used",)
    chosen = chosen[:n] if n is not None else chosen
    if not chosen:
        raise InvalidInputError(f"the selection from {dataset.name} is empty: no {what} to use")
    if isinstance(dataset, Selection):
        chosen, notes = [dataset.indices[i] for i in chosen], dataset.notes + notes
        dataset = dataset.parent
    return Selection(dataset, chosen, notes)


def indices_hash(indices: Sequence[int]) -> str:
    """SHA-256 (hex) of the indices as little-endian int64, in order: names a selection in results."""
    return hashlib.sha256(np.asarray(list(indices), dtype="<i8").tobytes()).hexdigest()
