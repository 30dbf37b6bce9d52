"""Exact certificates of piecewise-linear ReLU networks: minimal adversarial distances.

* :mod:`.geocert` — GeoCert (Jordan et al. 2019): a best-first search through linear regions
  (:mod:`.region_search` holds the state it shares with branch and bound; :mod:`.halfspace` the closed-form
  pruning; :mod:`.boundary_search` a cheap upper bound);
* :mod:`.branch` — branch and bound over ReLU splits on the triangle relaxation;
* :mod:`.mip` — the minimal distance as one mixed-integer program;
* :mod:`.distance` — :func:`exact_distance`, the public entry point: a batch, any piecewise-linear network
  (lowered to the chain form), ``search="regions" | "branch" | "mip" | "auto"``.

Example:
    >>> cert = exact_distance(model, x, y, norm="linf", search="branch", time_limit=60)
    >>> cert.radius, cert.upper, cert.status       # (B,), (B,), ["exact", ...]
"""

from .distance import (
    AUTO_SEARCH, MAX_EXACT_NEURONS, PIXEL_DOMAIN, SEARCHES, certify_geocert, exact_distance, relu_neurons,
)
from .geocert import geocert

__all__ = ["exact_distance", "relu_neurons", "geocert", "certify_geocert", "SEARCHES", "AUTO_SEARCH",
           "MAX_EXACT_NEURONS", "PIXEL_DOMAIN"]
