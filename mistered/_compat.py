"""Compatibility shim: make ``torchvision`` (and so ``lpips`` and ``piq``) importable on CPU-only torch.

On a CPU build of torch paired with the CUDA build of torchvision (the only torchvision matching
torch 2.13.0), torchvision's compiled operators cannot load, and its fake-tensor registrations then
refer to the operators ``torchvision::nms`` and ``torchvision::qnms`` that were never defined, so
``import torchvision`` raises ``RuntimeError: operator torchvision::nms does not exist``.
Defining those two schemas first makes the import succeed; AlexNet/VGG, transforms and ``roi_align``
work afterwards (``ops.nms`` does not). On a normal install nothing is done.
"""

from __future__ import annotations

import sys

import torch

__all__ = ["import_torchvision"]

_MISSING_OP_MESSAGE = "operator torchvision::nms does not exist"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_fragment: torch.library.Library | None = None  # kept alive: dropping it would undefine the ops


def _forget_partial_import() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def import_torchvision():
    """Import and return ``torchvision``, defining the missing operator schemas only if needed."""
    global _fragment
    try:
        import torchvision
    except RuntimeError as error:
        if _MISSING_OP_MESSAGE not in str(error):
            raise
        _forget_partial_import()
        if _fragment is None:
            _fragment = torch.library.Library("torchvision", "FRAGMENT")
            for schema in _SCHEMAS:
                _fragment.define(schema)
        import torchvision
    return torchvision
