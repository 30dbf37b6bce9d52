"""The provable side: what can be proved about a model, from fast sound bounds to exact values.

The public API, each imported only when first used (the exact methods pull in the solvers):

* ``margin_bounds(model, x, y, eps, norm="linf", method="crown")`` -> ``(B, K)`` lower bounds on the margins
  ``logit_y - logit_j`` over the ``norm`` ball of radius ``eps`` (pixel units) within ``[0, 1]``, by IBP, CROWN or
  α-CROWN on the traced graph of any supported network; the engine itself is the subpackage :mod:`.bounds`;
* ``certified_radius(model, x, y, norm, method)`` -> ``(B,)`` radii the bound proves, by bisection;
  ``certify_bounds(model, x, y, eps=[...])`` -> a :class:`Certificate`;
* ``exact_distance(model, x, y, norm)`` -> a :class:`Certificate` of exact minimal adversarial distances of a
  piecewise-linear ReLU network (:mod:`.exact`: GeoCert through linear regions, branch and bound, the MIP);
* :mod:`.lipschitz` — global Lipschitz bounds and LMT, L∞-dist certificates, and
  ``estimate_lipschitz(model, x0, radius, norm, method="lipmip")`` -> local Lipschitz constants (LipMIP and the
  estimators it is compared with);
* ``smooth(model, sigma)`` -> a randomized-smoothing classifier with ``certify``/``predict`` (:mod:`.smoothing`).

Layout (imports flow one way: ``verify``/``bab`` → ``exact``/``lipschitz`` → ``bounds`` → ``graph``, with
``solvers`` at the bottom): ``graph/`` (any ``nn.Module`` traced into a bound graph; its piecewise-linear chain
form), ``bounds/``, ``solvers/`` (HiGHS, Clarabel, OR-Tools), ``exact/``, ``lipschitz/``, ``smoothing/``,
``bab/``, ``verify/``. The L∞-dist architectures live in :mod:`mistered.models.linf_dist`. The flat modules of
the old layout (``mistered.certify.geocert``, ...) still import, with a ``DeprecationWarning`` naming the new path.

Example:
    >>> from mistered.certify import margin_bounds, smooth
    >>> margins = margin_bounds(model, x, y, eps=1 / 255)                # (B, K)
    >>> cert = smooth(model, sigma=0.25).certify(x, y, n=1000)          # L2 radii, w.p. >= 1 - alpha
"""

from __future__ import annotations

import importlib
from typing import Any

from ._moved import install as _install_moved_modules

__all__ = [
    "Certificate", "margin_bounds", "certified_radius", "certify_bounds", "estimate_lipschitz", "exact_distance",
    "smooth",
]

_install_moved_modules()

#: public name -> (module, attribute)
_PUBLIC = {
    "Certificate": ("mistered.certify.certificate", "Certificate"),
    "margin_bounds": ("mistered.certify.bounds", "margin_lower_bounds"),
    "certified_radius": ("mistered.certify.bounds", "certified_radius"),
    "certify_bounds": ("mistered.certify.bounds", "certify_bounds"),
    "exact_distance": ("mistered.certify.exact", "exact_distance"),
    "estimate_lipschitz": ("mistered.certify.lipschitz.local.estimators", "estimate_lipschitz"),
    "smooth": ("mistered.certify.smoothing", "smooth"),
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mistered.certify' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    return getattr(importlib.import_module(module), attribute)


def __dir__() -> list[str]:
    return sorted(__all__)
