"""Projected gradient descent (Madry et al. 2018) over any threat, with best-so-far per example."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidInputError
from ..threats.base import Perturbation, Threat
from .base import Attack, SearchOutput
from .losses import LossFn

__all__ = ["PGD"]


class PGD(Attack):
    """PGD: ``steps`` steepest-ascent steps of the loss in the threat's geometry, each followed by a projection.

    Gradients are taken w.r.t. the perturbation's parameters only (the model is frozen). The step size
    is **relative to the budget** (``step_size=0.25`` moves an L∞ perturbation by ``0.25 * eps`` per
    step); the default ``2.5 / steps`` is Madry et al.'s choice. Per example the best iterate is kept
    (the first that fools the model, else the one with the highest loss), and the search stops as soon
    as every example is fooled (``early_stop``). Restarts, alternatives and validation come from
    :class:`~mistered.attacks.base.Attack`.

    Cost per restart: ``steps`` forward+backward passes and one forward pass (the last iterate, which decides
    whether it fooled the model); the attack adds one forward pass for the clean logits and, when the kept
    examples come from different passes, one for the exact logits of ``x_adv``. Best-so-far is updated in place
    (no copy of the parameters per step).

    Args:
        model, threat: see :class:`Attack`.
        steps: number of gradient steps (``>= 1``).
        step_size: relative step size; ``None`` gives ``2.5 / steps``.
        random_start: start each restart from a uniform draw inside the budget (else at the identity).
        compile: opt in to ``torch.compile`` of the (frozen) model for the gradient steps; the final
            forward pass that decides ``success`` stays eager, so results are reproducible with the plain model.
        **kwargs: ``loss``, ``restarts``, ``early_stop``, ``seed``, ``distances``, ``device`` (see :class:`Attack`).

    Example:
        >>> from mistered.threats import Additive
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> result = PGD(net, Additive("linf", 0.1), steps=5)(torch.rand(2, 1, 2, 2), torch.tensor([0, 1]))
        >>> tuple(result.x_adv.shape), bool((result.x_adv - result.x).abs().max() <= 0.1 + 1e-6)
        ((2, 1, 2, 2), True)
    """

    def __init__(self, model: nn.Module, threat: Threat, *, steps: int = 10, step_size: float | None = None,
                 random_start: bool = True, compile: bool = False, **kwargs) -> None:
        super().__init__(model, threat, **kwargs)
        if int(steps) != steps or steps < 1:
            raise InvalidInputError(f"steps must be a positive integer, got {steps!r}")
        self.steps = int(steps)
        self.step_size = 2.5 / self.steps if step_size is None else float(step_size)
        if not self.step_size > 0:
            raise InvalidInputError(f"step_size must be positive (relative to the budget), got {step_size!r}")
        self.random_start = bool(random_start)
        self._compiled: nn.Module | None = None
        self.compile = bool(compile)

    def _grad_forward(self) -> nn.Module:
        if not self.compile:
            return self.model
        if self._compiled is None:
            self._compiled = torch.compile(self.model)
        return self._compiled

    def _search(self, perturbation: Perturbation, x: torch.Tensor, goal: torch.Tensor, loss_fn: LossFn,
                targeted: bool, generator: torch.Generator) -> SearchOutput:
        params = list(perturbation.parameters())
        if self.random_start:
            perturbation.random_init_(generator).project_()
        forward = self._grad_forward()
        best_params = perturbation.snapshot()
        best_success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        for _ in range(self.steps):
            logits = forward(perturbation(x))
            losses = loss_fn(logits, goal)
            with torch.no_grad():  # best-so-far, in place
                success = self.succeeded(logits, goal, targeted)
                improved = ~best_success & (success | (losses > best_loss))
                for saved, param in zip(best_params, params):
                    torch.where(improved.view(-1, *([1] * (param.dim() - 1))), param, saved, out=saved)
                best_success |= success
                torch.where(improved, losses, best_loss, out=best_loss)
            if self.early_stop and bool(best_success.all()):
                break
            for param, grad in zip(params, torch.autograd.grad(losses.sum(), params)):
                param.grad = grad
            perturbation.step_(self.step_size).project_()
            for param in params:
                param.grad = None
        with torch.no_grad():  # the last iterate has not been evaluated yet
            x_adv = perturbation(x)
            logits = self.predict(x_adv)
            success = self.succeeded(logits, goal, targeted)
            keep_best = (best_success & ~success) | (~best_success & ~success & (best_loss > loss_fn(logits, goal)))
            if bool(keep_best.any()):
                perturbation.restore_(best_params, keep_best)
                return None
        return x_adv, logits
