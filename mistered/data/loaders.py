"""``load_dataset``: one entry point for every data source (a name, an image folder, an ``.npz``, a ``.pt``).

Names: ``"mnist-5k"`` (bundled, offline, the default), ``"fashion-mnist"`` (Debian package or torchvision),
``"mnist"``, ``"cifar10"``, ``"cifar100"``, ``"svhn"`` (torchvision). Anything else is a path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import DatasetNotFoundError, InvalidInputError
from .bundled import DEBIAN_FASHION_MNIST, load_fashion_mnist, load_mnist_5k
from .dataset import SPLITS, LabeledDataset
from .imagefolder import load_image_folder
from .npz import load_npz
from .pt import load_pt
from .resize import Resized, image_size_tuple
from .torchvision_data import TORCHVISION, default_root, load_torchvision

__all__ = ["DATASETS", "SPLITS", "DEBIAN_FASHION_MNIST", "FILE_LOADERS", "default_root", "load_dataset"]


def _torchvision(name: str) -> Callable[[str, Path | None, bool], LabeledDataset]:
    return lambda split, root, download: load_torchvision(name, split, root, download)


DATASETS: dict[str, Callable[[str, Path | None, bool], LabeledDataset]] = {
    "mnist-5k": load_mnist_5k,
    "fashion-mnist": load_fashion_mnist,
    **{name: _torchvision(name) for name in TORCHVISION if name != "fashion-mnist"},
}
FILE_LOADERS = {".npz": load_npz, ".pt": load_pt, ".pth": load_pt}


def _load_path(spec: str, split: str, image_size: tuple[int, int] | None) -> LabeledDataset:
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_image_folder(path, split, spec, image_size)
    kinds = f"a name ({', '.join(DATASETS)}), an image folder, or an .npz, .pt or .pth file"
    if path.suffix.lower() in FILE_LOADERS and path.is_file():
        return FILE_LOADERS[path.suffix.lower()](path, split, spec)
    if path.exists():
        raise InvalidInputError(f"cannot read {spec!r} as data: give {kinds}")
    if "/" in spec or os.sep in spec or path.suffix:
        raise DatasetNotFoundError(f"{spec!r} does not exist; give {kinds}")
    raise InvalidInputError(f"unknown dataset {spec!r}; give {kinds}")


def load_dataset(
    source: str | os.PathLike = "mnist-5k",
    split: str = "test",
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    image_size: int | Sequence[int] | None = None,
) -> LabeledDataset:
    """Load a labelled image dataset from a name or a path; images are read when a batch asks for them.

    Args:
        source: a name: ``"mnist-5k"`` (5,000 real MNIST digits bundled with the package: a fixed stratified
            split of 4,000 train / 1,000 test digits, every block of 10 holding each class once),
            ``"fashion-mnist"`` (from ``/usr/share/datasets/fashion-mnist`` when the Debian package
            ``dataset-fashion-mnist`` is installed and ``root`` is not given, else torchvision), ``"mnist"``,
            ``"cifar10"``, ``"cifar100"``, ``"svhn"`` (torchvision); or a path: an image folder
            (``root/<class>/<image>``, optionally split into ``train/`` and ``test/``), an ``.npz`` or a
            ``.pt``/``.pth`` file of images and labels. A name wins over a folder of that name (write ``./name``).
        split: ``"train"`` or ``"test"``. A folder or file without splits is one split (``source.notes`` says so).
        root: folder of torchvision datasets; default ``$MISTERED_DATA`` or ``~/.cache/mistered/data``.
        download: let torchvision download missing files (needs internet). Never done unless asked.
        image_size: ``N`` or ``(H, W)``: resize every image (bilinear, antialiased) as it is read; required
            for an image folder whose images differ in size.

    Returns:
        a :class:`LabeledDataset`: ``dataset[i]`` is float32 ``(C, H, W)`` in ``[0, 1]`` and an int label;
        ``dataset.labels`` int64 ``(N,)``; ``dataset.source.notes`` says how the data were read. The bundled
        ``mnist-5k`` and Debian's Fashion-MNIST are :class:`~mistered.data.LabeledImages` (in memory, with
        ``.images``) unless resized.

    Raises:
        InvalidInputError: unknown name or split, a file that cannot be used (the message says why).
        DatasetNotFoundError: the data are not on this machine (the message says how to get them).
    """
    spec = os.fspath(source)
    if split not in SPLITS:
        raise InvalidInputError(f"unknown split {split!r} for dataset {spec!r}; choose 'train' or 'test'")
    size = image_size_tuple(image_size)
    if spec in DATASETS:
        dataset = DATASETS[spec](split, Path(root) if root is not None else None, download)
    elif root is not None:
        raise InvalidInputError(
            f"root is only used with torchvision names ({', '.join(TORCHVISION)}), not with {spec!r}"
        )
    else:
        dataset = _load_path(spec, split, size)
    if size is not None and tuple(dataset.sample_shape[1:]) != size:
        dataset = Resized(dataset, size)
    return dataset
