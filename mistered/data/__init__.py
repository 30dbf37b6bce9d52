"""Datasets from anywhere: bundled MNIST, torchvision names, image folders, ``.npz`` and ``.pt`` files.

:func:`load_dataset` returns a :class:`LabeledDataset` (float32 images ``(C, H, W)`` in ``[0, 1]``, int
labels, read on demand); :func:`select` picks the examples a run uses, :func:`make_loader` streams them in
batches (split across distributed ranks), :func:`materialize` brings a small selection into memory as
:class:`LabeledImages`.
"""

from .dataset import DataSource, LabeledDataset
from .idx import read_idx, write_idx
from .labeled import LabeledImages, iterate_batches, materialize
from .loader import Loader, make_loader
from .loaders import DATASETS, default_root, load_dataset
from .selection import Selection, indices_hash, read_indices, select

__all__ = [
    "DataSource",
    "LabeledDataset",
    "LabeledImages",
    "Selection",
    "Loader",
    "load_dataset",
    "select",
    "read_indices",
    "indices_hash",
    "make_loader",
    "materialize",
    "iterate_batches",
    "DATASETS",
    "default_root",
    "read_idx",
    "write_idx",
]
