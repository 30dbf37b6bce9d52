"""Datasets: the bundled real-MNIST subset (offline default) and loaders for MNIST, Fashion-MNIST, CIFAR-10.

Every loader returns :class:`LabeledImages` with float32 images ``(N, C, H, W)`` in ``[0, 1]``.
"""

from .idx import read_idx, write_idx
from .labeled import LabeledImages, iterate_batches
from .loaders import DATASETS, default_root, load_dataset

__all__ = ["LabeledImages", "iterate_batches", "load_dataset", "DATASETS", "default_root", "read_idx", "write_idx"]
