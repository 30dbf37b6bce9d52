"""Empirical vs certified robustness of one model: attacks (upper bounds), certifiers (lower bounds), exact values.

:func:`evaluate` runs, for each threat and ε, an ensemble of attacks (worst case per example) and every
applicable certifier (:mod:`.plan`), checks the results against each other (:mod:`.sanity`: a certified
example that an attack fooled is a hard error), saves finished chunks for resuming (:mod:`.state`) and
writes ``results.json``, ``adversarial.pt``, ``robustness.png`` and ``examples.png``. The examples stream in
batches; the batches may be shared out over processes (:mod:`mistered.sharding`) and are merged in order
(:mod:`.assemble`) into the record one process would write.
"""

from .plan import CERTIFIERS, CertifierPlan, CertifierSpec, plan_certifiers
from .points import DEFAULT_EPS, EvalPoint, build_points, parse_eps, parse_sweeps, union_levels
from .run import EvaluateConfig, evaluate

__all__ = [
    "CERTIFIERS", "CertifierPlan", "CertifierSpec", "DEFAULT_EPS", "EvalPoint", "EvaluateConfig",
    "build_points", "evaluate", "parse_eps", "parse_sweeps", "plan_certifiers", "union_levels",
]
