"""Carlini-Wagner L2 (Carlini & Wagner 2017): minimal L2 adversarial examples by Adam in tanh space."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidInputError
from ..threats.additive import Additive
from ..threats.base import Perturbation, Threat
from .base import Attack, SearchOutput
from .losses import LossFn, get_loss

__all__ = ["CarliniWagnerL2"]


class CarliniWagnerL2(Attack):
    """Minimise ``||x_adv - x||_2^2 + c * max(-m(x_adv), -kappa)`` over ``x_adv = (tanh(w) + 1) / 2``.

    ``m`` is the CW margin (positive when the model is fooled; the targeted margin with ``target``), so
    the ``loss`` option of :class:`Attack` is not used. ``c`` is found per example by a binary search
    (``binary_search_steps`` rounds of ``steps`` Adam steps; ``c`` shrinks after a success, grows ten-fold
    after a failure until bracketed). Per example the smallest successful ``x_adv`` is kept.

    What it does with a budget: CW itself is unbounded. It accepts only an :class:`Additive` threat;
    a successful example found inside the threat's ``eps`` (in its norm) is preferred over a smaller one
    outside it, and the returned perturbation is projected into the budget, so ``success`` reports
    success *within eps*. For "unbounded" CW use a large ``eps``.

    Args:
        model, threat: see :class:`Attack` (``threat`` must be :class:`Additive`).
        steps: Adam steps per binary-search round.
        lr: Adam learning rate in tanh space.
        initial_c: the first trade-off constant.
        binary_search_steps: rounds of the search on ``c``.
        kappa: confidence margin (``0`` stops at the decision boundary).
        **kwargs: ``restarts``, ``early_stop``, ``seed``, ``distances``, ``device`` (see :class:`Attack`).
    """

    def __init__(self, model: nn.Module, threat: Threat, *, steps: int = 100, lr: float = 0.1,
                 initial_c: float = 1.0, binary_search_steps: int = 5, kappa: float = 0.0, **kwargs) -> None:
        if not isinstance(threat, Additive):
            raise InvalidInputError(f"CarliniWagnerL2 needs an additive threat (e.g. 'l2(2.0)'), got {threat}")
        super().__init__(model, threat, **kwargs)
        if steps < 1 or binary_search_steps < 1 or not lr > 0 or not initial_c > 0 or kappa < 0:
            raise InvalidInputError(
                f"CW options must be positive (kappa >= 0): steps={steps}, lr={lr}, initial_c={initial_c}, "
                f"binary_search_steps={binary_search_steps}, kappa={kappa}"
            )
        self.steps, self.lr, self.initial_c = int(steps), float(lr), float(initial_c)
        self.binary_search_steps, self.kappa = int(binary_search_steps), float(kappa)

    def _search(self, perturbation: Perturbation, x: torch.Tensor, goal: torch.Tensor, loss_fn: LossFn,
                targeted: bool, generator: torch.Generator) -> SearchOutput:
        margin_fn = get_loss("margin", targeted)
        threat: Additive = self.threat if isinstance(self.threat, Additive) else perturbation.threat
        batch = x.shape[0]
        c = torch.full((batch,), self.initial_c, device=x.device)
        lower = torch.zeros(batch, device=x.device)
        upper = torch.full((batch,), float("inf"), device=x.device)
        # best successful delta: first inside the budget (rank 0), else outside (rank 1); then the smallest L2
        best_delta = torch.zeros_like(x)
        best_rank = torch.full((batch,), 2, device=x.device)
        best_l2 = torch.full((batch,), float("inf"), device=x.device)
        w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-4, 1 - 1e-4))  # 0/1 pixels stay movable
        for _ in range(self.binary_search_steps):
            w = w0.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(batch, dtype=torch.bool, device=x.device)
            for _ in range(self.steps):
                x_adv = (torch.tanh(w) + 1) / 2
                delta = x_adv - x
                l2 = delta.flatten(1).norm(dim=1)
                logits = self.model(x_adv)
                objective = l2.square() + c * (-margin_fn(logits, goal)).clamp_min(-self.kappa)
                optimizer.zero_grad(set_to_none=True)
                objective.sum().backward(inputs=[w])
                with torch.no_grad():
                    success = self.succeeded(logits, goal, targeted)
                    norm = delta.flatten(1).abs().amax(dim=1) if threat.norm == "linf" else l2
                    rank = torch.where(norm <= threat.eps, 0, 1).to(best_rank)
                    better = success & ((rank < best_rank) | ((rank == best_rank) & (l2 < best_l2)))
                    best_delta = torch.where(better.view(-1, 1, 1, 1), delta, best_delta)
                    best_rank = torch.where(better, rank, best_rank)
                    best_l2 = torch.where(better, l2, best_l2)
                    found |= success
                optimizer.step()
            upper = torch.where(found, torch.minimum(upper, c), upper)
            lower = torch.where(found, lower, torch.maximum(lower, c))
            c = torch.where(torch.isinf(upper), c * 10, (lower + upper) / 2)
        with torch.no_grad():
            perturbation.delta.copy_(best_delta)
        perturbation.project_()
        return None
