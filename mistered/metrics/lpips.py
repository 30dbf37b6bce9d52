"""LPIPS v0.1 with the real ImageNet AlexNet or VGG16 trunk, batched, differentiable and fast on small images.

The network computes exactly what ``lpips.LPIPS(net=..., version="0.1")`` computes on images scaled to
``[-1, 1]`` (the ``lpips`` package is the reference in the tests), with the verified trunk of
:mod:`mistered.metrics.lpips_trunk` and the linear heads shipped in the ``lpips`` wheel. It never runs
with random weights: a missing trunk raises :class:`~mistered.errors.WeightsNotFoundError`.

It is written for the attack loop, where LPIPS is evaluated many times per step on small images:

* the input scaling (``2x - 1``, then LPIPS's per-channel shift and scale) is folded into the first
  convolution, and so is the replication of a grayscale image to three channels (one input channel
  instead of three); the zero padding's share of the folded offset is a cached per-size bias map;
* an image side below the trunk's minimum is resized by two small interpolation matrices (the same
  bilinear, ``align_corners=False`` resampling as ``F.interpolate``), cheaper to differentiate;
* a convolution whose input is ``1x1`` is a matrix product with its kernel's centre, and a pooling
  window that covers its whole input is a maximum over it (AlexNet's last three layers on ``32x32``
  images);
* the heads' weights and the spatial means are folded into the features: LPIPS is the squared
  distance of two flat vectors (:meth:`LPIPSDistance.features`).

These change only the order of floating-point sums (agreement with the ``lpips`` package: ~1e-6).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._compat import import_torchvision
from ..device import resolve_device
from ..errors import InvalidInputError, WeightsNotFoundError
from ..io import safe_torch_load
from .lpips_trunk import load_trunk

__all__ = ["LPIPSDistance", "get_lpips", "lpips_distance", "MIN_LPIPS_SIZE", "LPIPS_NETS"]

#: LPIPS's per-channel input shift and scale (``lpips.ScalingLayer``), applied to images in ``[-1, 1]``.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

#: Each trunk as stages of ``("conv", index, stride, padding)`` (each followed by a ReLU) and
#: ``("pool", kernel, stride)``; the output of every stage is one LPIPS layer.
_STAGES = {
    "alex": (
        (("conv", 0, 4, 2),),
        (("pool", 3, 2), ("conv", 3, 1, 2)),
        (("pool", 3, 2), ("conv", 6, 1, 1)),
        (("conv", 8, 1, 1),),
        (("conv", 10, 1, 1),),
    ),
    "vgg": (
        (("conv", 0, 1, 1), ("conv", 2, 1, 1)),
        (("pool", 2, 2), ("conv", 5, 1, 1), ("conv", 7, 1, 1)),
        (("pool", 2, 2), ("conv", 10, 1, 1), ("conv", 12, 1, 1), ("conv", 14, 1, 1)),
        (("pool", 2, 2), ("conv", 17, 1, 1), ("conv", 19, 1, 1), ("conv", 21, 1, 1)),
        (("pool", 2, 2), ("conv", 24, 1, 1), ("conv", 26, 1, 1), ("conv", 28, 1, 1)),
    ),
}
#: The trunks LPIPS can use.
LPIPS_NETS = tuple(_STAGES)
#: The shortest image side each trunk takes; shorter images are resized up (AlexNet's pooling
#: shrinks a 28x28 image to nothing; VGG16's four 2x2 poolings need 16 pixels).
MIN_SIDE = {"alex": 32, "vgg": 16}
#: Images with a side shorter than this are bilinearly resized up before LPIPS-alex.
MIN_LPIPS_SIZE = MIN_SIDE["alex"]

#: The largest dense matrix (entries) a convolution on a small map is turned into (8 MB in float32).
_DENSE_MAX_ENTRIES = 1 << 21

_MODULES: dict[tuple[str, str], LPIPSDistance] = {}
_LOCK = threading.Lock()


def _load_heads(net: str) -> list[torch.Tensor]:
    """The five v0.1 linear heads of ``net`` from the ``lpips`` wheel, each ``(C_l,)``."""
    import_torchvision()  # lpips imports torchvision: make it importable first
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    if not path.is_file():
        raise WeightsNotFoundError(f"the lpips package lacks its linear heads {path}; reinstall it (`pip install lpips==0.1.4`)")
    heads = safe_torch_load(path)
    return [heads[f"lin{layer}.model.1.weight"].flatten().float() for layer in range(len(_STAGES[net]))]


def _interpolation_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """``(size_out, size_in)``: 1-D linear resampling as ``F.interpolate(mode="linear", align_corners=False)``."""
    eye = torch.eye(size_in, dtype=torch.float64).unsqueeze(0)  # each row resampled: the matrix's columns
    return F.interpolate(eye, size=size_out, mode="linear", align_corners=False)[0].T.float().contiguous()


class _StemConv(torch.autograd.Function):
    """``F.conv2d(x, weight, stride, padding)`` whose input gradient is a ``fold`` of column gradients.

    For AlexNet's first layer (11x11, stride 4) this backward is several times faster on CPU than the
    transposed convolution autograd would run. ``weight`` is a frozen buffer: it gets no gradient.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.geometry = (tuple(x.shape[-2:]), stride, padding)
        return F.conv2d(x, weight, None, stride=stride, padding=padding)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        size, stride, padding = ctx.geometry
        columns = weight.flatten(1).T @ grad.flatten(2)  # (B, C_in * k * k, L)
        grad_x = F.fold(columns, size, weight.shape[-2:], padding=padding, stride=stride)
        return grad_x, None, None, None


def _conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _dense_conv(weight: torch.Tensor, height: int, width: int, stride: int, padding: int) -> torch.Tensor:
    """The convolution on ``(C_in, height, width)`` maps as a matrix ``(C_in H W, C_out H_out W_out)``.

    Entry ``[(c, i, j), (o, u, v)]`` is ``weight[o, c, i - u * stride + padding, j - v * stride + padding]``
    where that index lies in the kernel, else 0 (the kernel meets padding): exact copies of the weights.
    """
    c_out, c_in, k_h, k_w = weight.shape
    out_h, out_w = _conv_output_size(height, k_h, stride, padding), _conv_output_size(width, k_w, stride, padding)
    matrix = weight.new_zeros(c_in, height, width, c_out, out_h, out_w)
    for u in range(out_h):
        for v in range(out_w):
            for i in range(max(0, u * stride - padding), min(height, u * stride - padding + k_h)):
                for j in range(max(0, v * stride - padding), min(width, v * stride - padding + k_w)):
                    matrix[:, i, j, :, u, v] = weight[:, :, i - u * stride + padding, j - v * stride + padding].T
    return matrix.reshape(c_in * height * width, c_out * out_h * out_w)


def _pool(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """``F.max_pool2d`` without padding; a window covering the whole input is its maximum.

    On CPU the pooling runs in channels-last layout, several times faster for these small maps.
    """
    if x.shape[-2:] == (kernel, kernel):
        return x.amax(dim=(-2, -1), keepdim=True)
    if x.device.type != "cpu":
        return F.max_pool2d(x, kernel, stride)
    return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), kernel, stride).contiguous()


class LPIPSDistance(nn.Module):
    """LPIPS v0.1: ``forward(x, y) -> (B,)``, differentiable w.r.t. both inputs, frozen weights.

    Inputs are image batches ``(B, C, H, W)`` in ``[0, 1]`` with ``C`` = 1 or 3 (LPIPS scales them to
    ``[-1, 1]``; a grayscale image counts as its replication to 3 channels). Images with a side
    shorter than the trunk's minimum (32 for alex, 16 for vgg; e.g. MNIST's 28x28 for alex) are
    bilinearly resized (``align_corners=False``) so both sides reach it, the same for both images of
    a pair. Distances are >= 0, exactly 0 for identical images, typically 0.1-0.7 for clearly
    different natural images.

    Args:
        net: ``"alex"`` (AlexNet, the LPIPS default) or ``"vgg"`` (VGG16).
        device: where the network lives (``None``: CUDA when present, else CPU).

    Example:
        >>> metric = LPIPSDistance("alex", "cpu")
        >>> x = torch.rand(2, 1, 28, 28)
        >>> metric(x, x).tolist()
        [0.0, 0.0]
    """

    def __init__(self, net: str = "alex", device: str | torch.device | None = None) -> None:
        super().__init__()
        if net not in _STAGES:
            raise InvalidInputError(f"unknown LPIPS network {net!r}; choose one of {', '.join(LPIPS_NETS)}")
        self.net_name = net
        self.min_side = MIN_SIDE[net]
        trunk, self.source = load_trunk(net)
        target = resolve_device(device)
        for index in sorted({int(key.split(".")[1]) for key in trunk}):
            weight = trunk[f"features.{index}.weight"].to(target)
            self.register_buffer(f"w{index}", weight)
            self.register_buffer(f"b{index}", trunk[f"features.{index}.bias"].to(target))
        for layer, head in enumerate(_load_heads(net)):  # v0.1 heads are non-negative
            self.register_buffer(f"root_head{layer}", head.clamp_min(0).sqrt().view(1, -1, 1, 1).to(target))
        # the first convolution reads a*x + c per channel: 2x - 1, then (. - shift) / scale
        self.register_buffer("in_scale", torch.tensor([2.0 / s for s in _SCALE], device=target))
        self.register_buffer("in_offset", torch.tensor([-(1.0 + t) / s for t, s in zip(_SHIFT, _SCALE)], device=target))
        self._cache: dict[tuple, torch.Tensor] = {}

    def train(self, mode: bool = True) -> LPIPSDistance:
        """Stay in eval mode (the heads' dropout of the reference implementation is never active)."""
        return super().train(False)

    def _cached(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            with torch.no_grad():
                self._cache[key] = make()
        return self._cache[key]

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if min(height, width) >= self.min_side:
            return x
        out_h, out_w = max(height, self.min_side), max(width, self.min_side)
        rows = self._cached(("rows", height, out_h, x.dtype, x.device),
                            lambda: _interpolation_matrix(height, out_h).to(x))
        cols = self._cached(("cols", width, out_w, x.dtype, x.device),
                            lambda: _interpolation_matrix(width, out_w).to(x))
        return rows @ x @ cols.T

    def _stem(self, x: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        """The first convolution on the raw ``[0, 1]`` image, with the input scaling (and replication) folded in."""
        channels, (height, width) = x.shape[1], x.shape[-2:]
        weight, bias = self.w0, self.b0

        def folded_weight() -> torch.Tensor:
            scaled = weight * self.in_scale.view(1, 3, 1, 1)
            return scaled.sum(dim=1, keepdim=True) if channels == 1 else scaled

        def offset_map() -> torch.Tensor:  # the offsets' contribution, zero where the kernel meets padding
            constant = self.in_offset.view(1, 3, 1, 1).expand(1, 3, height, width).to(weight)
            return F.conv2d(constant, weight, bias, stride=stride, padding=padding)

        key = (channels, height, width, x.dtype, x.device)
        w = self._cached(("stem",) + key, folded_weight).to(x.dtype)
        offset = self._cached(("offset",) + key, offset_map).to(x.dtype)
        return _StemConv.apply(x, w, stride, padding) + offset

    def _conv(self, x: torch.Tensor, index: int, stride: int, padding: int) -> torch.Tensor:
        """Convolution ``index`` of the trunk; on a map smaller than its kernel (AlexNet's layers 2-5 on
        ``32x32`` images), a cached dense matrix product, several times cheaper than the convolution."""
        weight, bias = getattr(self, f"w{index}"), getattr(self, f"b{index}")
        height, width = x.shape[-2:]
        out_h = _conv_output_size(height, weight.shape[-2], stride, padding)
        out_w = _conv_output_size(width, weight.shape[-1], stride, padding)
        entries = weight.shape[0] * weight.shape[1] * height * width * out_h * out_w
        if height * width >= weight.shape[-2] * weight.shape[-1] or entries > _DENSE_MAX_ENTRIES:
            return F.conv2d(x, weight, bias, stride=stride, padding=padding)
        key = (index, height, width, x.dtype, x.device)
        matrix = self._cached(("dense",) + key, lambda: _dense_conv(weight.to(x.dtype), height, width, stride, padding))
        dense_bias = self._cached(("dense-bias",) + key, lambda: bias.to(x.dtype).repeat_interleave(out_h * out_w))
        return torch.addmm(dense_bias, x.flatten(1), matrix).view(-1, weight.shape[0], out_h, out_w)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise InvalidInputError(
                f"LPIPS-{self.net_name} needs (B, C, H, W) images with 1 or 3 channels, got shape {tuple(x.shape)}; "
                "convert other images to grayscale or RGB first (e.g. keep 3 of the channels)"
            )
        return self._resize(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``phi(x)``, ``(B, F)``: the weighted, normalised feature maps flattened, so that ``LPIPS = ||phi(x) - phi(y)||²``.

        Each layer's map, unit-normalised over channels as ``lpips.normalize_tensor`` does
        (``f / (||f||_C + 1e-10)``), is multiplied by ``sqrt(w_c / (H_l W_l))`` (its head's non-negative
        weights, and the spatial mean), then all are concatenated.
        """
        parts = []
        for layer, f in enumerate(self._trunk(x)):
            scale = getattr(self, f"root_head{layer}").to(f.dtype) / math.sqrt(f.shape[2] * f.shape[3])
            parts.append((f * (scale / (f.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))).flatten(1))
        return torch.cat(parts, dim=1)

    def _trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five raw (ReLU) feature maps of ``x``."""
        h = self._prepare(x)
        taps = []
        for number, stage in enumerate(_STAGES[self.net_name]):
            for position, op in enumerate(stage):
                if op[0] == "pool":
                    h = _pool(h, op[1], op[2])
                elif number == 0 and position == 0:
                    h = torch.relu(self._stem(h, op[2], op[3]))
                else:
                    h = torch.relu(self._conv(h, op[1], op[2], op[3]))
            taps.append(h)
        return taps

    def distance_from_features(self, features_x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS between images whose :meth:`features` are ``features_x`` ``(B, F)`` and the images ``y``: ``(B,)``.

        Lets a caller that compares many images against one fixed reference compute the
        reference's features once.
        """
        return (features_x - self.features(y)).square().sum(dim=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise InvalidInputError(f"LPIPS needs two batches of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        return self.distance_from_features(self.features(x), y)


def get_lpips(device: str | torch.device | None = None, net: str = "alex") -> LPIPSDistance:
    """The shared, frozen :class:`LPIPSDistance` of ``net`` for ``device`` (built once per device, then reused)."""
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    key = (net, str(resolved))
    with _LOCK:
        if key not in _MODULES:
            _MODULES[key] = LPIPSDistance(net, resolved)
        return _MODULES[key]


def lpips_distance(x: torch.Tensor, y: torch.Tensor, net: str = "alex") -> torch.Tensor:
    """LPIPS-``net`` per example, ``(B, C, H, W)`` x2 in ``[0, 1]`` -> ``(B,)``, on ``x``'s device."""
    return get_lpips(x.device, net)(x, y)
