"""Lipschitz certificates and estimates.

* :mod:`.global_bound` — upper bounds on the L2 Lipschitz constant of a network, layer by layer (the
  differentiable ``LipschitzBound``);
* :mod:`.graph_bound` — the same bound on any traced graph (residual blocks, BatchNorm folded, pooling, cat):
  ``GraphLipschitzBound``; ``bound_for_model`` picks one of the two for a model, ``lipschitz_bound`` its value;
* :mod:`.lmt` — Lipschitz-margin certificates and the LMT training objective's pieces (Tsuzuku et al. 2018);
* :mod:`.linf_dist` — certificates of L∞-dist nets (1-Lipschitz in L∞ by construction);
* :mod:`.local` — local Lipschitz constants: LipMIP (exact, a MIP) and the estimators it is compared with.
"""

from .global_bound import LipschitzBound, Residual, operator_norm
from .graph_bound import GraphLipschitzBound, bound_for_model, lipschitz_bound
from .lmt import LMTCertifier, certify_lmt, lmt_radius

__all__ = [
    "LipschitzBound", "Residual", "lipschitz_bound", "operator_norm", "GraphLipschitzBound", "bound_for_model",
    "LMTCertifier", "certify_lmt", "lmt_radius",
]
