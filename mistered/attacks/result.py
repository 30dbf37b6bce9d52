"""The result every attack returns, and the distances measured on it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["AttackResult", "measure_distances", "LP_DISTANCES"]

#: Distances computed here without the metrics package.
LP_DISTANCES = ("linf", "l2")


@torch.no_grad()
def measure_distances(x: torch.Tensor, x_adv: torch.Tensor, names: tuple[str, ...],
                      features: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Per-example distances between ``x`` and ``x_adv`` (both ``(B, C, H, W)`` in ``[0, 1]``).

    ``"linf"`` and ``"l2"`` are pixel-space norms of ``x_adv - x``; any other name (``"lpips"``,
    ``"dssim"``, ``"lpips-self"`` with ``features``: the network whose activations it compares) is computed by
    :func:`mistered.metrics.distance`. Returns ``{name: (B,) tensor}`` (empty
    tensors for an empty batch, without loading any metric).
    """
    diff = (x_adv - x).flatten(1)
    if diff.shape[0] == 0:
        return {name: diff.new_zeros(0) for name in names}
    out: dict[str, torch.Tensor] = {}
    for name in names:
        if name == "linf":
            out[name] = diff.abs().amax(dim=1)
        elif name == "l2":
            out[name] = diff.norm(dim=1)
        else:
            from ..metrics import distance  # perceptual metrics load network weights: import only when asked

            out[name] = distance(name, x, x_adv, features).detach().reshape(-1)
    return out


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


@dataclass
class AttackResult:
    """What an attack found for a batch of ``B`` examples.

    Attributes:
        x: the clean images ``(B, C, H, W)``.
        x_adv: the adversarial images ``(B, C, H, W)`` in ``[0, 1]``, inside the threat's budget.
        labels: the true labels ``(B,)``.
        logits: the model's logits on ``x_adv``, ``(B, K)``, from one eval-mode forward pass of the whole batch.
        clean_logits: the model's logits on ``x``, ``(B, K)``.
        success: ``(B,)`` bool, ``predictions != labels`` (or ``== targets`` for a targeted attack),
            computed from ``logits``: running the model on ``x_adv`` reproduces it exactly.
        distances: ``{name: (B,)}`` distances between ``x`` and ``x_adv`` (``"linf"``, ``"l2"`` in pixel units
            of ``[0, 1]`` images; ``"lpips"``; ``"dssim"`` = ``1 - SSIM``).
        sizes: ``{name: (B,)}`` the winning perturbation's own sizes (its :meth:`~mistered.threats.Perturbation.sizes`
            plus ``"size"``, the unitless fraction of the budget); NaN where the winning alternative lacks the key.
        alternative: ``(B,)`` int64, index into ``threat.alternatives()`` of the winner, ``-1`` when the clean
            image was kept.
        targets: the target labels ``(B,)`` of a targeted attack, else ``None``.
        seconds: wall-clock time of the attack.
    """

    x: torch.Tensor
    x_adv: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
    clean_logits: torch.Tensor
    success: torch.Tensor
    distances: dict[str, torch.Tensor]
    sizes: dict[str, torch.Tensor]
    alternative: torch.Tensor
    targets: torch.Tensor | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def predictions(self) -> torch.Tensor:
        """Predicted classes on ``x_adv``, ``(B,)``."""
        return self.logits.argmax(dim=1)

    @property
    def clean_correct(self) -> torch.Tensor:
        """``(B,)`` bool: the clean image is classified correctly."""
        return self.clean_logits.argmax(dim=1) == self.labels

    @property
    def robust(self) -> torch.Tensor:
        """``(B,)`` bool: correct on the clean image and the attack failed."""
        return self.clean_correct & ~self.success

    @classmethod
    def cat(cls, results: list[AttackResult]) -> AttackResult:
        """Concatenate the results of consecutive batches into one (sizes missing in a batch become NaN; the integer
        counts of ``info``, e.g. ``bound_violations``, are summed)."""
        if not results:
            raise ValueError("AttackResult.cat needs at least one result")

        def cat_dicts(dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
            keys = list(dict.fromkeys(k for d in dicts for k in d))
            return {
                k: torch.cat([d[k] if k in d else torch.full_like(r.alternative, float("nan"), dtype=torch.float32)
                              for d, r in zip(dicts, results)])
                for k in keys
            }

        targets = None if results[0].targets is None else torch.cat([r.targets for r in results])
        return cls(
            x=torch.cat([r.x for r in results]), x_adv=torch.cat([r.x_adv for r in results]),
            labels=torch.cat([r.labels for r in results]), logits=torch.cat([r.logits for r in results]),
            clean_logits=torch.cat([r.clean_logits for r in results]),
            success=torch.cat([r.success for r in results]),
            distances=cat_dicts([r.distances for r in results]), sizes=cat_dicts([r.sizes for r in results]),
            alternative=torch.cat([r.alternative for r in results]), targets=targets,
            seconds=sum(r.seconds for r in results), info=_sum_counts([r.info for r in results]),
        )

    def to_json(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per example (NaN sizes are left out)."""
        rows = []
        for i in range(self.labels.shape[0]):
            row: dict[str, Any] = {
                "index": i,
                "label": int(self.labels[i]),
                "clean_prediction": int(self.clean_logits[i].argmax()),
                "adversarial_prediction": int(self.predictions[i]),
                "success": bool(self.success[i]),
                "alternative": int(self.alternative[i]),
                "distances": {k: _json_number(float(v[i])) for k, v in self.distances.items()},
                "sizes": {k: float(v[i]) for k, v in self.sizes.items() if not math.isnan(float(v[i]))},
            }
            if self.targets is not None:
                row["target"] = int(self.targets[i])
            rows.append(row)
        return rows


def _sum_counts(infos: list[dict[str, Any]]) -> dict[str, int]:
    """The integer entries of several ``info`` dicts, summed key by key (other entries describe one batch only)."""
    counts: dict[str, int] = {}
    for info in infos:
        for key, value in info.items():
            if isinstance(value, int) and not isinstance(value, bool):
                counts[key] = counts.get(key, 0) + value
    return counts
