"""Checks on user-facing tensors. They raise :class:`~mistered.errors.InvalidInputError` with the offending value."""

from __future__ import annotations

import torch

from .errors import InvalidInputError

__all__ = ["check_images", "check_labels", "check_nonnegative"]


def check_images(x: torch.Tensor, channels: int | None = None, name: str = "images") -> torch.Tensor:
    """Validate a batch of images of shape ``(B, C, H, W)`` with finite values in ``[0, 1]``.

    Args:
        x: the images.
        channels: the channel count the consumer expects, or ``None`` for any.
        name: how to call the tensor in error messages.

    Returns:
        ``x`` unchanged.
    """
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise InvalidInputError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise InvalidInputError(f"{name} must have {channels} channel(s), got {x.shape[1]} (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise InvalidInputError(f"{name} must be floating point in [0, 1], got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise InvalidInputError(f"{name} contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise InvalidInputError(f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return x


def check_labels(y: torch.Tensor, batch_size: int, num_classes: int | None = None) -> torch.Tensor:
    """Validate integer class labels of shape ``(B,)``; returns ``y`` unchanged."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != batch_size:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise InvalidInputError(f"labels must have shape ({batch_size},), got {shape}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise InvalidInputError(f"labels must be integers, got dtype {y.dtype}")
    if y.numel() and (int(y.min()) < 0 or (num_classes is not None and int(y.max()) >= num_classes)):
        raise InvalidInputError(f"labels must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")
    return y


def check_nonnegative(value: float, name: str) -> float:
    """Validate a finite, non-negative budget or option; returns it as ``float``."""
    value = float(value)
    if not value >= 0.0 or value == float("inf"):
        raise InvalidInputError(f"{name} must be a finite non-negative number, got {value}")
    return value
