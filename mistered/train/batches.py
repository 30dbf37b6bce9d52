"""Training and held-out data as streams of mini-batches, so memory stays flat as the data set grows.

:func:`fit <mistered.train.loop.fit>` takes any labelled data set of the data contract (``len(d)``,
``d[i] -> (image (C, H, W), label)``, ``d.labels``: :class:`mistered.data.LabeledDataset`, or any
torch ``Dataset`` with those) or an in-memory ``(images, labels)`` pair of tensors. Each step reads only
the examples of its batch: with ``d.get_batch(index)`` where the data set has it (every
``LabeledDataset``: one read for the batch), else ``d[i]`` one by one — the same values either way.
Which examples a batch holds is decided by the caller (the loop's seeded, DistributedSampler-style
:func:`~mistered.train.distributed.shard_indices`, padded so that every process takes as many steps,
which :class:`~torch.nn.parallel.DistributedDataParallel` needs), never by the data set, so the order
is the same for every kind of data, on every rank, and after a resume.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from ..validation import check_batch, check_images, check_labels, check_logits

__all__ = ["as_dataset", "data_fingerprint", "load_batch", "count_logits"]


@dataclass(frozen=True)
class _InMemory:
    """An ``(images, labels)`` pair of tensors seen as a data set (what :func:`as_dataset` makes of a tuple)."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def get_batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images[index], labels[index])``."""
        return self.images[index], self.labels[index]


def as_dataset(data: Any, role: str) -> Any:
    """``data`` as a data set the loop can stream: a tuple ``(images (N, C, H, W), labels (N,))`` is wrapped
    (and checked whole, it is in memory anyway); a data set is returned as it is.

    Args:
        data: a :class:`~mistered.data.LabeledDataset` (or a data set with ``__len__``, ``__getitem__`` and
            ``labels``), or a pair of tensors.
        role: what the data is for, in messages (``"training"``, ``"held-out"``).

    Raises:
        InvalidInputError: not a data set, or an empty one, or bad tensors in a pair.
    """
    if isinstance(data, tuple) and len(data) == 2:
        images, labels = data
        check_images(images, name=f"{role} images")
        labels = check_labels(labels, images.shape[0], name=f"{role} labels")
        data = _InMemory(images, labels, role)
    elif not (hasattr(data, "__len__") and hasattr(data, "labels")
              and (hasattr(data, "__getitem__") or hasattr(data, "get_batch"))):
        raise InvalidInputError(
            f"the {role} data must be a LabeledDataset (mistered.data.load_dataset) or an (images, labels) pair of "
            f"tensors, got {type(data).__name__}"
        )
    if len(data) == 0:
        raise InvalidInputError(f"the {role} set is empty")
    return data


def data_fingerprint(dataset: Any) -> dict[str, Any]:
    """What identifies a data set for resuming: ``{"n": N, "labels_hash": ...}``, the first 16 hex digits of the
    labels' sha256 (labels are cheap to read)."""
    labels = torch.as_tensor(dataset.labels).to(torch.int64).contiguous().cpu()
    return {"n": len(dataset), "labels_hash": hashlib.sha256(labels.numpy().tobytes()).hexdigest()[:16]}


def _name(dataset: Any) -> str:
    return str(getattr(dataset, "name", type(dataset).__name__))


def _read(dataset: Any, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples ``index`` of ``dataset`` as ``(images (B, C, H, W), labels (B,))``, on the CPU as stored."""
    if callable(getattr(dataset, "get_batch", None)):
        return dataset.get_batch(index)
    items = [dataset[int(i)] for i in index]
    images = [item[0] for item in items]
    shapes = {tuple(getattr(image, "shape", ())) for image in images}
    if len(shapes) != 1 or not all(isinstance(image, torch.Tensor) and image.dim() == 3 for image in images):
        raise InvalidInputError(
            f"{_name(dataset)}: examples must be (C, H, W) image tensors of one shape; examples "
            f"{index[:3].tolist()}... give {sorted(shapes)[:3]}"
        )
    return torch.stack(images), torch.as_tensor([int(item[1]) for item in items], dtype=torch.int64)


def load_batch(
    dataset: Any, index: torch.Tensor, num_classes: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read, check and place the examples ``index`` (int64 ``(B,)``) of ``dataset``.

    Returns:
        ``(images (B, C, H, W) of dtype on device, labels (B,) int64 on device)``, checked as every entry
        point checks a batch (:func:`mistered.validation.check_batch`: finite pixels in ``[0, 1]``, labels
        in ``[0, num_classes)``).
    """
    x, y = _read(dataset, index)
    return check_batch(x, y, num_classes=num_classes, dtype=dtype, device=device)


def count_logits(model: nn.Module, dataset: Any, dtype: torch.dtype, device: torch.device) -> int:
    """``K``, the logits ``model`` returns, from one no-grad forward pass in eval mode on the first example
    (which changes no parameter, buffer or random state); the whole label vector must lie in ``[0, K)``.

    Raises:
        InvalidInputError: the model fails on the data's images, returns no ``(1, K)`` logits, or the data
            has labels ``>= K``.
    """
    x, y = _read(dataset, torch.zeros(1, dtype=torch.int64))
    x = x.to(device, dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
    except Exception as error:  # the model's own error, whatever its type, is the reason to give
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InvalidInputError(
            f"the model cannot take the images of {_name(dataset)} (shape {tuple(x.shape[1:])}): {reason}"
        ) from None
    finally:
        model.train(was_training)
    num_classes = check_logits(logits, y.to(logits.device) if isinstance(logits, torch.Tensor) else None)
    check_labels(torch.as_tensor(dataset.labels), len(dataset), num_classes, name=f"the labels of {_name(dataset)}")
    return num_classes
