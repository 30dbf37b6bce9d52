"""Lagrangian perceptual attack (after Laidlaw, Singla & Feizi 2021) against a perceptual budget.

The perceptual bound ``metric(x, x_adv) <= bound`` (LPIPS or SSIM) is handled as a penalty during the
search, with a per-example multiplier raised on the examples that violate it, and as a hard
constraint at the end: the perturbation's own ``project_()`` shrinks every violator until the bound
holds exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidInputError
from ..metrics import get_distance
from ..threats.base import Perturbation, Threat
from ..threats.perceptual import PerceptualBudget, PerceptualPerturbation
from .base import Attack, SearchOutput
from .losses import LossFn

__all__ = ["PerceptualAttack"]


class PerceptualAttack(Attack):
    """Maximise ``loss(x_adv) - lambda * max(0, d(x, x_adv) - bound)`` over the inner threat's parameters.

    Each step is the inner perturbation's steepest-ascent ``step_`` (size relative to its budget)
    followed by its own projection (not the perceptual one, which would cut the search short). Every
    ``lambda_every`` steps ``lambda`` is multiplied by ``lambda_factor`` on the examples over the bound.
    Per example the first iterate that fools the model within the bound is kept; at the end the
    :class:`~mistered.threats.PerceptualBudget` projection makes the bound hold for every example.

    Args:
        model, threat: see :class:`Attack`; every alternative of ``threat`` must be a ``PerceptualBudget``
            (e.g. ``parse_threat("flow(0.05)>>linf(0.3)|lpips<=0.1")``).
        steps: gradient steps.
        step_size: relative to the inner budget; ``None`` gives ``2.5 / steps``.
        lambda_init, lambda_factor, lambda_every: the penalty multiplier's start, growth and period.
        random_start: start from a uniform draw inside the inner budget.
        **kwargs: ``loss`` (default ``"margin"``), ``restarts``, ``early_stop``, ``seed``, ``distances``, ``device``.
    """

    def __init__(self, model: nn.Module, threat: Threat, *, steps: int = 20, step_size: float | None = None,
                 lambda_init: float = 1.0, lambda_factor: float = 10.0, lambda_every: int = 5,
                 random_start: bool = True, **kwargs) -> None:
        kwargs.setdefault("loss", "margin")
        super().__init__(model, threat, **kwargs)
        bad = [str(t) for t in threat.alternatives() if not isinstance(t, PerceptualBudget)]
        if bad:
            raise InvalidInputError(
                f"the perceptual attack needs a perceptual bound on every alternative (append '|lpips<=0.1'); "
                f"{', '.join(bad)} has none"
            )
        if int(steps) != steps or steps < 1 or int(lambda_every) != lambda_every or lambda_every < 1:
            raise InvalidInputError(f"steps and lambda_every must be positive integers, got {steps!r}, {lambda_every!r}")
        if not (lambda_init > 0 and lambda_factor >= 1):
            raise InvalidInputError(f"need lambda_init > 0 and lambda_factor >= 1, got {lambda_init}, {lambda_factor}")
        self.steps, self.lambda_every = int(steps), int(lambda_every)
        self.step_size = 2.5 / self.steps if step_size is None else float(step_size)
        if not self.step_size > 0:
            raise InvalidInputError(f"step_size must be positive (relative to the budget), got {step_size!r}")
        self.lambda_init, self.lambda_factor = float(lambda_init), float(lambda_factor)
        self.random_start = bool(random_start)

    def _search(self, perturbation: Perturbation, x: torch.Tensor, goal: torch.Tensor, loss_fn: LossFn,
                targeted: bool, generator: torch.Generator) -> SearchOutput:
        if not isinstance(perturbation, PerceptualPerturbation):
            raise InvalidInputError(f"the perceptual attack needs a perceptual bound, got the threat {perturbation.threat}")
        inner, budget = perturbation.inner, perturbation.threat
        metric = get_distance(budget.metric, x.device, budget.features)
        params = list(inner.parameters())
        if self.random_start:
            inner.random_init_(generator).project_()
        lam = torch.full((x.shape[0],), self.lambda_init, device=x.device)
        best_params = inner.snapshot()
        found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for step in range(self.steps):
            x_adv = inner(x)
            logits = self.model(x_adv)
            dist = metric(x, x_adv).reshape(-1)
            objective = loss_fn(logits, goal) - lam * (dist - budget.bound).clamp_min(0.0)
            with torch.no_grad():
                new = ~found & self.succeeded(logits, goal, targeted) & (dist <= budget.bound)
                for saved, param in zip(best_params, params):
                    saved.copy_(torch.where(new.view(-1, *([1] * (param.dim() - 1))), param, saved))
                found |= new
                if (step + 1) % self.lambda_every == 0:
                    lam = torch.where(dist > budget.bound, lam * self.lambda_factor, lam)
            if self.early_stop and bool(found.all()):
                break
            for param, grad in zip(params, torch.autograd.grad(objective.sum(), params)):
                param.grad = grad
            inner.step_(self.step_size).project_()
            for param in params:
                param.grad = None
        inner.restore_(best_params, found)
        perturbation.project_()
        return None
