"""The two statistical tests of randomized smoothing (Cohen, Rosenfeld & Kolter 2019), vectorised over examples.

* :func:`clopper_pearson_lower`: CERTIFY's one-sided ``(1 - alpha)`` lower confidence bound on the probability
  ``pA`` of the top class, from ``k`` of ``n`` noisy votes (the exact Clopper-Pearson bound, through the beta
  quantile ``Beta(alpha; k, n - k + 1)``);
* :func:`binomial_pvalue`: PREDICT's two-sided binomial test of ``nA`` votes against ``nB`` at ``p = 1/2``;
* :func:`smoothing_radius`: the certified L2 radius ``sigma * Phi^-1(pA)``.

Everything is computed in float64 with SciPy and returned as CPU tensors.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

__all__ = ["clopper_pearson_lower", "binomial_pvalue", "smoothing_radius"]


def _as_counts(values: torch.Tensor) -> np.ndarray:
    return values.detach().cpu().to(torch.int64).numpy()


def clopper_pearson_lower(successes: torch.Tensor, trials: torch.Tensor | int, alpha: float) -> torch.Tensor:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower confidence bound on a binomial proportion.

    The bound ``p`` solves ``P[Binomial(trials, p) >= successes] = alpha`` (``0`` when ``successes == 0``): with
    probability at least ``1 - alpha`` over the draws, the true proportion is at least ``p``.

    Args:
        successes: ``(B,)`` counts ``k`` in ``[0, trials]``.
        trials: ``(B,)`` or a scalar count ``n >= 1``.
        alpha: the error probability, in ``(0, 1)``.

    Returns:
        ``(B,)`` float64 lower bounds in ``[0, 1)`` (CPU).
    """
    k = _as_counts(successes)
    n = np.broadcast_to(_as_counts(torch.as_tensor(trials)), k.shape)
    with np.errstate(all="ignore"):
        lower = stats.beta.ppf(alpha, k, n - k + 1)
    return torch.from_numpy(np.where(k > 0, lower, 0.0).astype(np.float64))


def binomial_pvalue(top: torch.Tensor, runner_up: torch.Tensor) -> torch.Tensor:
    """Two-sided p-value of ``top`` successes in ``top + runner_up`` Bernoulli(1/2) trials.

    Equal to ``scipy.stats.binomtest(top, top + runner_up, 0.5).pvalue``: at ``p = 1/2`` the binomial is symmetric,
    so the p-value is ``min(1, 2 P[Binomial(m, 1/2) <= min(top, runner_up)])``, ``m = top + runner_up``
    (``1`` when ``m == 0``).

    Args:
        top, runner_up: ``(B,)`` vote counts ``nA``, ``nB``.

    Returns:
        ``(B,)`` float64 p-values in ``(0, 1]`` (CPU).
    """
    a, b = _as_counts(top), _as_counts(runner_up)
    tail = stats.binom.cdf(np.minimum(a, b), a + b, 0.5)
    return torch.from_numpy(np.minimum(1.0, 2.0 * tail).astype(np.float64))


def smoothing_radius(p_lower: torch.Tensor, sigma: float) -> torch.Tensor:
    """The certified L2 radius ``sigma * Phi^-1(p_lower)`` (Cohen et al., Theorem 1 with ``pB = 1 - pA``).

    Args:
        p_lower: ``(B,)`` lower bounds on the top class's probability; only values above ``1/2`` certify.
        sigma: the noise level (pixel units).

    Returns:
        ``(B,)`` float64 radii (pixel units of ``[0, 1]`` images), ``0`` where ``p_lower <= 1/2``.
    """
    p = p_lower.detach().cpu().to(torch.float64).numpy()
    radius = sigma * stats.norm.ppf(np.clip(p, 0.5, 1.0))
    return torch.from_numpy(np.where(p > 0.5, radius, 0.0))
