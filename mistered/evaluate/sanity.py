"""Sanity checks in the spirit of AutoAttack's: warnings for suspicious models, a hard error for unsound results."""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..certify.certificate import Certificate
from ..errors import UnsoundResultError

__all__ = ["check_model_outputs", "masking_warning", "check_soundness", "SOUNDNESS_RTOL"]

logger = logging.getLogger(__name__)

#: Relative slack for float round-off when comparing a certified radius with an attack's distance.
SOUNDNESS_RTOL = 1e-4


@torch.no_grad()
def check_model_outputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[str]:
    """Warnings about the model's outputs on ``x`` ``(B, C, H, W)`` with labels ``y`` ``(B,)``.

    * two forward passes on the same input differ: a randomised model (attacks need EOT; numbers unreliable);
    * rows non-negative and summing to 1: probabilities instead of logits (gradients of a softmax saturate);
    * outputs identical for every input: a constant model;
    * clean accuracy within 10 points of chance (``1 / K``): an untrained or broken model.
    """
    warnings: list[str] = []
    first, second = model(x), model(x)
    if not torch.allclose(first, second, rtol=1e-4, atol=1e-5):
        warnings.append("the model is randomised (two forward passes on the same images differ): attack results "
                        "are unreliable; evaluate a deterministic model or attack with expectation over transformations")
    if bool((first >= 0).all()) and float((first.sum(dim=1) - 1).abs().max()) < 1e-3:
        warnings.append("the model returns probabilities (non-negative rows summing to 1), not logits: gradient "
                        "attacks may be weakened by the softmax; remove the final softmax before evaluating")
    accuracy = float((first.argmax(dim=1) == y).float().mean())
    if x.shape[0] > 1 and float((first - first[:1]).abs().max()) < 1e-6:
        warnings.append("the model's outputs are the same for every image (a constant model); check the checkpoint")
    elif accuracy <= 1.0 / num_classes + 0.1:
        warnings.append(f"clean accuracy {accuracy:.3f} is near chance (1/{num_classes}): the model looks untrained "
                        "or randomised; check the checkpoint and the data")
    for warning in warnings:
        logger.warning(warning)
    return warnings


def masking_warning(threat: str, gradient_free_wins: int, attacked: int) -> str | None:
    """A warning when the gradient-free attack fooled examples that every gradient attack missed."""
    if gradient_free_wins <= 0:
        return None
    warning = (f"{threat}: the gradient-free Square attack fooled {gradient_free_wins} of {attacked} examples that "
               "every gradient attack missed: a sign of gradient masking; trust certified bounds, not these attacks")
    logger.warning(warning)
    return warning


def check_soundness(threat: str, cert: Certificate, fooled: torch.Tensor, distance: torch.Tensor,
                    offset: int = 0) -> None:
    """Raise :class:`UnsoundResultError` where an attack fooled an example inside its certified radius.

    Args:
        threat: the threat's name, for the message.
        cert: a certificate of the first ``m`` examples (radius ``(m,)``, in the threat's norm).
        fooled: ``(N,)`` bool, ``N >= m``: clean-correct examples the attacks fooled.
        distance: ``(N,)`` the attacks' distances in the certificate's norm.
        offset: the position of the first example in the whole evaluation (for the message).
    """
    m = cert.radius.shape[0]
    certified = (cert.predictions == cert.labels) & (cert.radius > distance[:m] * (1 + SOUNDNESS_RTOL) + 1e-7)
    bad = torch.nonzero(certified & fooled[:m]).flatten()
    if bad.numel():
        i = int(bad[0])
        raise UnsoundResultError(
            f"{cert.method} certified example {offset + i} at {cert.norm} radius {float(cert.radius[i]):.6g} but an attack at "
            f"{threat} fooled it at distance {float(distance[i]):.6g} ({bad.numel()} such example(s)): the certificate "
            "or the model is unsound; report this with the model and the command"
        )
