"""Local Lipschitz constants of ReLU networks: LipMIP (exact, a MIP on OR-Tools) and the estimators it is
compared with (naive, sampling, CLEVER, Fast-Lip, LP relaxation), behind :func:`estimate_lipschitz`."""

from .directions import OutputDirections, resolve_objective
from .estimators import KINDS, METHODS, EstimatorOptions, LipschitzEstimate, as_plnet, estimate_lipschitz
from .lipmip import MipSolution, solve_lipmip

__all__ = [
    "KINDS",
    "METHODS",
    "EstimatorOptions",
    "LipschitzEstimate",
    "MipSolution",
    "OutputDirections",
    "as_plnet",
    "estimate_lipschitz",
    "resolve_objective",
    "solve_lipmip",
]
