"""Resumable state of a run: finished chunks of work saved atomically under ``<out>/state/``.

Each unit of work (an attack or a certifier on a chunk of examples at one threat and budget) has a
string key; its result (a dict of tensors and plain values) is written with
:func:`mistered.io.atomic_torch_save` as soon as it finishes, so an interrupted run leaves only
complete chunks behind. The settings that determine the results are hashed; resuming refuses a
folder whose settings differ (and names the differing ones). ``evaluate`` uses it, and so do the
``attack``, ``certify`` and ``lipschitz`` commands for ``--resume``.

Under ``torchrun`` only rank 0 writes (``writer=True``); the other ranks read the chunks they find (a shared
folder) and leave the checks to rank 0.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..io import atomic_torch_save, atomic_write_json, safe_torch_load

__all__ = ["RunState", "open_state", "settings_hash"]


def settings_hash(settings: dict[str, Any]) -> str:
    """SHA-256 (hex) of the settings as canonical JSON."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()


class RunState:
    """The saved chunks of one run in ``out_dir/state``.

    Args:
        out_dir: the run's output folder.
        settings: everything the results depend on (JSON-like).
        resume: continue a saved run; without it the folder must not hold one already.
        what: how the run is called in messages (``"evaluation"``, ``"attack"`` ...).
        writer: this process checks the folder and saves chunks (rank 0); other ranks only read.

    Raises:
        InvalidInputError: resuming a folder without saved state or with different settings, or
            starting afresh in a folder that already holds a run.
    """

    def __init__(self, out_dir: str | Path, settings: dict[str, Any], resume: bool = False, *,
                 what: str = "evaluation", writer: bool = True) -> None:
        self.dir = Path(out_dir) / "state"
        self.settings = json.loads(json.dumps(settings))
        self.hash = settings_hash(self.settings)
        self.writer = writer
        if writer:
            self._check(out_dir, resume, what)

    def _check(self, out_dir: str | Path, resume: bool, what: str) -> None:
        saved_path = self.dir / "settings.json"
        if resume:
            if not saved_path.is_file():
                raise InvalidInputError(
                    f"cannot resume {str(out_dir)!r}: it holds no saved {what} (no state/settings.json)")
            saved = json.loads(saved_path.read_text(encoding="utf-8"))
            if saved.get("hash") != self.hash:
                old = saved.get("settings", {})
                differ = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
                listed = "; ".join(f"{k}: saved {old.get(k)!r}, now {self.settings.get(k)!r}" for k in differ)
                raise InvalidInputError(
                    f"cannot resume {str(out_dir)!r} with different settings ({listed}); rerun with the saved settings "
                    f"or start a new {what} with another --out"
                )
        elif saved_path.is_file():
            raise InvalidInputError(
                f"{str(out_dir)!r} already holds a saved {what}; pass --resume {out_dir} to continue it or choose "
                "another --out"
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
            raise InvalidInputError(f"state file {path} does not belong to chunk {key!r}; start a new run")
        return saved["value"]

    def save(self, key: str, value: dict[str, Any]) -> None:
        """Atomically save the finished chunk ``key`` (tensors and plain values only); a no-op on a reader."""
        if self.writer:
            atomic_torch_save(self._path(key), {"key": key, "value": value})


def open_state(out_dir: str | Path, settings: dict[str, Any], resume: bool = False, *, what: str = "evaluation",
               group: Any = None) -> RunState:
    """The :class:`RunState` of a run shared by the processes of ``group`` (``rank``, ``world_size``; ``None``:
    one process). Rank 0 checks the folder (its error is raised on every rank); the other ranks save their own
    chunks too when they see rank 0's folder (a shared file system), else they only compute."""
    from ..sharding import run_on_main

    if group is None or group.world_size <= 1:
        return RunState(out_dir, settings, resume, what=what)
    run_on_main(lambda: RunState(out_dir, settings, resume, what=what) and None, group)
    state = RunState(out_dir, settings, resume, what=what, writer=False)
    state.writer = (state.dir / "settings.json").is_file()
    return state
