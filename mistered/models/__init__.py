"""Model zoo: architectures, the ``Normalized`` wrapper, checkpoints and the bundled default models.

Every model takes ``(B, C, H, W)`` images in ``[0, 1]`` and returns ``(B, K)`` logits; normalisation
lives inside (:class:`Normalized`). ``load_model()`` gives the bundled MNIST CNN.
"""

from .accuracy import accuracy, predict
from .checkpoint import (
    DEFAULT_MODEL,
    bundled_models,
    load_model,
    read_checkpoint,
    resolve_model_path,
    save_model,
)
from .normalized import Normalized
from .registry import ARCHITECTURES, build_model, get_builder

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "Normalized",
    "accuracy",
    "build_model",
    "bundled_models",
    "get_builder",
    "load_model",
    "predict",
    "read_checkpoint",
    "resolve_model_path",
    "save_model",
]
