"""Standard and adversarial training objectives (the :class:`~mistered.train.objectives.Objective` protocol).

Adversarial training minimises the loss on adversarial examples that :mod:`mistered.attacks` finds
inside a threat model (Madry et al.): the inner maximisation is the library's own PGD driving the
threat's :class:`~mistered.threats.Perturbation`, so every threat (additive, flow, affine, their
``Sequence``, a ``Union`` of alternatives, perceptually bounded ones) trains the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from ..threats.base import Threat
from .distributed import unwrap_model
from .strategies import check_strategy, choose_random, combine_adversarial

__all__ = ["StandardObjective", "AdversarialObjective", "attack_batch", "draw_seed"]


class StandardObjective:
    """Cross-entropy on clean images."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y), logits


def attack_batch(
    model: nn.Module, threat: Threat, x: torch.Tensor, y: torch.Tensor, steps: int, restarts: int = 1, seed: int = 0,
    early_stop: bool = True,
) -> torch.Tensor:
    """Adversarial examples for ``(x, y)`` under ``threat``, found by :class:`mistered.attacks.PGD`.

    The attack runs the model in eval mode with frozen parameters (restored after), so the training
    step's gradients and batch-norm statistics are untouched; its random starts come from ``seed``.

    Args:
        model: a plain (not DDP-wrapped) classifier, ``(B, C, H, W)`` in ``[0, 1]`` -> ``(B, K)``.
        threat: any threat (a ``Union``: the per-example worst alternative).
        x: images ``(B, C, H, W)`` in ``[0, 1]``; y: labels ``(B,)``.
        steps: PGD steps; restarts: random restarts; seed: seeds the attack's generator.
        early_stop: let examples leave the search once misclassified (``False``: all ``steps`` for all).

    Returns:
        ``x_adv`` of shape ``(B, C, H, W)``, detached.
    """
    from ..attacks import PGD

    attack = PGD(model, threat, steps=steps, restarts=restarts, seed=seed, early_stop=early_stop)
    return attack.attack(x, y).x_adv.detach()


def draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(2**62, (1,), generator=generator).item())


class AdversarialObjective:
    """Cross-entropy on adversarial examples from one or several threats.

    Args:
        threats: one threat (its ``alternatives()`` are the threats trained against; a ``Union``
            has several) or a sequence of threats.
        strategy: how several threats combine (:mod:`mistered.train.strategies`): ``"random"``,
            ``"avg"`` or ``"max"``. With a single threat all three are the same.
        steps: PGD steps of the inner maximisation; restarts: its random restarts.
        early_stop: PGD drops examples from the search once they are misclassified (cheaper); ``False``
            runs every step on every example.
        generator: draws the attacks' seeds and the threat of the ``random`` strategy (pass the
            training loop's generator, whose state is checkpointed, for lossless resume).
    """

    def __init__(
        self,
        threats: Threat | Sequence[Threat],
        strategy: str = "max",
        steps: int = 7,
        restarts: int = 1,
        generator: torch.Generator | None = None,
        early_stop: bool = True,
    ) -> None:
        listed = [threats] if isinstance(threats, Threat) else list(threats)
        if not listed or not all(isinstance(t, Threat) for t in listed):
            raise InvalidInputError(f"adversarial training needs one or more Threat objects, got {threats!r}")
        if steps < 1 or restarts < 1:
            raise InvalidInputError(f"attack steps and restarts must be >= 1, got steps={steps}, restarts={restarts}")
        self.threats: tuple[Threat, ...] = tuple(alt for t in listed for alt in t.alternatives())
        self.strategy = check_strategy(strategy)
        self.steps, self.restarts, self.early_stop = int(steps), int(restarts), bool(early_stop)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        net = unwrap_model(model)
        chosen = self.threats
        if self.strategy == "random" and len(chosen) > 1:
            chosen = (chosen[choose_random(len(chosen), self.generator)],)
        candidates = [
            attack_batch(net, threat, x, y, self.steps, self.restarts, draw_seed(self.generator), self.early_stop)
            for threat in chosen
        ]
        strategy = "max" if len(candidates) == 1 else self.strategy
        return combine_adversarial(model, candidates, y, strategy)
