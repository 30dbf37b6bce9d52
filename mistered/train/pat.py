"""Perceptual adversarial training (PAT, Laidlaw, Singla & Feizi 2021): cross-entropy on Fast-LPA examples.

The inner maximisation is :class:`~mistered.attacks.FastLPA` inside a perceptually bounded threat (any chain,
e.g. ``linf(0.3)|lpips-self<=0.5``); with ``lpips-self`` the bound is measured in the activations of the
network being trained, as in the paper. The attack runs the model in eval mode with frozen parameters, and
its final projection puts every training example inside the bound. Its seeds come from the loop's generator,
whose state is checkpointed, so a resumed run is bitwise the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..attacks.perceptual_length import require_perceptual_budgets
from ..errors import InvalidInputError
from ..threats.base import Threat
from ..threats.compose import Union
from .adversarial import draw_seed
from .distributed import unwrap_model
from .strategies import combine_adversarial

__all__ = ["PerceptualAdversarialObjective", "DEFAULT_PAT_THREAT"]

#: The threat PAT trains against when none is given: the paper's self-bounded perceptual ball, inside MNIST's
#: L∞ box. 0.5 lies between the benign changes (p99 0.575) and the nearest digit of another class (p1 0.912)
#: of the bundled CNN's features (docs/threats.md, calibration).
DEFAULT_PAT_THREAT = "linf(0.3)|lpips-self<=0.5"


class PerceptualAdversarialObjective:
    """Cross-entropy on the Fast-LPA examples of ``threats`` (their union: the worst alternative per example).

    Args:
        threats: one threat or several, each alternative with a perceptual bound (``|lpips-self<=b``,
            ``|lpips<=b`` ...).
        steps: Fast-LPA steps per batch (the paper's 10).
        generator: draws each batch's attack seed (pass the training loop's generator for lossless resume).

    Raises:
        InvalidInputError: no threat, or an alternative without a perceptual bound.
    """

    def __init__(self, threats: Threat | Sequence[Threat], steps: int = 10,
                 generator: torch.Generator | None = None) -> None:
        listed = [threats] if isinstance(threats, Threat) else list(threats)
        if not listed or not all(isinstance(t, Threat) for t in listed):
            raise InvalidInputError(f"perceptual adversarial training needs one or more Threat objects, "
                                    f"got {threats!r}")
        self.threat = listed[0] if len(listed) == 1 else Union(tuple(listed))
        require_perceptual_budgets(self.threat, "pat")
        if int(steps) != steps or steps < 1:
            raise InvalidInputError(f"attack steps must be a positive integer, got {steps!r}")
        self.steps = int(steps)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def adversarial_examples(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Fast-LPA's examples ``(B, C, H, W)`` for ``(x, y)`` against the plain (unwrapped) ``model``, detached."""
        from ..attacks import FastLPA

        attack = FastLPA(model, self.threat, steps=self.steps, seed=draw_seed(self.generator))
        return attack.attack(x, y).x_adv.detach()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.adversarial_examples(unwrap_model(model), x, y)
        return combine_adversarial(model, [x_adv], y, "max")
