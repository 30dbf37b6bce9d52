"""Reading a ``--weights`` file: a ``torch.save``'d state dict (``.pt``/``.pth``, read weights-only),
a ``.safetensors`` file, or a mistered checkpoint (its ``state_dict``). The kind is told from content."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from .checkpoint import check_checkpoint, is_checkpoint
from .fitting import is_state_dict
from .pickles import load_weights_only
from .sniff import KIND_NAMES, ONNX, PICKLE, SAFETENSORS, TORCH_EXPORT, TORCH_LEGACY, TORCH_SAVE, TORCHSCRIPT, sniff

__all__ = ["read_weights"]


def _not_a_state_dict(obj: Any, where: str) -> CheckpointError:
    if isinstance(obj, dict) and obj:
        others = [repr(k) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
        shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
        return CheckpointError(
            f"{where} holds a dict whose entries {shown} are not tensors, not a state dict; if the weights are one "
            "of its entries (e.g. 'model' or 'state_dict'), save that entry on its own (torch.save(entry, FILE))"
        )
    found = "an empty dict" if isinstance(obj, dict) else f"a {type(obj).__name__}"
    return CheckpointError(f"{where} holds {found}, not a state dict (a dict of parameter names to tensors)")


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in the weights file at ``path`` (tensors on CPU).

    Raises:
        CheckpointError: a missing, corrupt or hostile file; a whole model (TorchScript, ``.pt2``,
            ONNX: give it as the model instead); a file that holds something other than a state dict.
    """
    path = Path(path)
    where = f"weights file {str(path)!r}"
    kind = sniff(path, where)
    if kind == SAFETENSORS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{where} is a corrupt safetensors file ({error})") from None
    if kind in (TORCH_SAVE, TORCH_LEGACY, PICKLE):
        obj = load_weights_only(path, kind, where)
        if is_checkpoint(obj):
            return check_checkpoint(obj, where)["state_dict"]
        if is_state_dict(obj):
            return obj
        raise _not_a_state_dict(obj, where)
    if kind in (TORCHSCRIPT, TORCH_EXPORT, ONNX):
        raise CheckpointError(f"{where} is {KIND_NAMES[kind]}, a whole model, not weights; give it as --model {path}")
    raise CheckpointError(
        f"{where} is {KIND_NAMES[kind]}; weights must be a state dict saved with torch.save (.pt/.pth), "
        "a .safetensors file or a mistered checkpoint"
    )
