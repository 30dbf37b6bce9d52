"""VNN-COMP result files: the answer on the first line, and for ``sat`` the counterexample's assignments.

::

    sat
    ((X_0 0.05000000074505806)
     (X_1 0.0)
     ...
     (Y_9 -0.0183))

Values are written with Python's shortest round-trip ``repr`` (exact: reading one back gives the same float64,
and the float32 the model ran on is exactly representable in it). ``unsat``, ``timeout`` and ``unknown`` are
the first line alone.

Example:
    >>> text = format_result("sat", x, y)
    >>> status, x2, y2 = parse_result(text)         # x2 == x.tolist()
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch

from ...errors import InvalidInputError
from ...io import atomic_write_text
from .verifier import STATUSES, VerificationResult

__all__ = ["format_result", "parse_result", "write_result_file", "result_text"]

_ASSIGNMENT = re.compile(r"\(\s*([XY])_(\d+)\s+(\S+?)\s*\)")


def format_result(status: str, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> str:
    """The result file's text for ``status``; ``sat`` needs the counterexample's inputs ``x`` ``(n,)`` and outputs
    ``y`` ``(m,)`` (finite).

    Raises:
        InvalidInputError: an unknown status, ``sat`` without finite ``x`` and ``y``, or ``x``/``y`` with another.
    """
    if status not in STATUSES:
        raise InvalidInputError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    if status != "sat":
        if x is not None or y is not None:
            raise InvalidInputError(f"only a sat result carries a counterexample, not {status!r}")
        return f"{status}\n"
    if x is None or y is None:
        raise InvalidInputError("a sat result needs the counterexample's inputs and outputs")
    values = [("X", v) for v in x.reshape(-1).tolist()] + [("Y", v) for v in y.reshape(-1).tolist()]
    if not all(math.isfinite(v) for _, v in values):
        raise InvalidInputError("a counterexample's values must be finite")
    counts = {"X": 0, "Y": 0}
    lines = []
    for kind, v in values:
        lines.append(f"({kind}_{counts[kind]} {float(v)!r})")
        counts[kind] += 1
    return "sat\n(" + "\n ".join(lines) + ")\n"


def result_text(result: VerificationResult) -> str:
    """:func:`format_result` of a :class:`VerificationResult`."""
    cex = result.counterexample
    return format_result(result.status, cex.x if cex else None, cex.y if cex else None)


def write_result_file(path: str | os.PathLike, result: VerificationResult) -> Path:
    """Write ``result`` as a VNN-COMP result file at ``path`` (atomically)."""
    return atomic_write_text(path, result_text(result))


def parse_result(text: str) -> tuple[str, list[float], list[float]]:
    """``(status, x, y)`` of a result file's text (``x``, ``y`` empty unless ``sat``); VNN-COMP 2021's ``holds`` and
    ``violated`` are read as ``unsat`` and ``sat``.

    Raises:
        InvalidInputError: an unknown status, or assignments that are not ``X_0 .. X_{n-1}``, ``Y_0 .. Y_{m-1}``.
    """
    lines = text.strip().splitlines()
    first = lines[0].strip().lower() if lines else ""
    status = {"holds": "unsat", "violated": "sat"}.get(first, first)
    if status not in STATUSES:
        raise InvalidInputError(f"a result file starts with one of {', '.join(STATUSES)}, got {first!r}")
    found: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for kind, index, value in _ASSIGNMENT.findall("\n".join(lines[1:])):
        found[kind][int(index)] = float(value)
    vectors = []
    for kind in ("X", "Y"):
        if sorted(found[kind]) != list(range(len(found[kind]))):
            raise InvalidInputError(f"the result file's {kind} assignments are not {kind}_0 .. {kind}_n-1")
        vectors.append([found[kind][i] for i in range(len(found[kind]))])
    if status == "sat" and not (vectors[0] and vectors[1]):
        raise InvalidInputError("a sat result file must assign every X_i and Y_j")
    return status, vectors[0], vectors[1]
