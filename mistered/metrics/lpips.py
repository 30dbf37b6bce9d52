"""LPIPS-alex (v0.1) with the real ImageNet AlexNet trunk, batched and differentiable.

The ``lpips`` package is built with a random trunk (``pnet_rand=True``, so nothing is downloaded),
then loaded, strictly, with the verified ImageNet trunk from :mod:`mistered.metrics.lpips_trunk`
and the linear heads shipped in the ``lpips`` wheel. It never runs with random weights: a missing
trunk raises :class:`~mistered.errors.WeightsNotFoundError`.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .._compat import import_torchvision
from ..device import resolve_device
from ..errors import InvalidInputError, WeightsNotFoundError
from ..io import safe_torch_load
from .lpips_trunk import CONV_INDICES, load_alexnet_trunk

__all__ = ["LPIPSDistance", "get_lpips", "lpips_distance", "MIN_LPIPS_SIZE"]

#: Images with a side shorter than this are bilinearly resized up before LPIPS-alex.
MIN_LPIPS_SIZE = 32

_MODULES: dict[str, LPIPSDistance] = {}
_LOCK = threading.Lock()


def _build_lpips_alex() -> nn.Module:
    import_torchvision()  # lpips imports torchvision: make it importable first
    import lpips

    with warnings.catch_warnings():  # lpips passes torchvision's deprecated ``pretrained`` argument
        warnings.simplefilter("ignore", UserWarning)
        net = lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True, verbose=False)
    heads_path = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    if not heads_path.is_file():
        raise WeightsNotFoundError(f"the lpips package lacks its linear heads {heads_path}; reinstall it (`pip install lpips==0.1.4`)")
    heads = safe_torch_load(heads_path)
    trunk, _source = load_alexnet_trunk()

    state = net.state_dict()
    for slice_number, index in enumerate(CONV_INDICES, start=1):
        for kind in ("weight", "bias"):
            state[f"net.slice{slice_number}.{index}.{kind}"] = trunk[f"features.{index}.{kind}"]
    for layer in range(len(CONV_INDICES)):
        head = heads[f"lin{layer}.model.1.weight"]
        state[f"lin{layer}.model.1.weight"] = head
        state[f"lins.{layer}.model.1.weight"] = head  # the same module, registered under both names
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


class LPIPSDistance(nn.Module):
    """LPIPS-alex v0.1: ``forward(x, y) -> (B,)``, differentiable w.r.t. both inputs, frozen weights.

    Inputs are image batches ``(B, C, H, W)`` in ``[0, 1]`` with ``C`` = 1 or 3; they are scaled to
    ``[-1, 1]`` as LPIPS expects. Grayscale images are replicated to 3 channels. Images with a side
    shorter than 32 pixels (e.g. MNIST's 28x28, which AlexNet's pooling would shrink to nothing) are
    bilinearly resized (``align_corners=False``) so both sides are at least 32, the same for both
    images of a pair. Distances are >= 0, exactly 0 for identical images, typically 0.1-0.7 for
    clearly different natural images.

    Args:
        device: where the network lives (``None``: CUDA when present, else CPU).

    Example:
        >>> metric = LPIPSDistance("cpu")
        >>> x = torch.rand(2, 1, 28, 28)
        >>> metric(x, x).tolist()
        [0.0, 0.0]
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.net = _build_lpips_alex().to(resolve_device(device))
        import lpips

        self._normalize = lpips.normalize_tensor

    def train(self, mode: bool = True) -> LPIPSDistance:
        """Stay in eval mode: LPIPS's dropout must never be active."""
        return super().train(False)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1|3, H, W)`` in ``[0, 1]`` -> the trunk's input: 3 channels, sides >= 32, LPIPS-scaled."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise InvalidInputError(f"LPIPS needs (B, C, H, W) images with 1 or 3 channels, got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        height, width = x.shape[-2:]
        if min(height, width) < MIN_LPIPS_SIZE:
            size = (max(height, MIN_LPIPS_SIZE), max(width, MIN_LPIPS_SIZE))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.net.scaling_layer(2.0 * x - 1.0)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five unit-normalised AlexNet feature maps of ``x`` (``(B, C_l, H_l, W_l)`` each)."""
        return [self._normalize(f) for f in self.net.net(self._prepare(x))]

    def distance_from_features(self, features_x: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """LPIPS between images whose :meth:`features` are ``features_x`` and the images ``y``: ``(B,)``.

        Lets a caller that compares many images against one fixed reference compute the
        reference's features once.
        """
        total = 0.0
        for head, fx, fy in zip(self.net.lins, features_x, self.features(y)):
            total = total + head((fx - fy) ** 2).mean(dim=(2, 3))
        return total.view(y.shape[0])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise InvalidInputError(f"LPIPS needs two batches of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        return self.distance_from_features(self.features(x), y)


def get_lpips(device: str | torch.device | None = None) -> LPIPSDistance:
    """The shared, frozen :class:`LPIPSDistance` for ``device`` (built once per device, then reused)."""
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    key = str(resolved)
    with _LOCK:
        if key not in _MODULES:
            _MODULES[key] = LPIPSDistance(resolved)
        return _MODULES[key]


def lpips_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS-alex per example, ``(B, C, H, W)`` x2 in ``[0, 1]`` -> ``(B,)``, on ``x``'s device."""
    return get_lpips(x.device)(x, y)
