"""Progress of long work, the same in every command.

On a terminal it is a rich progress bar (on stderr, erased when done). When stderr is not a terminal (a file,
a CI log, ``nohup``) it is a plain line every ``interval`` seconds and one when the work ends, e.g.::

    attack: 300/1000 examples, 12.1 s

``quiet=True`` silences both. Usage::

    with Progress("attack", total=len(data), quiet=quiet) as progress:
        for x, y in batches:
            ...
            progress.advance(len(y))
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

__all__ = ["Progress", "DEFAULT_INTERVAL"]

#: Seconds between two plain progress lines when stderr is not a terminal.
DEFAULT_INTERVAL = 10.0


class Progress:
    """Count finished units of work and show it (a bar on a terminal, periodic lines otherwise).

    Args:
        description: what is being done, e.g. ``"attack"``; :meth:`describe` changes it.
        total: the number of units, or ``None`` when unknown.
        unit: the units' name in plain lines (``"examples"``).
        quiet: show nothing.
        stream: where to write (default ``sys.stderr``, looked up when the progress starts).
        interval: seconds between plain lines.
        clock: a monotonic clock in seconds (for tests).
    """

    def __init__(self, description: str, total: int | None = None, *, unit: str = "examples", quiet: bool = False,
                 stream: TextIO | None = None, interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.quiet, self.interval, self.clock = quiet, float(interval), clock
        self.stream = stream
        self.done = 0
        self._rich = None
        self._task = None
        self._started = self._last_line = 0.0

    def __enter__(self) -> Progress:
        self.stream = self.stream if self.stream is not None else sys.stderr
        self._started = self._last_line = self.clock()
        if self.quiet:
            return self
        if _is_terminal(self.stream):
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=Console(file=self.stream), transient=True)
            self._rich.__enter__()
            self._task = self._rich.add_task(self.description, total=self.total)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.__exit__(kind, error, trace)
            self._rich = None
        elif not self.quiet and kind is None:
            self._line()

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more finished units (a plain line is written when ``interval`` has passed)."""
        self.done += int(count)
        if self._rich is not None:
            self._rich.advance(self._task, count)
        elif not self.quiet and self.clock() - self._last_line >= self.interval:
            self._line()

    def describe(self, description: str) -> None:
        """Change what the progress says is being done."""
        self.description = description
        if self._rich is not None:
            self._rich.update(self._task, description=description)

    def _line(self) -> None:
        now = self.clock()
        self._last_line = now
        of = "" if self.total is None else f"/{self.total}"
        self.stream.write(f"{self.description}: {self.done}{of} {self.unit}, {now - self._started:.1f} s\n")
        self.stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
