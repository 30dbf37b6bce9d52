"""torch.distributed for training: process group from ``torchrun`` variables, sharding, DDP, reductions.

``torchrun --nproc_per_node N -m mistered train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and joins the process group
(``nccl`` on CUDA, ``gloo`` on CPU). Without them (a plain ``python`` or ``mistered`` run) it returns
a single-process :class:`DistContext` and every helper here is a no-op, so the loop has one code path.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..device import resolve_device
from ..errors import InvalidInputError

__all__ = [
    "DistContext", "init_distributed", "shutdown_distributed", "shard_indices", "wrap_model", "unwrap_model",
    "all_reduce_sum", "all_gather_tensors",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` processes, on ``device``.

    Only the main process (``rank == 0``) writes files and draws progress bars.
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every process (no-op in a single process)."""
        if self.distributed:
            dist.barrier()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError(f"environment variable {name}={value!r} must be an integer (set by torchrun)") from None


def init_distributed(device: str | torch.device | None = None) -> DistContext:
    """Join the process group described by torchrun's environment variables, if any.

    Args:
        device: ``None``/``"auto"`` (CUDA when present, else CPU) or an explicit device. Under torchrun
            with CUDA each process takes ``cuda:LOCAL_RANK``.

    Returns:
        The :class:`DistContext` of this process. The backend is ``nccl`` on CUDA and ``gloo`` on CPU.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    resolved = resolve_device(device)
    if world_size <= 1:
        return DistContext(0, 1, resolved)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        logger.info("joined process group: rank %d of %d, backend %s, device %s", rank, world_size, backend, resolved)
    return DistContext(dist.get_rank(), dist.get_world_size(), resolved)


def shard_indices(n: int, seed: int, epoch: int, ctx: DistContext) -> torch.Tensor:
    """This process's share of a shuffled epoch over ``n`` examples, ``(ceil(n / world_size),)`` int64.

    The permutation depends only on ``seed`` and ``epoch`` (the same on every process, and the same
    after a resume); it is padded by wrapping around so each process gets equally many examples,
    then dealt out round-robin, as :class:`torch.utils.data.DistributedSampler` does.
    """
    generator = torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))
    order = torch.randperm(n, generator=generator)
    per_rank = -(-n // ctx.world_size)
    padding = per_rank * ctx.world_size - n
    if padding:
        order = torch.cat([order, order[:padding]])
    return order[ctx.rank :: ctx.world_size]


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Wrap in :class:`DistributedDataParallel` when distributed (gradients averaged over processes)."""
    if not ctx.distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside a :class:`DistributedDataParallel` wrapper (else ``model`` itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a float64 tensor of metrics over processes (returns a new tensor; identity in one process)."""
    total = values.detach().to(ctx.device, torch.float64).clone()
    if ctx.distributed:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.cpu()


def all_gather_tensors(value: torch.Tensor, ctx: DistContext) -> list[torch.Tensor]:
    """Every process's copy of a same-shaped CPU tensor, in rank order (``[value]`` in one process).

    Used for per-process RNG states; goes through the process's device so ``nccl`` works too.
    """
    if not ctx.distributed:
        return [value.clone()]
    local = value.to(ctx.device)
    gathered = [torch.empty_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, local)
    return [t.cpu() for t in gathered]


def shutdown_distributed(ctx: DistContext) -> None:
    """Leave the process group joined by :func:`init_distributed` (no-op in a single process)."""
    if ctx.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
