"""Architecture registry: names -> ``"module:function"`` builders, imported only when used.

To add an architecture, add one line to :data:`ARCHITECTURES`; its builder takes keyword arguments
only and returns an ``nn.Module`` mapping ``(B, C, H, W)`` images in ``[0, 1]`` to ``(B, K)`` logits.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from ..errors import InvalidInputError

__all__ = ["ARCHITECTURES", "check_arch", "get_builder", "build_model"]

ARCHITECTURES: dict[str, str] = {
    "mnist-cnn": "mistered.models.architectures:mnist_cnn",
    "mnist-fc": "mistered.models.architectures:mnist_fc",
    "cifar-resnet": "mistered.models.resnet:cifar_resnet",
    "linf-dist-net": "mistered.models.linf_dist.nets:linf_dist_net",
    "linf-dist-hybrid": "mistered.models.linf_dist.hybrid:linf_dist_hybrid",
}


def check_arch(arch: str) -> str:
    """Return ``arch`` if it is registered, else raise :class:`InvalidInputError` listing the names."""
    if arch not in ARCHITECTURES:
        raise InvalidInputError(f"unknown architecture {arch!r}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    return arch


def get_builder(arch: str) -> Callable[..., nn.Module]:
    """The builder function registered under ``arch`` (its module is imported now)."""
    module_name, function_name = ARCHITECTURES[check_arch(arch)].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def build_model(arch: str, **kwargs) -> nn.Module:
    """A freshly initialised model of architecture ``arch`` (randomly initialised by the global torch RNG;
    call ``torch.manual_seed`` first for a reproducible init), in training mode.

    Raises:
        InvalidInputError: unknown ``arch`` (the message lists the names) or keyword arguments it does not take.
    """
    builder = get_builder(arch)
    try:
        return builder(**kwargs)
    except TypeError as error:
        raise InvalidInputError(f"architecture {arch!r} does not accept the arguments {kwargs}: {error}") from None
