"""The base every dataset loader returns: :class:`LabeledDataset`, and :class:`DataSource`, where its data came from.

A dataset yields float32 images ``(C, H, W)`` in ``[0, 1]`` and integer labels; it need not hold its images in
memory (an ``.npz`` is read in place, an image folder decodes each file when asked).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..errors import InvalidInputError

__all__ = ["SPLITS", "DataSource", "LabeledDataset", "as_index"]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DataSource:
    """Where a dataset's examples come from, and what the user must be told about how they were read.

    Attributes:
        kind: ``"bundled"``, ``"torchvision"``, ``"debian"``, ``"imagefolder"``, ``"npz"``, ``"pt"``, or
            ``"memory"`` (a :class:`~mistered.data.LabeledImages` built in code).
        spec: what the user gave (a name or a path, as written).
        split: ``"train"`` or ``"test"`` (``""`` for tensors built in code).
        path: the resolved file or folder, or ``None`` (bundled data, torchvision's default root...).
        notes: sentences for the user, e.g. ``"images.npz: uint8 HWC detected, scaled by 1/255"``.
    """

    kind: str
    spec: str
    split: str
    path: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def with_note(self, note: str) -> DataSource:
        """A copy with ``note`` appended to :attr:`notes`."""
        return replace(self, notes=(*self.notes, note))

    def to_json(self) -> dict:
        """A JSON-ready dict: ``kind``, ``spec``, ``split``, ``path``, ``notes`` (a list)."""
        return {"kind": self.kind, "spec": self.spec, "split": self.split, "path": self.path, "notes": list(self.notes)}


def as_index(indices: torch.Tensor | np.ndarray | Sequence[int] | int) -> torch.Tensor:
    """``indices`` as a 1-D int64 tensor (an ``int`` becomes a tensor of one element)."""
    if isinstance(indices, torch.Tensor):
        return indices.reshape(-1).to(torch.int64)
    if isinstance(indices, np.ndarray):
        return torch.from_numpy(indices.reshape(-1).astype(np.int64))
    if not isinstance(indices, Sequence):
        return torch.tensor([operator.index(indices)], dtype=torch.int64)
    return torch.as_tensor([operator.index(i) for i in indices], dtype=torch.int64)


class LabeledDataset(torch.utils.data.Dataset):
    """Labelled images, read on demand; the base of every dataset :func:`~mistered.data.load_dataset` returns.

    Subclasses set the attributes below (through ``__init__``) and implement :attr:`labels` and
    :meth:`images_at`.

    Attributes:
        name: e.g. ``"mnist-5k/test"`` or ``"imagefolder:/data/pets (test)"``.
        num_classes: the number of classes ``K``; labels lie in ``[0, K)``.
        sample_shape: ``(C, H, W)`` of every image.
        source: the :class:`DataSource` (its ``notes`` say how the files were read).
    """

    def __init__(self, name: str, num_classes: int, sample_shape: tuple[int, int, int], source: DataSource) -> None:
        self.name = name
        self.num_classes = int(num_classes)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.source = source

    @property
    def labels(self) -> torch.Tensor:
        """int64 ``(N,)``, all labels at once (cheap: no image is decoded)."""
        raise NotImplementedError

    def images_at(self, index: torch.Tensor) -> torch.Tensor:
        """float32 ``(B, C, H, W)`` in ``[0, 1]``: the images of the examples ``index`` (int64 ``(B,)``, valid)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """Example ``i`` (negative counts from the end): float32 ``(C, H, W)`` in ``[0, 1]`` and its label."""
        n = len(self)
        i = operator.index(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for the {n} examples of {self.name}")
        i %= n
        index = torch.tensor([i])
        return self.images_at(index)[0], int(self.labels[i])

    def get_batch(self, indices: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images float32 ``(B, C, H, W)`` and labels int64 ``(B,)`` of the examples ``indices`` (in that order)."""
        index = as_index(indices)
        n = len(self)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
            bad = int(index[(index < 0) | (index >= n)][0])
            raise InvalidInputError(f"index {bad} is out of range for the {n} examples of {self.name}")
        return self.images_at(index), self.labels[index]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, n={len(self)}, shape={self.sample_shape}, K={self.num_classes})"
