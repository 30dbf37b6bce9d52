"""Empirical robustness: an ensemble of attacks, the per-example worst case, resumable chunk by chunk.

For an additive threat the ensemble is, in order: mistered :class:`~mistered.attacks.PGD` (with
restarts), Carlini-Wagner for L2, torchattacks' AutoAttack (``"standard"``: the full AutoAttack;
``"fast"``: APGD with cross-entropy and with the DLR loss, the untargeted pair of AutoAttack, which
is what fits a CPU; ``"off"``), then the gradient-free Square attack. Each attack runs only on the
examples the earlier ones did not fool, so the ensemble costs little more than its first member and
any example Square fools is one every gradient attack missed (a sign of gradient masking). Other
threats (geometric, flow, chains) get PGD with restarts.

The verdict is the model's prediction on the kept adversarial examples (one eval-mode forward pass),
so re-running the model on the saved ``x_adv`` reproduces the reported accuracy exactly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..attacks import Attack, build_attack
from ..attacks.torchattacks_adapter import TorchattacksAttack
from ..errors import InvalidInputError
from ..threats import Additive, Threat
from .state import EvaluationState

__all__ = ["AUTOATTACK_MODES", "EnsembleMember", "PointOutcome", "build_ensemble", "run_point", "predict"]

logger = logging.getLogger(__name__)

AUTOATTACK_MODES = ("standard", "fast", "off")
_DISTANCES = ("linf", "l2")


@dataclass(frozen=True)
class EnsembleMember:
    """One attack of the ensemble; ``gradient_free`` marks the masking check (Square)."""

    name: str
    attack: Attack
    gradient_free: bool = False


@dataclass
class PointOutcome:
    """The ensemble's worst case at one evaluation point, over all ``N`` examples.

    Attributes:
        x_adv: ``(N, C, H, W)`` the kept adversarial examples (the clean image where nothing was tried).
        fooled: ``(N,)`` bool, misclassified clean or fooled by some attack (the attacks' own verdict).
        robust: ``(N,)`` bool, the model's prediction on ``x_adv`` equals the label: the reported verdict.
        robust_after: ``{attack: accuracy}`` robust accuracy after each attack in order (cumulative).
        gradient_free_wins: examples fooled only by the gradient-free attack.
        seconds: ``{attack: seconds}``.
    """

    x_adv: torch.Tensor
    fooled: torch.Tensor
    robust: torch.Tensor
    robust_after: dict[str, float]
    gradient_free_wins: int
    seconds: dict[str, float]


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


def run_point(key: str, members: list[EnsembleMember], model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              clean_correct: torch.Tensor, state: EvaluationState, batch_size: int, device: torch.device,
              on_chunk: Callable[[str], None] | None = None) -> PointOutcome:
    """Run the ensemble on ``x`` ``(N, C, H, W)`` (CPU) chunk by chunk, skipping chunks saved in ``state``.

    ``key`` names the point in the state; ``on_chunk(chunk_key)`` is called after each newly saved chunk.
    """
    n = x.shape[0]
    x_adv, fooled = x.clone(), ~clean_correct.clone()
    robust_count = {m.name: 0 for m in members}
    seconds = {m.name: 0.0 for m in members}
    wins = 0
    for start in range(0, n, batch_size):
        rows_all = slice(start, min(start + batch_size, n))
        xc, yc = x[rows_all], y[rows_all]
        adv_c, fooled_c = xc.clone(), fooled[rows_all].clone()
        for index, member in enumerate(members):
            chunk_key = f"attack|{key}|{member.name}|{rows_all.start}-{rows_all.stop}"
            saved = state.load(chunk_key)
            if saved is None:
                began = time.perf_counter()
                rows = torch.nonzero(~fooled_c).flatten()
                newly = torch.zeros(0, dtype=torch.bool)
                if rows.numel():
                    result = member.attack(xc[rows].to(device), yc[rows].to(device))
                    newly = result.success.cpu()
                    update = rows if index == 0 else rows[newly]
                    adv_c[update] = result.x_adv.cpu()[slice(None) if index == 0 else newly]
                    fooled_c[rows[newly]] = True
                saved = {"x_adv": adv_c, "fooled": fooled_c, "newly": int(newly.sum()),
                         "seconds": time.perf_counter() - began}
                state.save(chunk_key, saved)
                if on_chunk is not None:
                    on_chunk(chunk_key)
            adv_c, fooled_c = saved["x_adv"].clone(), saved["fooled"].clone()
            robust_count[member.name] += int((~fooled_c).sum())
            seconds[member.name] += float(saved["seconds"])
            if member.gradient_free:
                wins += int(saved["newly"])
        x_adv[rows_all], fooled[rows_all] = adv_c, fooled_c
    robust = predict(model, x_adv, batch_size, device).argmax(dim=1) == y
    flipped = int((robust == fooled).sum())
    if flipped:
        logger.debug("%s: %d verdicts differ between the attacks' batches and the final forward pass", key, flipped)
    return PointOutcome(x_adv, fooled, robust, {k: v / max(n, 1) for k, v in robust_count.items()}, wins, seconds)
