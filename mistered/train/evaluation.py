"""Held-out accuracy during training: clean, and under a threat (PGD from :mod:`mistered.attacks`), streamed."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..threats.base import Threat
from ..validation import model_dtype
from .adversarial import attack_batch
from .batches import as_dataset, count_logits, load_batch
from .distributed import DistContext, all_reduce_sum, unwrap_model

__all__ = ["held_out_accuracy"]


def held_out_accuracy(
    model: nn.Module,
    data: Any,
    threat: Threat | None = None,
    attack_steps: int = 10,
    batch_size: int = 256,
    seed: int = 0,
    ctx: DistContext | None = None,
    n: int | None = None,
) -> float:
    """Accuracy of ``model`` on ``data``, clean (``threat=None``) or under PGD inside ``threat``.

    The examples are read ``batch_size`` at a time (memory stays flat), split across processes under
    torch.distributed (rank ``r`` of ``W`` takes examples ``r, r + W, ...``) and the counts summed. The
    attack's random starts come from ``seed`` (no global RNG is touched).

    Args:
        model: classifier (DDP-wrapped or not), ``(B, C, H, W)`` in ``[0, 1]`` -> ``(B, K)``.
        data: a :class:`~mistered.data.LabeledDataset` or an ``(images (N, C, H, W), labels (N,))`` pair.
        threat: evaluate under this threat (the attack takes a ``Union``'s worst alternative per
            example), or clean when ``None``.
        attack_steps: PGD steps; batch_size: examples per forward pass.
        n: only the first ``n`` examples (``None``: all).

    Returns:
        The fraction of the evaluated examples classified correctly, in ``[0, 1]``.
    """
    net = unwrap_model(model)
    ctx = ctx or DistContext(device=next(net.parameters()).device)
    dataset = as_dataset(data, "held-out")
    dtype = model_dtype(net)
    num_classes = count_logits(net, dataset, dtype, ctx.device)
    count = len(dataset) if n is None else min(int(n), len(dataset))
    was_training = net.training
    net.eval()
    mine = torch.arange(ctx.rank, count, ctx.world_size)
    correct = torch.zeros((), dtype=torch.float64)
    for idx in mine.split(batch_size):
        xb, yb = load_batch(dataset, idx, num_classes, dtype, ctx.device)
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
