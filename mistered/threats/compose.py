"""Composition of threats: :class:`Sequence` applies threats in order, :class:`Union` offers alternatives."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidInputError
from .base import Perturbation, Threat

__all__ = ["Sequence", "SequencePerturbation", "Union"]


def _as_threats(items: Iterable[Threat], what: str) -> tuple[Threat, ...]:
    if isinstance(items, Threat):
        raise InvalidInputError(f"{what} takes a sequence of threats, got the single threat {items.name!r}; wrap it in a tuple")
    threats = tuple(items)
    if not threats:
        raise InvalidInputError(f"{what} needs at least one threat, got none")
    for item in threats:
        if not isinstance(item, Threat):
            raise InvalidInputError(f"{what} takes Threat objects, got {type(item).__name__} ({item!r})")
    return threats


def _in_sequence(threat: Threat) -> str:
    """The threat's name as a ``>>`` operand: unions and perceptual bounds (``|``) bind looser, so bracket them."""
    return f"({threat.name})" if "|" in threat.name else threat.name


@dataclass(frozen=True)
class Sequence(Threat):
    """Apply ``components`` in order: ``x_adv = c_n(... c_2(c_1(x)))`` (the first component acts first).

    Each component keeps its own budget, measured on its own parameters (an angle in degrees, a
    flow in grid units, an additive ``delta``), not on the image it receives; every child's
    ``reference`` is the clean input. Nested sequences are flattened. A component with several
    alternatives (a :class:`Union`) makes the sequence a union of sequences: see :meth:`alternatives`.

    Example:
        >>> from mistered.threats import Additive, Affine, Flow
        >>> combined = Sequence((Flow(0.05), Affine(10.0, 0.1), Additive("linf", 0.3)))
        >>> sorted(combined.perturbation(torch.rand(2, 1, 28, 28)).budgets())[:2]
        ['0.flow_linf', '1.angle_deg']
    """

    components: tuple[Threat, ...]

    def __post_init__(self) -> None:
        flat: list[Threat] = []
        for item in _as_threats(self.components, "Sequence"):
            flat.extend(item.components if isinstance(item, Sequence) else (item,))
        object.__setattr__(self, "components", tuple(flat))

    def alternatives(self) -> tuple[Threat, ...]:
        """One sequence per combination of the components' alternatives (just ``(self,)`` without unions)."""
        options = [component.alternatives() for component in self.components]
        if all(len(option) == 1 for option in options):
            return (self,)
        return tuple(Sequence(combination) for combination in itertools.product(*options))

    def perturbation(self, x: torch.Tensor) -> SequencePerturbation:
        if len(self.alternatives()) > 1:
            raise InvalidInputError(
                f"threat {self.name!r} contains a union; make a perturbation for each of threat.alternatives()"
            )
        return SequencePerturbation(self, x)

    @property
    def name(self) -> str:
        if len(self.components) == 1:
            return self.components[0].name
        return ">>".join(_in_sequence(component) for component in self.components)


class SequencePerturbation(Perturbation):
    """Holds one child perturbation per component (``children_``, an ``nn.ModuleList``), all made for the clean ``x``.

    ``sizes()``/``budgets()`` are the children's, keyed ``"<index>.<key>"`` (e.g. ``"0.flow_linf"``);
    every other method delegates to each child.
    """

    threat: Sequence

    def __init__(self, threat: Sequence, x: torch.Tensor) -> None:
        super().__init__(threat, x)
        self.children_ = nn.ModuleList(component.perturbation(x) for component in threat.components)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for child in self.children_:
            x = child(x)
        return x

    @torch.no_grad()
    def random_init_(self, generator: torch.Generator | None = None) -> SequencePerturbation:
        for child in self.children_:
            child.random_init_(generator)
        return self

    @torch.no_grad()
    def project_(self) -> SequencePerturbation:
        for child in self.children_:
            child.project_()
        return self

    def sizes(self) -> dict[str, torch.Tensor]:
        return {f"{i}.{key}": value for i, child in enumerate(self.children_) for key, value in child.sizes().items()}

    def budgets(self) -> dict[str, float]:
        return {f"{i}.{key}": value for i, child in enumerate(self.children_) for key, value in child.budgets().items()}

    @torch.no_grad()
    def scale_(self, t: torch.Tensor) -> SequencePerturbation:
        for child in self.children_:
            child.scale_(t)
        return self

    @torch.no_grad()
    def step_(self, lr: float) -> SequencePerturbation:
        for child in self.children_:
            child.step_(lr)
        return self


@dataclass(frozen=True, init=False)
class Union(Threat):
    """The adversary picks, per example, the worst of several threats.

    A union has no perturbation of its own: an attack makes one perturbation per entry of
    :meth:`alternatives` and keeps, per example, the most damaging result. Nested unions (and
    sequences containing unions) are flattened into one list of alternatives; duplicates (equal, or
    with the same name) are dropped.

    Args:
        alternatives: the threats to choose from (at least one).

    Example:
        >>> from mistered.threats import Additive, Flow
        >>> either = Union((Additive("linf", 0.3), Flow(0.05)))
        >>> [threat.name for threat in either.alternatives()]
        ['linf(0.3)', 'flow(0.05)']
    """

    choices: tuple[Threat, ...]

    def __init__(self, alternatives: Iterable[Threat]) -> None:
        flat: list[Threat] = []
        for item in _as_threats(alternatives, "Union"):
            for option in item.alternatives():
                # threats with the same name act identically (e.g. a one-member Sequence and its member)
                if all(option != kept and option.name != kept.name for kept in flat):
                    flat.append(option)
        object.__setattr__(self, "choices", tuple(flat))

    def alternatives(self) -> tuple[Threat, ...]:
        return self.choices

    def perturbation(self, x: torch.Tensor) -> Perturbation:
        raise InvalidInputError(
            f"threat {self.name!r} is a union and has no single perturbation; make one for each of "
            "threat.alternatives() and keep the per-example worst case (the attacks do this)"
        )

    @property
    def name(self) -> str:
        return "||".join(choice.name for choice in self.choices)
