"""Labelled images held in memory (:class:`LabeledImages`), mini-batch iteration over them, and ``materialize``."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..errors import InvalidInputError
from .dataset import DataSource, LabeledDataset
from .loader import make_loader

__all__ = ["LabeledImages", "iterate_batches", "materialize"]


class LabeledImages(LabeledDataset):
    """Labelled images held in memory: a :class:`LabeledDataset` whose tensors are attributes.

    Attributes:
        images: float32 ``(N, C, H, W)`` in ``[0, 1]``.
        labels: int64 ``(N,)`` in ``[0, num_classes)``.
        num_classes: number of classes ``K``.
        name: the dataset name and split, e.g. ``"mnist-5k/test"``.
        source: where they came from; default ``DataSource("memory", name, "")``.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, name: str, source: DataSource | None = None
    ) -> None:
        if images.dim() != 4 or labels.shape != (images.shape[0],):
            raise InvalidInputError(
                f"dataset {name!r}: images must be (N, C, H, W) and labels (N,), "
                f"got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        super().__init__(name, num_classes, tuple(images.shape[1:]), source or DataSource("memory", name, ""))
        self.images = images
        self._labels = labels

    @property
    def labels(self) -> torch.Tensor:
        """int64 ``(N,)``."""
        return self._labels

    def images_at(self, index: torch.Tensor) -> torch.Tensor:
        """float32 ``(B, C, H, W)``: ``images[index]``."""
        return self.images[index.to(self.images.device)]

    def subset(self, n: int) -> LabeledImages:
        """The first ``n`` examples (all of them if ``n >= len(self)``), sharing memory with ``self``."""
        if n < 0:
            raise InvalidInputError(f"subset size must be non-negative, got {n}")
        return LabeledImages(self.images[:n], self.labels[:n], self.num_classes, self.name, self.source)


def materialize(dataset: LabeledDataset, batch_size: int = 1024) -> LabeledImages:
    """All examples of ``dataset`` in memory, in order (a :class:`LabeledImages` is returned as it is).

    Memory: ``4 * N * C * H * W`` bytes; meant for selections of a few thousand images (what attacks and
    certifiers take at once), not for whole large datasets (stream those with :func:`make_loader`).
    """
    if isinstance(dataset, LabeledImages):
        return dataset
    batches = list(make_loader(dataset, batch_size))
    images = torch.cat([x for x, _ in batches]) if batches else torch.empty(0, *dataset.sample_shape)
    labels = torch.cat([y for _, y in batches]) if batches else torch.empty(0, dtype=torch.int64)
    return LabeledImages(images, labels, dataset.num_classes, dataset.name, dataset.source)


def iterate_batches(
    data: LabeledDataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` mini-batches of at most ``batch_size`` examples, moved to ``device``.

    With ``shuffle=True`` the order is a permutation drawn from ``generator`` (pass a seeded one to
    reproduce it); otherwise the stored order is kept. The single-process case of :func:`make_loader`.
    """
    yield from make_loader(data, batch_size, shuffle=shuffle, generator=generator, device=device)
