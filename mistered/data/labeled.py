"""The dataset container every loader returns, and mini-batch iteration over it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError

__all__ = ["LabeledImages", "iterate_batches"]


@dataclass(frozen=True)
class LabeledImages:
    """Labelled images held in memory.

    Attributes:
        images: float32 ``(N, C, H, W)`` in ``[0, 1]``.
        labels: int64 ``(N,)`` in ``[0, num_classes)``.
        num_classes: number of classes ``K``.
        name: the dataset name and split, e.g. ``"mnist-5k/test"``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.labels.shape != (self.images.shape[0],):
            raise InvalidInputError(
                f"dataset {self.name!r}: images must be (N, C, H, W) and labels (N,), "
                f"got {tuple(self.images.shape)} and {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int) -> LabeledImages:
        """The first ``n`` examples (all of them if ``n >= len(self)``)."""
        if n < 0:
            raise InvalidInputError(f"subset size must be non-negative, got {n}")
        return LabeledImages(self.images[:n], self.labels[:n], self.num_classes, self.name)


def iterate_batches(
    data: LabeledImages,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` mini-batches of at most ``batch_size`` examples, moved to ``device``.

    With ``shuffle=True`` the order is a permutation drawn from ``generator`` (pass a seeded one to
    reproduce it); otherwise the stored order is kept.
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size}")
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        yield data.images[index].to(device), data.labels[index].to(device)
