"""``load_dataset``: the bundled MNIST subset, Debian's Fashion-MNIST and torchvision's loaders.

Names: ``"mnist-5k"`` (bundled, offline, the default), ``"fashion-mnist"``, ``"mnist"``, ``"cifar10"``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .._compat import import_torchvision
from ..errors import DatasetNotFoundError, InvalidInputError
from .idx import read_idx
from .labeled import LabeledImages

__all__ = ["DATASETS", "SPLITS", "DEBIAN_FASHION_MNIST", "default_root", "load_dataset"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_DEBIAN_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def default_root() -> Path:
    """Where torchvision datasets live: ``$MISTERED_DATA`` or ``~/.cache/mistered/data``."""
    return Path(os.environ.get("MISTERED_DATA") or Path.home() / ".cache" / "mistered" / "data")


def _from_uint8(images: np.ndarray | torch.Tensor, labels, name: str) -> LabeledImages:
    """uint8 ``(N, H, W)`` or ``(N, H, W, C)`` pixels and integer labels -> :class:`LabeledImages`."""
    x = torch.as_tensor(np.asarray(images))
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    return LabeledImages(x.float().div_(255.0).contiguous(), y, 10, name)


def _mnist_5k(split: str, root: Path | None, download: bool) -> LabeledImages:
    asset = resources.files("mistered.data") / "assets" / "mnist_5k.npz"
    with resources.as_file(asset) as path, np.load(path) as archive:
        index = archive[f"{split}_idx"].astype(np.int64)
        return _from_uint8(archive["images"][index], archive["labels"][index], f"mnist-5k/{split}")


def _torchvision(cls_name: str, name: str, hint: str) -> Callable[[str, Path | None, bool], LabeledImages]:
    def load(split: str, root: Path | None, download: bool) -> LabeledImages:
        root = root or default_root()
        datasets = import_torchvision().datasets
        try:
            dataset = getattr(datasets, cls_name)(str(root), train=split == "train", download=download)
        except RuntimeError as error:
            raise DatasetNotFoundError(
                f"{name} ({split}) was not found under {str(root)!r} ({error}); pass download=True "
                f"(CLI: --download) with internet access, or put the torchvision files there{hint}"
            ) from None
        except OSError as error:
            raise DatasetNotFoundError(f"{name} could not be downloaded to {str(root)!r}: {error}") from None
        return _from_uint8(dataset.data, dataset.targets, f"{name}/{split}")

    return load


def _fashion_mnist(split: str, root: Path | None, download: bool) -> LabeledImages:
    files = [DEBIAN_FASHION_MNIST / f for f in _DEBIAN_FILES[split]]
    if root is None and all(f.is_file() for f in files):
        logger.info("loading Fashion-MNIST (%s) from %s", split, DEBIAN_FASHION_MNIST)
        return _from_uint8(read_idx(files[0]), read_idx(files[1]), f"fashion-mnist/{split}")
    hint = f", or install it offline with `apt-get install dataset-fashion-mnist` (files in {DEBIAN_FASHION_MNIST})"
    return _torchvision("FashionMNIST", "fashion-mnist", hint)(split, root, download)


DATASETS: dict[str, Callable[[str, Path | None, bool], LabeledImages]] = {
    "mnist-5k": _mnist_5k,
    "fashion-mnist": _fashion_mnist,
    "mnist": _torchvision("MNIST", "mnist", ""),
    "cifar10": _torchvision("CIFAR10", "cifar10", ""),
}


def load_dataset(
    name: str = "mnist-5k", split: str = "test", root: str | os.PathLike | None = None, download: bool = False
) -> LabeledImages:
    """Load a labelled image dataset into memory.

    Args:
        name: ``"mnist-5k"`` (5,000 real MNIST digits bundled with the package: a fixed stratified split
            of 4,000 train / 1,000 test digits, ordered so that every block of 10 holds each class once),
            ``"fashion-mnist"`` (from ``/usr/share/datasets/fashion-mnist`` when the Debian package
            ``dataset-fashion-mnist`` is installed and ``root`` is not given, else torchvision),
            ``"mnist"``, ``"cifar10"`` (torchvision).
        split: ``"train"`` or ``"test"``.
        root: folder of torchvision datasets; default ``$MISTERED_DATA`` or ``~/.cache/mistered/data``.
        download: let torchvision download missing files (needs internet). Never done unless asked.

    Returns:
        :class:`LabeledImages` with float32 images ``(N, C, H, W)`` in ``[0, 1]`` (``C=1, H=W=28`` for the
        MNIST family, ``C=3, H=W=32`` for CIFAR-10) and int64 labels ``(N,)``.

    Raises:
        InvalidInputError: unknown name or split (the message lists the valid ones).
        DatasetNotFoundError: the data are not on this machine (the message says how to get them).
    """
    if name not in DATASETS:
        raise InvalidInputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise InvalidInputError(f"unknown split {split!r} for dataset {name!r}; choose 'train' or 'test'")
    return DATASETS[name](split, Path(root) if root is not None else None, download)
