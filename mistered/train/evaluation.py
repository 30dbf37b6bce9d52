"""Held-out accuracy during training: clean, and under a threat (PGD from :mod:`mistered.attacks`)."""

from __future__ import annotations

import torch
from torch import nn

from ..threats.base import Threat
from .adversarial import attack_batch
from .distributed import DistContext, all_reduce_sum, unwrap_model

__all__ = ["held_out_accuracy"]


def held_out_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: Threat | None = None,
    attack_steps: int = 10,
    batch_size: int = 256,
    seed: int = 0,
    ctx: DistContext | None = None,
) -> float:
    """Accuracy of ``model`` on ``(x, y)``, clean (``threat=None``) or under PGD inside ``threat``.

    The examples are split across processes under torch.distributed and the counts summed. The
    attack's random starts come from ``seed`` (no global RNG is touched).

    Args:
        model: classifier (DDP-wrapped or not), ``(B, C, H, W)`` in ``[0, 1]`` -> ``(B, K)``.
        x: images ``(N, C, H, W)`` in ``[0, 1]``; y: labels ``(N,)``.
        threat: evaluate under this threat (the attack takes a ``Union``'s worst alternative per
            example), or clean when ``None``.
        attack_steps: PGD steps; batch_size: examples per forward pass.

    Returns:
        The fraction of the ``N`` examples classified correctly, in ``[0, 1]``.
    """
    ctx = ctx or DistContext(device=next(model.parameters()).device)
    net = unwrap_model(model)
    was_training = net.training
    net.eval()
    mine = torch.arange(ctx.rank, x.shape[0], ctx.world_size)
    correct = torch.zeros((), dtype=torch.float64)
    for idx in mine.split(batch_size):
        xb, yb = x[idx].to(ctx.device), y[idx].to(ctx.device)
        with torch.no_grad():
            ok = net(xb).argmax(dim=1) == yb
        if threat is not None:
            x_adv = attack_batch(net, threat, xb, yb, attack_steps, seed=seed)
            with torch.no_grad():
                ok &= net(x_adv).argmax(dim=1) == yb
        correct += ok.sum().double().cpu()
    net.train(was_training)
    total = all_reduce_sum(torch.stack([correct, torch.tensor(float(mine.numel()), dtype=torch.float64)]), ctx)
    return float(total[0] / total[1].clamp_min(1))
