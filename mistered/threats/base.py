"""The threat API: a :class:`Threat` is a budget; its :class:`Perturbation` holds per-example parameters.

A threat is an immutable configuration (a frozen dataclass). ``threat.perturbation(x)`` makes a
:class:`Perturbation` for a batch ``x`` of shape ``(B, C, H, W)`` in ``[0, 1]``: an ``nn.Module``
whose ``nn.Parameter`` s have a leading batch dimension ``B`` (one set per example), initialised at
the identity. Every attack, training loop and evaluation drives perturbations only through the
methods below, so any threat (or chain of threats) works with all of them.

Conventions shared by every perturbation:

* ``forward(x)`` returns a valid image batch in ``[0, 1]``, same shape as ``x``.
* ``step_(lr)`` reads the parameters' ``.grad`` and moves them by steepest *ascent* in the geometry
  of the budget; ``lr`` is **relative to the budget** (``lr=0.1`` moves each component by a tenth of
  its own budget: ``0.1 * eps`` for an additive threat, ``0.1 * max_angle`` for a rotation ...).
  It does not project; call ``project_()`` after it.
* ``scale_(t)`` with ``t`` of shape ``(B,)`` in ``[0, 1]`` shrinks every parameter towards the
  identity: ``t = 0`` gives the identity, ``t = 1`` leaves it unchanged. It is the generic handle a
  global (e.g. perceptual) budget uses to shrink any chain.
* ``sizes()`` is a dict of named ``(B,)`` tensors in their own units (one per constrained quantity,
  e.g. ``"linf"``, ``"angle_deg"``; prefixed by position for chains) and ``budgets()`` their bounds;
  ``size()`` is a unitless ``(B,)`` tensor, the largest quantity as a fraction of its budget
  (``<= 1`` inside the budget), so sizes of different threats compare and compose.
* ``within_budget()`` is a ``(B,)`` bool tensor: every constrained quantity is inside its budget.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from typing import Self

__all__ = ["Threat", "Perturbation", "BUDGET_RTOL"]

#: Relative slack allowed by :meth:`Perturbation.within_budget` for floating-point round-off.
BUDGET_RTOL = 1e-5


@dataclass(frozen=True)
class Threat(abc.ABC):
    """What an adversary may do: an immutable budget that makes perturbations for a batch."""

    @abc.abstractmethod
    def perturbation(self, x: torch.Tensor) -> Perturbation:
        """Make an identity perturbation for the batch ``x`` of shape ``(B, C, H, W)`` in ``[0, 1]``."""

    def alternatives(self) -> tuple[Threat, ...]:
        """The threats an attack must try, taking the per-example worst case (``Union`` has several)."""
        return (self,)

    @property
    def name(self) -> str:
        """A short human-readable name (the spec string where there is one)."""
        return type(self).__name__.lower()

    def __str__(self) -> str:
        return self.name


class Perturbation(nn.Module, abc.ABC):
    """Per-example perturbation parameters for one batch; see the module docstring for the contract.

    Subclasses register their parameters as ``nn.Parameter`` of shape ``(B, ...)`` and implement
    :meth:`forward`, :meth:`random_init_`, :meth:`project_`, :meth:`sizes`, :meth:`scale_` and
    :meth:`step_`. The reference batch ``x`` the perturbation was made for is kept (as ``reference``)
    for perturbations whose budget depends on the clean image (e.g. perceptual bounds).
    """

    def __init__(self, threat: Threat, x: torch.Tensor) -> None:
        super().__init__()
        self.threat = threat
        self.register_buffer("reference", x.detach(), persistent=False)

    @property
    def batch_size(self) -> int:
        """The number of examples ``B``."""
        return self.reference.shape[0]

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the perturbation: ``(B, C, H, W)`` in ``[0, 1]`` to ``(B, C, H, W)`` in ``[0, 1]``."""

    @abc.abstractmethod
    def random_init_(self, generator: torch.Generator | None = None) -> Self:
        """Draw parameters uniformly inside the budget (in place); returns ``self``."""

    @abc.abstractmethod
    def project_(self) -> Self:
        """Project the parameters back into the budget (in place, no gradient); returns ``self``."""

    @abc.abstractmethod
    def sizes(self) -> dict[str, torch.Tensor]:
        """Each constrained quantity as a ``(B,)`` tensor, keyed by name (e.g. ``"linf"``, ``"angle_deg"``)."""

    @abc.abstractmethod
    def budgets(self) -> dict[str, float]:
        """The bound on each quantity of :meth:`sizes`, same keys."""

    @abc.abstractmethod
    def scale_(self, t: torch.Tensor) -> Self:
        """Shrink towards the identity per example, ``t`` of shape ``(B,)`` in ``[0, 1]``; returns ``self``."""

    @abc.abstractmethod
    def step_(self, lr: float) -> Self:
        """Steepest-ascent step from the parameters' ``.grad``, ``lr`` relative to the budget; returns ``self``."""

    def size(self) -> torch.Tensor:
        """The perturbation's size, ``(B,)``: its largest quantity as a fraction of that quantity's budget."""
        budgets = self.budgets()
        fractions = [value / max(budgets[key], 1e-12) for key, value in self.sizes().items()]
        return torch.stack(fractions).amax(dim=0)

    def within_budget(self, rtol: float = BUDGET_RTOL) -> torch.Tensor:
        """``(B,)`` bool: every quantity of :meth:`sizes` is at most its budget (with relative slack ``rtol``)."""
        budgets = self.budgets()
        inside = torch.ones(self.batch_size, dtype=torch.bool, device=self.reference.device)
        for key, value in self.sizes().items():
            inside &= value <= budgets[key] * (1 + rtol) + 1e-7
        return inside

    @torch.no_grad()
    def snapshot(self) -> list[torch.Tensor]:
        """A detached copy of every parameter, for :meth:`restore_`."""
        return [p.detach().clone() for p in self.parameters()]

    @torch.no_grad()
    def restore_(self, snapshot: list[torch.Tensor], mask: torch.Tensor | None = None) -> Self:
        """Copy parameters back from a :meth:`snapshot`, only for examples where ``mask`` (``(B,)`` bool) is set."""
        for param, saved in zip(self.parameters(), snapshot):
            if mask is None:
                param.copy_(saved)
            else:
                param.copy_(torch.where(mask.view(-1, *([1] * (param.dim() - 1))), saved, param))
        return self
