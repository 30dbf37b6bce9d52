"""Datasets over arrays of pixels (``.npz``, ``.pt``, torchvision's): layout detection, label checks, conversion.

Images may be stored as uint8 ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` (scaled by 1/255), or as
floats in ``[0, 1]`` in the same shapes; which layout was detected is written into the source's notes. Each
batch is converted to float32 ``(B, C, H, W)`` when it is read, so the floats of the whole set never exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidInputError
from .dataset import DataSource, LabeledDataset

__all__ = ["IMAGE_KEYS", "LABEL_KEYS", "Layout", "detect_layout", "labels_tensor", "pick_keys", "ArrayDataset",
           "from_arrays"]

IMAGE_KEYS = ("images", "x", "X", "data")
LABEL_KEYS = ("labels", "y", "Y", "targets")
_MAX_CHANNELS = 4
_CHECK_CHUNK_BYTES = 32 * 2**20


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_kind(dtype) -> str:
    """``"uint8"``, ``"float"``, ``"int"`` or ``"other"`` for a numpy or torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype == torch.uint8:
            return "uint8"
        if dtype.is_floating_point:
            return "float"
        return "other" if dtype in (torch.bool,) or dtype.is_complex else "int"
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return "uint8"
    return {"f": "float", "i": "int", "u": "int"}.get(dtype.kind, "other")


@dataclass(frozen=True)
class Layout:
    """How stored pixels map to float32 ``(B, C, H, W)`` in ``[0, 1]``.

    Attributes:
        axes: the stored layout, ``"NHW"``, ``"NHWC"`` or ``"NCHW"``.
        scale: divide by 255 (uint8 pixels).
        is_float: values are floats, used as they are (so their range must be checked).
        sample_shape: ``(C, H, W)`` after conversion.
        description: e.g. ``"uint8 HWC detected, scaled by 1/255"``.
    """

    axes: str
    scale: bool
    is_float: bool
    sample_shape: tuple[int, int, int]
    description: str

    def convert(self, rows: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Stored rows ``(B, *stored shape)`` -> float32 ``(B, C, H, W)``."""
        if isinstance(rows, np.ndarray):
            rows = torch.from_numpy(np.ascontiguousarray(rows, dtype=rows.dtype.newbyteorder("=")))
        if self.axes == "NHW":
            rows = rows.unsqueeze(1)
        elif self.axes == "NHWC":
            rows = rows.permute(0, 3, 1, 2)
        images = rows.to(torch.float32)
        return (images.div_(255.0) if self.scale else images).contiguous()


def detect_layout(shape: tuple[int, ...], dtype, what: str) -> Layout:
    """The :class:`Layout` of images of ``shape`` and ``dtype`` (numpy or torch), channels found by their count.

    A 4-D array holds its channels on axis 1 or 3, whichever has at most 4 entries; when both do (e.g.
    ``(N, 3, 3, 3)``) uint8 is taken as HWC (how image files decode) and floats as CHW (PyTorch's order).

    Raises:
        InvalidInputError: not uint8 nor floating point, no images, or a shape that fits no layout.
    """
    kind, name, shape = _dtype_kind(dtype), _dtype_name(dtype), tuple(int(s) for s in shape)
    if kind not in ("uint8", "float"):
        raise InvalidInputError(f"{what}: images must be uint8 (0-255) or floating point in [0, 1], got {name}")
    if len(shape) not in (3, 4):
        raise InvalidInputError(f"{what}: images must have shape (N, H, W), (N, C, H, W) or (N, H, W, C), got {shape}")
    if shape[0] == 0:
        raise InvalidInputError(f"{what}: holds no images (shape {shape})")
    ambiguous = False
    if len(shape) == 3:
        axes, sample_shape = "NHW", (1, shape[1], shape[2])
    else:
        first, last = shape[1] <= _MAX_CHANNELS, shape[3] <= _MAX_CHANNELS
        if not (first or last):
            raise InvalidInputError(
                f"{what}: cannot tell the channel axis of images of shape {shape}: expected (N, C, H, W) or "
                f"(N, H, W, C) with at most {_MAX_CHANNELS} channels"
            )
        ambiguous = first and last
        channels_last = kind == "uint8" if ambiguous else last
        axes = "NHWC" if channels_last else "NCHW"
        sample_shape = (shape[3], shape[1], shape[2]) if channels_last else shape[1:]
    text = f"{name} {axes[1:]} detected"
    if ambiguous:
        text += f" (axes 1 and 3 of {shape} could both hold the channels; {axes[1:]} assumed)"
    text += ", scaled by 1/255" if kind == "uint8" else (", converted to float32" if name == "float64" else "")
    return Layout(axes, kind == "uint8", kind == "float", sample_shape, text)


def labels_tensor(values, n: int, what: str) -> tuple[torch.Tensor, list[str]]:
    """Integer class labels as int64 ``(n,)``, with notes; ``(n, 1)`` columns are flattened.

    Raises:
        InvalidInputError: non-integer labels, a shape other than ``(n,)`` or ``(n, 1)``, or a negative label.
    """
    if not isinstance(values, torch.Tensor):
        values = np.asarray(values)
    if _dtype_kind(values.dtype) not in ("int", "uint8"):
        raise InvalidInputError(f"{what}: labels must be integer class indices, got dtype {_dtype_name(values.dtype)}")
    if isinstance(values, np.ndarray):
        values = torch.from_numpy(values.astype(np.int64))
    notes = []
    if values.dim() == 2 and values.shape[1] == 1:
        values = values.reshape(-1)
        notes.append(f"{what}: labels of shape ({n}, 1) flattened to ({n},)")
    if values.dim() != 1:
        hint = " (one-hot? store labels.argmax(1))" if values.dim() == 2 else ""
        raise InvalidInputError(f"{what}: labels must have shape (N,), got {tuple(values.shape)}{hint}")
    if values.shape[0] != n:
        raise InvalidInputError(f"{what}: {n} images but {values.shape[0]} labels")
    labels = values.to(torch.int64)
    negative = (labels < 0).nonzero()
    if negative.numel():
        i = int(negative[0])
        raise InvalidInputError(f"{what}: labels must be non-negative class indices, got {int(labels[i])} at {i}")
    return labels, notes


def pick_keys(keys: Iterable[str], split: str, what: str) -> tuple[str, str, str]:
    """The image and label keys among ``keys`` for ``split``, and a note saying which were used.

    Split-specific keys (``x_test``/``y_test``, ``test_images``/``test_labels``...) win over plain ones
    (``images``/``labels``, ``x``/``y``, ``X``/``Y``, ``data``/``targets``).

    Raises:
        InvalidInputError: no image key or no label key; the message lists the keys found.
    """
    keys = [k for k in keys if isinstance(k, str)]

    def first(bases: tuple[str, ...]) -> str | None:
        split_keys = [k for b in bases for k in (f"{b}_{split}", f"{split}_{b}")]
        return next((k for k in (*split_keys, *bases) if k in keys), None)

    image_key, label_key = first(IMAGE_KEYS), first(LABEL_KEYS)
    if image_key is None or label_key is None:
        raise InvalidInputError(
            f"{what}: found no {'images' if image_key is None else 'labels'} array: looked for keys "
            f"{', '.join(IMAGE_KEYS if image_key is None else LABEL_KEYS)} (or with _{split} / {split}_ added); "
            f"the file holds {', '.join(map(repr, keys)) or 'nothing'}"
        )
    if image_key in IMAGE_KEYS:
        note = (f"{what}: images from {image_key!r}, labels from {label_key!r}; "
                f"the file is one split (used as {split!r})")
    else:
        note = f"{what}: {split} split from keys {image_key!r} and {label_key!r}"
    return image_key, label_key, note


class ArrayDataset(LabeledDataset):
    """Images in an array (numpy, torch, or anything numpy-style indexable by an int64 array), converted per batch.

    Build one with :func:`from_arrays`, which checks the labels and the pixel range.
    """

    def __init__(self, images, labels: torch.Tensor, layout: Layout, num_classes: int, name: str,
                 source: DataSource) -> None:
        super().__init__(name, num_classes, layout.sample_shape, source)
        self._images, self._labels, self._layout = images, labels, layout

    @property
    def labels(self) -> torch.Tensor:
        """int64 ``(N,)``."""
        return self._labels

    def _rows(self, index: torch.Tensor):
        return self._images[index] if isinstance(self._images, torch.Tensor) else self._images[index.numpy()]

    def images_at(self, index: torch.Tensor) -> torch.Tensor:
        """float32 ``(B, C, H, W)`` in ``[0, 1]``."""
        return self._layout.convert(self._rows(index))

    def check_unit_interval(self, what: str) -> None:
        """Read all images once, a chunk at a time; raise InvalidInputError if any value is outside ``[0, 1]``."""
        n = len(self)
        rows = max(1, _CHECK_CHUNK_BYTES // (4 * int(np.prod(self.sample_shape))))
        lo, hi = float("inf"), float("-inf")
        for start in range(0, n, rows):
            chunk = self.images_at(torch.arange(start, min(n, start + rows)))
            if not torch.isfinite(chunk).all():
                raise InvalidInputError(f"{what}: images contain NaN or infinite values")
            lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
        if lo < 0.0 or hi > 1.0:
            raise InvalidInputError(
                f"{what}: float images must lie in [0, 1], found values in [{lo:.4g}, {hi:.4g}] "
                f"(store 0-255 pixels as uint8, or divide them by 255)"
            )


def from_arrays(images, labels, *, name: str, source: DataSource, what: str, num_classes: int | None = None,
                say_layout: bool = True) -> ArrayDataset:
    """An :class:`ArrayDataset` after checking everything: layout, labels, the pixel range of float images.

    Args:
        images: uint8 or float pixels, ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``.
        labels: integer class indices ``(N,)``, any integer dtype (converted to int64).
        name, source: of the dataset; ``source.notes`` gains what was detected.
        what: how to call the data in messages (e.g. the file name).
        num_classes: ``K`` if known (torchvision's classes); otherwise the largest label plus one.
        say_layout: add the detected layout to the notes.
    """
    layout = detect_layout(tuple(images.shape), images.dtype, what)
    labels, notes = labels_tensor(labels, int(images.shape[0]), what)
    largest = int(labels.max())
    if num_classes is None:
        num_classes = largest + 1
        notes.append(f"{what}: {num_classes} classes (largest label {largest}, plus one)")
    elif largest >= num_classes:
        raise InvalidInputError(f"{what}: label {largest} is out of range for {num_classes} classes")
    for note in ([f"{what}: {layout.description}"] if say_layout else []) + notes:
        source = source.with_note(note)
    dataset = ArrayDataset(images, labels, layout, num_classes, name, source)
    if layout.is_float:
        dataset.check_unit_interval(what)
    return dataset
