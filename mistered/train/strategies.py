"""How to train against several threats at once: a random threat per batch, the average, or the worst case.

Given the adversarial examples each threat's attack found for a batch, the strategies turn them
into one loss:

* ``"random"``: one threat, drawn per batch from a :class:`torch.Generator` (the caller attacks
  only that one; see :func:`choose_random`).
* ``"avg"``: the mean of the losses under every threat.
* ``"max"``: per example, the threat whose adversarial example has the highest loss (the union
  threat model: the adversary picks the best alternative for each image).

Each strategy makes exactly one forward pass with gradients (the candidates are concatenated), so it
is safe under :class:`~torch.nn.parallel.DistributedDataParallel`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError

__all__ = ["STRATEGIES", "Strategy", "check_strategy", "choose_random", "combine_adversarial"]

Strategy = Literal["random", "avg", "max"]
STRATEGIES: tuple[str, ...] = ("random", "avg", "max")


def check_strategy(strategy: str) -> str:
    """Validate a strategy name; returns it."""
    if strategy not in STRATEGIES:
        raise InvalidInputError(f"unknown multi-threat strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return strategy


def choose_random(count: int, generator: torch.Generator) -> int:
    """The index of the threat to train against for this batch, uniform over ``count``."""
    return int(torch.randint(count, (1,), generator=generator).item())


def combine_adversarial(
    model: nn.Module, candidates: list[torch.Tensor], y: torch.Tensor, strategy: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loss over adversarial candidates from several threats.

    Args:
        model: the network being trained (possibly DDP-wrapped); called once with gradients.
        candidates: ``T`` tensors of shape ``(B, C, H, W)``, one adversarial batch per threat.
        y: labels ``(B,)``.
        strategy: ``"random"`` (``T`` must be 1), ``"avg"`` or ``"max"``.

    Returns:
        ``(loss, logits)``: the scalar cross-entropy to minimise and the ``(B, K)`` logits of the
        candidate each example is scored on (its highest-loss candidate for ``avg``/``max``).
    """
    check_strategy(strategy)
    count, batch = len(candidates), y.shape[0]
    if count == 0:
        raise InvalidInputError("at least one adversarial candidate batch is needed")
    if count == 1:
        logits = model(candidates[0])
        return F.cross_entropy(logits, y), logits
    if strategy == "random":
        raise InvalidInputError(f"the random strategy trains on one threat per batch, got {count} candidates")
    if strategy == "max":
        with torch.no_grad():
            losses = torch.stack([F.cross_entropy(model(c), y, reduction="none") for c in candidates])
            worst = losses.argmax(dim=0)
        stacked = torch.stack(candidates)
        chosen = stacked[worst, torch.arange(batch, device=y.device)]
        logits = model(chosen)
        return F.cross_entropy(logits, y), logits
    logits_all = model(torch.cat(candidates)).view(count, batch, -1)
    losses = F.cross_entropy(logits_all.flatten(0, 1), y.repeat(count), reduction="none").view(count, batch)
    worst = losses.detach().argmax(dim=0)
    logits = logits_all[worst, torch.arange(batch, device=y.device)]
    return losses.mean(), logits
