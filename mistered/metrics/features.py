"""Perceptual distance in a network's own features (Laidlaw et al. 2021): the classifier's, or a user's.

Laidlaw, Singla & Feizi, "Perceptual Adversarial Robustness" (ICLR 2021), measure LPIPS with the
attacked classifier itself ("self-bounded"): with ``g_1(x), ..., g_L(x)`` the activations of its
intermediate layers (``(B, C_l, H_l, W_l)``; a ``(B, D)`` activation counts as ``(B, D, 1, 1)``), each
unit-normalised over channels at every position and divided by ``sqrt(H_l W_l)``,

    ``phi(x) = concat_l [ g_l(x) / (||g_l(x)||_C + 1e-10) / sqrt(H_l W_l) ]``,   ``d(x, y) = ||phi(x) - phi(y)||_2``.

No learned heads: every layer weighs the same. ``d`` lies in ``[0, 2 sqrt(L)]`` (at most 2 per
position and layer). :class:`FeatureDistance` computes it for any extractor that returns those
activations: :class:`ModelActivations` reads a classifier's (forward hooks), and any ``nn.Module``
returning a tensor or a list/tuple of tensors (a user's ``file.py:Name``) serves as it is.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InvalidInputError

__all__ = ["FeatureDistance", "ModelActivations", "feature_layers"]

#: Activation modules whose outputs are a classifier's intermediate features.
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Softplus, nn.Tanh, nn.Sigmoid,
                nn.ReLU6, nn.Hardswish, nn.PReLU)


def _has_activation(module: nn.Module) -> bool:
    return any(isinstance(m, _ACTIVATIONS) for m in module.modules())


def feature_layers(model: nn.Module) -> list[str]:
    """The names of the modules whose outputs :class:`ModelActivations` reads, in registration order.

    Every activation module (``nn.ReLU``, ``nn.GELU`` ...), plus every composite block that applies
    its activation functionally (a child of an ``nn.Sequential`` with submodules but no activation
    module, e.g. a ResNet block calling ``torch.relu``).
    """
    names = []
    for name, module in model.named_modules():
        if isinstance(module, _ACTIVATIONS):
            names.append(name)
        elif isinstance(module, nn.Sequential):
            names += [f"{name}.{child_name}" if name else child_name for child_name, child in module.named_children()
                      if any(True for _ in child.children()) and not _has_activation(child)]
    order = {name: position for position, (name, _) in enumerate(model.named_modules())}
    return sorted(set(names), key=order.__getitem__)


class ModelActivations(nn.Module):
    """``forward(x) -> list`` of the activations of ``model``'s intermediate layers (see :func:`feature_layers`).

    Args:
        model: a classifier, ``(B, C, H, W)`` in ``[0, 1]`` -> logits; it is run in whatever mode it is in
            (an attack puts it in eval mode), its parameters untouched.

    Raises:
        InvalidInputError: the model has no activation module to read.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.layers = feature_layers(model)
        if not self.layers:
            raise InvalidInputError(
                f"lpips-self reads the activations of the model's intermediate layers, but {type(model).__name__} "
                "has no activation module (nn.ReLU, nn.GELU ...); give a feature extractor with --lpips-net instead"
            )
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        captured: list[torch.Tensor] = []
        modules = dict(self.model.named_modules())
        handles = [modules[name].register_forward_hook(lambda _m, _i, out: captured.append(out)) for name in self.layers]
        try:
            self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        return captured


def _normalized_flat(feature: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` or ``(B, D)`` -> ``(B, C*H*W)``: unit-normalised over channels, divided by ``sqrt(H W)``."""
    if feature.dim() == 2:
        feature = feature[:, :, None, None]
    norm = feature.square().sum(dim=1, keepdim=True).sqrt() + 1e-10
    return (feature / (norm * math.sqrt(feature.shape[2] * feature.shape[3]))).flatten(1)


class FeatureDistance(nn.Module):
    """``d(x, y) = ||phi(x) - phi(y)||_2`` in an extractor's normalised activations (module docstring), ``(B,)``.

    Args:
        extractor: maps ``(B, C, H, W)`` images in ``[0, 1]`` to a tensor or a list/tuple of tensors,
            each ``(B, C_l, H_l, W_l)`` or ``(B, D_l)``. Its parameters are not perturbation
            parameters; gradients flow through it to the images only.
        name: how errors name it (``"lpips-self"``, ``"lpips-net (feats.py:Net)"`` ...).

    Raises (at call time):
        InvalidInputError: the extractor fails on the images (its first error line is quoted), or returns
            something other than tensors with a batch dimension.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
        >>> metric = FeatureDistance(ModelActivations(net))
        >>> x = torch.rand(2, 1, 28, 28)
        >>> metric(x, x).tolist()
        [0.0, 0.0]
    """

    def __init__(self, extractor: nn.Module, name: str = "lpips-net") -> None:
        super().__init__()
        if not callable(extractor):
            raise InvalidInputError(f"{name} needs a feature extractor (an nn.Module), got {type(extractor).__name__}")
        self.extractor = extractor
        self.name = name

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``phi(x)``: ``(B, F)``, the normalised activations of every layer, concatenated."""
        try:
            out = self.extractor(x)
        except Exception as error:  # noqa: BLE001 - a user's network failing becomes one line
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise InvalidInputError(
                f"the feature extractor of {self.name} fails on images of shape {tuple(x.shape)}: "
                f"{type(error).__name__}: {first}; it must take (B, C, H, W) images in [0, 1] like the data"
            ) from None
        layers = [out] if isinstance(out, torch.Tensor) else list(out) if isinstance(out, (list, tuple)) else None
        if not layers or not all(isinstance(f, torch.Tensor) and f.dim() in (2, 4) and f.shape[0] == x.shape[0]
                                 for f in layers):
            raise InvalidInputError(
                f"the feature extractor of {self.name} must return a tensor or a list of tensors of shape "
                f"(B, C, H, W) or (B, D) with B = {x.shape[0]}, got {_describe(out)}"
            )
        return torch.cat([_normalized_flat(f) for f in layers], dim=1)

    def distance_from_features(self, features_x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``d`` between images whose :meth:`features` are ``features_x`` ``(B, F)`` and images ``y``: ``(B,)``."""
        difference = features_x - self.features(y)
        squared = difference.square().sum(dim=1)
        # sqrt has an infinite derivative at 0: route zero distances around it
        return torch.where(squared > 0, squared.clamp_min(1e-30).sqrt(), torch.zeros_like(squared))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise InvalidInputError(f"{self.name} needs two batches of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        return self.distance_from_features(self.features(x), y)


def _describe(out: object) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, (list, tuple)):
        return "[" + ", ".join(_describe(item) for item in out) + "]"
    return f"a {type(out).__name__}"
