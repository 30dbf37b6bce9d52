"""Threat spec strings and named presets: a tokenizer and a recursive-descent parser (never ``eval``).

Grammar (whitespace is ignored; ``>>`` binds tighter than ``|metric<=bound``, which binds tighter
than ``||``)::

    spec    := union END
    union   := bounded ("||" bounded)*                 Union: per-example worst case
    bounded := chain ("|" METRIC "<=" value)*          PerceptualBudget, e.g. |lpips<=0.015, |dssim<=0.1
                                                       (METRIC: a distance of mistered.metrics.DISTANCES;
                                                       "ssim" is the deprecated name of dssim = 1 - SSIM)
    chain   := atom (">>" atom)*                       Sequence: left acts first
    atom    := "(" union ")" | NAME "(" [args] ")" | PRESET
    args    := arg ("," arg)*
    arg     := [NAME "="] value
    value   := NUMBER ["/" NUMBER] ["deg"]             e.g. 0.3, 8/255, 10deg, 1e-3

Threat functions (positional arguments in this order, or by keyword; omitted ones take the default):

=========================================  ==================================================
``linf(eps)``, ``l2(eps)``                  :class:`~mistered.threats.additive.Additive`
``affine(angle, translation, scale)``       :class:`~mistered.threats.affine.Affine` (angle in degrees, ``deg`` optional)
``rotation(angle)``                         ``Affine`` with rotation only
``translation(t)``, ``scale(s)``            ``Affine`` with translation / scaling only
``flow(eps, smoothness)``                   :class:`~mistered.threats.flow.Flow`
=========================================  ==================================================

Every parsed threat's ``name`` parses back to an equal threat.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import MisteredError, ThreatSpecError
from ..metrics import DEPRECATED_NAMES, DISTANCES
from .additive import Additive
from .affine import Affine
from .base import Threat
from .compose import Sequence, Union
from .flow import Flow
from .perceptual import PerceptualBudget

__all__ = ["PRESETS", "parse_threat"]

#: Named threats, each a spec string. Budgets follow the literature:
#: MNIST L∞ 0.3 (Madry et al., 2018) and 0.1; MNIST L2 2.0 (Tramèr & Boneh, 2019);
#: CIFAR-10 L∞ 8/255 and L2 0.5 (RobustBench); stAdv flow 0.05 (mister_ed; Laidlaw et al., 2021);
#: rotation up to 10° and translation up to 10% (mister_ed's defaults). ``stadv`` bounds the flow's
#: smoothness (stAdv's flow loss) at 0.01 per pixel, and ``combined`` is that flow, a small affine
#: warp and L∞ 0.1 under LPIPS 0.015: below the 1st percentile (0.016 on all 5,000 bundled digits)
#: of the LPIPS between a digit and its nearest digit of another class (``mistered calibrate``,
#: docs/threats.md), with no component alone saturating (benchmarks/composition.py).
PRESETS: dict[str, str] = {
    "linf": "linf(0.3)",
    "linf-small": "linf(0.1)",
    "l2": "l2(2)",
    "stadv": "flow(0.05,smoothness=0.01)",
    "rotation": "rotation(10deg)",
    "translation": "translation(0.1)",
    "affine": "affine(10deg,0.1)",
    "combined": "flow(0.05,smoothness=0.01)>>affine(3deg,0.03)>>linf(0.1)|lpips<=0.015",
    "cifar-linf": "linf(8/255)",
    "cifar-l2": "l2(0.5)",
}

_MAX_DEPTH = 32
_SPACE = re.compile(r"\s*", re.ASCII)
_TOKEN = re.compile(
    r"(?:(?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*)"
    r"|(?P<op>>>|\|\||<=|[|(),=/]))",
    re.ASCII,
)


@dataclass(frozen=True)
class _Token:
    kind: str  # "number", "name", "op" or "end"
    text: str
    pos: int


@dataclass(frozen=True)
class _Value:
    number: float
    unit: str | None
    pos: int


@dataclass(frozen=True)
class _Function:
    build: Callable[..., Threat]
    params: tuple[str, ...]
    required: int = 0
    angles: tuple[str, ...] = ()


_FUNCTIONS: dict[str, _Function] = {
    "linf": _Function(lambda eps: Additive("linf", eps), ("eps",), required=1),
    "l2": _Function(lambda eps: Additive("l2", eps), ("eps",), required=1),
    "affine": _Function(
        lambda angle=10.0, translation=0.1, scale=0.0: Affine(angle, translation, scale),
        ("angle", "translation", "scale"), angles=("angle",),
    ),
    "rotation": _Function(lambda angle=10.0: Affine(angle, 0.0, 0.0), ("angle",), angles=("angle",)),
    "translation": _Function(lambda t=0.1: Affine(0.0, t, 0.0), ("t",)),
    "scale": _Function(lambda s=0.1: Affine(0.0, 0.0, s), ("s",)),
    "flow": _Function(lambda eps=0.05, smoothness=None: Flow(eps, smoothness), ("eps", "smoothness")),
}


def _error(message: str, spec: str, pos: int) -> ThreatSpecError:
    marked = f"{spec[:pos]}\u2192{spec[pos:]}" if spec.strip() else spec
    return ThreatSpecError(f"{message} (at position {pos} of the spec: {marked!r})")


def _tokenize(spec: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = _SPACE.match(spec).end()
    while pos < len(spec):
        match = _TOKEN.match(spec, pos)
        if match is None or match.lastgroup is None:
            raise _error(f"unexpected character {spec[pos]!r} in threat spec", spec, pos)
        tokens.append(_Token(match.lastgroup, match.group(), pos))
        pos = _SPACE.match(spec, match.end()).end()
    tokens.append(_Token("end", "", len(spec)))
    return tokens


class _Parser:
    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.tokens = _tokenize(spec)
        self.index = 0
        self.depth = 0

    # -- token helpers
    @property
    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, text: str) -> bool:
        if self.peek.kind == "op" and self.peek.text == text:
            self.index += 1
            return True
        return False

    def expect(self, text: str, context: str) -> None:
        if not self.accept(text):
            raise self.error(f"expected {text!r} {context}, found {self.describe(self.peek)}", self.peek.pos)

    def error(self, message: str, pos: int) -> ThreatSpecError:
        return _error(message, self.spec, pos)

    @staticmethod
    def describe(token: _Token) -> str:
        return "the end of the spec" if token.kind == "end" else repr(token.text)

    # -- grammar
    def parse(self) -> Threat:
        threat = self.union()
        if self.peek.kind != "end":
            raise self.error(f"expected '>>', '||', '|' or the end of the spec, found {self.describe(self.peek)}",
                             self.peek.pos)
        return threat

    def union(self) -> Threat:
        alternatives = [self.bounded()]
        while self.accept("||"):
            alternatives.append(self.bounded())
        return alternatives[0] if len(alternatives) == 1 else Union(alternatives)

    def bounded(self) -> Threat:
        threat = self.chain()
        while self.accept("|"):
            metric = self.take()
            if metric.kind != "name" or metric.text not in DISTANCES + tuple(DEPRECATED_NAMES):
                hint = " (a similarity: bound its distance 'ms-dssim' = 1 - MS-SSIM)" if metric.text == "ms-ssim" else ""
                raise self.error(f"expected a distance after '|' (one of {', '.join(DISTANCES)}), "
                                 f"found {self.describe(metric)}{hint}", metric.pos)
            self.expect("<=", f"after the metric {metric.text!r}")
            bound = self.value()
            if bound.unit is not None:
                raise self.error(f"a {metric.text} bound takes no unit, got {bound.unit!r}", bound.pos)
            threat = self.perceptual(threat, metric, bound)
        return threat

    def chain(self) -> Threat:
        components = [self.atom()]
        while self.accept(">>"):
            components.append(self.atom())
        return components[0] if len(components) == 1 else Sequence(tuple(components))

    def atom(self) -> Threat:
        token = self.peek
        if self.accept("("):
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise self.error(f"threat spec nested deeper than {_MAX_DEPTH} parentheses", token.pos)
            threat = self.union()
            self.expect(")", f"to close the '(' at position {token.pos}")
            self.depth -= 1
            return threat
        if token.kind != "name":
            raise self.error(f"expected a threat (a name such as 'linf(0.3)' or a preset), found {self.describe(token)}",
                             token.pos)
        self.take()
        if self.accept("("):
            return self.call(token)
        if token.text in PRESETS:
            return parse_threat(PRESETS[token.text])
        hint = f"; did you mean '{token.text}(...)'?" if token.text in _FUNCTIONS else ""
        raise self.error(f"unknown threat preset {token.text!r}{hint}; presets: {', '.join(PRESETS)}; "
                         f"threat functions: {', '.join(_FUNCTIONS)}", token.pos)

    def call(self, name: _Token) -> Threat:
        function = _FUNCTIONS.get(name.text)
        if function is None:
            raise self.error(f"unknown threat function {name.text!r}; threat functions: {', '.join(_FUNCTIONS)}; "
                             f"presets: {', '.join(PRESETS)}", name.pos)
        arguments: dict[str, _Value] = {}
        keyword_seen = False
        while not self.accept(")"):
            if arguments:
                self.expect(",", f"or ')' in the arguments of {name.text}()")
            keyword_seen = self.argument(name.text, function, arguments, keyword_seen)
        for param in function.params[:function.required]:
            if param not in arguments:
                raise self.error(f"{name.text}() needs its {param!r} argument, e.g. {name.text}(0.3)", name.pos)
        for param, value in arguments.items():
            if value.unit is not None and param not in function.angles:
                raise self.error(f"argument {param!r} of {name.text}() takes no unit, got {value.unit!r}", value.pos)
            if value.number < 0:
                raise self.error(f"argument {param!r} of {name.text}() must be non-negative (a budget), "
                                 f"got {value.number:g}", value.pos)
        try:
            return function.build(**{param: value.number for param, value in arguments.items()})
        except MisteredError as error:
            raise self.error(f"{name.text}(): {error}", name.pos) from None

    def argument(self, function_name: str, function: _Function, arguments: dict[str, _Value],
                 keyword_seen: bool) -> bool:
        """Parse one argument into ``arguments``; returns whether keyword arguments have started."""
        token = self.peek
        if token.kind == "name" and self.tokens[self.index + 1].text == "=":
            self.index += 2
            if token.text not in function.params:
                raise self.error(f"{function_name}() has no argument {token.text!r}; "
                                 f"its arguments: {', '.join(function.params)}", token.pos)
            param, keyword_seen = token.text, True
        elif keyword_seen:
            raise self.error(f"positional argument after a keyword argument in {function_name}()", token.pos)
        elif len(arguments) >= len(function.params):
            raise self.error(f"too many arguments for {function_name}() "
                             f"(its arguments: {', '.join(function.params)})", token.pos)
        else:
            param = function.params[len(arguments)]
        if param in arguments:
            raise self.error(f"argument {param!r} of {function_name}() given twice", token.pos)
        arguments[param] = self.value()
        return keyword_seen

    def value(self) -> _Value:
        first = self.take()
        if first.kind != "number":
            raise self.error(f"expected a number, found {self.describe(first)}", first.pos)
        number = float(first.text)
        if self.accept("/"):
            denominator = self.take()
            if denominator.kind != "number" or float(denominator.text) == 0:
                raise self.error(f"expected a non-zero number after '/', found {self.describe(denominator)}",
                                 denominator.pos)
            number /= float(denominator.text)
        if not math.isfinite(number):
            raise self.error(f"number {first.text!r} is not finite", first.pos)
        unit = None
        if self.peek.kind == "name" and self.peek.text == "deg":
            unit = self.take().text
        return _Value(number, unit, first.pos)

    def perceptual(self, threat: Threat, metric: _Token, bound: _Value) -> Threat:
        if bound.number < 0:
            raise self.error(f"the {metric.text} bound must be non-negative, got {bound.number:g}", bound.pos)
        try:
            return PerceptualBudget(threat, metric.text, bound.number)
        except MisteredError as error:
            raise self.error(f"|{metric.text}<=...: {error}", metric.pos) from None


def parse_threat(spec: str) -> Threat:
    """Parse a preset name (see :data:`PRESETS`) or a threat spec string (see the module docstring).

    Args:
        spec: e.g. ``"combined"``, ``"linf(8/255)"``, ``"flow(0.05)>>affine(10deg,0.1)>>linf(0.3)|lpips<=0.1"``.

    Returns:
        The threat; ``parse_threat(threat.name)`` gives back an equal threat.

    Raises:
        ThreatSpecError: one line that marks the offending position (with an arrow) and lists the presets
            for unknown names; negative budgets are rejected.

    Example:
        >>> parse_threat("rotation(30deg)>>linf(8/255)").components[0]
        Affine(max_angle_deg=30.0, max_translation=0.0, max_scale=0.0)
    """
    if not isinstance(spec, str):
        raise ThreatSpecError(f"a threat spec must be a string, got {type(spec).__name__}")
    if not spec.strip():
        raise ThreatSpecError(f"empty threat spec; use a preset ({', '.join(PRESETS)}) or e.g. 'linf(0.3)'")
    return _Parser(spec).parse()
