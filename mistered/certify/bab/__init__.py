"""Branch and bound over ReLU splits on the bound engine, many subdomains bounded at once (β-CROWN style).

Layout (imports flow downwards): :mod:`.step` (the complete step of :func:`mistered.certify.verify.verify`) →
:mod:`.search` (``bab``: the loop, time limit, counterexamples) → :mod:`.root` (the root's intermediate bounds by
α-CROWN), :mod:`.branching` (strong branching) → :mod:`.domains` (open subdomains with their α/β, splitting) →
:mod:`.bounding` (one batch of subdomains through CROWN with α/β, warm-started) → :mod:`.problem` (the objective
``g``).

Example:
    >>> result = bab(graph, InputSet.ball(x, 0.03), margin_spec(y, 10)[0], timeout=60)
    >>> result.status                      # "verified", "falsified", "unknown" or "timeout"
"""

from .bounding import BoundOptions
from .problem import BabProblem
from .search import BabOptions, BabResult, BabRun, bab
from .step import BabStep

__all__ = ["BoundOptions", "BabProblem", "BabOptions", "BabResult", "BabRun", "bab", "BabStep"]
