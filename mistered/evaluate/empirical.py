"""Empirical robustness: an ensemble of attacks, the per-example worst case, resumable chunk by chunk.

For an additive threat the ensemble is, in order: mistered :class:`~mistered.attacks.PGD` (with
restarts), Carlini-Wagner for L2, torchattacks' AutoAttack (``"standard"``: the full AutoAttack;
``"fast"``: APGD with cross-entropy and with the DLR loss, the untargeted pair of AutoAttack, which
is what fits a CPU; ``"off"``), then the gradient-free Square attack. Each attack runs only on the
examples the earlier ones did not fool, so the ensemble costs little more than its first member and
any example Square fools is one every gradient attack missed (a sign of gradient masking). Other
threats (geometric, flow, chains) get PGD with restarts, then, when every alternative has a perceptual bound
(``...|lpips<=b``), the Lagrangian perceptual attack (LPA, Laidlaw et al. 2021), far stronger there than PGD.

The verdict is the model's prediction on the kept adversarial examples (one eval-mode forward pass),
so re-running the model on the saved ``x_adv`` reproduces the reported accuracy exactly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attacks import Attack, build_attack
from ..attacks.torchattacks_adapter import TorchattacksAttack
from ..errors import InvalidInputError
from ..threats import Additive, Threat
from ..threats.perceptual import PerceptualBudget
from .state import RunState

__all__ = ["AUTOATTACK_MODES", "EnsembleMember", "build_ensemble", "attack_chunk", "predict"]

logger = logging.getLogger(__name__)

AUTOATTACK_MODES = ("standard", "fast", "off")
_DISTANCES = ("linf", "l2")


@dataclass(frozen=True)
class EnsembleMember:
    """One attack of the ensemble; ``gradient_free`` marks the masking check (Square)."""

    name: str
    attack: Attack
    gradient_free: bool = False


def build_ensemble(model: nn.Module, threat: Threat, num_classes: int, image_size: int = 28, *, steps: int = 20,
                   restarts: int = 1,
                   autoattack: str = "fast", square_queries: int = 50, cw: bool = False, seed: int = 0,
                   device: str | torch.device | None = None) -> list[EnsembleMember]:
    """The attacks run at one threat (see the module docstring), in order.

    Args:
        steps: gradient steps of PGD, APGD and CW (per binary-search round); restarts: PGD restarts.
        autoattack: ``"standard"``, ``"fast"`` or ``"off"``.
        num_classes: ``K``; image_size: the smaller image side (Square's L2 version needs at least 5 pixels).
        square_queries: queries of the Square attack (0: no gradient-free check).
        cw: include Carlini-Wagner L2 for L2 threats.
    """
    if autoattack not in AUTOATTACK_MODES:
        raise InvalidInputError(f"--autoattack must be one of {', '.join(AUTOATTACK_MODES)}, got {autoattack!r}")
    common = {"seed": seed, "device": device, "distances": _DISTANCES}
    members = [EnsembleMember("pgd", build_attack("pgd", model, threat, steps=steps, restarts=restarts, **common))]
    if not isinstance(threat, Additive):
        if all(isinstance(alternative, PerceptualBudget) for alternative in threat.alternatives()):
            members.append(EnsembleMember("lpa", build_attack("lpa", model, threat, steps=steps, **common)))
        return members
    if cw and threat.norm == "l2":
        members.append(EnsembleMember("cw", build_attack("cw", model, threat, steps=steps, **common)))
    if autoattack == "standard":
        members.append(EnsembleMember("autoattack", TorchattacksAttack(model, threat, "AutoAttack", **common)))
    elif autoattack == "fast":
        losses = ("ce", "dlr") if num_classes >= 3 else ("ce",)  # DLR needs a third logit
        members += [EnsembleMember(f"apgd-{loss}", TorchattacksAttack(model, threat, "APGD",
                                                                       options={"loss": loss, "steps": steps}, **common))
                    for loss in losses]
    if square_queries > 0 and (threat.norm == "linf" or image_size >= 5):
        square = TorchattacksAttack(model, threat, "Square", options={"n_queries": square_queries}, **common)
        members.append(EnsembleMember("square", square, gradient_free=True))
    return members


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Eval-mode logits ``(N, K)`` on the CPU, computed in batches of ``batch_size`` on ``device``."""
    return torch.cat([model(x[i:i + batch_size].to(device)).cpu() for i in range(0, x.shape[0], batch_size)])


def attack_chunk(key: str, members: list[EnsembleMember], model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 clean_correct: torch.Tensor, state: RunState, start: int, device: torch.device,
                 on_chunk: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the ensemble on one chunk ``x`` ``(b, C, H, W)`` (CPU; examples ``start ... start + b - 1``),
    each attack on the examples the earlier ones did not fool; skips the attacks saved in ``state``.

    ``key`` names the point in the state; ``on_chunk(chunk_key)`` is called after each newly saved attack.
    Returns ``{"x_adv" (b, C, H, W), "fooled" (b,) the attacks' verdict, "robust" (b,) the model's prediction
    on x_adv equals the label (the reported verdict), "robust_count" {attack: examples left unfooled after it},
    "seconds" {attack: s}, "wins": examples only the gradient-free attack fooled}``.
    """
    stop = start + x.shape[0]
    adv, fooled = x.clone(), ~clean_correct.clone()
    robust_count, seconds, wins = {}, {}, 0
    for index, member in enumerate(members):
        chunk_key = f"attack|{key}|{member.name}|{start}-{stop}"
        saved = state.load(chunk_key)
        if saved is None:
            began = time.perf_counter()
            rows = torch.nonzero(~fooled).flatten()
            newly = torch.zeros(0, dtype=torch.bool)
            if rows.numel():
                result = member.attack(x[rows].to(device), y[rows].to(device))
                newly = result.success.cpu()
                update = rows if index == 0 else rows[newly]
                adv[update] = result.x_adv.cpu()[slice(None) if index == 0 else newly]
                fooled[rows[newly]] = True
            saved = {"x_adv": adv, "fooled": fooled, "newly": int(newly.sum()), "seconds": time.perf_counter() - began}
            state.save(chunk_key, saved)
            if on_chunk is not None:
                on_chunk(chunk_key)
        adv, fooled = saved["x_adv"].clone(), saved["fooled"].clone()
        robust_count[member.name] = int((~fooled).sum())
        seconds[member.name] = float(saved["seconds"])
        if member.gradient_free:
            wins += int(saved["newly"])
    robust = predict(model, adv, x.shape[0], device).argmax(dim=1) == y
    flipped = int((robust == fooled).sum())
    if flipped:
        logger.debug("%s: %d verdicts differ between the attacks' batches and the final forward pass", key, flipped)
    return {"x_adv": adv, "fooled": fooled, "robust": robust, "robust_count": robust_count, "seconds": seconds,
            "wins": wins}
