"""Gaussian noise augmentation, the training of randomized smoothing's base classifier (Cohen et al. 2019).

Cross-entropy on ``x + delta``, ``delta ~ N(0, sigma^2 I)`` drawn afresh for every example at every step (not
clipped to ``[0, 1]``, as in the smoothed classifier that :mod:`mistered.certify.smoothing` certifies): a base
classifier that is accurate under noise makes the smoothed classifier confident, hence its radii large. Train and
certify with the same ``sigma``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..certify.smoothing.noise import draw_keys, gaussian_noise
from ..validation import check_nonnegative

__all__ = ["GaussianNoiseObjective"]


class GaussianNoiseObjective:
    """Cross-entropy under Gaussian noise: ``objective(model, x, y, progress) -> (loss, logits)``.

    Args:
        sigma: the noise standard deviation, pixel units of ``[0, 1]`` images (``0``: plain cross-entropy).
        generator: draws one seed per step, from which the step's noise is made on the images' device (pass the
            training loop's generator, whose state is checkpointed, for a bitwise lossless resume).

    The returned logits are those of the noisy images (the training accuracy is measured under noise).
    """

    def __init__(self, sigma: float, generator: torch.Generator | None = None) -> None:
        self.sigma = check_nonnegative(sigma, "smoothing sigma")
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.sigma > 0:
            (seed,), = draw_keys(self.generator, 1, 1)
            x = x + gaussian_noise(tuple(x.shape), self.sigma, seed, x.device, x.dtype)
        logits = model(x)
        return F.cross_entropy(logits, y), logits
