"""The dry run: does a model accept the data's images and give enough logits? Checked before any long run."""

from __future__ import annotations

import torch
from torch import nn

from ..device import resolve_device
from ..errors import InvalidInputError

__all__ = ["check_model_on_data"]

_BATCH = 2


def _model_device(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    tensor = tensor if tensor is not None else next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _describe_output(out: object) -> str:
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} items"
    return f"a {type(out).__name__}"


def _check_logits(out: object, shape: tuple[int, ...], num_classes: int) -> None:
    batch = f"a batch of {_BATCH} images of shape {shape}"
    if not isinstance(out, torch.Tensor):
        raise InvalidInputError(
            f"the model returns {_describe_output(out)} for {batch}; it must return a tensor of logits (B, K)"
        )
    if out.ndim != 2 or out.shape[0] != _BATCH:
        raise InvalidInputError(
            f"the model returns shape {tuple(out.shape)} for {batch}; expected logits of shape ({_BATCH}, K)"
        )
    if not out.is_floating_point():
        raise InvalidInputError(f"the model returns {out.dtype} for {batch}; logits must be floating point")
    if out.shape[1] < num_classes:
        raise InvalidInputError(
            f"the model gives {out.shape[1]} logits per image but the data has {num_classes} classes"
        )
    if not bool(torch.isfinite(out).all()):
        raise InvalidInputError(f"the model returns NaN or infinite logits for {batch} (all zeros)")


def check_model_on_data(
    model: nn.Module,
    sample_shape: tuple[int, int, int],
    num_classes: int,
    device: str | torch.device | None = None,
) -> None:
    """One no-grad forward pass on a batch of 2 zero images ``(2, C, H, W)`` of ``sample_shape``.

    The model is put in eval mode for the pass and given back in the mode it had (nothing is trained,
    batch-norm statistics are not touched).

    Args:
        model: maps ``(B, C, H, W)`` images in ``[0, 1]`` to ``(B, K)`` logits.
        sample_shape: the data's image shape ``(C, H, W)``.
        num_classes: the data's number of classes; the model must give ``K >= num_classes`` logits.
        device: where to run (``None``: the device of the model's parameters, else CPU).

    Raises:
        InvalidInputError: the model fails on this shape (its error, in one line), returns something
            other than a ``(2, K)`` floating-point tensor, gives fewer logits than classes, or returns
            NaN/inf; or ``sample_shape``/``num_classes`` are not positive.
    """
    shape = tuple(int(n) for n in sample_shape)
    if len(shape) != 3 or min(shape) < 1 or num_classes < 1:
        raise InvalidInputError(
            f"sample_shape must be (C, H, W) and num_classes >= 1, got {sample_shape}, {num_classes}"
        )
    where = _model_device(model) if device is None else resolve_device(device)
    x = torch.zeros((_BATCH, *shape), device=where)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as error:  # noqa: BLE001 - whatever the model raises is reported in one line
        text = " ".join(str(error).split())
        raise InvalidInputError(
            f"the model fails on a batch of images of shape {shape} (C, H, W), the data's shape: "
            f"{type(error).__name__}: {text[:300]}"
        ) from None
    finally:
        model.train(was_training)
    _check_logits(out, shape, num_classes)
