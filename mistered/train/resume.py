"""What may change when a training run is resumed: only more epochs (and bookkeeping settings).

A run is identified by its *fingerprint*: every :class:`~mistered.train.loop.TrainConfig` setting, the
caller's ``run_info`` (data source, model source, method, threats ...), what the training and held-out
data are (size and a hash of the labels) and the model's parameter names and shapes. The checkpoint
keeps it; on resume :func:`plan_resume` compares it with the new one:

* ``epochs`` may grow: the run is *extended* (the loop recomputes its learning-rate schedule and the
  objective's ``progress`` for the new total from the step reached, and says so); it may not shrink.
* :data:`RESUMABLE_CHANGES` (how often to checkpoint, how much to evaluate) may change freely.
* any other difference is refused, every one listed as ``name: saved -> given``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

from torch import nn

from ..errors import InvalidInputError
from .batches import data_fingerprint

__all__ = ["RESUMABLE_CHANGES", "run_fingerprint", "settings_differences", "plan_resume"]

logger = logging.getLogger(__name__)

#: settings that may change between a run and its resumption (they do not change the weights)
RESUMABLE_CHANGES = ("checkpoint_every", "eval_n", "eval_attack_steps")

_ABSENT = object()


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (a checkpoint or JSON round trip must not make a difference)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _model_signature(model: nn.Module) -> str:
    """A short hash of the model's state_dict keys, shapes and dtypes (its architecture, not its weights)."""
    described = [f"{name}:{tuple(t.shape)}:{t.dtype}" for name, t in model.state_dict().items()]
    return hashlib.sha256("\n".join(described).encode()).hexdigest()[:16]


def run_fingerprint(
    config: Any, run_info: dict[str, Any] | None, model: nn.Module, train: Any, held_out: Any
) -> dict[str, Any]:
    """The settings that define a run (stored in checkpoints and ``log.json``; compared on resume).

    Args:
        config: the :class:`~mistered.train.loop.TrainConfig`. run_info: the caller's further settings.
        model: the (unwrapped) model. train, held_out: the data sets (see :mod:`mistered.train.batches`).
    """
    return _plain({
        **dataclasses.asdict(config), **(run_info or {}),
        "train_data": data_fingerprint(train), "held_out_data": data_fingerprint(held_out),
        "model_state": _model_signature(model),
    })


def _flatten(settings: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value, default=str)


def settings_differences(saved: dict[str, Any], given: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """Every setting (nested ones as ``a.b``) that differs, as ``"name: saved -> given"``, sorted by name."""
    old, new = dict(_flatten(_plain(saved))), dict(_flatten(_plain(given)))
    names = sorted(name for name in set(old) | set(new) if name.split(".")[0] not in ignore)
    return [
        f"{name}: {_show(old.get(name, _ABSENT))} -> {_show(new.get(name, _ABSENT))}"
        for name in names if old.get(name, _ABSENT) != new.get(name, _ABSENT)
    ]


def plan_resume(saved: dict[str, Any], given: dict[str, Any], epochs_done: int, path: str | os.PathLike) -> int | None:
    """Check that a run may resume with the ``given`` settings; returns the saved ``epochs`` when the run is
    being extended (``given["epochs"]`` larger), else ``None``.

    Args:
        saved: the checkpoint's fingerprint; given: this call's (see :func:`run_fingerprint`).
        epochs_done: epochs the checkpoint has finished. path: the checkpoint, for messages.

    Raises:
        InvalidInputError: one line listing every difference other than a larger ``epochs`` and
            :data:`RESUMABLE_CHANGES`, each as ``name: saved -> given`` (fewer epochs than the run was
            started with is one of them, saying how many are done).
    """
    differences = settings_differences(saved, given, ignore=("epochs", *RESUMABLE_CHANGES))
    saved_epochs, given_epochs = int(saved.get("epochs", 0)), int(given["epochs"])
    if given_epochs < saved_epochs:
        differences.insert(0, f"epochs: {saved_epochs} -> {given_epochs} ({epochs_done} already done; "
                              f"a resumed run may only raise epochs)")
    if differences:
        raise InvalidInputError(
            f"cannot resume from {str(path)!r}: {len(differences)} setting(s) differ from the run's "
            f"({'; '.join(differences)}); resume with the run's settings (only epochs may grow) or start a new run "
            f"in another folder"
        )
    for change in settings_differences({k: saved.get(k) for k in RESUMABLE_CHANGES},
                                       {k: given.get(k) for k in RESUMABLE_CHANGES}):
        logger.info("resuming with a changed bookkeeping setting (allowed): %s", change)
    return saved_epochs if given_epochs > saved_epochs else None
