"""Reading s-expressions (the syntax of VNNLIB / SMT-LIB) with the line and column of every token.

Comments run from ``;`` to the end of the line. A token is a parenthesis or a run of characters other than
whitespace, parentheses and ``;``. Positions are kept as offsets and turned into ``line:column`` (both from 1) only
for messages, so large files read fast.

Example:
    >>> text = Source("(assert (<= X_0 1.0)) ; a comment", "prop.vnnlib")
    >>> [expr] = read_all(text)
    >>> expr.items[0].text, text.where(expr.items[1].pos)
    ('assert', 'prop.vnnlib:1:9')
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from ...errors import InvalidInputError

__all__ = ["VnnlibError", "Source", "Atom", "SList", "read_all"]

_TOKEN = re.compile(r"[^\S\n]+|\n|;[^\n]*|\(|\)|[^\s();]+")


class VnnlibError(InvalidInputError):
    """A property file that cannot be read as VNNLIB; the message starts with ``file:line:column``."""


class Source:
    """A property file's text and name, mapping offsets to ``name:line:column``."""

    def __init__(self, text: str, name: str = "<text>") -> None:
        self.text, self.name = text, name
        self._newlines = [m.start() for m in re.finditer("\n", text)]

    def where(self, pos: int) -> str:
        """``name:line:column`` (from 1) of the character at offset ``pos``."""
        line = bisect.bisect_left(self._newlines, pos)
        start = self._newlines[line - 1] + 1 if line else 0
        return f"{self.name}:{line + 1}:{pos - start + 1}"

    def error(self, pos: int, message: str) -> VnnlibError:
        """A :class:`VnnlibError` for ``message`` at offset ``pos``."""
        return VnnlibError(f"{self.where(pos)}: {message}")


@dataclass(frozen=True, slots=True)
class Atom:
    """A symbol or number, as written, at offset ``pos``."""

    text: str
    pos: int


@dataclass(frozen=True, slots=True)
class SList:
    """A parenthesised list; ``pos`` is the offset of its ``(``."""

    items: tuple[Atom | SList, ...]
    pos: int

    def head(self) -> str | None:
        """The text of the first item when it is an atom (the operator), else ``None``."""
        return self.items[0].text if self.items and isinstance(self.items[0], Atom) else None


def read_all(source: Source) -> list[Atom | SList]:
    """The top-level expressions of ``source`` in order.

    Raises:
        VnnlibError: an unbalanced parenthesis (the position of the unmatched one).
    """
    stack: list[tuple[int, list]] = []
    top: list[Atom | SList] = []
    for match in _TOKEN.finditer(source.text):
        token = match.group()
        first = token[0]
        if first.isspace() or first == ";":
            continue
        pos = match.start()
        if token == "(":
            stack.append((pos, []))
        elif token == ")":
            if not stack:
                raise source.error(pos, "')' without a matching '('")
            start, items = stack.pop()
            (stack[-1][1] if stack else top).append(SList(tuple(items), start))
        else:
            (stack[-1][1] if stack else top).append(Atom(token, pos))
    if stack:
        raise source.error(stack[-1][0], "'(' is never closed")
    return top
