"""The smoothed classifier ``g(x) = argmax_c P[f(x + delta) = c]``, ``delta ~ N(0, sigma^2 I)``: Cohen, Rosenfeld &
Kolter 2019, "Certified Adversarial Robustness via Randomized Smoothing" (PREDICT and CERTIFY, their Algorithms).

``g`` is certified in L2 around ``x`` with radius ``sigma * Phi^-1(pA)`` whenever the top class has probability
``pA > 1/2`` under the noise; CERTIFY estimates ``pA`` from below by Monte Carlo, so each certificate holds with
probability at least ``1 - alpha`` over the noise draws (and each prediction of PREDICT is wrong with probability
at most ``alpha``). Any model works, at any input size: only forward passes are needed.

Example:
    >>> g = smooth(model, sigma=0.25)
    >>> g.predict(x, n=1000)                              # (B,) classes, ABSTAIN (-1) where unsure
    >>> cert = g.certify(x, y, n0=100, n=10_000)          # a Certificate, radii in L2 pixel units
    >>> cert.certified_accuracy(0.5)
"""

from __future__ import annotations

import logging
import math
import time

import torch
from torch import nn

from ...errors import InvalidInputError
from ...validation import check_batch, check_inputs, check_labels, model_device, model_dtype
from ..certificate import Certificate
from .noise import draw_keys
from .sampling import sample_counts
from .stats import binomial_pvalue, clopper_pearson_lower, smoothing_radius

__all__ = ["ABSTAIN", "Smoothed", "smooth"]

logger = logging.getLogger(__name__)

#: The class index of an abstention (PREDICT's and CERTIFY's "ABSTAIN").
ABSTAIN = -1


def _check_count(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_alpha(alpha: float) -> float:
    if not 0.0 < float(alpha) < 1.0:
        raise InvalidInputError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    return float(alpha)


def _default_generator(generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(0)


class Smoothed:
    """A base classifier smoothed by isotropic Gaussian noise.

    Args:
        model: the base classifier ``f``: inputs ``(N, C, H, W)`` -> logits ``(N, K)`` (run in eval mode without
            gradients, on the device of its parameters; its training flags are restored).
        sigma: the noise standard deviation, in pixel units of ``[0, 1]`` images (``> 0``).
        batch: the largest number of noisy inputs in one forward pass (draws of several examples share a pass).

    The noise is not clipped to ``[0, 1]``. Draws come from per-example streams seeded by the ``generator`` of each
    call (default: a fresh one seeded with 0), so results are reproducible and do not depend on ``batch`` or on how
    the examples are split into calls (with the same generator state at the start).
    """

    def __init__(self, model: nn.Module, sigma: float, batch: int = 1000) -> None:
        if not isinstance(model, nn.Module):
            raise InvalidInputError(f"smoothing needs an nn.Module base classifier, got {type(model).__name__}")
        sigma = float(sigma)
        if not (sigma > 0 and math.isfinite(sigma)):
            raise InvalidInputError(f"sigma must be a positive finite noise level (pixel units), got {sigma}")
        self.model, self.sigma, self.batch = model, sigma, _check_count(batch, "batch")

    def _inputs(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        device, dtype = model_device(self.model), model_dtype(self.model)
        if y is None:
            return check_inputs(x, dtype=dtype, device=device), None
        return check_batch(x, y, dtype=dtype, device=device)

    def counts(self, x: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, K)`` int64 votes of the base classifier on ``n`` noisy copies of each image ``x`` ``(B, C, H, W)``."""
        x, _ = self._inputs(x)
        keys = [k[0] for k in draw_keys(_default_generator(generator), len(x), 1)]
        return sample_counts(self.model, x, keys, _check_count(n, "n"), self.sigma, self.batch).cpu()

    def predict(self, x: torch.Tensor, n: int = 100_000, alpha: float = 0.001,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """PREDICT: the smoothed classifier's classes, or :data:`ABSTAIN`.

        The top two classes of ``n`` noisy votes, ``nA >= nB``, are kept when a two-sided binomial test rejects
        ``P[A] = P[B]`` at level ``alpha`` (then the answer is wrong with probability at most ``alpha``).

        Args:
            x: images ``(B, C, H, W)`` in ``[0, 1]``. n: noise draws per image. alpha: the test's level.
            generator: the random stream (one key per image is drawn from it).

        Returns:
            ``(B,)`` int64 classes (CPU), ``-1`` where PREDICT abstains.
        """
        alpha = _check_alpha(alpha)
        counts = self.counts(x, n, generator)
        if not len(counts):
            return torch.zeros(0, dtype=torch.int64)
        top = counts.topk(min(2, counts.shape[1]), dim=1)
        runner_up = top.values[:, 1] if counts.shape[1] > 1 else torch.zeros(len(counts), dtype=torch.int64)
        sure = binomial_pvalue(top.values[:, 0], runner_up) <= alpha
        return torch.where(sure, top.indices[:, 0], torch.full_like(top.indices[:, 0], ABSTAIN))

    def certify(self, x: torch.Tensor, y: torch.Tensor, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
                generator: torch.Generator | None = None) -> Certificate:
        """CERTIFY: the smoothed prediction and its L2 radius for each image, or an abstention.

        ``n0`` draws select the top class ``cA``; ``n`` fresh draws give ``pA``, the one-sided ``(1 - alpha)``
        Clopper-Pearson lower bound on ``P[f(x + delta) = cA]``. With ``pA > 1/2`` the smoothed classifier predicts
        ``cA`` everywhere within L2 distance ``sigma * Phi^-1(pA)`` of ``x``, with probability at least
        ``1 - alpha`` over the draws; otherwise CERTIFY abstains.

        Args:
            x: images ``(B, C, H, W)`` in ``[0, 1]``; y: labels ``(B,)``.
            n0: selection draws per image; n: estimation draws per image; alpha: the error probability.
            generator: the random stream (two keys per image, for the selection and the estimation draws).

        Returns:
            A :class:`Certificate` (``method="smoothing"``, ``norm="l2"``): per image ``status`` ``"certified"``
            (radius ``sigma * Phi^-1(pA)``), ``"misclassified"`` (``cA != y``, radius 0) or ``"abstain"``
            (prediction ``-1``, radius 0); ``details`` holds ``sigma``, ``n0``, ``n``, ``alpha``, ``batch`` and the
            per-image ``p_lower`` ``(B,)`` and ``count`` ``(B,)`` (votes for ``cA`` among the ``n``).
        """
        start = time.perf_counter()
        n0, n, alpha = _check_count(n0, "n0"), _check_count(n, "n"), _check_alpha(alpha)
        x, y = self._inputs(x, y)
        keys = draw_keys(_default_generator(generator), len(x), 2)
        selection = sample_counts(self.model, x, [k[0] for k in keys], n0, self.sigma, self.batch)
        check_labels(y, len(y), selection.shape[1] or None)
        chosen = selection.argmax(dim=1) if len(x) else torch.zeros(0, dtype=torch.int64, device=x.device)
        estimation = sample_counts(self.model, x, [k[1] for k in keys], n, self.sigma, self.batch)
        count = estimation.gather(1, chosen[:, None]).squeeze(1).cpu() if len(x) else torch.zeros(0, dtype=torch.int64)
        p_lower = clopper_pearson_lower(count, n, alpha)
        return self._certificate(chosen.cpu(), y.cpu(), p_lower, count, time.perf_counter() - start,
                                 {"n0": n0, "n": n, "alpha": alpha})

    def _certificate(self, chosen: torch.Tensor, y: torch.Tensor, p_lower: torch.Tensor, count: torch.Tensor,
                     seconds: float, settings: dict[str, float]) -> Certificate:
        """The Certificate of CERTIFY's outcome (all tensors ``(B,)`` on the CPU)."""
        certain = p_lower > 0.5
        predictions = torch.where(certain, chosen, torch.full_like(chosen, ABSTAIN))
        correct = predictions == y
        radius = torch.where(correct, smoothing_radius(p_lower, self.sigma), torch.zeros_like(p_lower))
        status = ["abstain" if not c else "certified" if ok else "misclassified"
                  for c, ok in zip(certain.tolist(), correct.tolist())]
        logger.info("smoothing (sigma %g): %d certified, %d abstained, %d misclassified of %d in %.2f s", self.sigma,
                    status.count("certified"), status.count("abstain"), status.count("misclassified"), len(status),
                    seconds)
        return Certificate(
            method="smoothing", norm="l2", radius=radius, upper=torch.full_like(radius, float("inf")), status=status,
            predictions=predictions, labels=y, seconds=seconds,
            details={"sigma": self.sigma, "batch": self.batch, **settings, "p_lower": p_lower, "count": count},
        )


def smooth(model: nn.Module, sigma: float, batch: int = 1000) -> Smoothed:
    """The randomized-smoothing classifier of ``model`` at noise level ``sigma`` (pixel units), whose
    :meth:`~Smoothed.certify` gives L2 radii (pixel units of ``[0, 1]`` images) for images ``(B, C, H, W)`` and
    labels ``(B,)``, and :meth:`~Smoothed.predict` ``(B,)`` classes; see :class:`Smoothed`."""
    return Smoothed(model, sigma, batch=batch)
