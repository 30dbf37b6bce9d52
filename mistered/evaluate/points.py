"""Which threats at which budgets: the evaluation points, ε lists and union levels.

``--threats`` entries are presets or spec strings (:func:`mistered.threats.parse_threat`). A bare
norm name (``linf``, ``l2``) is *swept* over an ε list (``--eps``, or :data:`DEFAULT_EPS` for the
bundled MNIST data); anything else (``stadv``, ``rotation``, ``linf(0.2)``, a chain) is evaluated at
its own budget, once. The union over threats at level ``i`` takes, per example, the worst case over
the ``i``-th ε of every swept threat (its largest ε when its list is shorter) and every fixed threat.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInputError
from ..threats import Additive, Threat, parse_threat

__all__ = ["DEFAULT_EPS", "SWEPT", "EvalPoint", "parse_number", "parse_eps", "build_points", "union_levels"]

#: Default ε lists (pixel units of [0, 1] images) for the bundled MNIST data.
DEFAULT_EPS: dict[str, tuple[float, ...]] = {"linf": (0.05, 0.1, 0.2, 0.3), "l2": (0.5, 1.0, 1.5, 2.0)}
#: Threat names swept over an ε list.
SWEPT = tuple(DEFAULT_EPS)


@dataclass(frozen=True)
class EvalPoint:
    """One threat at one budget.

    Attributes:
        entry: the ``--threats`` entry it comes from (e.g. ``"linf"``, ``"stadv"``).
        threat: the threat at this budget.
        eps: the ε of a swept threat (``None`` for a fixed one); ``norm``: ``"linf"``/``"l2"`` for additive threats.
    """

    entry: str
    threat: Threat
    eps: float | None

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
        text = numbers if sep else value
        try:
            parsed = tuple(sorted({parse_number(part) for part in text.split(",") if part.strip()}))
        except (ValueError, ZeroDivisionError):
            raise InvalidInputError(f"--eps {value!r}: expected comma-separated numbers, e.g. linf=0.05,0.1,0.3") from None
        if not parsed or any(not (e > 0 and e != float("inf")) for e in parsed):
            raise InvalidInputError(f"--eps {value!r}: give at least one finite positive ε")
        for key in norms:
            result[key] = parsed
    return result


def build_points(threats: list[str] | tuple[str, ...], eps: dict[str, tuple[float, ...]]) -> list[EvalPoint]:
    """The evaluation points of the ``--threats`` entries in order (swept ones once per ε)."""
    entries = [t.strip() for t in threats if t.strip()]
    if not entries:
        raise InvalidInputError("--threats needs at least one threat, e.g. linf,l2,stadv")
    if len(set(entries)) != len(entries):
        raise InvalidInputError(f"--threats lists a threat twice: {','.join(entries)}")
    points: list[EvalPoint] = []
    for entry in entries:
        if entry in SWEPT:
            points += [EvalPoint(entry, Additive(entry, e), e) for e in eps[entry]]
        else:
            points.append(EvalPoint(entry, parse_threat(entry), None))
    return points


def union_levels(points: list[EvalPoint]) -> list[list[int]]:
    """Indices into ``points`` forming the union at each level (see the module docstring); empty for one entry."""
    entries = list(dict.fromkeys(p.entry for p in points))
    if len(entries) < 2:
        return []
    by_entry = {entry: [i for i, p in enumerate(points) if p.entry == entry] for entry in entries}
    count = max(len(v) for v in by_entry.values())
    return [[idx[min(level, len(idx) - 1)] for idx in by_entry.values()] for level in range(count)]
