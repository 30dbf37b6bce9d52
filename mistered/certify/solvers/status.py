"""How a solver call ended: the :class:`Status` every solver wrapper returns, and :class:`SolveResult`.

Every LP, QP and MILP call of certify/ goes through :mod:`mistered.certify.solvers` and reports one of these
statuses instead of strings or ``None``; a caller branches on the enum (``result.status is Status.INFEASIBLE``).

Example:
    >>> result = solve_milp(problem, time_limit=5.0)
    >>> if result.status is Status.TIME_LIMIT:
    ...     lower = result.bound   # the anytime bound: still a valid lower bound (minimisation)
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Status", "SolveResult"]


class Status(str, enum.Enum):
    """The end of one solver call (a ``str`` enum: its values are the strings the solver code once returned, so an
    old ``isinstance(outcome, str)`` or ``outcome == "failed"`` still reads it right; compare with ``is``).

    * ``OPTIMAL``: solved to the solver's tolerances (a MILP: to its gap); ``objective`` is the optimum.
    * ``INFEASIBLE``: the feasible set is empty.
    * ``CUTOFF``: stopped once the proven bound passed the caller's cutoff (e.g. HiGHS' ``objective_bound``): the
      optimum is at least the cutoff, nothing better was asked for.
    * ``TIME_LIMIT``: a time limit (or SCIP's / HiGHS' memory limit) stopped it first; ``bound`` and, if one was
      found, ``objective`` are the anytime bounds.
    * ``FAILED``: anything else (numerical trouble, a solver error); nothing can be concluded.
    """

    OPTIMAL = "optimal"
    INFEASIBLE = "infeasible"
    CUTOFF = "cutoff"
    TIME_LIMIT = "time_limit"
    FAILED = "failed"


@dataclass
class SolveResult:
    """One solver call, for a minimisation (a maximisation's caller flips the signs).

    Attributes:
        status: how it ended.
        objective: the best feasible point's objective (``inf`` when none was found).
        bound: the best proven lower bound on the optimum (the anytime bound; ``objective`` at ``OPTIMAL``,
            ``inf`` when ``INFEASIBLE``, ``-inf`` when nothing is known).
        solution: ``(n,)`` float64 values of the variables at the best point, or ``None``.
        seconds: wall-clock time of the call.
        message: what the solver said where it ``FAILED`` (for the caller's error message), else empty.
    """

    status: Status
    objective: float = math.inf
    bound: float = -math.inf
    solution: np.ndarray | None = None
    seconds: float = 0.0
    message: str = ""

