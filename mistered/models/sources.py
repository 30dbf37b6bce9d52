"""Where a model came from: the :class:`ModelSource` record and the parsing of a model spec string.

A spec is what a user writes after ``--model``: a bundled name (``mnist-cnn``), a file (a mistered
checkpoint, a TorchScript archive, a ``torch.export`` ``.pt2`` archive or an ONNX file, recognised by
content), ``path/to/file.py:Name`` or ``package.module:Name``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "ModelSource", "PythonSpec", "file_sha256", "parse_python_spec"]

KINDS = ("bundled", "checkpoint", "python", "torchscript", "torch-export", "onnx")

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_FILE_SPEC = re.compile(rf"^(?P<target>.+\.py):(?P<name>{_IDENTIFIER})$")
_MODULE_SPEC = re.compile(rf"^(?P<target>{_IDENTIFIER}(\.{_IDENTIFIER})*):(?P<name>{_IDENTIFIER})$")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _floats(values: Any) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


@dataclass(frozen=True)
class ModelSource:
    """What a loaded model was built from; attached to it as ``model.mistered_source``.

    Attributes:
        spec: what the user gave: a bundled name, a path, ``"file.py:Name"`` or ``"pkg.module:Name"``.
        kind: one of :data:`KINDS`.
        path: the resolved file (checkpoint, archive, ONNX, the ``.py`` file); ``None`` for ``pkg.module:Name``.
        sha256: hex SHA-256 of ``path`` (``None`` when ``path`` is).
        weights: the ``--weights`` file applied on top, if any.
        weights_sha256: its hex SHA-256.
        model_args: the JSON keyword arguments given to ``Name(...)`` (python sources only).
        mean, std: the per-channel normalisation folded in front of the model (``None``: none).
    """

    spec: str
    kind: str
    path: str | None = None
    sha256: str | None = None
    weights: str | None = None
    weights_sha256: str | None = None
    model_args: dict = field(default_factory=dict)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """A dict of plain JSON values (tuples become lists), the form kept in results and checkpoints."""
        return {
            "spec": self.spec,
            "kind": self.kind,
            "path": self.path,
            "sha256": self.sha256,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "model_args": dict(self.model_args),
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSource:
        """The inverse of :meth:`to_json` (missing optional entries default to ``None``/``{}``)."""
        return cls(
            spec=str(data["spec"]),
            kind=str(data["kind"]),
            path=data.get("path"),
            sha256=data.get("sha256"),
            weights=data.get("weights"),
            weights_sha256=data.get("weights_sha256"),
            model_args=dict(data.get("model_args") or {}),
            mean=_floats(data.get("mean")),
            std=_floats(data.get("std")),
        )

    def describe(self) -> str:
        """One line for people, e.g. ``"net.py:Net (python, sha256 1a2b3c4d5e6f) + weights w.pt (sha256 ...)"``."""
        text = f"{self.spec} ({self.kind}" + (f", sha256 {self.sha256[:12]})" if self.sha256 else ")")
        if self.model_args:
            text += f" with model_args {self.model_args}"
        if self.weights:
            text += f" + weights {self.weights}"
            text += f" (sha256 {self.weights_sha256[:12]})" if self.weights_sha256 else ""
        if self.mean is not None:
            text += f", normalised inside: mean {list(self.mean)} std {list(self.std or ())}"
        return text

    def command_line(self, weights: str | None = None) -> str:
        """The ``--model ... --weights ...`` options that load this model again (``weights`` overrides)."""
        parts = [f"--model {self.spec}"]
        if self.model_args:
            parts.append(f"--model-args '{json.dumps(self.model_args)}'")
        if self.mean is not None and self.std is not None:
            parts.append(f"--mean {','.join(f'{v:g}' for v in self.mean)} --std {','.join(f'{v:g}' for v in self.std)}")
        weights = weights if weights is not None else self.weights
        if weights:
            parts.append(f"--weights {weights}")
        return " ".join(parts)


@dataclass(frozen=True)
class PythonSpec:
    """A parsed ``file.py:Name`` (``is_file``) or ``package.module:Name`` spec."""

    target: str
    name: str
    is_file: bool


def parse_python_spec(spec: str) -> PythonSpec | None:
    """``PythonSpec`` for ``"path/to/file.py:Name"`` or ``"package.module:Name"``, else ``None``.

    The split is at the last colon, so Windows drive letters (``C:\\nets\\net.py:Net``) work.
    """
    match = _FILE_SPEC.match(spec)
    if match:
        return PythonSpec(str(Path(match["target"])), match["name"], is_file=True)
    match = _MODULE_SPEC.match(spec)
    if match:
        return PythonSpec(match["target"], match["name"], is_file=False)
    return None
