"""Which threats at which budgets: the evaluation points, their curves, ε lists and union levels.

``--threat`` entries are presets or spec strings (:func:`mistered.threats.parse_threat`). A point belongs to a
**curve** (a *series*: robust accuracy against one budget, see :mod:`.budgets`) in three ways:

* a bare norm name (``linf``, ``l2``) is swept over an ε list (``--eps``, or :data:`DEFAULT_EPS` for the bundled
  MNIST data);
* ``--sweep NAME=v1,v2,...`` sweeps the budget ``NAME`` of every entry that has one (``--threat stadv --sweep
  smoothness=0.005,0.01,0.02``, ``--threat combined --sweep lpips=0.01,0.015,0.02``);
* several entries that differ in one budget only (``--threat 'rotation(5deg)' --threat 'rotation(10deg)'``) form
  one curve over that budget.

Any other entry is evaluated at its own budget, once. The union over the curves at level ``i`` takes, per
example, the worst case over the ``i``-th point of every curve (its last when it is shorter) and every single
point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..errors import InvalidInputError
from ..threats import Additive, Threat, parse_threat
from .budgets import Budget, threat_budgets, varying_budget, with_budget

__all__ = ["DEFAULT_EPS", "SWEPT", "EvalPoint", "parse_number", "parse_eps", "parse_sweeps", "build_points",
           "union_levels"]

#: Default ε lists (pixel units of [0, 1] images) for the bundled MNIST data.
DEFAULT_EPS: dict[str, tuple[float, ...]] = {"linf": (0.05, 0.1, 0.2, 0.3), "l2": (0.5, 1.0, 1.5, 2.0)}
#: Threat names swept over an ε list.
SWEPT = tuple(DEFAULT_EPS)


@dataclass(frozen=True)
class EvalPoint:
    """One threat at one budget.

    Attributes:
        entry: the ``--threat`` entry it comes from (e.g. ``"linf"``, ``"stadv"``).
        threat: the threat at this budget.
        eps: the radius of an additive threat (``linf(0.2)`` too), ``None`` for other threats; ``norm``:
            ``"linf"``/``"l2"`` for additive threats.
        series: the curve it lies on (the entry of its first point), ``None`` for a point of its own.
        axis: the budget that varies along that curve, at this point's value (``None`` without a curve).
    """

    entry: str
    threat: Threat
    eps: float | None
    series: str | None = None
    axis: Budget | None = None

    @property
    def label(self) -> str:
        return self.threat.name

    @property
    def norm(self) -> str | None:
        return self.threat.norm if isinstance(self.threat, Additive) else None


def parse_number(text: str) -> float:
    """A number as a user writes a radius: ``"0.1"``, ``"1e-2"`` or a fraction ``"8/255"``.

    Raises:
        ValueError: anything else.
    """
    numerator, slash, denominator = text.strip().partition("/")
    return float(numerator) / float(denominator) if slash else float(numerator)


def _numbers(option: str, value: str, text: str, example: str) -> tuple[float, ...]:
    """Sorted distinct finite numbers of a comma list (``option``/``value`` name it in the errors)."""
    try:
        parsed = tuple(sorted({parse_number(part) for part in text.split(",") if part.strip()}))
    except (ValueError, ZeroDivisionError):
        raise InvalidInputError(f"{option} {value!r}: expected comma-separated numbers, e.g. {example}") from None
    if not parsed or not all(math.isfinite(v) for v in parsed):
        raise InvalidInputError(f"{option} {value!r}: give at least one finite number, e.g. {example}")
    return parsed


def parse_eps(values: list[str] | tuple[str, ...]) -> dict[str, tuple[float, ...]]:
    """Parse ``--eps`` values: ``"linf=0.1,0.3"``, ``"l2=1,2"``, or a bare list applied to every swept norm.

    Returns a full mapping (norms not mentioned keep :data:`DEFAULT_EPS`), each list sorted ascending.
    """
    result = dict(DEFAULT_EPS)
    for value in values:
        norm, sep, numbers = value.partition("=")
        norms = (norm.strip(),) if sep else SWEPT
        if sep and norms[0] not in SWEPT:
            raise InvalidInputError(f"--eps {value!r}: the norm must be one of {', '.join(SWEPT)}, e.g. linf=0.1,0.3")
        parsed = _numbers("--eps", value, numbers if sep else value, "linf=0.05,0.1,0.3")
        if any(not e > 0 for e in parsed):
            raise InvalidInputError(f"--eps {value!r}: give at least one finite positive ε")
        for key in norms:
            result[key] = parsed
    return result


def parse_sweeps(values: list[str] | tuple[str, ...]) -> dict[str, tuple[float, ...]]:
    """Parse ``--sweep`` values ``"NAME=v1,v2,..."`` (a budget name of :mod:`.budgets`; values sorted, >= 0).

    Raises:
        InvalidInputError: no ``=``, a budget named twice, or values that are not non-negative numbers.
    """
    result: dict[str, tuple[float, ...]] = {}
    for value in values:
        name, sep, numbers = (part.strip() for part in value.partition("="))
        if not sep or not name:
            raise InvalidInputError(f"--sweep {value!r}: expected NAME=v1,v2,... e.g. smoothness=0.005,0.01,0.02")
        if name in result:
            raise InvalidInputError(f"--sweep names the budget {name!r} twice; give its values in one list")
        parsed = _numbers("--sweep", value, numbers, f"{name}=0.01,0.02")
        if parsed[0] < 0:
            raise InvalidInputError(f"--sweep {value!r}: a budget is non-negative, got {parsed[0]:g}")
        result[name] = parsed
    return result


def _norm_axis(norm: str, eps: float) -> Budget:
    return next(b for b in threat_budgets(Additive(norm, eps)))


def _entry_points(entry: str, eps: dict[str, tuple[float, ...]], sweeps: dict[str, tuple[float, ...]],
                  used: set[str]) -> list[EvalPoint]:
    """The points of one ``--threat`` entry (one, or a curve); adds the ``--sweep`` names it takes to ``used``."""
    if entry in SWEPT:
        if entry in sweeps:
            raise InvalidInputError(f"--sweep {entry}=...: the bare {entry} threat is swept by --eps {entry}=...")
        return [EvalPoint(entry, Additive(entry, e), e, entry, _norm_axis(entry, e)) for e in eps[entry]]
    threat = parse_threat(entry)
    names = [name for name in sweeps if any(b.name == name for b in threat_budgets(threat))]
    if len(names) > 1:
        raise InvalidInputError(f"--sweep {' and '.join(names)}: {entry!r} has both budgets; a curve varies one")
    if not names:
        return [EvalPoint(entry, threat, _eps(threat))]
    used.add(names[0])
    points = []
    for value in sweeps[names[0]]:
        swept = with_budget(threat, names[0], value)
        axis = next(b for b in threat_budgets(swept) if b.name == names[0])
        points.append(EvalPoint(entry, swept, _eps(swept), entry, axis))
    return points


def _eps(threat: Threat) -> float | None:
    return threat.eps if isinstance(threat, Additive) else None


def build_points(threats: list[str] | tuple[str, ...], eps: dict[str, tuple[float, ...]],
                 sweeps: dict[str, tuple[float, ...]] | None = None) -> list[EvalPoint]:
    """The evaluation points of the ``--threat`` entries in order (a curve's points in the order of its values).

    Raises:
        InvalidInputError: no entry, an entry or a threat twice, a ``--sweep`` budget no entry has (or that an
            entry has twice), a bad spec.
    """
    entries = [t.strip() for t in threats if t.strip()]
    if not entries:
        raise InvalidInputError("--threat needs at least one threat, e.g. --threat linf --threat stadv")
    if len(set(entries)) != len(entries):
        raise InvalidInputError(f"--threat lists a threat twice: {', '.join(entries)}")
    sweeps = sweeps or {}
    used: set[str] = set()
    points = [point for entry in entries for point in _entry_points(entry, eps, sweeps, used)]
    unused = [name for name in sweeps if name not in used]
    if unused:
        raise InvalidInputError(f"--sweep {', '.join(unused)}: no --threat has a budget called that "
                                f"(e.g. --threat stadv --sweep smoothness=0.005,0.01)")
    points = _curves_of_single_points(points)
    labels = [p.label for p in points]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise InvalidInputError(f"the threat {twice[0]} is evaluated twice (two --threat values give it)")
    return points


def _curves_of_single_points(points: list[EvalPoint]) -> list[EvalPoint]:
    """Single points whose threats differ in one budget only (the same one) become one curve over it."""
    groups: list[list[int]] = []
    for i, point in enumerate(points):
        if point.series is not None:
            continue
        for group in groups:
            budget = varying_budget(points[group[0]].threat, point.threat)
            axis = None if len(group) == 1 else varying_budget(points[group[0]].threat, points[group[1]].threat)
            if budget is not None and (axis is None or axis.path == budget.path):
                group.append(i)
                break
        else:
            groups.append([i])
    points = list(points)
    for group in (g for g in groups if len(g) > 1):
        path = varying_budget(points[group[0]].threat, points[group[1]].threat).path
        for i in group:
            axis = next(b for b in threat_budgets(points[i].threat) if b.path == path)
            points[i] = replace(points[i], series=points[group[0]].entry, axis=axis)
    return points


def union_levels(points: list[EvalPoint]) -> list[list[int]]:
    """Indices into ``points`` forming the union at each level (see the module docstring; a curve's points taken in
    the order of their budget); empty for one curve or point."""
    keys = [p.series or p.entry for p in points]
    by_key = {key: sorted((i for i, k in enumerate(keys) if k == key), key=lambda i: _budget_value(points[i]))
              for key in dict.fromkeys(keys)}
    if len(by_key) < 2:
        return []
    count = max(len(v) for v in by_key.values())
    return [[idx[min(level, len(idx) - 1)] for idx in by_key.values()] for level in range(count)]


def _budget_value(point: EvalPoint) -> float:
    return 0.0 if point.axis is None else point.axis.value
