"""Model checkpoints: ``save_model`` / ``read_checkpoint``, building a model from one, and the bundled weights.

A checkpoint is a weights-only ``torch.save`` of the dict::

    {"format": "mistered-model", "version": 1, "arch": str, "arch_kwargs": dict,
     "state_dict": dict[str, Tensor], "meta": dict}

so that ``torch.load(..., weights_only=True)`` can read it and nothing else needs unpickling. ``arch``
names an entry of :data:`~mistered.models.registry.ARCHITECTURES`, or is ``"external"``: the weights
of a model loaded from a user source (``file.py:Name``, TorchScript, ``.pt2``, ONNX), whose
``meta["source"]`` is that source's :meth:`ModelSource.to_json`; such a checkpoint is loaded with
``load_model(spec, weights=checkpoint)``.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, InvalidInputError
from ..io import atomic_torch_save
from .fitting import WEIGHTS_ONLY_HINT, apply_weights, is_state_dict
from .normalized import Normalized
from .pickles import load_weights_only
from .registry import ARCHITECTURES, build_model, check_arch
from .sniff import KIND_NAMES, PICKLE, TORCH_LEGACY, TORCH_SAVE, sniff
from .sources import ModelSource

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "DEFAULT_MODEL",
    "EXTERNAL_ARCH",
    "bundled_models",
    "check_checkpoint",
    "is_checkpoint",
    "model_from_checkpoint",
    "read_checkpoint",
    "bundled_path",
    "save_model",
]

CHECKPOINT_FORMAT = "mistered-model"
CHECKPOINT_VERSION = 1
DEFAULT_MODEL = "mnist-cnn"
EXTERNAL_ARCH = "external"
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


def _external_meta(model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with ``meta["source"]`` set from ``model.mistered_source`` when absent (arch ``"external"``)."""
    if "source" not in meta:
        source = getattr(model, "mistered_source", None)
        if not isinstance(source, ModelSource):
            raise InvalidInputError(
                "arch 'external' needs meta['source'] (a ModelSource.to_json()) or a model returned by load_model"
            )
        meta = {**meta, "source": source.to_json()}
    source = meta["source"]
    if not isinstance(source, dict) or not isinstance(source.get("spec"), str) or "kind" not in source:
        raise InvalidInputError("meta['source'] must be a ModelSource.to_json() dict (with 'spec' and 'kind')")
    return meta


def _unfolded(model: nn.Module, source: dict[str, Any]) -> nn.Module:
    """The model as its source built it: without the ``Normalized`` that ``--mean/--std`` put in front."""
    return model.net if source.get("mean") is not None and isinstance(model, Normalized) else model


def save_model(
    path: str | os.PathLike, model: nn.Module, arch: str, arch_kwargs: dict[str, Any], meta: dict[str, Any]
) -> Path:
    """Atomically write ``model``'s weights as a mistered checkpoint.

    Args:
        path: destination file (folders are created).
        model: a model built by ``build_model(arch, **arch_kwargs)`` (and trained), or, with ``arch="external"``,
            a model returned by :func:`~mistered.models.load_model` from a user source (and trained).
        arch: its registered architecture name, or ``"external"``: the weights of the model as its source
            builds it (a ``--mean/--std`` normalisation folded in front is left out) are saved, with
            ``meta["source"]`` (default: ``model.mistered_source.to_json()``).
        arch_kwargs: the keyword arguments it was built with (JSON-like values; ``{}`` for ``"external"``).
        meta: free-form JSON-like information (dataset, accuracy, training command...).

    Raises:
        InvalidInputError: unknown ``arch``, ``arch_kwargs``/``meta`` that are not JSON-like, or
            ``"external"`` without a source.
    """
    if arch == EXTERNAL_ARCH:
        meta = _external_meta(model, meta)
        model = _unfolded(model, meta["source"])
    else:
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


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded object claims to be a mistered checkpoint (``obj["format"] == "mistered-model"``)."""
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def _check_arch_entry(checkpoint: dict[str, Any], where: str) -> None:
    arch = checkpoint["arch"]
    if arch == EXTERNAL_ARCH:
        source = checkpoint["meta"].get("source") if isinstance(checkpoint["meta"], dict) else None
        if not isinstance(source, dict) or not isinstance(source.get("spec"), str) or "kind" not in source:
            raise CheckpointError(f"{where} holds external weights but no valid meta['source']; it is incomplete")
    elif arch not in ARCHITECTURES:
        raise CheckpointError(
            f"{where} is for architecture {arch!r}, which is unknown; known: {', '.join(sorted(ARCHITECTURES))}"
        )


def check_checkpoint(obj: Any, where: str) -> dict[str, Any]:
    """``obj`` (a weights-only loaded object) if it is a valid mistered checkpoint, else raise.

    Raises:
        CheckpointError: not a mistered checkpoint (a bare state dict is told to use ``--weights``),
            missing entries, a newer format version, an unknown architecture, a malformed state dict.
    """
    if not is_checkpoint(obj):
        if is_state_dict(obj):
            raise CheckpointError(f"{where} is not a mistered model checkpoint: {WEIGHTS_ONLY_HINT}")
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{where} is not a mistered model checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r}); "
            "write checkpoints with mistered.models.save_model"
        )
    missing = [key for key in _KEYS if key not in obj]
    if missing:
        raise CheckpointError(f"{where} lacks the entries {missing}; it is incomplete")
    if obj["version"] != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{where} has format version {obj['version']!r}; this mistered reads version {CHECKPOINT_VERSION} "
            "(upgrade mistered to read newer checkpoints)"
        )
    if not isinstance(obj["arch_kwargs"], dict) or not isinstance(obj["meta"], dict):
        raise CheckpointError(f"{where}: 'arch_kwargs' and 'meta' must be dicts")
    _check_arch_entry(obj, where)
    state = obj["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{where}: 'state_dict' must map parameter names to tensors")
    return obj


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a checkpoint dict (weights only, on CPU) without building the model.

    Raises:
        CheckpointError: missing, corrupt or hostile file (told apart by content); not a mistered model
            checkpoint; a newer format version; an unknown architecture. The message names the problem.
    """
    where = f"checkpoint {str(path)!r}"
    kind = sniff(path, where)
    if kind not in (TORCH_SAVE, TORCH_LEGACY, PICKLE):
        raise CheckpointError(f"{where} is {KIND_NAMES[kind]}, not a mistered model checkpoint")
    return check_checkpoint(load_weights_only(Path(path), kind, where), where)


def model_from_checkpoint(checkpoint: dict[str, Any], where: str, path: str) -> nn.Module:
    """Build the architecture of a validated ``checkpoint`` and load its weights (``mistered_meta`` attached).

    Raises:
        CheckpointError: an ``"external"`` checkpoint (the message gives the ``--model ... --weights``
            options that load it), arguments the architecture refuses, or weights that do not fit.
    """
    if checkpoint["arch"] == EXTERNAL_ARCH:
        source = ModelSource.from_json(checkpoint["meta"]["source"])
        raise CheckpointError(
            f"{where}: this checkpoint holds weights for {source.spec}; "
            f"load it with {source.command_line(weights=path)}"
        )
    try:
        model = build_model(checkpoint["arch"], **checkpoint["arch_kwargs"])
    except InvalidInputError as error:
        raise CheckpointError(f"{where} cannot be built: {error}") from None
    target = f"architecture {checkpoint['arch']!r} with {checkpoint['arch_kwargs']}"
    apply_weights(model, checkpoint["state_dict"], where, target)
    model.mistered_meta = checkpoint["meta"]
    return model


def _weights_dir():
    return resources.files("mistered.models") / "weights"


def bundled_models() -> list[str]:
    """Names of the models whose weights ship with the package (``mistered/models/weights/<name>.pt``)."""
    return sorted(entry.name[: -len(".pt")] for entry in _weights_dir().iterdir() if entry.name.endswith(".pt"))


def bundled_path(name: str) -> Path:
    """The checkpoint file of the bundled model ``name`` (one of :func:`bundled_models`)."""
    return Path(str(_weights_dir() / f"{name}.pt"))
