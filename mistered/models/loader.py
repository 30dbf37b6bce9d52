"""``load_model``: one loader for every model source (see :mod:`~mistered.models.sources`).

A spec is resolved in this order: a bundled name; an existing file, recognised by content (a mistered
checkpoint, TorchScript, a ``torch.export`` ``.pt2`` archive, ONNX); ``path/to/file.py:Name``;
``package.module:Name``. Then ``weights`` are loaded into it, ``mean``/``std`` are folded in front
(:class:`Normalized`), and the model is moved to ``device`` and put in eval mode.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..device import resolve_device
from ..errors import CheckpointError, InvalidInputError
from .checkpoint import (
    DEFAULT_MODEL,
    bundled_models,
    bundled_path,
    check_checkpoint,
    model_from_checkpoint,
    read_checkpoint,
)
from .exported import load_exported
from .fitting import WEIGHTS_ONLY_HINT, apply_weights, is_state_dict
from .normalized import Normalized
from .onnx_import import load_onnx
from .pickles import load_weights_only
from .python_source import load_python_model
from .registry import ARCHITECTURES
from .sniff import KIND_NAMES, ONNX, PICKLE, SAFETENSORS, TORCH_EXPORT, TORCH_LEGACY, TORCH_SAVE, TORCHSCRIPT, sniff
from .sources import ModelSource, file_sha256, parse_python_spec
from .weights import read_weights

__all__ = ["load_model"]

logger = logging.getLogger(__name__)


def _load_torchscript(path: Path, where: str) -> nn.Module:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as error:  # noqa: BLE001 - TorchScript raises RuntimeError subclasses of many kinds
        text = str(error).strip().splitlines()
        raise CheckpointError(
            f"{where} is a TorchScript archive that cannot be loaded: {type(error).__name__}"
            + (f": {text[0]}" if text else "")
        ) from None


def _from_file(path: Path) -> tuple[nn.Module, str]:
    """The model in the file at ``path`` and its kind, recognised by content."""
    where = f"model {str(path)!r}"
    kind = sniff(path, where)
    if kind in (TORCH_SAVE, TORCH_LEGACY, PICKLE):
        obj = load_weights_only(path, kind, where)
        if is_state_dict(obj):
            raise CheckpointError(f"{where} is not a mistered model checkpoint: {WEIGHTS_ONLY_HINT}")
        return model_from_checkpoint(check_checkpoint(obj, where), where, str(path)), "checkpoint"
    if kind == TORCHSCRIPT:
        return _load_torchscript(path, where), "torchscript"
    if kind == TORCH_EXPORT:
        return load_exported(path, where), "torch-export"
    if kind == ONNX:
        return load_onnx(path, where), "onnx"
    if kind == SAFETENSORS:
        raise CheckpointError(f"{where} is a safetensors file: {WEIGHTS_ONLY_HINT}")
    raise CheckpointError(
        f"{where} is {KIND_NAMES[kind]}, not a model mistered can load (a mistered checkpoint, a TorchScript "
        "archive, a torch.export .pt2 archive or an ONNX file; or give Python code as file.py:Name)"
    )


def _unknown(spec: str) -> CheckpointError:
    bundled = ", ".join(bundled_models())
    if spec in ARCHITECTURES:
        return CheckpointError(
            f"architecture {spec!r} has no bundled weights (bundled: {bundled}); train it (mistered train) and pass "
            f"the checkpoint path, or give trained weights with --model {ARCHITECTURES[spec]} --weights FILE"
        )
    return CheckpointError(
        f"model {spec!r} is neither a bundled model ({bundled}) nor an existing file nor a "
        "path/to/file.py:Name or package.module:Name spec"
    )


def _no_model_args(model_args: dict[str, Any], spec: str) -> None:
    if model_args:
        raise InvalidInputError(
            f"model_args apply to file.py:Name and package.module:Name sources only, not to {spec!r}"
        )


def _load_source(spec: str, model_args: dict[str, Any]) -> tuple[nn.Module, ModelSource]:
    """The model as its source builds it (no weights, no folding) and the source record."""
    if spec in bundled_models():
        _no_model_args(model_args, spec)
        path = bundled_path(spec)
        model = model_from_checkpoint(read_checkpoint(path), f"bundled model {spec!r}", str(path))
        return model, ModelSource(spec, "bundled", str(path), file_sha256(path))
    path = Path(spec)
    if path.is_file():
        if path.suffix == ".py":
            raise InvalidInputError(f"{spec!r} is a Python file: name the model class or function, as {spec}:Name")
        _no_model_args(model_args, spec)
        model, kind = _from_file(path)
        return model, ModelSource(spec, kind, str(path.resolve()), file_sha256(path))
    python = parse_python_spec(spec)
    if python is None:
        raise _unknown(spec)
    model, file = load_python_model(python, model_args)
    sha = file_sha256(file) if file is not None else None
    return model, ModelSource(spec, "python", None if file is None else str(file), sha, model_args=dict(model_args))


def _checked_model_args(model_args: dict[str, Any] | None) -> dict[str, Any]:
    if model_args is None:
        return {}
    if not isinstance(model_args, dict) or not all(isinstance(key, str) for key in model_args):
        raise InvalidInputError(f"model_args must be a JSON object (string keys), got {model_args!r}")
    try:
        return json.loads(json.dumps(model_args, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"model_args must hold only JSON values: {error}") from None


def _checked_normalisation(
    mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    if (mean is None) != (std is None):
        raise InvalidInputError("give both mean and std (--mean and --std, one value per channel), or neither")
    if mean is None or std is None:
        return None, None
    try:
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise InvalidInputError(f"mean and std must be numbers, got {mean!r} and {std!r}") from None


def load_model(
    source: str | os.PathLike | None = None,
    *,
    weights: str | os.PathLike | None = None,
    model_args: dict[str, Any] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Load a model from any source, in eval mode on ``device``.

    Args:
        source: a bundled name (``None``: ``"mnist-cnn"``), a file (mistered checkpoint, TorchScript,
            ``torch.export`` ``.pt2`` or ONNX, recognised by content), ``"path/to/file.py:Name"`` or
            ``"package.module:Name"`` (``Name``: an ``nn.Module`` class or a function returning one).
        weights: a state dict loaded into the model, whatever its source: a ``torch.save``'d state dict
            (read weights-only), a ``.safetensors`` file, or a mistered checkpoint.
        model_args: JSON keyword arguments for ``Name(...)`` (Python sources only).
        mean, std: per-channel normalisation to fold in front (``Normalized``); both or neither.
        device: ``None``/``"auto"``: CUDA when available, else CPU.

    Returns:
        An ``nn.Module`` mapping ``(B, C, H, W)`` images in ``[0, 1]`` (after the folded normalisation)
        to ``(B, K)`` logits, with ``model.mistered_source`` (a :class:`ModelSource`) and, for mistered
        checkpoints, ``model.mistered_meta``.

    Raises:
        CheckpointError: an unknown name; a missing, corrupt or hostile file; weights only where a model
            is needed; an unconvertible ONNX operator; weights that do not fit (the first mismatching key
            and both shapes, missing and unexpected keys).
        InvalidInputError: a mistake in a Python source (syntax error, missing ``Name``, bad
            ``model_args``...), ``model_args`` for a non-Python source, bad ``mean``/``std``/``device``.
    """
    spec = DEFAULT_MODEL if source is None else os.fspath(source)
    model_args = _checked_model_args(model_args)
    mean_values, std_values = _checked_normalisation(mean, std)
    target_device = resolve_device(device)
    model, origin = _load_source(spec, model_args)
    meta = getattr(model, "mistered_meta", None)
    if weights is not None:
        weights_path = Path(weights)
        apply_weights(model, read_weights(weights_path), f"weights file {str(weights_path)!r}", f"the model {spec}")
        origin = replace(origin, weights=str(weights_path), weights_sha256=file_sha256(weights_path))
    if mean_values is not None:
        model = Normalized(model, mean_values, std_values)
        origin = replace(origin, mean=mean_values, std=std_values)
    model.mistered_source = origin
    if meta is not None:
        model.mistered_meta = meta
    logger.info("loaded model %s", origin.describe())
    return model.to(target_device).eval()
