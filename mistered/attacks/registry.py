"""Build an attack from its CLI name: ``pgd``, ``fgsm``, ``cw``, ``ppgd``, ``lpa``, ``fast-lpa``, ``autoattack``,
``torchattacks:<Name>`` (and ``perceptual``, the deprecated name of ``lpa``)."""

from __future__ import annotations

from torch import nn

from ..errors import InvalidInputError
from ..threats.base import Threat
from .base import Attack

__all__ = ["ATTACK_NAMES", "build_attack"]

ATTACK_NAMES = ("pgd", "fgsm", "cw", "ppgd", "lpa", "fast-lpa", "autoattack", "torchattacks:<Name>")


def build_attack(name: str, model: nn.Module, threat: Threat, *, steps: int = 10, restarts: int = 1,
                 seed: int = 0, device=None, distances: tuple[str, ...] | None = None) -> Attack:
    """The attack called ``name`` on ``model`` and ``threat`` with ``steps`` iterations and ``restarts`` restarts.

    ``steps`` is the number of gradient steps (PGD, PPGD, Fast-LPA; LPA: per round of its multiplier; CW: Adam
    steps per binary-search round; ignored by FGSM and AutoAttack); ``distances`` as in :class:`Attack`. Imports are lazy: each attack module loads only when named.
    """
    common = {"restarts": restarts, "seed": seed, "device": device, "distances": distances}
    key = name.strip().lower()
    if key == "pgd":
        from .pgd import PGD

        return PGD(model, threat, steps=steps, **common)
    if key == "fgsm":
        from .fgsm import FGSM

        return FGSM(model, threat, **common)
    if key == "cw":
        from .cw import CarliniWagnerL2

        return CarliniWagnerL2(model, threat, steps=steps, **common)
    if key == "ppgd":
        from .ppgd import PPGD

        return PPGD(model, threat, steps=steps, **common)
    if key in ("lpa", "fast-lpa"):
        from .lpa import LPA, FastLPA

        return (LPA if key == "lpa" else FastLPA)(model, threat, steps=steps, **common)
    if key == "perceptual":
        from .perceptual import PerceptualAttack

        return PerceptualAttack(model, threat, steps=steps, **common)
    if key == "autoattack" or key.startswith("torchattacks:"):
        from .torchattacks_adapter import TorchattacksAttack

        ta_name = "AutoAttack" if key == "autoattack" else name.strip().split(":", 1)[1]
        return TorchattacksAttack(model, threat, ta_name, **common)
    raise InvalidInputError(f"unknown attack {name!r}; choose one of {', '.join(ATTACK_NAMES)}")
