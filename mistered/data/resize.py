"""``image_size``: resizing images (bilinear, antialiased) as they are read."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from .dataset import LabeledDataset

__all__ = ["image_size_tuple", "resize_images", "Resized"]


def image_size_tuple(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``N`` -> ``(N, N)``; ``(H, W)`` kept; ``None`` kept. Raises InvalidInputError for anything else."""
    if size is None:
        return None
    values = (size, size) if isinstance(size, Integral) else tuple(size) if isinstance(size, Sequence) else ()
    if len(values) != 2 or not all(isinstance(v, Integral) and not isinstance(v, bool) and v > 0 for v in values):
        raise InvalidInputError(f"image_size must be a positive integer N or a pair (H, W), got {size!r}")
    return int(values[0]), int(values[1])


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float32 ``(B, C, H, W)`` in ``[0, 1]`` -> ``(B, C, size[0], size[1])``, bilinear with antialiasing.

    Returns ``images`` itself when it already has that size.
    """
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False).clamp_(0.0, 1.0)


class Resized(LabeledDataset):
    """A view of ``parent`` whose images are resized to ``size`` ``(H, W)`` when read."""

    def __init__(self, parent: LabeledDataset, size: tuple[int, int]) -> None:
        c, h, w = parent.sample_shape
        note = f"images resized from {h}x{w} to {size[0]}x{size[1]} (height x width; bilinear, antialiased)"
        super().__init__(parent.name, parent.num_classes, (c, *size), parent.source.with_note(note))
        self.parent, self.size = parent, size

    @property
    def labels(self) -> torch.Tensor:
        """int64 ``(N,)``: the parent's."""
        return self.parent.labels

    def images_at(self, index: torch.Tensor) -> torch.Tensor:
        """float32 ``(B, C, H, W)`` with ``(H, W) = size``."""
        return resize_images(self.parent.images_at(index), self.size)
