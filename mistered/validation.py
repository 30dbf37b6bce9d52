"""Checks on user-facing tensors and models; each failure is one :class:`~mistered.errors.MisteredError` line.

Every public entry point that takes a batch (the :class:`~mistered.attacks.Attack` base, LMT, L∞-dist,
GeoCert, the MIP distance, the local Lipschitz estimators, ``evaluate``) validates it through
:func:`check_batch` (or :func:`check_inputs` where there are no labels) and, after its first forward pass,
:func:`check_logits`. The rules, the same everywhere:

* **Images** ``(B, C, H, W)`` (or ``(B, *input_shape)`` where an entry point takes flat inputs) are a floating
  tensor, finite, inside the domain (``[0, 1]`` pixels; the Lipschitz estimators take any finite values).
  Integer and bool images are refused (scale ``uint8`` pixels by ``1 / 255`` first).
* **Precision**: images of any floating dtype are accepted and cast to the dtype the computation runs in:
  the model's parameter dtype (:func:`model_dtype`, float32 for ordinary models) for attacks, LMT and
  L∞-dist; GeoCert, the MIP distance and the Lipschitz estimators compute in float64 and cast up exactly.
  A cast that loses precision (float64 images, float32 model) is logged once per process, never refused.
* **Labels** ``(B,)`` of any integer dtype (``int8`` ... ``int64``, ``uint8``) are converted to ``int64`` on the
  images' device; float, bool and complex labels are refused (they are not class indices). Labels must
  lie in ``[0, K)``: ``K`` is ``num_classes`` where the caller knows it, else the width of the model's
  logits on the batch (:func:`check_logits`, after the first forward pass).
* **Empty batches** (``B = 0``) are valid: every entry point returns an empty result of the usual types.
* **Models** that a certifier reads layer by layer must be plain ``nn.Module`` trees: TorchScript modules,
  ``torch.fx`` GraphModules and ``torch.export`` programs are refused by :func:`check_layered_model`.
* **Devices** are checked by :func:`mistered.device.resolve_device`.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn

from .errors import InvalidInputError, UnsupportedLayerError

__all__ = [
    "check_batch",
    "check_inputs",
    "check_images",
    "check_labels",
    "check_logits",
    "check_layered_model",
    "check_nonnegative",
    "describe_model",
    "model_device",
    "model_dtype",
]

logger = logging.getLogger(__name__)

#: The pixel domain of images everywhere in mistered.
_PIXELS = (0.0, 1.0)


def check_inputs(x: torch.Tensor, *, images: bool = True, domain: tuple[float, float] | None = _PIXELS,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 name: str = "images") -> torch.Tensor:
    """Validate a batch of inputs and return it cast to ``dtype`` and moved to ``device``.

    Args:
        x: ``(B, C, H, W)`` when ``images``, else ``(B, ...)`` with at least 2 dimensions; ``B = 0`` is allowed.
        images: require the 4-D image layout.
        domain: ``(lo, hi)`` every value must lie in (``None``: any finite value).
        dtype: the floating dtype to cast to (``None``: keep); a lossy cast is logged once per process.
        device: where to move ``x`` (``None``: keep).
        name: how to call the tensor in error messages.
    """
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if images and x.dim() != 4:
        raise InvalidInputError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}")
    if x.dim() < 2:
        raise InvalidInputError(f"{name} must be a batch of shape (B, ...), got {tuple(x.shape)}")
    if not x.is_floating_point():
        hint = " (scale uint8 pixels by 1/255)" if x.dtype == torch.uint8 else ""
        raise InvalidInputError(f"{name} must be floating point, got dtype {x.dtype}{hint}")
    if x.numel():
        if not bool(torch.isfinite(x).all()):
            raise InvalidInputError(f"{name} must be finite, got NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if domain is not None and (lo < domain[0] or hi > domain[1]):
            raise InvalidInputError(
                f"{name} must lie in [{domain[0]:g}, {domain[1]:g}], got values in [{lo:.4g}, {hi:.4g}]"
            )
    if dtype is not None and x.dtype != dtype:
        _log_lossy_cast(x.dtype, dtype)
        x = x.to(dtype)
    return x if device is None else x.to(device)


def check_images(x: torch.Tensor, channels: int | None = None, name: str = "images") -> torch.Tensor:
    """Validate images ``(B, C, H, W)`` (finite, floating, in ``[0, 1]``; ``B = 0`` allowed) with ``channels``
    channels if given. Returns ``x`` unchanged (use :func:`check_batch` to normalise a batch)."""
    check_inputs(x, name=name)
    if channels is not None and x.shape[1] != channels:
        raise InvalidInputError(f"{name} must have {channels} channel(s), got {x.shape[1]} (shape {tuple(x.shape)})")
    return x


def check_labels(y: torch.Tensor, batch_size: int, num_classes: int | None = None,
                 name: str = "labels") -> torch.Tensor:
    """Validate class labels of shape ``(batch_size,)`` of any integer dtype; returns them as ``int64``.

    With ``num_classes`` (``K``) the labels must lie in ``[0, K)``; otherwise they must be non-negative.
    """
    if not isinstance(y, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise InvalidInputError(f"{name} must be integer class indices, got dtype {y.dtype}")
    if y.dim() != 1 or y.shape[0] != batch_size:
        raise InvalidInputError(f"{name} must have shape ({batch_size},) to match the images, got {tuple(y.shape)}")
    y = y.long()
    if y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else "[0, K)"
            raise InvalidInputError(
                f"{name} must lie in {bound}" + (f" for a model with {num_classes} classes" if num_classes else "")
                + f", got values in [{lo}, {hi}]"
            )
    return y


def check_batch(x: torch.Tensor, y: torch.Tensor, *, num_classes: int | None = None, images: bool = True,
                domain: tuple[float, float] | None = _PIXELS, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The one check of a labelled batch at every public entry point; returns it normalised.

    Args:
        x: images ``(B, C, H, W)`` (``images=False``: ``(B, ...)``), see :func:`check_inputs`.
        y: labels ``(B,)`` of any integer dtype, in ``[0, num_classes)`` when ``num_classes`` is given (else
            call :func:`check_logits` after the first forward pass).
        images, domain, dtype, device: see :func:`check_inputs`.

    Returns:
        ``(x, y)``: ``x`` cast to ``dtype`` on ``device``; ``y`` ``int64`` on ``x``'s device.
    """
    x = check_inputs(x, images=images, domain=domain, dtype=dtype, device=device)
    y = check_labels(y, x.shape[0], num_classes)
    return x, y.to(x.device)


def check_logits(logits: torch.Tensor, labels: torch.Tensor | None = None, what: str = "the model") -> int:
    """Check that ``logits`` are ``(B, K)`` and that ``labels`` ``(B,)`` (already through :func:`check_labels`)
    lie in ``[0, K)``; returns ``K``. Called on the first forward pass when the caller does not know ``K``."""
    batch = None if labels is None else labels.shape[0]
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or (batch is not None and logits.shape[0] != batch):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InvalidInputError(f"{what} must return logits of shape (B, K) = ({batch}, K), got {shape}")
    num_classes = int(logits.shape[1])
    if labels is not None:
        check_labels(labels, labels.shape[0], num_classes)
    return num_classes


def describe_model(model: object) -> str:
    """How a model reads in a message: ``"a TorchScript module (RecursiveScriptModule)"``, ``"Sequential"`` ..."""
    name = type(model).__name__
    if isinstance(model, torch.jit.ScriptModule):
        return f"a TorchScript module ({name})"
    if isinstance(model, torch.fx.GraphModule):
        return "a torch.fx / torch.export GraphModule" + (f" ({name})" if name != "GraphModule" else "")
    if isinstance(model, torch.export.ExportedProgram):
        return "a torch.export ExportedProgram"
    return name if isinstance(model, nn.Module) else f"a {name}, not an nn.Module"


def check_layered_model(model: object, method: str, layers: str) -> nn.Module:
    """Refuse a model whose layers ``method`` cannot read: anything not an ``nn.Module``, or one that is (or
    contains) a TorchScript module or a ``torch.fx`` / ``torch.export`` graph. ``layers`` says what it
    needs, e.g. ``"Linear, Conv2d and ReLU layers"``. Returns ``model``.

    Raises:
        UnsupportedLayerError: e.g. "LMT needs an nn.Module made of ...; got a TorchScript module (...)".
    """
    opaque = [model] if not isinstance(model, nn.Module) else [
        m for m in model.modules() if isinstance(m, (torch.jit.ScriptModule, torch.fx.GraphModule))
    ]
    if opaque:
        inner = "" if opaque[0] is model else f" inside {type(model).__name__}"
        raise UnsupportedLayerError(
            f"{method} needs an nn.Module made of {layers}; got {describe_model(opaque[0])}{inner}, whose layers "
            "it cannot read: load the model from its Python class (file.py:Name or module:Name with --weights) "
            "or a mistered checkpoint"
        )
    return model


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype ``model`` computes in: that of its first floating parameter or buffer (float32 if none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (``cpu`` if it has none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def check_nonnegative(value: float, name: str) -> float:
    """Validate a finite, non-negative budget or option; returns it as ``float``."""
    value = float(value)
    if not value >= 0.0 or value == float("inf"):
        raise InvalidInputError(f"{name} must be a finite non-negative number, got {value}")
    return value


@functools.lru_cache(maxsize=None)
def _log_lossy_cast(source: torch.dtype, target: torch.dtype) -> None:
    """Log (once per process and dtype pair) that inputs lose precision in a cast."""
    if torch.finfo(target).eps > torch.finfo(source).eps:
        logger.warning("inputs of dtype %s are cast to %s, the dtype the model computes in", source, target)
