"""``make_loader``: stream a dataset in mini-batches, optionally shuffled and split across distributed ranks."""

from __future__ import annotations

from collections.abc import Iterator
from numbers import Integral

import torch

from ..errors import InvalidInputError
from .dataset import LabeledDataset

__all__ = ["Loader", "make_loader"]


class Loader:
    """Mini-batches of one rank's share of a dataset; iterate it once per epoch.

    Each iteration draws a fresh order (when shuffling) from the generator, so epochs differ and a seeded
    generator reproduces them all. Only one batch of images is in memory at a time.
    """

    def __init__(
        self,
        dataset: LabeledDataset,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None,
        rank: int,
        world_size: int,
        device: torch.device | str | None,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.rank = rank
        self.world_size = world_size
        self.device = device

    def shard_size(self) -> int:
        """How many examples this rank gets per epoch."""
        return len(range(self.rank, len(self.dataset), self.world_size))

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return -(-self.shard_size() // self.batch_size)

    def order(self) -> torch.Tensor:
        """int64 ``(shard_size,)``: the examples this rank visits next epoch (draws from the generator)."""
        n = len(self.dataset)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        for start in range(0, len(order), self.batch_size):
            images, labels = self.dataset.get_batch(order[start : start + self.batch_size])
            yield images.to(self.device), labels.to(self.device)


def make_loader(
    dataset: LabeledDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str | None = None,
) -> Loader:
    """Batches ``(images, labels)``: float32 ``(B, C, H, W)`` in ``[0, 1]`` and int64 ``(B,)``, on ``device``.

    Memory does not grow with ``len(dataset)``: each batch is read (decoded, converted) when it is reached.
    With ``world_size > 1``, rank ``r`` gets the examples at positions ``r, r + W, r + 2W, ...`` of the
    (possibly shuffled) order, like ``DistributedSampler`` but without padding: the ranks' shares are
    disjoint, cover the dataset, and merged in that order give what one process gets. Ranks may so get
    one batch more or fewer than others; code that runs a collective per batch must allow for it.

    Args:
        dataset: any :class:`LabeledDataset` (a :class:`~mistered.data.Selection` included).
        batch_size: at most this many examples per batch (the last may hold fewer).
        shuffle: visit the examples in a random order drawn from ``generator`` each epoch.
        generator: a seeded ``torch.Generator`` makes the order reproducible; with several ranks it is
            required and must be seeded alike on every rank (so that they agree on the order).
        rank, world_size: this process's rank and the number of processes.
        device: where to put the batches (``None``: leave them on the CPU).

    Raises:
        InvalidInputError: ``batch_size < 1``, ``rank`` outside ``[0, world_size)``, or shuffling across
            several ranks without a generator.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidInputError(
            f"rank must lie in [0, world_size) with world_size >= 1, got rank {rank} of {world_size}"
        )
    if shuffle and world_size > 1 and generator is None:
        raise InvalidInputError(
            "shuffling across several ranks needs a torch.Generator seeded alike on every rank; "
            "without one the ranks would draw different orders and overlap"
        )
    return Loader(dataset, batch_size, shuffle, generator, rank, world_size, device)
