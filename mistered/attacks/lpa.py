"""The Lagrangian perceptual attack (LPA) and Fast-LPA (Laidlaw, Singla & Feizi 2021) over any threat chain.

LPA maximises, over the chain's perturbation parameters ``θ``,

    ``L(f(g(θ)), y) - λ · max(0, ℓ(x, g(θ)) / r - 1)``

with ``L`` the margin loss (capped at ``κ``), ``ℓ`` the budget's length (:mod:`.perceptual_length`: ``d^(1/p)``, a norm of
feature differences for LPIPS) and ``r`` the budget's radius, so that ``λ`` is in the loss's units whatever
the metric. Each step goes along the chain's own steepest-ascent direction (``step_``: sign for L∞ components,
normalised for L2, smoothed for smooth flows) and is **normalised in perceptual length**: its length
``|J u|`` is measured by a finite difference and the step is scaled to ``η``, which decays from
``step_size · r`` to a tenth of it over each round. Only the inner budgets are projected during the search.

LPA runs ``lambda_rounds`` rounds of ``steps`` steps, multiplying ``λ`` by ``lambda_factor`` after each
round on the examples still over the bound; an example is done once it fools the model inside the bound
(that iterate is kept). Fast-LPA, for training, runs one round with ``λ`` ramped from a tenth of its value
to its value. A final hard projection (the :class:`~mistered.threats.PerceptualBudget`'s own) puts every
example inside its bound, which the result records (``result.info["bound_violations"] == 0``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InvalidInputError
from ..threats.base import Perturbation, Threat
from ..threats.perceptual import SAFETY_RTOL, PerceptualPerturbation
from .base import Attack, SearchOutput
from .hard_bound import HardBoundMixin
from .losses import LossFn
from .perceptual_length import PerceptualLength, require_perceptual_budgets

__all__ = ["LPA", "FastLPA"]

#: A random start is this fraction of a uniform draw inside the inner budget (the paper starts from N(0, 0.01)).
START_SCALE = 0.1
#: The step size decays to this fraction of itself over a round (the paper's 0.1).
DECAY = 0.1


def _rows(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


class LPA(HardBoundMixin, Attack):
    """Lagrangian perceptual attack (module docstring) against any threat with a perceptual bound.

    Every alternative of ``threat`` must be a :class:`~mistered.threats.PerceptualBudget` (any distance:
    ``lpips``, ``lpips-self``, ``dssim`` ...), e.g. ``parse_threat("flow(0.05)>>linf(0.1)|lpips<=0.015")``.

    Args:
        model, threat: see :class:`~mistered.attacks.Attack`.
        steps: gradient steps per round of ``λ``.
        lambda_rounds: rounds; ``λ`` grows between them on the examples over the bound.
        lambda_init, lambda_factor: ``λ`` of the first round and its growth per round.
        lambda_ramp: within a round, raise ``λ`` geometrically from ``λ / 10`` to ``λ`` (Fast-LPA).
        step_size: the first step's perceptual length, relative to the budget's radius.
        kappa: the loss is capped at ``kappa`` (the paper's 1 for the margin): once an example is fooled by that
            margin only the penalty acts, pulling it back inside the bound.
        fd_step: the finite difference of a step's length, as a fraction of a unit step.
        random_start: start from a tenth of a uniform draw inside the inner budget (else the identity).
        **kwargs: ``loss`` (default ``"margin"``), ``restarts``, ``early_stop``, ``seed``, ``distances``, ``device``.
    """

    #: the attack's name in messages and in :func:`~mistered.attacks.build_attack`
    name = "lpa"

    def __init__(self, model: nn.Module, threat: Threat, *, steps: int = 10, lambda_rounds: int = 5,
                 lambda_init: float = 0.01, lambda_factor: float = 10.0, lambda_ramp: bool = False,
                 step_size: float = 1.0, kappa: float = 1.0, fd_step: float = 0.05, random_start: bool = True,
                 **kwargs) -> None:
        kwargs.setdefault("loss", "margin")
        super().__init__(model, threat, **kwargs)
        require_perceptual_budgets(self.threat, self.name)
        for name, value in (("steps", steps), ("lambda_rounds", lambda_rounds)):
            if int(value) != value or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if not (lambda_init > 0 and lambda_factor >= 1 and step_size > 0 and fd_step > 0 and kappa > 0):
            raise InvalidInputError(
                f"need lambda_init > 0, lambda_factor >= 1, step_size > 0, fd_step > 0 and kappa > 0, got "
                f"{lambda_init!r}, {lambda_factor!r}, {step_size!r}, {fd_step!r}, {kappa!r}")
        self.steps, self.lambda_rounds = int(steps), int(lambda_rounds)
        self.lambda_init, self.lambda_factor = float(lambda_init), float(lambda_factor)
        self.lambda_ramp = bool(lambda_ramp)
        self.step_size, self.fd_step, self.random_start = float(step_size), float(fd_step), bool(random_start)
        self.kappa = float(kappa)

    def _search(self, perturbation: Perturbation, x: torch.Tensor, goal: torch.Tensor, loss_fn: LossFn,
                targeted: bool, generator: torch.Generator) -> SearchOutput:
        if not isinstance(perturbation, PerceptualPerturbation):  # guarded at construction; kept for subclasses
            raise InvalidInputError(f"LPA needs a perceptual bound, got the threat {perturbation.threat}")
        inner, length = perturbation.inner, PerceptualLength(perturbation.threat, x)
        limit = (perturbation.threat.bound * (1.0 - SAFETY_RTOL)) ** (1.0 / length.power)
        if self.random_start:
            inner.random_init_(generator).scale_(torch.full((x.shape[0],), START_SCALE, device=x.device)).project_()
        lam = torch.full((x.shape[0],), self.lambda_init, device=x.device)
        best, found = inner.snapshot(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.lambda_rounds):
            for step in range(self.steps):
                progress = step / self.steps
                weight = lam * DECAY ** (1.0 - progress) if self.lambda_ramp else lam
                x_adv = inner(x)
                logits = self.model(x_adv)
                current = length.to_clean(x_adv)
                over = (current / length.radius - 1.0).clamp_min(0.0)
                objective = loss_fn(logits, goal).clamp(max=self.kappa) - weight * over
                with torch.no_grad():
                    new = ~found & self.succeeded(logits, goal, targeted) & (current <= limit)
                    for saved, param in zip(best, inner.parameters()):
                        saved.copy_(torch.where(_rows(new, param), param, saved))
                    found |= new
                if self.early_stop and bool(found.all()):
                    break
                grads = torch.autograd.grad(objective.sum(), list(inner.parameters()))
                self._step(inner, grads, x, x_adv.detach(), length, self.step_size * length.radius * DECAY ** progress)
            if self.early_stop and bool(found.all()):
                break
            lam = torch.where(current.detach() > length.radius, lam * self.lambda_factor, lam)
        inner.restore_(best, found)
        perturbation.project_()
        return None

    @torch.no_grad()
    def _step(self, inner: Perturbation, grads: tuple[torch.Tensor, ...], x: torch.Tensor, x_adv: torch.Tensor,
              length: PerceptualLength, eta: float) -> None:
        """One ascent step of ``inner`` along its own direction, scaled to perceptual length ``eta``; then its
        own projection."""
        params = list(inner.parameters())
        start = inner.snapshot()
        for param, grad in zip(params, grads):
            param.grad = grad
        inner.step_(1.0)  # the unit step: linear in lr for every component
        unit = [param - saved for param, saved in zip(params, start)]
        for param, saved, u in zip(params, start, unit):
            param.copy_(saved + self.fd_step * u)
            param.grad = None
        rate = length.between(x_adv, inner(x)) / self.fd_step  # |J u|, the unit step's perceptual length
        scale = torch.where(rate > 0, eta / rate.clamp_min(1e-30), torch.zeros_like(rate))
        for param, saved, u in zip(params, start, unit):
            param.copy_(saved + _rows(scale, u) * u)
        inner.project_()


class FastLPA(LPA):
    """Fast-LPA (for training): one round of ``steps`` with ``λ`` ramped to ``lambda_init`` (default 10).

    Same arguments as :class:`LPA`, with the paper's Fast-LPA defaults (``lambda_rounds=1``,
    ``lambda_init=10``, ``lambda_ramp=True``, ``kappa=inf``); the final hard projection is kept.
    """

    name = "fast-lpa"

    def __init__(self, model: nn.Module, threat: Threat, *, steps: int = 10, lambda_rounds: int = 1,
                 lambda_init: float = 10.0, lambda_ramp: bool = True, kappa: float = math.inf, **kwargs) -> None:
        super().__init__(model, threat, steps=steps, lambda_rounds=lambda_rounds, lambda_init=lambda_init,
                         lambda_ramp=lambda_ramp, kappa=kappa, **kwargs)
