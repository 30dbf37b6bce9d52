"""Resumable evaluation state: finished chunks of work saved atomically under ``<out>/state/``.

Each unit of work (an attack or a certifier on a chunk of examples at one threat and budget) has a
string key; its result (a dict of tensors and plain values) is written with
:func:`mistered.io.atomic_torch_save` as soon as it finishes, so an interrupted run leaves only
complete chunks behind. The settings that determine the results are hashed; resuming refuses a
folder whose settings differ (and names the differing ones).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..io import atomic_torch_save, atomic_write_json, safe_torch_load

__all__ = ["EvaluationState", "settings_hash"]


def settings_hash(settings: dict[str, Any]) -> str:
    """SHA-256 (hex) of the settings as canonical JSON."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()


class EvaluationState:
    """The saved chunks of one evaluation in ``out_dir/state``.

    Args:
        out_dir: the evaluation's output folder.
        settings: everything the results depend on (JSON-like).
        resume: continue a saved evaluation; without it the folder must not hold one already.

    Raises:
        InvalidInputError: resuming a folder without saved state or with different settings, or
            starting afresh in a folder that already holds an evaluation.
    """

    def __init__(self, out_dir: str | Path, settings: dict[str, Any], resume: bool = False) -> None:
        self.dir = Path(out_dir) / "state"
        self.settings = json.loads(json.dumps(settings))
        self.hash = settings_hash(self.settings)
        saved_path = self.dir / "settings.json"
        if resume:
            if not saved_path.is_file():
                raise InvalidInputError(f"cannot resume {str(out_dir)!r}: it holds no saved evaluation (no state/settings.json)")
            saved = json.loads(saved_path.read_text(encoding="utf-8"))
            if saved.get("hash") != self.hash:
                old = saved.get("settings", {})
                differ = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
                listed = "; ".join(f"{k}: saved {old.get(k)!r}, now {self.settings.get(k)!r}" for k in differ)
                raise InvalidInputError(
                    f"cannot resume {str(out_dir)!r} with different settings ({listed}); rerun with the saved settings "
                    "or start a new evaluation with another --out"
                )
        elif saved_path.is_file():
            raise InvalidInputError(
                f"{str(out_dir)!r} already holds an evaluation; pass --resume {out_dir} to continue it or choose another --out"
            )
        else:
            atomic_write_json(saved_path, {"hash": self.hash, "settings": self.settings})

    def _path(self, key: str) -> Path:
        return self.dir / f"{hashlib.sha1(key.encode('utf-8')).hexdigest()[:20]}.pt"

    def load(self, key: str) -> dict[str, Any] | None:
        """The saved result of ``key``, or ``None`` when that chunk has not finished."""
        path = self._path(key)
        if not path.is_file():
            return None
        saved = safe_torch_load(path)
        if not isinstance(saved, dict) or saved.get("key") != key:
            raise InvalidInputError(f"state file {path} does not belong to chunk {key!r}; start a new evaluation")
        return saved["value"]

    def save(self, key: str, value: dict[str, Any]) -> None:
        """Atomically save the finished chunk ``key`` (tensors and plain values only)."""
        atomic_torch_save(self._path(key), {"key": key, "value": value})
