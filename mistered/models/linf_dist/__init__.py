"""L∞-dist networks (Zhang et al. 2021, 2022): layers of ``y_j = ||x - w_j||_p`` neurons (1-Lipschitz in L∞ at
``p = inf``), the L∞-dist net and the hybrid (L∞-dist backbone + ReLU head). Their certificates live in
:mod:`mistered.certify.lipschitz.linf_dist`; their training objectives in :mod:`mistered.train.linf_dist`."""

from .hybrid import LinfDistHybrid, linf_dist_hybrid
from .layers import (
    LinfDistConv2d, LinfDistLinear, MeanShift, certification_mode, fast_p, linf_dist, linf_dist_layers, set_p,
)
from .nets import LinfDistNet, linf_dist_net, set_linf_dist_compiled

__all__ = [
    "LinfDistLinear", "LinfDistConv2d", "MeanShift", "linf_dist", "fast_p", "linf_dist_layers", "set_p",
    "certification_mode", "LinfDistNet", "linf_dist_net", "set_linf_dist_compiled", "LinfDistHybrid",
    "linf_dist_hybrid",
]
