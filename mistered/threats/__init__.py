"""Threat models: what an adversary may do to an image batch (see :mod:`mistered.threats.base`)."""

from .additive import Additive, AdditivePerturbation
from .base import Perturbation, Threat

__all__ = ["Threat", "Perturbation", "Additive", "AdditivePerturbation"]
