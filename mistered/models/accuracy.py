"""Clean predictions and accuracy of a model on a dataset, batched and without gradients."""

from __future__ import annotations

import torch
from torch import nn

from ..data.labeled import LabeledImages

__all__ = ["predict", "accuracy"]


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted classes ``(N,)`` (int64, on ``images``' device) for ``images`` ``(N, C, H, W)`` in ``[0, 1]``.

    The images are moved in batches to the device of the model's first parameter or buffer.
    """
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else images.device
    parts = [model(images[i : i + batch_size].to(device)).argmax(dim=1) for i in range(0, images.shape[0], batch_size)]
    return torch.cat(parts).to(images.device) if parts else torch.zeros(0, dtype=torch.int64, device=images.device)


def accuracy(model: nn.Module, data: LabeledImages, batch_size: int = 500) -> float:
    """Fraction of ``data`` that ``model`` classifies correctly, in ``[0, 1]`` (the model should be in eval mode)."""
    if len(data) == 0:
        return float("nan")
    correct = predict(model, data.images, batch_size) == data.labels.to(data.images.device)
    return int(correct.sum()) / len(data)
