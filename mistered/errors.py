"""Exception classes. Each says what went wrong and what to do; the CLI turns them into one line and exit code 2."""

from __future__ import annotations

__all__ = [
    "MisteredError",
    "InvalidInputError",
    "ThreatSpecError",
    "CheckpointError",
    "UnsupportedLayerError",
    "WeightsNotFoundError",
    "DatasetNotFoundError",
    "UnsoundResultError",
]


class MisteredError(Exception):
    """Base class of every error mistered raises on purpose."""


class InvalidInputError(MisteredError, ValueError):
    """Images, labels or options that cannot be used as given (shape, NaN, range, negative budget...)."""


class ThreatSpecError(MisteredError, ValueError):
    """A threat spec string or preset name that cannot be parsed."""


class CheckpointError(MisteredError):
    """A checkpoint that is missing, corrupt, hostile (not loadable with ``weights_only=True``) or mismatched."""


class UnsupportedLayerError(MisteredError, TypeError):
    """A network layer that a certifier or bound cannot handle; the message names the layer."""


class WeightsNotFoundError(MisteredError):
    """Pretrained weights (e.g. the LPIPS AlexNet trunk) that are not available offline."""


class DatasetNotFoundError(MisteredError):
    """A dataset that is not available on this machine."""


class UnsoundResultError(MisteredError):
    """A certified bound contradicted by an attack: something is unsound."""
