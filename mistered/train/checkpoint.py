"""Training checkpoints: everything needed to continue a run exactly, in a weights-only file.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (so it loads with
``torch.load(weights_only=True)``): the model's state_dict (any ``nn.Module``: registry architectures,
TorchScript, ONNX-converted graphs ...), the optimizer state, every random number
generator state (torch CPU, CUDA, the loop's own :class:`torch.Generator`; one copy per process
under torch.distributed), the position (epoch, global step, step inside the epoch), the running
sums of the current epoch, the per-epoch history, the run's settings (its fingerprint, see
:mod:`mistered.train.resume`) and the extensions of its epochs. The learning rate is a function of
the step and the run's length, so it needs no state of its own. Files are written atomically
(temporary file + rename, :func:`mistered.io.atomic_torch_save`), so a process killed while writing
leaves the previous checkpoint in place (and a temporary file that :func:`remove_stale_temporaries`
clears on resume).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..io import atomic_torch_save, safe_torch_load
from .distributed import DistContext, all_gather_tensors

__all__ = [
    "CHECKPOINT_FORMAT",
    "capture_rng",
    "restore_rng",
    "save_checkpoint",
    "load_checkpoint",
    "remove_stale_temporaries",
]

CHECKPOINT_FORMAT = "mistered-train-checkpoint-v1"
_REQUIRED = (
    "format", "model", "optimizer", "rng", "epoch", "step", "step_in_epoch", "epoch_sums", "history",
    "best_metric", "config",
)


def capture_rng(generator: torch.Generator, ctx: DistContext) -> dict[str, list[torch.Tensor]]:
    """Every RNG state as tensors, one entry per process (gathered from all ranks when distributed).

    Returns ``{"torch": [...], "generator": [...], "cuda": [...]}`` with ``world_size`` uint8
    tensors in each list (``"cuda"`` empty on CPU).
    """
    states = {
        "torch": all_gather_tensors(torch.get_rng_state(), ctx),
        "generator": all_gather_tensors(generator.get_state(), ctx),
        "cuda": [],
    }
    if ctx.device.type == "cuda":
        states["cuda"] = all_gather_tensors(torch.cuda.get_rng_state(ctx.device), ctx)
    return states


def restore_rng(states: dict[str, list[torch.Tensor]], generator: torch.Generator, ctx: DistContext) -> None:
    """Put back this process's RNG states from :func:`capture_rng` output.

    Raises:
        CheckpointError: when the checkpoint was written by a different number of processes (its
            per-process random streams cannot be mapped onto this run).
    """
    saved_world = len(states.get("torch", []))
    if saved_world != ctx.world_size:
        raise CheckpointError(
            f"checkpoint was written by {saved_world} process(es) but this run has {ctx.world_size}; "
            f"resume with the same --nproc_per_node (or start a fresh run without --resume)"
        )
    torch.set_rng_state(states["torch"][ctx.rank].cpu())
    generator.set_state(states["generator"][ctx.rank].cpu())
    if ctx.device.type == "cuda" and states.get("cuda"):
        torch.cuda.set_rng_state(states["cuda"][ctx.rank].cpu(), ctx.device)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically write a checkpoint dict (adds the format marker); returns the path."""
    return atomic_torch_save(path, {"format": CHECKPOINT_FORMAT, **state})


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and sanity-check a training checkpoint (``weights_only=True``).

    Raises:
        CheckpointError: missing, truncated, corrupt or hostile file, or not a training checkpoint.
    """
    state = safe_torch_load(path, map_location=map_location)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not a mistered training checkpoint (expected format {CHECKPOINT_FORMAT!r}); "
            f"pass the run's output folder that holds checkpoints/last.pt"
        )
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"training checkpoint {str(path)!r} lacks {missing}; it is damaged, start a fresh run")
    return state


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers killed mid-write (SIGKILL, power loss) left in ``folder``.

    Only names :func:`mistered.io.atomic_write` makes for checkpoints (``.<name>.pt.<random>.tmp``) are
    touched. Call it when no other process writes there. Returns the deleted paths.
    """
    stale = sorted(Path(folder).glob(".*.pt.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
