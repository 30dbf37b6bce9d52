"""The bound engine: IBP, CROWN and α-CROWN on a traced bound graph (:mod:`mistered.certify.graph`), over L∞, L2
and L1 balls intersected with the ``[0, 1]`` pixel box, batched over examples and specifications, on any device.

Layout (imports flow downwards): :mod:`.certify` (certificates, certified radii) → :mod:`.engine` (margins and
specifications by method) → :mod:`.alpha` (α-CROWN) → :mod:`.crown` (intermediate bounds, chunked) →
:mod:`.backward` (one backward pass) → :mod:`.transpose` / :mod:`.relaxations` → :mod:`.forms` (dense or windowed
linear forms), :mod:`.interval` (IBP), :mod:`.input_set` (the perturbation set).

Example:
    >>> margins = margin_lower_bounds(model, x, y, eps=1 / 255, norm="linf", method="crown")  # (B, K)
    >>> cert = certify_bounds(model, x, y, eps=[1 / 255], method="alpha-crown")               # a Certificate
"""

from .alpha import AlphaOptions, alpha_crown
from .backward import backward_lower
from .certify import certified_radius, certify_bounds
from .crown import DEFAULT_MAX_ELEMENTS, crown_bounds
from .engine import METHODS, as_graph, margin_lower_bounds, margin_spec, spec_lower_bounds
from .input_set import NORMS, InputSet
from .interval import interval_bounds

__all__ = [
    "METHODS", "NORMS", "DEFAULT_MAX_ELEMENTS", "AlphaOptions", "InputSet", "as_graph", "interval_bounds",
    "crown_bounds", "alpha_crown", "backward_lower", "spec_lower_bounds", "margin_spec", "margin_lower_bounds",
    "certified_radius", "certify_bounds",
]
