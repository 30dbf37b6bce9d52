"""``.pt`` datasets: tensors saved with ``torch.save``, read with ``weights_only=True`` and memory-mapped.

The file holds a dict with an images and a labels tensor (keys as for ``.npz``) or an ``(images, labels)``
tuple. ``mmap=True`` maps the tensors instead of reading them: a batch reads only its rows. Mapped pages
that were read count in the process's resident memory until the kernel reclaims them (they are clean page
cache, dropped under memory pressure); an ``.npz`` saved with ``np.savez`` keeps the resident memory flat.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInputError
from .arrays import ArrayDataset, from_arrays, pick_keys
from .dataset import DataSource

__all__ = ["load_pt"]

_MMAP_REFUSED = "mmap can only be used"


def _unpickler_reason(error: Exception) -> str:
    """The line of torch's weights-only message that says what was refused (e.g. ``Unsupported global: ...``)."""
    marker = "WeightsUnpickler error:"
    text = str(error)
    reason = text.split(marker, 1)[1].strip() if marker in text else text.strip()
    return reason.split(". ", 1)[0].splitlines()[0] if reason else "unpickling failed"


def _torch_load(path: Path) -> tuple[object, str]:
    """The file's object, and a note on how it was read. Arbitrary pickles are refused (``weights_only``)."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True), (
                f"{path.name}: memory-mapped (weights_only=True)")
        except RuntimeError as error:
            if _MMAP_REFUSED not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True), (
                f"{path.name}: saved in torch's legacy format, which cannot be memory-mapped: loaded whole")
    except pickle.UnpicklingError as error:
        raise InvalidInputError(
            f"{str(path)!r} was refused: it is corrupt or holds objects other than tensors and plain containers "
            f"(possibly a hostile pickle); only weights_only=True files are read ({_unpickler_reason(error)})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise InvalidInputError(f"{str(path)!r} is not a readable torch.save file: {error}") from None


def _tensor(value, what: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise InvalidInputError(f"{what} must be a tensor, got {type(value).__name__}")
    return value


def load_pt(path: Path, split: str, spec: str) -> ArrayDataset:
    """Load ``path`` (a ``torch.save`` file of images and labels) as an :class:`~mistered.data.arrays.ArrayDataset`.

    Raises:
        InvalidInputError: a refused or corrupt file, contents other than a dict of images/labels or an
            ``(images, labels)`` pair, bad dtypes or shapes, float pixels outside ``[0, 1]``.
    """
    content, how = _torch_load(path)
    if isinstance(content, dict):
        image_key, label_key, note = pick_keys(content.keys(), split, path.name)
        images, labels = content[image_key], content[label_key]
    elif isinstance(content, (tuple, list)) and len(content) == 2:
        images, labels = content
        note = f"{path.name}: an (images, labels) pair; the file is one split (used as {split!r})"
    else:
        kind = type(content).__name__
        kind = f"a {kind} of {len(content)}" if isinstance(content, (tuple, list)) else kind
        raise InvalidInputError(
            f"{path.name}: expected a dict with images and labels tensors or an (images, labels) pair, got {kind}"
        )
    source = DataSource("pt", spec, split, str(path.resolve()), (note, how))
    return from_arrays(_tensor(images, f"{path.name}: images"), _tensor(labels, f"{path.name}: labels"),
                       name=f"pt:{path} ({split})", source=source, what=path.name)
