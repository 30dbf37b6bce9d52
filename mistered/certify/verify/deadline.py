"""The time limit of one verification instance, shared by every step (attack, bounds, branch and bound).

A step checks :meth:`Deadline.expired` between units of work (attack steps, bound passes, nodes) and passes
:meth:`Deadline.remaining` to anything that blocks (an LP/MIP solver's own time limit).

Example:
    >>> deadline = Deadline(60.0)
    >>> while not deadline.expired(): ...
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ...errors import InvalidInputError

__all__ = ["Deadline"]


class Deadline:
    """``seconds`` from now on a monotonic ``clock`` (``math.inf``: no limit)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not seconds > 0:
            raise InvalidInputError(f"a time limit must be positive seconds, got {seconds}")
        self.clock = clock
        self.start = clock()
        self.seconds = float(seconds)

    def elapsed(self) -> float:
        """Seconds since the start."""
        return self.clock() - self.start

    def remaining(self) -> float:
        """Seconds left (``0.0`` once expired; ``math.inf`` without a limit)."""
        return max(0.0, self.seconds - self.elapsed()) if math.isfinite(self.seconds) else math.inf

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def within(self, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now (a step's share of the time), never later than this one."""
        return Deadline(max(1e-9, min(seconds, self.remaining())), self.clock)
