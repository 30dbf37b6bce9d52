"""VNNLIB property files (as used in VNN-COMP 2021-2024) read into a :class:`~.property.Property`.

Supported: ``(declare-const X_i Real)`` / ``(declare-const Y_j Real)`` (indices ``0 .. n-1`` and ``0 .. m-1``,
declared before use), ``(assert F)`` where ``F`` is a comparison ``(<= a b)``, ``(>= a b)``, ``(< a b)``,
``(> a b)``, ``(= a b)`` (chains ``(<= a b c)`` too) or an ``and`` / ``or`` of formulas, nested freely. Terms are
linear: numbers, ``X_i``, ``Y_j``, ``(+ ...)``, ``(- ...)``, ``(* ...)`` with at most one non-constant factor,
``(/ t c)``. Comments (``;``), ``(check-sat)``, ``(get-model)``, ``(set-logic ...)``, ``(set-info ...)`` and
gzip-compressed files are accepted.

Semantics (VNN-COMP's): the conjunction of all asserts describes a counterexample; it is brought to disjunctive
normal form, and each disjunct's constraints on the inputs must be bounds ``(<= X_i v)`` / ``(>= X_i v)`` on single
inputs (coefficient 1, every input bounded above and below), its constraints on the outputs any linear
inequalities over ``Y`` (an input and an output never in one comparison). Disjuncts with the same input box form one
:class:`~.property.Region` (several regions per file: an ``or`` of ``and`` s over ``X``). The box is the file's
own bounds, never re-centred or clipped. Strict comparisons are read as non-strict (the closure; this is how
VNN-COMP's checkers treat them); a disjunct whose box is empty, or whose constant comparisons are false, can never
hold and is dropped.

Every error names ``file:line:column``.

Example:
    >>> prop = read_vnnlib("prop_0_0.05.vnnlib")          # also prop.vnnlib.gz
    >>> len(prop.regions), prop.num_inputs, prop.num_outputs
    (1, 784, 10)
"""

from __future__ import annotations

import gzip
import itertools
import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import InvalidInputError
from .property import Conjunction, Property, Region
from .sexpr import Atom, SList, Source, VnnlibError, read_all

__all__ = ["VnnlibError", "read_vnnlib", "parse_vnnlib", "read_text", "MAX_DISJUNCTS"]

#: The most disjuncts the normal form may have (a product of ``or`` s grows fast); more is an error.
MAX_DISJUNCTS = 100_000

_VAR = re.compile(r"([XY])_(0|[1-9][0-9]*)")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_COMPARISONS = ("<=", ">=", "<", ">", "=")
_IGNORED = ("check-sat", "get-model", "set-logic", "set-info", "set-option", "exit")

Var = tuple[str, int]


@dataclass(frozen=True)
class _Linear:
    """``sum(coef[v] * v) + const``."""

    coef: dict[Var, float]
    const: float


@dataclass(frozen=True)
class _Bound:
    """``X_index <= value`` (upper) or ``X_index >= value``."""

    index: int
    upper: bool
    value: float


@dataclass(frozen=True)
class _Row:
    """``sum(coef[j] * Y_j) <= rhs``."""

    coef: dict[int, float]
    rhs: float


class _Parser:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.declared: dict[str, set[int]] = {"X": set(), "Y": set()}
        self.common: list[_Bound | _Row | bool] = []
        self.factors: list[list[list[_Bound | _Row | bool]]] = []

    def error(self, where: Atom | SList, message: str) -> VnnlibError:
        return self.source.error(where.pos, message)

    def run(self) -> None:
        for expr in read_all(self.source):
            head = expr.head() if isinstance(expr, SList) else None
            if head == "declare-const":
                self._declare(expr)
            elif head == "assert":
                if len(expr.items) != 2:
                    raise self.error(expr, "assert takes one formula")
                dnf = self._formula(expr.items[1])
                if len(dnf) == 1:
                    self.common += dnf[0]
                else:
                    self.factors.append(dnf)
            elif head not in _IGNORED:
                raise self.error(expr, f"expected (declare-const ...) or (assert ...), got {_show(expr)}")

    def _declare(self, expr: SList) -> None:
        items = expr.items
        if len(items) != 3 or not all(isinstance(i, Atom) for i in items[1:]):
            raise self.error(expr, "declare-const takes a name and a sort: (declare-const X_0 Real)")
        name, sort = items[1], items[2]
        match = _VAR.fullmatch(name.text)
        if match is None:
            raise self.error(name, f"variables must be named X_i (inputs) or Y_j (outputs), got {name.text!r}")
        if sort.text != "Real":
            raise self.error(sort, f"{name.text} must be declared Real, got {sort.text!r}")
        kind, index = match.group(1), int(match.group(2))
        if index in self.declared[kind]:
            raise self.error(name, f"{name.text} is declared twice")
        self.declared[kind].add(index)

    def _formula(self, expr: Atom | SList) -> list[list[_Bound | _Row | bool]]:
        """The disjunctive normal form of ``expr``: a list of disjuncts, each a list of constraints."""
        head = expr.head() if isinstance(expr, SList) else None
        if head in ("and", "or"):
            parts = [self._formula(e) for e in expr.items[1:]]
            if not parts:
                raise self.error(expr, f"({head}) needs at least one formula")
            if head == "or":
                dnf = [term for part in parts for term in part]
            else:
                dnf = [sum(terms, []) for terms in itertools.product(*parts)] if len(parts) > 1 else parts[0]
            if len(dnf) > MAX_DISJUNCTS:
                raise self.error(expr, f"the disjunctive normal form has more than {MAX_DISJUNCTS} disjuncts")
            return dnf
        if head in _COMPARISONS:
            return [self._comparison(expr)]
        raise self.error(expr, f"expected a comparison, (and ...) or (or ...), got {_show(expr)}")

    def _comparison(self, expr: SList) -> list[_Bound | _Row | bool]:
        """``(op a b ...)`` as constraints ``expr <= 0`` (a chain ``a op b op c`` gives one per pair)."""
        op, terms = expr.head(), [self._linear(e) for e in expr.items[1:]]
        if len(terms) < 2:
            raise self.error(expr, f"({op}) compares at least two terms")
        out: list[_Bound | _Row | bool] = []
        for left, right in zip(terms, terms[1:]):
            less = [(left, right)] if op in ("<=", "<") else [(right, left)] if op in (">=", ">") else \
                [(left, right), (right, left)]
            out += [self._constraint(_sub(a, b), expr) for a, b in less]
        return out

    def _constraint(self, form: _Linear, expr: SList) -> _Bound | _Row | bool:
        """``form <= 0`` as an input bound, an output row or a constant truth value."""
        kinds = {kind for kind, _ in form.coef}
        if not kinds:
            return form.const <= 0
        if kinds == {"Y"}:
            return _Row({j: c for (_, j), c in form.coef.items()}, -form.const)
        if kinds == {"X", "Y"}:
            raise self.error(expr, "a comparison mixes inputs X and outputs Y; only input bounds and output "
                                   "constraints are supported")
        if len(form.coef) != 1 or abs(next(iter(form.coef.values()))) != 1.0:
            raise self.error(expr, "input constraints must bound one input: (<= X_i v) or (>= X_i v)")
        (_, index), coef = next(iter(form.coef.items()))
        return _Bound(index, coef > 0, -form.const if coef > 0 else form.const)

    def _linear(self, expr: Atom | SList) -> _Linear:
        if isinstance(expr, Atom):
            return self._atom(expr)
        head = expr.head()
        args = [self._linear(e) for e in expr.items[1:]]
        if head == "+" and args:
            return _sum(args)
        if head == "-" and len(args) == 1:
            return _scale(args[0], -1.0)
        if head == "-" and args:
            return _sum([args[0], *(_scale(a, -1.0) for a in args[1:])])
        if head == "*" and args:
            variable = [a for a in args if a.coef]
            if len(variable) > 1:
                raise self.error(expr, "a product of variables is not linear")
            factor = math.prod(a.const for a in args if not a.coef)
            return _scale(variable[0], factor) if variable else _Linear({}, factor)
        if head == "/" and len(args) == 2 and not args[1].coef:
            if args[1].const == 0:
                raise self.error(expr, "division by zero")
            return _scale(args[0], 1.0 / args[1].const)
        raise self.error(expr, f"expected a linear term (a number, X_i, Y_j, +, -, *, /), got {_show(expr)}")

    def _atom(self, atom: Atom) -> _Linear:
        if _NUMBER.fullmatch(atom.text):
            value = float(atom.text)
            if not math.isfinite(value):
                raise self.error(atom, f"the number {atom.text} is not finite")
            return _Linear({}, value)
        match = _VAR.fullmatch(atom.text)
        if match is None:
            raise self.error(atom, f"unknown name {atom.text!r} (expected a number, X_i or Y_j)")
        kind, index = match.group(1), int(match.group(2))
        if index not in self.declared[kind]:
            raise self.error(atom, f"{atom.text} is used before it is declared")
        return _Linear({(kind, index): 1.0}, 0.0)


def _show(expr: Atom | SList) -> str:
    if isinstance(expr, Atom):
        return repr(expr.text)
    return f"({expr.head() or '...'} ...)"


def _sum(forms: list[_Linear]) -> _Linear:
    coef: dict[Var, float] = {}
    for form in forms:
        for var, c in form.coef.items():
            coef[var] = coef.get(var, 0.0) + c
    return _Linear({v: c for v, c in coef.items() if c != 0.0}, math.fsum(f.const for f in forms))


def _scale(form: _Linear, factor: float) -> _Linear:
    return _Linear({v: c * factor for v, c in form.coef.items() if c * factor != 0.0}, form.const * factor)


def _sub(a: _Linear, b: _Linear) -> _Linear:
    return _sum([a, _scale(b, -1.0)])


def _count(indices: set[int], kind: str, source: Source) -> int:
    n = len(indices)
    if n == 0:
        raise VnnlibError(f"{source.name}: no {kind}_i variables are declared")
    if max(indices) != n - 1:
        missing = min(set(range(max(indices) + 1)) - indices)
        raise VnnlibError(f"{source.name}: {kind}_{missing} is not declared (indices must run from 0 without gaps)")
    return n


def _box(bounds: list[_Bound], n: int, base: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, ...]:
    """The box ``(lower, upper)`` ``(n,)`` of ``bounds`` within ``base`` (default: unbounded)."""
    lower = base[0].tolist() if base else [-math.inf] * n
    upper = base[1].tolist() if base else [math.inf] * n
    for b in bounds:
        if b.upper:
            upper[b.index] = min(upper[b.index], b.value)
        else:
            lower[b.index] = max(lower[b.index], b.value)
    return torch.tensor(lower, dtype=torch.float64), torch.tensor(upper, dtype=torch.float64)


def _conjunction(rows: list[_Row], m: int) -> Conjunction:
    coef = torch.zeros(len(rows), m, dtype=torch.float64)
    for r, row in enumerate(rows):
        for j, c in row.coef.items():
            coef[r, j] = c
    return Conjunction(coef, torch.tensor([row.rhs for row in rows], dtype=torch.float64))


def _regions(parser: _Parser, n: int, m: int) -> list[Region]:
    source = parser.source
    common_box = _box([c for c in parser.common if isinstance(c, _Bound)], n, None)
    common_rows = [c for c in parser.common if isinstance(c, _Row)]
    if any(c is False for c in parser.common):
        raise VnnlibError(f"{source.name}: a constant comparison is false, so the constraints can never hold")
    terms = [sum(t, []) for t in itertools.product(*parser.factors)] if parser.factors else [[]]
    if len(terms) > MAX_DISJUNCTS:
        raise VnnlibError(f"{source.name}: the disjunctive normal form has more than {MAX_DISJUNCTS} disjuncts")
    grouped: dict[tuple[bytes, bytes], tuple[torch.Tensor, torch.Tensor, list[Conjunction]]] = {}
    for term in terms:
        if any(c is False for c in term):
            continue
        bounds = [c for c in term if isinstance(c, _Bound)]
        lower, upper = _box(bounds, n, common_box) if bounds else common_box
        for name, side in (("lower", lower), ("upper", upper)):
            if not bool(torch.isfinite(side).all()):
                index = int((~torch.isfinite(side)).nonzero()[0])
                raise VnnlibError(f"{source.name}: X_{index} has no {name} bound; every input needs (>= X_i v) and "
                                  "(<= X_i v)")
        if bool((lower > upper).any()):
            continue
        key = (lower.numpy().tobytes(), upper.numpy().tobytes())
        entry = grouped.setdefault(key, (lower, upper, []))
        entry[2].append(_conjunction(common_rows + [c for c in term if isinstance(c, _Row)], m))
    if not grouped:
        raise VnnlibError(f"{source.name}: no input satisfies the input constraints (every disjunct has an empty "
                          "box or a false constant comparison)")
    return [Region(lower, upper, tuple(conjunctions)) for lower, upper, conjunctions in grouped.values()]


def parse_vnnlib(text: str, name: str = "<text>") -> Property:
    """The :class:`~.property.Property` stated by VNNLIB ``text`` (see the module docstring); ``name`` is used in
    messages.

    Raises:
        VnnlibError: anything that is not VNNLIB as described, naming ``name:line:column``.
    """
    source = Source(text, name)
    parser = _Parser(source)
    parser.run()
    n = _count(parser.declared["X"], "X", source)
    m = _count(parser.declared["Y"], "Y", source)
    return Property(tuple(_regions(parser, n, m)), n, m, name)


def read_text(path: str | os.PathLike) -> str:
    """The text of ``path``, decompressed when it is gzip'd (recognised by content, whatever its name).

    Raises:
        InvalidInputError: the file cannot be read, is a corrupt gzip file, or is not UTF-8 text.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InvalidInputError(f"{os.fspath(path)!r} cannot be read ({error.strerror or error})") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise InvalidInputError(f"{os.fspath(path)!r} is a corrupt gzip file ({error})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInputError(f"{os.fspath(path)!r} is not UTF-8 text (byte {error.start})") from None


def read_vnnlib(path: str | os.PathLike) -> Property:
    """:func:`parse_vnnlib` of the file at ``path`` (plain or gzip'd); messages name the file.

    Raises:
        InvalidInputError: the file cannot be read; VnnlibError: it is not VNNLIB as supported.
    """
    return parse_vnnlib(read_text(path), os.fspath(path))
