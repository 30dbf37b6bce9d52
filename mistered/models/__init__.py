"""Model zoo and model loading: architectures, the ``Normalized`` wrapper, checkpoints, bundled models,
and :func:`load_model` for models from anywhere (bundled names, mistered checkpoints, ``file.py:Name`` or
``package.module:Name``, TorchScript, ``torch.export`` ``.pt2`` archives, ONNX), with ``weights``.

Every model takes ``(B, C, H, W)`` images in ``[0, 1]`` and returns ``(B, K)`` logits; normalisation
lives inside (:class:`Normalized`). ``load_model()`` gives the bundled MNIST CNN.
"""

from .accuracy import accuracy, predict
from .checkpoint import DEFAULT_MODEL, EXTERNAL_ARCH, bundled_models, read_checkpoint, save_model
from .dry_run import check_model_on_data
from .loader import load_model
from .normalized import Normalized
from .registry import ARCHITECTURES, build_model, get_builder
from .sources import ModelSource
from .weights import read_weights

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "EXTERNAL_ARCH",
    "ModelSource",
    "Normalized",
    "accuracy",
    "build_model",
    "bundled_models",
    "check_model_on_data",
    "get_builder",
    "load_model",
    "predict",
    "read_checkpoint",
    "read_weights",
    "save_model",
]
