"""The hook for the complete step of :func:`~.verifier.verify`: branch and bound (or any exact method).

:func:`~.verifier.verify` first attacks, then bounds every conjunction over its box with CROWN and α-CROWN. What
is left — the regions with conjunctions whose lower bound is not yet positive — goes to a :class:`CompleteStep`
with the time that remains. A complete step returns improved lower bounds (a conjunction is proved where its
bound is ``> 0``) and candidate points; the verifier re-checks every candidate (:mod:`.recheck`) and checks that no
bound crosses a point the attack or the step found.

Example (a step that only reports what it was given):
    >>> class Nothing:
    ...     name = "nothing"
    ...     def __call__(self, network, prop, open_regions, deadline):
    ...         return CompleteOutcome([r.lower for r in open_regions], [])
    >>> verify(model, prop, 60, branch_and_bound=Nothing())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from .deadline import Deadline
from .network import Network
from .property import Property, Region

__all__ = ["OpenRegion", "CompleteOutcome", "CompleteStep"]


@dataclass(frozen=True)
class OpenRegion:
    """A region of the property that is neither proved nor falsified yet.

    Attributes:
        index: its index in ``prop.regions``; region: the region itself.
        open: the indices of its conjunctions whose lower bound is not ``> 0`` yet.
        lower: ``(K,)`` float64, the best lower bounds of every conjunction's violation so far (CROWN/α-CROWN).
        attack_x: ``(K, n)`` float64, the attack's best point per conjunction; attack_value: ``(K,)`` its violation
            (an upper bound of the minimum; ``inf`` where the attack has no point).
    """

    index: int
    region: Region
    open: tuple[int, ...]
    lower: torch.Tensor
    attack_x: torch.Tensor
    attack_value: torch.Tensor


@dataclass(frozen=True)
class CompleteOutcome:
    """What a complete step reached.

    Attributes:
        lower: per open region (in the order given), ``(K,)`` float64 sound lower bounds of each conjunction's
            violation (at least the bounds it was given; ``> 0``: proved).
        candidates: ``[(region index, x (n,) float64)]`` points that may be counterexamples (re-checked).
    """

    lower: list[torch.Tensor]
    candidates: list[tuple[int, torch.Tensor]]


class CompleteStep(Protocol):
    """A complete verification step: called once with the open regions and the instance's deadline; it must return
    by then (checking ``deadline`` between units of work and passing ``deadline.remaining()`` to any solver)."""

    name: str

    def __call__(self, network: Network, prop: Property, open_regions: list[OpenRegion],
                 deadline: Deadline) -> CompleteOutcome: ...
