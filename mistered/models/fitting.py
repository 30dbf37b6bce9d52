"""Putting a state dict into a model, with one line that says exactly what does not fit."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import CheckpointError

__all__ = ["WEIGHTS_ONLY_HINT", "apply_weights", "describe_mismatch", "is_state_dict"]

_SHOWN = 3
WEIGHTS_ONLY_HINT = "this file holds weights only; give the architecture with --model file.py:Class --weights FILE"


def is_state_dict(obj: object) -> bool:
    """Whether ``obj`` is a non-empty dict mapping parameter names (str) to tensors."""
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _names(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def _shape(tensor: torch.Tensor) -> str:
    return "(" + ", ".join(str(n) for n in tensor.shape) + ")"


def _common_prefix(longer: list[str], shorter: list[str]) -> str | None:
    """``"p."`` when every key of ``longer`` is ``"p." + `` a key of ``shorter`` (one for one), else ``None``."""
    heads = {key.split(".", 1)[0] for key in longer}
    if len(heads) != 1 or not all("." in key for key in longer):
        return None
    prefix = heads.pop() + "."
    return prefix if sorted(key[len(prefix) :] for key in longer) == sorted(shorter) else None


def _prefix_hint(expected: list[str], given: list[str]) -> str:
    """A hint when the two key sets differ only by a common first component (e.g. ``module.``)."""
    prefix = _common_prefix(given, expected)
    if prefix:
        return f" (every key of the weights has the extra prefix {prefix!r})"
    prefix = _common_prefix(expected, given)
    return f" (every key of the model has the extra prefix {prefix!r})" if prefix else ""


def describe_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> str | None:
    """``None`` when ``given`` fits a model whose state dict is ``expected``, else what does not fit:
    the first key whose shapes differ (both shapes), then the missing and unexpected keys."""
    sizes = [key for key in expected if key in given and given[key].shape != expected[key].shape]
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    parts = []
    if sizes:
        key = sizes[0]
        more = f" ({len(sizes) - 1} more size mismatches)" if len(sizes) > 1 else ""
        parts.append(
            f"size mismatch for {key!r}: the weights have {_shape(given[key])}, "
            f"the model has {_shape(expected[key])}{more}"
        )
    if missing:
        parts.append(f"Missing keys ({len(missing)}): {_names(missing)}")
    if unexpected:
        parts.append(f"Unexpected keys ({len(unexpected)}): {_names(unexpected)}")
    if not parts:
        return None
    return "; ".join(parts) + (_prefix_hint(list(expected), list(given)) if missing and unexpected else "")


def apply_weights(model: nn.Module, state: Mapping[str, torch.Tensor], where: str, target: str) -> None:
    """Load ``state`` into ``model`` (strictly, in place) or raise one line naming what does not fit.

    Args:
        where: the weights' origin for the message, e.g. ``"weights 'w.pt'"``.
        target: the model for the message, e.g. ``"the model net.py:Net"``.

    Raises:
        CheckpointError: ``"<where> does not fit <target>: size mismatch for 'fc.weight': the weights
            have (3, 256), the model has (10, 256); Missing keys (1): 'fc.bias'"``.
    """
    problem = describe_mismatch(model.state_dict(), state)
    if problem is None:
        try:
            model.load_state_dict(state, strict=True)
            return
        except RuntimeError as error:
            problem = " ".join(str(error).split())
    raise CheckpointError(f"{where} does not fit {target}: {problem}")
