"""Image folders: ``root/<class>/<image>`` (optionally ``root/train/...`` and ``root/test/...``), decoded per batch.

Classes are the sorted subfolder names (as torchvision's ``ImageFolder``); files are found recursively below
each class folder. Every image's header is read once at load time (size and mode, no decoding), so a folder
of mixed sizes or an unreadable file is refused before anything runs. Mixed grayscale and colour images are
all converted to the majority's mode (colour on a tie), and the notes say how many were converted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InvalidInputError
from .dataset import DataSource, LabeledDataset
from .resize import resize_images

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "load_image_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
_GRAY_MODES = {"1", "L", "LA", "La"}
_COLOR_MODES = {"RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}
_ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "PA"}


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def _split_folder(root: Path, split: str) -> tuple[Path, list[str], str]:
    """The folder holding ``split``, the class names, and a note on which folder was used."""
    has = {name: (root / name).is_dir() for name in ("train", "test")}
    if all(has.values()):
        classes = sorted(set(_subfolders(root / "train")) | set(_subfolders(root / "test")))
        return root / split, classes, f"{root.name}: {split} split from {split}/ (classes of train/ and test/ together)"
    if any(has.values()):
        present, absent = ("train", "test") if has["train"] else ("test", "train")
        raise InvalidInputError(
            f"{root}: has {present}/ but no {absent}/; give both (root/train/<class>/..., root/test/<class>/...) "
            f"or point at {present}/ itself"
        )
    note = f"{root.name}: no train/ and test/ subfolders, so the folder is one split (used as {split!r})"
    return root, _subfolders(root), note


def _list_images(folder: Path, classes: list[str]) -> tuple[list[Path], list[int], list[str]]:
    files, labels, notes = [], [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).rglob("*") if _is_image(p)) if (folder / name).is_dir() else []
        files += found
        labels += [label] * len(found)
        if not found:
            notes.append(f"{folder.name}: class {name!r} has no images in this split")
    loose = [p.name for p in folder.iterdir() if _is_image(p)]
    if loose and not classes:
        raise InvalidInputError(
            f"{folder}: images must sit in one subfolder per class ({folder}/<class>/<image>); "
            f"found {loose[0]!r} and {len(loose) - 1} more directly in the folder"
        )
    if loose:
        notes.append(f"{folder.name}: {len(loose)} image(s) directly in the folder, outside any class, were ignored")
    if not files:
        raise InvalidInputError(
            f"no images found in {folder}: expected {folder}/<class>/<image> with one of {', '.join(IMAGE_EXTENSIONS)}"
        )
    return files, labels, notes


def _headers(files: list[Path], folder: Path) -> tuple[list[str], list[tuple[int, int]]]:
    """Modes and sizes ``(H, W)`` of ``files``, read from their headers only."""
    modes, sizes = [], []
    for path in files:
        try:
            with Image.open(path) as image:
                modes.append(image.mode)
                sizes.append((image.height, image.width))
        except OSError as error:
            raise InvalidInputError(f"{folder}: cannot read image {path.relative_to(folder)}: {error}") from None
        if image.mode not in _GRAY_MODES | _COLOR_MODES:
            raise InvalidInputError(
                f"{folder}: {path.relative_to(folder)} has PIL mode {image.mode!r} (16-bit or float pixels); "
                "only 8-bit grayscale and colour images are read: convert it to 8 bits"
            )
    return modes, sizes


def _common_mode(files: list[Path], modes: list[str], folder: Path) -> tuple[str, list[str]]:
    """``"L"`` or ``"RGB"`` (the majority; colour on a tie), and notes on conversions and dropped alpha."""
    gray = [i for i, mode in enumerate(modes) if mode in _GRAY_MODES]
    mode = "L" if 2 * len(gray) > len(modes) else "RGB"
    minority = [i for i, m in enumerate(modes) if (m in _GRAY_MODES) != (mode == "L")]
    notes = []
    if minority:
        kind = "colour" if mode == "L" else "grayscale"
        example = files[minority[0]].relative_to(folder)
        notes.append(
            f"{folder.name}: {len(minority)} of {len(modes)} images are {kind} (e.g. {example}) "
            f"and were converted to {'grayscale' if mode == 'L' else 'RGB'}, the mode of the majority"
        )
    alpha = sum(m in _ALPHA_MODES for m in modes)
    if alpha:
        notes.append(f"{folder.name}: the alpha channel of {alpha} image(s) was dropped")
    return mode, notes


def _common_size(files: list[Path], sizes: list[tuple[int, int]], folder: Path) -> tuple[int, int]:
    for path, size in zip(files, sizes):
        if size != sizes[0]:
            (h0, w0), (h, w) = sizes[0], size
            raise InvalidInputError(
                f"{folder}: images differ in size: {files[0].relative_to(folder)} is {h0}x{w0} but "
                f"{path.relative_to(folder)} is {h}x{w} (height x width); pass image_size (CLI: --image-size N) "
                "to resize them all"
            )
    return sizes[0]


class ImageFolderDataset(LabeledDataset):
    """Image files with labels, decoded (and resized to ``size``) when a batch asks for them."""

    def __init__(self, files: list[Path], labels: list[int], mode: str, size: tuple[int, int], classes: list[str],
                 name: str, source: DataSource) -> None:
        super().__init__(name, len(classes), (1 if mode == "L" else 3, *size), source)
        self.files, self.mode, self.size, self.classes = files, mode, size, classes
        self._labels = torch.tensor(labels, dtype=torch.int64)

    @property
    def labels(self) -> torch.Tensor:
        """int64 ``(N,)``: class indices into :attr:`classes`."""
        return self._labels

    def _decode(self, path: Path) -> torch.Tensor:
        try:
            with Image.open(path) as image:
                pixels = np.array(image.convert(self.mode))
        except OSError as error:
            raise InvalidInputError(f"cannot decode image {path}: {error}") from None
        x = torch.from_numpy(pixels)
        x = (x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)).to(torch.float32).div_(255.0)
        return resize_images(x.unsqueeze(0), self.size)[0]

    def images_at(self, index: torch.Tensor) -> torch.Tensor:
        """float32 ``(B, C, H, W)`` in ``[0, 1]``, decoded now."""
        if not index.numel():
            return torch.empty(0, *self.sample_shape)
        return torch.stack([self._decode(self.files[int(i)]) for i in index])


def load_image_folder(root: Path, split: str, spec: str, image_size: tuple[int, int] | None) -> ImageFolderDataset:
    """Load the image folder ``root`` (see the module docstring for the layout) for ``split``.

    Args:
        image_size: ``(H, W)`` to resize every image to; ``None``: all images must share one size.

    Raises:
        InvalidInputError: no images, images outside class folders only, unreadable or 16-bit images,
            mixed sizes without ``image_size`` (naming two files and their sizes), train/ without test/.
    """
    root = root.absolute()
    folder, classes, split_note = _split_folder(root, split)
    files, labels, notes = _list_images(folder, classes)
    modes, sizes = _headers(files, folder)
    mode, mode_notes = _common_mode(files, modes, folder)
    size = image_size or _common_size(files, sizes, folder)
    notes = [split_note, f"{folder.name}: {len(files)} images in {len(classes)} classes, read as {mode}", *mode_notes,
             *notes]
    if image_size is not None and any(s != image_size for s in sizes):
        notes.append(f"{folder.name}: images resized to {size[0]}x{size[1]} (height x width; bilinear, antialiased)")
    source = DataSource("imagefolder", spec, split, str(root), tuple(notes))
    return ImageFolderDataset(files, labels, mode, size, classes, f"imagefolder:{spec} ({split})", source)
