"""Threat models: what an adversary may do to an image batch (see :mod:`mistered.threats.base`)."""

from .additive import Additive, AdditivePerturbation
from .affine import Affine, AffinePerturbation
from .base import Perturbation, Threat
from .compose import Sequence, SequencePerturbation, Union
from .flow import Flow, FlowPerturbation, flow_smoothness, warp_by_flow
from .perceptual import PerceptualBudget, PerceptualPerturbation, bind_features
from .spec import PRESETS, parse_threat

__all__ = [
    "Threat", "Perturbation", "Additive", "AdditivePerturbation",
    "Affine", "AffinePerturbation", "Flow", "FlowPerturbation", "flow_smoothness", "warp_by_flow",
    "Sequence", "SequencePerturbation", "Union", "parse_threat", "PRESETS",
    "PerceptualBudget", "PerceptualPerturbation", "bind_features",
]
