"""torchvision's datasets (MNIST, Fashion-MNIST, CIFAR-10/100, SVHN), converted to floats a batch at a time.

torchvision keeps the uint8 pixels in memory (CIFAR-10's train split: 150 MB); mistered indexes them and
makes float32 images only for the batch being read. Nothing is downloaded unless ``download=True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .._compat import import_torchvision
from ..errors import DatasetNotFoundError
from .arrays import ArrayDataset, from_arrays
from .dataset import DataSource

__all__ = ["TORCHVISION", "default_root", "load_torchvision"]


@dataclass(frozen=True)
class _Entry:
    cls: str  # the torchvision.datasets class
    files: str  # where torchvision looks for the files, below root
    split_arg: bool = False  # takes split="train"|"test" (SVHN) rather than train=True|False


TORCHVISION = {
    "mnist": _Entry("MNIST", "MNIST/raw/ (the four *-ubyte files)"),
    "fashion-mnist": _Entry("FashionMNIST", "FashionMNIST/raw/ (the four *-ubyte files)"),
    "cifar10": _Entry("CIFAR10", "cifar-10-batches-py/ (the extracted cifar-10-python.tar.gz)"),
    "cifar100": _Entry("CIFAR100", "cifar-100-python/ (the extracted cifar-100-python.tar.gz)"),
    "svhn": _Entry("SVHN", "{split}_32x32.mat", split_arg=True),
}


def default_root() -> Path:
    """Where torchvision datasets live: ``$MISTERED_DATA`` or ``~/.cache/mistered/data``."""
    return Path(os.environ.get("MISTERED_DATA") or Path.home() / ".cache" / "mistered" / "data")


def load_torchvision(name: str, split: str, root: Path | None, download: bool, hint: str = "") -> ArrayDataset:
    """torchvision's ``name`` dataset (a key of :data:`TORCHVISION`) for ``split``, read lazily.

    Args:
        root: the folder torchvision reads (default :func:`default_root`).
        download: let torchvision download missing files (needs internet).
        hint: appended to the "not found" message (another way to get the files).

    Raises:
        DatasetNotFoundError: the files are not under ``root`` (the message says where they go and how to
            download them), or the download failed.
    """
    entry, root = TORCHVISION[name], root or default_root()
    split_kwargs = {"split": split} if entry.split_arg else {"train": split == "train"}
    try:
        dataset = getattr(import_torchvision().datasets, entry.cls)(str(root), download=download, **split_kwargs)
    except RuntimeError as error:
        raise DatasetNotFoundError(
            f"{name} ({split}) was not found under {str(root)!r} ({error}); pass download=True (CLI: --download) "
            f"with internet access, or put the files at {root / entry.files.format(split=split)}{hint}"
        ) from None
    except OSError as error:
        raise DatasetNotFoundError(f"{name} could not be downloaded to {str(root)!r}: {error}") from None
    labels = dataset.labels if entry.split_arg else dataset.targets
    source = DataSource("torchvision", name, split, str(root))
    return from_arrays(dataset.data, labels, name=f"{name}/{split}", source=source, what=name,
                       num_classes=len(getattr(dataset, "classes", range(10))), say_layout=False)
