"""Sharding per-example work over processes (``torchrun``) so that the merged result equals one process's.

The examples are cut into the batches a single process would run (``batch_size`` consecutive examples of the
selection, in order); the batches are dealt out round-robin, as :class:`torch.utils.data.DistributedSampler`
deals examples: rank ``r`` of ``W`` takes batches ``r, r + W, r + 2W, ...``. Dealing whole batches rather than
single examples is what makes the merged result *identical* to a single-process run: an attack draws its
random starts per batch (by position in the batch) and batched arithmetic can round differently for other
batch compositions, so every batch must hold the same examples however many processes share the work.

Each rank works through its batches, the per-batch results are gathered (``all_gather_object`` over the
process group: ``gloo`` on CPU, ``nccl`` on CUDA) and put back in batch order; rank 0 writes the files.

``group`` arguments are anything with ``rank`` and ``world_size`` attributes
(e.g. :class:`mistered.train.distributed.DistContext`); with ``world_size == 1`` nothing is communicated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import torch
import torch.distributed as dist

from .errors import InvalidInputError, MisteredError

__all__ = ["ProcessGroup", "SINGLE", "owned_batches", "batch_positions", "share_size", "shard_batches",
           "gather_objects", "broadcast_object", "run_on_main", "merge_batches"]

T = TypeVar("T")


class ProcessGroup(Protocol):
    """This process's place among the processes sharing the work."""

    rank: int
    world_size: int


class _Single:
    rank = 0
    world_size = 1


#: One process doing all the work.
SINGLE: ProcessGroup = _Single()


def owned_batches(n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """Indices of the batches (of ``batch_size`` consecutive examples out of ``n``) that ``rank`` runs."""
    if batch_size < 1:
        raise InvalidInputError(f"--batch-size must be a positive integer, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidInputError(f"rank {rank} of {world_size} processes is not a valid place")
    count = -(-n // batch_size)
    return list(range(rank, count, world_size))


def batch_positions(batches: list[int], n: int, batch_size: int) -> list[int]:
    """The example positions (``0 <= i < n``) of ``batches``, in order: the rank's share of the selection."""
    return [i for b in batches for i in range(b * batch_size, min((b + 1) * batch_size, n))]


def share_size(n: int, batch_size: int, group: ProcessGroup = SINGLE) -> int:
    """How many of the ``n`` examples this rank works on."""
    return len(batch_positions(owned_batches(n, batch_size, group.rank, group.world_size), n, batch_size))


def shard_batches(dataset: Any, batch_size: int, group: ProcessGroup = SINGLE
                  ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(batch index, images (B, C, H, W), labels (B,))`` of this rank's batches of ``dataset`` (a
    :class:`~mistered.data.LabeledDataset`), in order, streamed by :func:`~mistered.data.make_loader`."""
    from .data import make_loader, select

    batches = owned_batches(len(dataset), batch_size, group.rank, group.world_size)
    if not batches:
        return
    share = dataset
    if group.world_size > 1:
        share = select(dataset, indices=batch_positions(batches, len(dataset), batch_size))
    for index, (x, y) in zip(batches, make_loader(share, batch_size)):
        yield index, x, y


def gather_objects(value: T, group: ProcessGroup) -> list[T]:
    """Every process's ``value`` (picklable), in rank order; ``[value]`` in a single process."""
    if group.world_size <= 1:
        return [value]
    gathered: list[Any] = [None] * group.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: T, group: ProcessGroup) -> T:
    """Rank 0's ``value`` on every process (``value`` itself in a single process)."""
    if group.world_size <= 1:
        return value
    box = [value if group.rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_on_main(function: Callable[[], T], group: ProcessGroup) -> T:
    """Call ``function`` on rank 0 only; every rank returns its value (picklable), or raises its
    :class:`~mistered.errors.MisteredError` (as :class:`InvalidInputError` on the other ranks), so that a bad
    out folder stops every process with the same one-line error instead of leaving them waiting."""
    if group.world_size <= 1:
        return function()
    answer: tuple[str, Any] = ("ok", None)
    error: MisteredError | None = None
    if group.rank == 0:
        try:
            answer = ("ok", function())
        except MisteredError as raised:
            error, answer = raised, ("error", str(raised))
    answer = broadcast_object(answer, group)
    if error is not None:
        raise error
    if answer[0] == "error":
        raise InvalidInputError(answer[1])
    return answer[1]


def merge_batches(shares: list[Mapping[int, T]], count: int) -> list[T]:
    """Put the gathered ``{batch index: result}`` of every rank back in batch order (``count`` batches).

    Raises:
        RuntimeError: a batch is missing or was run twice (the ranks disagreed on the split: a bug).
    """
    merged: dict[int, T] = {}
    for share in shares:
        for index, value in share.items():
            if index in merged:
                raise RuntimeError(f"batch {index} was run by two processes")
            merged[index] = value
    missing = sorted(set(range(count)) - set(merged))
    if missing:
        raise RuntimeError(f"batches {missing[:5]} were run by no process")
    return [merged[i] for i in range(count)]
