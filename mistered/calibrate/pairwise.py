"""All-pairs distance matrices of one image set, and small known-benign changes of each image.

Distances with a flat embedding (LPIPS: ``||phi(x) - phi(y)||²``; Laidlaw's feature distances:
``||phi(x) - phi(y)||``; the Lp norms) are computed from the embeddings with ``torch.cdist`` (exact
differences, not the ``|a|² + |b|² - 2ab`` shortcut); SSIM-based ones pair by pair, in batches, over
the upper triangle (they are symmetric).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..metrics import canonical_metric, distance, get_distance
from ..metrics.ssim import gaussian_filter, ssim_from_moments
from ..threats.flow import warp_by_flow

__all__ = ["pairwise_distances", "benign_changes", "BENIGN_CHANGES"]

_EMBEDDED = {"lpips", "lpips-alex", "lpips-vgg", "lpips-self", "lpips-net"}
_CDIST_P = {"linf": float("inf"), "l2": 2.0, "l1": 1.0}
#: Names of the benign changes :func:`benign_changes` makes, in order.
BENIGN_CHANGES = ("shift +0.5px x", "shift -0.5px x", "shift +0.5px y", "shift -0.5px y",
                  "brightness +2%", "brightness -2%")


@torch.no_grad()
def _embed(metric: str, images: torch.Tensor, features: nn.Module | None, batch_size: int) -> torch.Tensor:
    module = get_distance(metric, images.device, features)
    return torch.cat([module.features(images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)])


@torch.no_grad()
def pairwise_distances(metric: str, images: torch.Tensor, features: nn.Module | None = None, batch_size: int = 256,
                       progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """``D[i, j] = metric(images[i], images[j])``: ``(N, N)``, zero diagonal, float64.

    Args:
        metric: a distance of :data:`mistered.metrics.DISTANCES`.
        images: ``(N, C, H, W)`` in ``[0, 1]``.
        features: the network of ``lpips-self`` / ``lpips-net``.
        batch_size: images (or pairs, times 16) per metric call.
        progress: called with the number of rows (or pairs) just finished.
    """
    metric = canonical_metric(metric)
    n = images.shape[0]
    if metric in _CDIST_P or metric in _EMBEDDED:
        if metric in _CDIST_P:
            flat = images.flatten(1).double()
        else:
            flat = _embed(metric, images, features, batch_size).double()
        matrix = torch.cdist(flat, flat, p=_CDIST_P.get(metric, 2.0))  # float64: the matrix-product form is accurate
        if progress is not None:
            progress(n)
        if metric in _EMBEDDED and metric not in ("lpips-self", "lpips-net"):
            matrix = matrix.square()  # LPIPS is the squared distance of the embeddings
        return matrix.fill_diagonal_(0.0)
    rows, cols = torch.triu_indices(n, n, offset=1, device=images.device)
    values = torch.empty(rows.shape[0], dtype=torch.float64, device=images.device)
    pair = _dssim_pairs(images) if metric == "dssim" else lambda i, j: distance(metric, images[i], images[j], features)
    step = 16 * batch_size
    for start in range(0, rows.shape[0], step):
        i, j = rows[start:start + step], cols[start:start + step]
        values[start:start + step] = pair(i, j).double()
        if progress is not None:
            progress(i.shape[0])
    matrix = torch.zeros(n, n, dtype=torch.float64, device=images.device)
    matrix[rows, cols] = values
    return matrix + matrix.T


def _dssim_pairs(images: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``dssim(images[i], images[j])`` for index tensors ``i``, ``j``, with each image's own local moments computed
    once (only ``xy`` is filtered per pair): the same values as :func:`~mistered.metrics.ssim_distance`."""
    distance("dssim", images[:1], images[:1])  # validates the size once, with the metric's own message
    mu, e_sq = gaussian_filter(images), gaussian_filter(images * images)

    def pair(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        e_xy = gaussian_filter(images[i] * images[j])
        return 1.0 - ssim_from_moments(mu[i], mu[j], e_sq[i], e_sq[j], e_xy)[0].mean(dim=1)

    return pair


def benign_changes(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each image under small changes a person does not notice: ``{name: (N, C, H, W)}`` (:data:`BENIGN_CHANGES`).

    Sub-pixel shifts by half a pixel horizontally and vertically (bilinear, border padding) and the
    brightness scaled by ``1 ± 2%`` (clipped to ``[0, 1]``).
    """
    n, _, height, width = images.shape
    changes = {}
    for axis, size in ((0, width), (1, height)):
        for sign in (1.0, -1.0):
            flow = images.new_zeros(n, 2, height, width)
            flow[:, axis] = sign * 0.5 * 2.0 / max(size - 1, 1)  # half a pixel, in grid units
            name = f"shift {'+' if sign > 0 else '-'}0.5px {'xy'[axis]}"
            changes[name] = warp_by_flow(images, flow).clamp(0.0, 1.0)
    changes["brightness +2%"] = (images * 1.02).clamp(0.0, 1.0)
    changes["brightness -2%"] = images * 0.98
    return changes

