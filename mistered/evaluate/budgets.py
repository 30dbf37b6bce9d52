"""The named budgets of a threat, one changed at a time: what a robustness curve's x axis is.

Every bound a threat spec can set is a :class:`Budget` with the name a user writes in ``--sweep``:

=================================  ====================  ==================================
threat                             budget names          unit
=================================  ====================  ==================================
``linf(eps)``, ``l2(eps)``         ``linf``, ``l2``      pixels of [0, 1] images
``affine(angle, translation, s)``  ``angle``,            degrees,
                                   ``translation``,      fraction of the image size,
                                   ``scale``             relative scaling
``flow(eps, smoothness)``          ``flow``,             grid units (2 = the image width),
                                   ``smoothness``        grid units per pixel
``... | metric<=bound``            the metric's name     its own units (e.g. ``lpips``)
=================================  ====================  ==================================

:func:`with_budget` gives the same threat with one budget changed (a sweep), :func:`varying_budget` the one
budget in which two threats differ (several ``--threat`` values that form one curve).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import InvalidInputError
from ..threats import Additive, Affine, Flow, PerceptualBudget, Sequence, Threat, Union

__all__ = ["Budget", "threat_budgets", "with_budget", "varying_budget"]

#: (threat class, dataclass field) -> (budget name or None for the norm's name, unit)
_LEAVES: dict[tuple[type, str], tuple[str | None, str]] = {
    (Additive, "eps"): (None, "pixels of [0, 1] images"),
    (Affine, "max_angle_deg"): ("angle", "degrees"),
    (Affine, "max_translation"): ("translation", "fraction of the image size"),
    (Affine, "max_scale"): ("scale", "relative scaling"),
    (Flow, "eps"): ("flow", "grid units"),
    (Flow, "smoothness"): ("smoothness", "grid units per pixel"),
}

#: A step of a path into a threat: a dataclass field, and an index into ``components``/``choices`` (or None).
Step = tuple[str, "int | None"]


@dataclass(frozen=True)
class Budget:
    """One bound of a threat.

    Attributes:
        name: what ``--sweep`` calls it (``"smoothness"``, ``"angle"``, ``"lpips"``, ``"linf"`` ...).
        unit: its unit in words (``"degrees"``); ``label`` is ``"name (unit)"``, an axis label.
        value: its value in this threat.
        path: where it sits in the threat (for :func:`with_budget`).
    """

    name: str
    unit: str
    value: float
    path: tuple[Step, ...]

    @property
    def label(self) -> str:
        return f"{self.name} ({self.unit})"


def threat_budgets(threat: Threat) -> list[Budget]:
    """Every bound of ``threat`` in spec order (a chain's components first to last, a perceptual bound after its
    chain); a flow without a smoothness bound has no ``smoothness`` budget."""
    if isinstance(threat, PerceptualBudget):
        inner = _under(threat_budgets(threat.threat), ("threat", None))
        return [*inner, Budget(threat.metric, f"{threat.metric} distance", threat.bound, (("bound", None),))]
    if isinstance(threat, (Sequence, Union)):
        is_chain = isinstance(threat, Sequence)
        field, parts = ("components", threat.components) if is_chain else ("choices", threat.choices)
        return [b for i, part in enumerate(parts) for b in _under(threat_budgets(part), (field, i))]
    budgets = []
    for (kind, field), (name, unit) in _LEAVES.items():
        value = getattr(threat, field) if isinstance(threat, kind) else None
        if value is not None:
            budgets.append(Budget(name or threat.norm, unit, float(value), ((field, None),)))
    return budgets


def _under(budgets: list[Budget], step: Step) -> list[Budget]:
    return [dataclasses.replace(b, path=(step, *b.path)) for b in budgets]


def with_budget(threat: Threat, name: str, value: float) -> Threat:
    """``threat`` with its budget ``name`` set to ``value``.

    Raises:
        InvalidInputError: ``threat`` has no budget or several budgets called ``name`` (the message lists its
            budgets), or ``value`` is outside the budget's range.
    """
    matches = [b for b in threat_budgets(threat) if b.name == name]
    if len(matches) != 1:
        names = ", ".join(dict.fromkeys(b.name for b in threat_budgets(threat))) or "none"
        how = "no budget" if not matches else f"{len(matches)} budgets"
        raise InvalidInputError(f"--sweep {name}: the threat {threat.name} has {how} called {name!r} "
                                f"(its budgets: {names})")
    try:
        return _set(threat, matches[0].path, value)
    except InvalidInputError as error:
        raise InvalidInputError(f"--sweep {name}={value:g} on {threat.name}: {error}") from None


def _set(threat: Threat, path: tuple[Step, ...], value: float) -> Threat:
    (field, index), rest = path[0], path[1:]
    if not rest:
        return dataclasses.replace(threat, **{field: value})
    child = getattr(threat, field)
    if index is None:
        return dataclasses.replace(threat, **{field: _set(child, rest, value)})
    parts = tuple(_set(part, rest, value) if i == index else part for i, part in enumerate(child))
    return Sequence(parts) if isinstance(threat, Sequence) else Union(parts)


def varying_budget(first: Threat, second: Threat) -> Budget | None:
    """The one budget of ``first`` that ``second`` changes (``second`` is ``first`` with that budget set to another
    value), or ``None`` when they differ otherwise (another structure, several budgets) or not at all."""
    a, b = threat_budgets(first), threat_budgets(second)
    if [(x.name, x.path) for x in a] != [(y.name, y.path) for y in b]:
        return None
    changed = [x for x, y in zip(a, b) if x.value != y.value]
    if len(changed) != 1:
        return None
    other = next(y for y in b if y.path == changed[0].path)
    return changed[0] if _set(first, changed[0].path, other.value) == second else None
