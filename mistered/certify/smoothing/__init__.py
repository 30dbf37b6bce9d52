"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): a probabilistic L2 certificate for any classifier.

Layout (imports flow downwards): :mod:`.smoothed` (PREDICT, CERTIFY, the :class:`Smoothed` classifier) →
:mod:`.sampling` (votes under noise, batched over draws and examples) → :mod:`.noise` (per-example noise streams
that batching does not change) and :mod:`.stats` (Clopper-Pearson, the binomial test, the radius).

Example:
    >>> cert = smooth(model, sigma=0.25).certify(x, y, n0=100, n=10_000, alpha=0.001)
    >>> cert.radius          # (B,) L2 radii in pixel units, 0 where it abstains or is wrong
"""

from .noise import gaussian_noise
from .sampling import sample_counts
from .smoothed import ABSTAIN, Smoothed, smooth
from .stats import binomial_pvalue, clopper_pearson_lower, smoothing_radius

__all__ = [
    "ABSTAIN", "Smoothed", "smooth", "sample_counts", "gaussian_noise", "clopper_pearson_lower", "binomial_pvalue",
    "smoothing_radius",
]
