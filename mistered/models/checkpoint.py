"""Model checkpoints: ``save_model`` / ``load_model`` and the bundled weights.

A checkpoint is a weights-only ``torch.save`` of the dict::

    {"format": "mistered-model", "version": 1, "arch": str, "arch_kwargs": dict,
     "state_dict": dict[str, Tensor], "meta": dict}

so that :func:`mistered.io.safe_torch_load` (``weights_only=True``) can read it and nothing else
needs unpickling. ``arch`` names an entry of :data:`~mistered.models.registry.ARCHITECTURES`.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..device import resolve_device
from ..errors import CheckpointError, InvalidInputError
from ..io import atomic_torch_save, safe_torch_load
from .registry import ARCHITECTURES, build_model, check_arch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "DEFAULT_MODEL",
    "save_model",
    "read_checkpoint",
    "bundled_models",
    "resolve_model_path",
    "load_model",
]

CHECKPOINT_FORMAT = "mistered-model"
CHECKPOINT_VERSION = 1
DEFAULT_MODEL = "mnist-cnn"
_KEYS = ("format", "version", "arch", "arch_kwargs", "state_dict", "meta")


def _plain(name: str, value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as plain JSON types (str subclasses such as ``torch.__version__`` become ``str``, tuples
    lists), which is what a weights-only load accepts."""
    try:
        plain = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise InvalidInputError(
            f"{name} must hold only JSON-like values (str, numbers, lists, dicts): {error}"
        ) from None
    if not isinstance(plain, dict):
        raise InvalidInputError(f"{name} must be a dict, got {type(value).__name__}")
    return plain


def save_model(
    path: str | os.PathLike, model: nn.Module, arch: str, arch_kwargs: dict[str, Any], meta: dict[str, Any]
) -> Path:
    """Atomically write ``model``'s weights as a mistered checkpoint.

    Args:
        path: destination file (folders are created).
        model: a model built by ``build_model(arch, **arch_kwargs)`` (and trained).
        arch: its registered architecture name.
        arch_kwargs: the keyword arguments it was built with (JSON-like values).
        meta: free-form JSON-like information (dataset, accuracy, training command...).

    Raises:
        InvalidInputError: unknown ``arch`` or ``arch_kwargs``/``meta`` that are not JSON-like.
    """
    check_arch(arch)
    arch_kwargs, meta = _plain("arch_kwargs", arch_kwargs), _plain("meta", meta)
    state = {key: tensor.detach().cpu().clone() for key, tensor in model.state_dict().items()}
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "state_dict": state,
        "meta": meta,
    }
    return atomic_torch_save(path, checkpoint)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a checkpoint dict (weights only, on CPU) without building the model.

    Raises:
        CheckpointError: missing, corrupt or hostile file; not a mistered model checkpoint; a newer
            format version; an unknown architecture. The message names the problem.
    """
    checkpoint = safe_torch_load(path, map_location="cpu")
    where = f"checkpoint {str(path)!r}"
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{where} is not a mistered model checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r}); "
            "write checkpoints with mistered.models.save_model"
        )
    missing = [key for key in _KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{where} lacks the entries {missing}; it is incomplete")
    if checkpoint["version"] != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{where} has format version {checkpoint['version']!r}; this mistered reads version {CHECKPOINT_VERSION} "
            "(upgrade mistered to read newer checkpoints)"
        )
    if checkpoint["arch"] not in ARCHITECTURES:
        raise CheckpointError(
            f"{where} is for architecture {checkpoint['arch']!r}, which is unknown; "
            f"known: {', '.join(sorted(ARCHITECTURES))}"
        )
    state = checkpoint["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{where}: 'state_dict' must map parameter names to tensors")
    if not isinstance(checkpoint["arch_kwargs"], dict) or not isinstance(checkpoint["meta"], dict):
        raise CheckpointError(f"{where}: 'arch_kwargs' and 'meta' must be dicts")
    return checkpoint


def _weights_dir():
    return resources.files("mistered.models") / "weights"


def bundled_models() -> list[str]:
    """Names of the models whose weights ship with the package (``mistered/models/weights/<name>.pt``)."""
    return sorted(entry.name[: -len(".pt")] for entry in _weights_dir().iterdir() if entry.name.endswith(".pt"))


def resolve_model_path(spec: str | os.PathLike | None = None) -> Path:
    """The checkpoint file for ``spec``: a bundled name (``None`` -> ``"mnist-cnn"``) or a file path.

    Raises:
        CheckpointError: ``spec`` is neither a bundled name nor an existing file (the message lists the
            bundled names, and says when an architecture exists but has no bundled weights).
    """
    spec = DEFAULT_MODEL if spec is None else spec
    if isinstance(spec, str) and spec in bundled_models():
        return Path(str(_weights_dir() / f"{spec}.pt"))
    path = Path(spec)
    if path.is_file():
        return path
    bundled = ", ".join(bundled_models())
    if str(spec) in ARCHITECTURES:
        raise CheckpointError(
            f"architecture {spec!r} has no bundled weights (bundled: {bundled}); train it "
            "(mistered train) and pass the checkpoint path, or use build_model for a random init"
        )
    raise CheckpointError(f"model {str(spec)!r} is neither a bundled model ({bundled}) nor an existing checkpoint file")


def load_model(spec: str | os.PathLike | None = None, device: str | torch.device | None = None) -> nn.Module:
    """Build a model from a bundled name (``None`` -> ``"mnist-cnn"``) or a checkpoint path, in eval mode.

    The model takes ``(B, C, H, W)`` images in ``[0, 1]`` and returns ``(B, K)`` logits; it is moved to
    ``device`` (``None``: CUDA when available, else CPU). The checkpoint's ``meta`` dict is attached
    as ``model.mistered_meta``.

    Raises:
        CheckpointError: unknown name, missing/corrupt/hostile file, wrong format or architecture, or
            weights that do not fit the architecture (the message names the mismatching parameters).
    """
    path = resolve_model_path(spec)
    checkpoint = read_checkpoint(path)
    try:
        model = build_model(checkpoint["arch"], **checkpoint["arch_kwargs"])
    except InvalidInputError as error:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be built: {error}") from None
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit architecture {checkpoint['arch']!r} "
            f"with {checkpoint['arch_kwargs']}: {detail}"
        ) from None
    model.mistered_meta = checkpoint["meta"]
    return model.to(resolve_device(device)).eval()
