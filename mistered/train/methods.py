"""Training methods by name: ``standard``, ``adversarial``, ``pat``, ``lmt``, ``linf-dist``, ``linf-dist-hybrid``,
``smoothing`` -> an Objective.

LMT, L∞-dist and smoothing objectives are imported only when asked for (they pull in :mod:`mistered.certify`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import InvalidInputError
from ..threats.base import Threat
from .adversarial import AdversarialObjective, StandardObjective
from .objectives import Objective

__all__ = ["METHODS", "default_method", "build_objective"]

#: method name -> "module:class" of objectives configured by keyword options
_LAZY: dict[str, str] = {
    "lmt": "mistered.train.lmt:LMTObjective",
    "linf-dist": "mistered.train.linf_dist:LinfDistObjective",
    "linf-dist-hybrid": "mistered.train.linf_dist:LinfDistHybridObjective",
    "smoothing": "mistered.train.smoothing:GaussianNoiseObjective",
}
#: lazily imported methods that draw their randomness from the training loop's generator
_TAKES_GENERATOR = frozenset({"smoothing"})
#: options a method cannot do without, with how to give them on the command line
_REQUIRED = {"smoothing": {"sigma": "--sigma, the noise level in pixel units, e.g. 0.25"}}
#: methods that train against a threat (``pat``: perceptual adversarial training, :mod:`mistered.train.pat`)
_THREAT_METHODS = ("adversarial", "pat")
METHODS: tuple[str, ...] = ("standard", *_THREAT_METHODS, *_LAZY)


def default_method(threats: Sequence[Threat]) -> str:
    """``"adversarial"`` when threats are given, else ``"standard"``."""
    return "adversarial" if threats else "standard"


def build_objective(
    method: str,
    *,
    threats: Sequence[Threat] = (),
    strategy: str = "max",
    attack_steps: int = 7,
    generator: torch.Generator | None = None,
    **options: Any,
) -> Objective:
    """The training objective for ``method``.

    Args:
        method: one of :data:`METHODS`.
        threats: the threats of adversarial training (required for, and only for, ``"adversarial"`` and ``"pat"``;
            for ``"pat"`` each with a perceptual bound).
        strategy, attack_steps: see :class:`~mistered.train.adversarial.AdversarialObjective` (``"pat"``: Fast-LPA
            steps; its threats combine as a union, the worst per example, i.e. ``strategy="max"`` only).
        generator: the training loop's generator: adversarial training draws its attacks' seeds from it,
            smoothing its noise.
        **options: keyword options of the LMT / L∞-dist / smoothing objective (e.g. ``c``, ``pairwise`` for LMT;
            ``sigma`` for smoothing, required).

    Raises:
        InvalidInputError: unknown method, a threat without adversarial training (or the reverse), or
            options the method does not take.
    """
    if method not in METHODS:
        raise InvalidInputError(f"unknown training method {method!r}; choose one of {', '.join(METHODS)}")
    if method in _THREAT_METHODS:
        if not threats:
            raise InvalidInputError(f"{method} training needs a threat: pass --threat (e.g. --threat linf)")
    elif threats:
        raise InvalidInputError(f"method {method!r} does not train against a threat; drop --threat or use --method adversarial")
    if method in ("standard", *_THREAT_METHODS) and options:
        raise InvalidInputError(
            f"method {method!r} takes no options {sorted(options)} (they belong to {', '.join(_LAZY)})")
    if method == "standard":
        return StandardObjective()
    if method == "adversarial":
        return AdversarialObjective(threats, strategy=strategy, steps=attack_steps, generator=generator)
    if method == "pat":
        if strategy != "max":
            raise InvalidInputError(f"pat trains on the worst of its threats per example (--strategy max), got {strategy!r}")
        from .pat import PerceptualAdversarialObjective

        return PerceptualAdversarialObjective(threats, steps=attack_steps, generator=generator)
    missing = [f"{name} ({how})" for name, how in _REQUIRED.get(method, {}).items() if name not in options]
    if missing:
        raise InvalidInputError(f"method {method!r} needs {', '.join(missing)}")
    if method in _TAKES_GENERATOR:
        options = {**options, "generator": generator}
    module_name, class_name = _LAZY[method].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(**options)
    except TypeError as error:
        raise InvalidInputError(f"method {method!r} does not take the options {options}: {error}") from None
