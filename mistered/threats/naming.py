"""Number formatting for threat names: the shortest text that parses back to the same float.

Threat names are spec strings (:mod:`mistered.threats.spec`), so ``parse_threat(threat.name)`` must
give back an equal threat; ``f"{v:g}"`` would round ``8/255`` to six digits and break that.
"""

from __future__ import annotations

__all__ = ["format_number"]


def format_number(value: float) -> str:
    """``repr`` of a float without a trailing ``.0``: ``10.0 -> "10"``, ``0.1 -> "0.1"``, ``8/255 -> "0.03137254901960784"``."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text
