"""Attacks: how an adversary searches inside a threat (see :mod:`mistered.attacks.base` for the contract).

Every attack is ``Attack(model, threat, ...)`` and ``attack(x, y) -> AttackResult``; restarts,
alternatives of a ``Union`` threat, best-so-far per example and early stopping are shared.
"""

from .base import Attack, attack_mode
from .cw import CarliniWagnerL2
from .fgsm import FGSM
from .hard_bound import bound_violations
from .losses import LOSSES, cross_entropy, get_loss, margin, targeted_cross_entropy, targeted_margin
from .lpa import LPA, FastLPA
from .perceptual import PerceptualAttack
from .pgd import PGD
from .ppgd import PPGD
from .registry import ATTACK_NAMES, build_attack
from .result import AttackResult, measure_distances
from .torchattacks_adapter import TorchattacksAttack

__all__ = [
    "Attack",
    "AttackResult",
    "ATTACK_NAMES",
    "CarliniWagnerL2",
    "FGSM",
    "FastLPA",
    "LOSSES",
    "LPA",
    "PGD",
    "PPGD",
    "PerceptualAttack",
    "TorchattacksAttack",
    "attack_mode",
    "bound_violations",
    "build_attack",
    "cross_entropy",
    "get_loss",
    "margin",
    "measure_distances",
    "targeted_cross_entropy",
    "targeted_margin",
]
