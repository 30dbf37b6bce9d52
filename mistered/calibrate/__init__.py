"""Calibration: how far apart a data set's images are under each distance, so that a budget means "the same image".

A perceptual budget is only meaningful relative to the data: a bound that two different digits
already satisfy lets an attack turn a 7 into a 9. :func:`calibrate` measures, for one set of labelled
images and each distance,

* each image's **nearest different-class** neighbour (the pairs a budget must never allow: its 1st
  percentile is the largest sensible budget, :attr:`MetricCalibration.largest_budget`),
* each image's **nearest same-class** neighbour, and all same- and different-class pairs,
* **benign changes** a person does not notice (half-pixel shifts, brightness ±2%: what a budget
  should allow),

as percentiles. ``mistered calibrate`` prints them, writes ``results.json`` and a histogram PNG
(:func:`mistered.calibrate.report.plot_histograms`); docs/threats.md explains how to pick a budget.

Example:
    >>> from mistered.data import load_dataset
    >>> digits = load_dataset("mnist-5k", "test").subset(200)
    >>> table = calibrate(digits.images, digits.labels, ["l2"])
    >>> table["l2"].largest_budget > 1.0
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import InvalidInputError
from ..metrics import SIMILARITIES, canonical_metric, distance
from ..validation import check_images, check_labels
from .pairwise import benign_changes, pairwise_distances

__all__ = ["PERCENTILES", "MetricCalibration", "calibrate", "distance_name", "percentiles"]

#: The percentiles every distribution is summarised by.
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
_SIMILARITY_DISTANCE = {"ssim": "dssim", "ms-ssim": "ms-dssim"}


def distance_name(metric: str) -> str:
    """The distance a ``--metric`` name is measured by: a similarity (``ssim``, ``ms-ssim``) by its dissimilarity."""
    return _SIMILARITY_DISTANCE.get(metric) or canonical_metric(metric)


def percentiles(values: torch.Tensor) -> dict[str, float]:
    """``{"p1": ..., "p50": ..., "p99": ..., "min": ..., "max": ..., "mean": ...}`` of a 1-D tensor (empty: ``{}``)."""
    values = values.flatten().double()
    if values.numel() == 0:
        return {}
    qs = torch.quantile(values, torch.tensor([q / 100 for q in PERCENTILES], dtype=torch.float64))
    out = {f"p{q}": float(v) for q, v in zip(PERCENTILES, qs)}
    out.update(min=float(values.min()), max=float(values.max()), mean=float(values.mean()))
    return out


@dataclass
class MetricCalibration:
    """The distributions of one distance on one image set (all ``(N,)`` or flat tensors, float64).

    Attributes:
        metric: the distance (``dssim`` for ``ssim``); ``similarity`` names the similarity it stands for, if any.
        nearest_different: per image, the distance to its nearest image of another class.
        nearest_same: per image, the distance to its nearest other image of the same class (NaN if none).
        different_pairs, same_pairs: every unordered pair of different / the same class.
        benign: per benign change (:func:`~mistered.calibrate.pairwise.benign_changes`), per image, the distance
            to the changed image.
    """

    metric: str
    nearest_different: torch.Tensor
    nearest_same: torch.Tensor
    different_pairs: torch.Tensor
    same_pairs: torch.Tensor
    benign: dict[str, torch.Tensor] = field(default_factory=dict)
    similarity: str | None = None

    @property
    def largest_budget(self) -> float:
        """The 1st percentile of the nearest different-class distances: a budget must stay below it."""
        return float(torch.quantile(self.nearest_different.double(), 0.01))

    @property
    def benign_all(self) -> torch.Tensor:
        """Every benign change of every image, one flat tensor."""
        return torch.cat([v.flatten() for v in self.benign.values()]) if self.benign else torch.zeros(0)

    def to_json(self) -> dict:
        """Percentiles of every distribution (and of the similarity ``1 - d`` for SSIM-based ones)."""
        out = {
            "metric": self.metric,
            "largest_budget": self.largest_budget,
            "nearest_different_class": percentiles(self.nearest_different),
            "nearest_same_class": percentiles(self.nearest_same[~self.nearest_same.isnan()]),
            "different_class_pairs": percentiles(self.different_pairs),
            "same_class_pairs": percentiles(self.same_pairs),
            "benign": {name: percentiles(values) for name, values in self.benign.items()},
            "benign_all": percentiles(self.benign_all),
        }
        if self.similarity is not None:
            out["similarity"] = self.similarity
            out["smallest_similarity"] = 1.0 - self.largest_budget
            out["note"] = (f"distances are {self.metric} = 1 - {self.similarity.upper()}; a budget {self.metric}<=b "
                           f"keeps {self.similarity.upper()} >= 1 - b, so {self.similarity.upper()} must stay above "
                           "smallest_similarity")
        return out


def _check(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    images = check_images(images)
    labels = check_labels(labels, images.shape[0])
    if images.shape[0] < 2 or labels.unique().numel() < 2:
        raise InvalidInputError(f"calibration needs at least two images of two different classes, got {images.shape[0]} "
                                f"image(s) of {labels.unique().numel()} class(es)")
    return images, labels


def _one_metric(metric: str, images: torch.Tensor, labels: torch.Tensor, features: nn.Module | None,
                batch_size: int, progress: Callable[[int], None] | None) -> MetricCalibration:
    name = distance_name(metric)
    matrix = pairwise_distances(name, images, features, batch_size, progress)
    same = labels.view(-1, 1) == labels.view(1, -1)
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    inf = torch.full_like(matrix, float("inf"))
    nearest_different = torch.where(same, inf, matrix).amin(dim=1)
    nearest_same = torch.where(~same | eye, inf, matrix).amin(dim=1)
    nearest_same = torch.where(torch.isinf(nearest_same), torch.full_like(nearest_same, float("nan")), nearest_same)
    upper = torch.triu(torch.ones_like(same), diagonal=1)
    with torch.no_grad():
        benign = {change: distance(name, images, changed, features).double()
                  for change, changed in benign_changes(images).items()}
    return MetricCalibration(name, nearest_different, nearest_same, matrix[upper & ~same], matrix[upper & same],
                             benign, metric if metric in SIMILARITIES else None)


def calibrate(images: torch.Tensor, labels: torch.Tensor, metrics: Sequence[str] = ("lpips", "ssim"),
              features: dict[str, nn.Module] | None = None, batch_size: int = 256,
              progress: Callable[[int], None] | None = None) -> dict[str, MetricCalibration]:
    """Measure every distance of ``metrics`` on ``images`` (see the module docstring).

    Args:
        images: ``(N, C, H, W)`` in ``[0, 1]``, at least two classes; the pairs cost ``O(N²)`` metric
            evaluations for SSIM-based distances (a few seconds for ``N = 1000`` digits) and ``O(N)``
            network passes for LPIPS.
        labels: ``(N,)`` integer classes.
        metrics: distances (:data:`mistered.metrics.DISTANCES`) or similarities (``ssim``, ``ms-ssim``:
            measured by their dissimilarities ``dssim``, ``ms-dssim``).
        features: ``{"lpips-self": classifier, "lpips-net": extractor}`` for those distances.
        batch_size: images per network call.
        progress: called with the work just done (rows or pairs).

    Returns:
        ``{metric: MetricCalibration}``, keyed as given.
    """
    images, labels = _check(images, labels)
    features = features or {}
    return {metric: _one_metric(metric, images, labels, features.get(distance_name(metric)), batch_size, progress)
            for metric in dict.fromkeys(metrics)}

