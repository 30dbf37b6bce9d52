"""Data held in memory: the bundled 5,000 MNIST digits, and Debian's Fashion-MNIST package (small, offline)."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .dataset import DataSource
from .idx import read_idx
from .labeled import LabeledImages
from .torchvision_data import load_torchvision

__all__ = ["DEBIAN_FASHION_MNIST", "load_mnist_5k", "load_fashion_mnist"]

logger = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_DEBIAN_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _from_uint8(images: np.ndarray, labels: np.ndarray, name: str, source: DataSource) -> LabeledImages:
    """uint8 ``(N, H, W)`` pixels and integer labels -> :class:`LabeledImages` with images ``(N, 1, H, W)``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    y = torch.from_numpy(np.asarray(labels).astype(np.int64))
    return LabeledImages(x.float().div_(255.0).contiguous(), y, 10, name, source)


def load_mnist_5k(split: str, root: Path | None = None, download: bool = False) -> LabeledImages:
    """The bundled 4,000 train / 1,000 test MNIST digits (``root`` and ``download`` are not used)."""
    asset = resources.files("mistered.data") / "assets" / "mnist_5k.npz"
    with resources.as_file(asset) as path, np.load(path) as archive:
        index = archive[f"{split}_idx"].astype(np.int64)
        source = DataSource("bundled", "mnist-5k", split)
        return _from_uint8(archive["images"][index], archive["labels"][index], f"mnist-5k/{split}", source)


def load_fashion_mnist(split: str, root: Path | None = None, download: bool = False):
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package when installed and ``root`` is not given
    (in memory), else from torchvision (lazily)."""
    files = [DEBIAN_FASHION_MNIST / f for f in _DEBIAN_FILES[split]]
    if root is None and all(f.is_file() for f in files):
        logger.info("loading Fashion-MNIST (%s) from %s", split, DEBIAN_FASHION_MNIST)
        source = DataSource("debian", "fashion-mnist", split, str(DEBIAN_FASHION_MNIST))
        return _from_uint8(read_idx(files[0]), read_idx(files[1]), f"fashion-mnist/{split}", source)
    hint = f", or install it offline with `apt-get install dataset-fashion-mnist` (files in {DEBIAN_FASHION_MNIST})"
    return load_torchvision("fashion-mnist", split, root, download, hint)
