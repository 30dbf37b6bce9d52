"""HiGHS through its own public Python API (``highspy``): model creation, options, time limits, status mapping.

Every persistent LP/QP model of certify/ (:mod:`.triangle`, :mod:`.l2_cuts`, :mod:`.projection`,
:mod:`mistered.certify.bounds.chain_lp`) is made by :func:`new_highs` and solved by :func:`run_highs`, so each one
is silent (no banner, no log), single-threaded and time-limited, and ends in a
:class:`~mistered.certify.solvers.status.Status`. ``threads = 1``: the callers parallelise, if at all, across
examples; measured on 2,000 warm-started re-solves of a 30x50 LP (one thread): 0.30 s, against 1.07 s with
HiGHS' default scheduler and 0.61 s with the HiGHS bundled in scipy (``scipy.optimize._highspy``, private, which
certify/ used before).

Memory: an LP/QP model holds its rows and a factorisation; it grows only where a caller adds rows (the L2 cut
pool is capped at 200 cuts, :mod:`.l2_cuts`), so HiGHS needs no memory cap of its own (it has none to set).

Example:
    >>> model = new_highs()
    >>> model.addCols(...); model.addRows(...)
    >>> status = run_highs(model, time_limit=2.0)   # Status.OPTIMAL, INFEASIBLE, CUTOFF, TIME_LIMIT or FAILED
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

import highspy

from .status import Status

__all__ = ["new_highs", "run_highs", "highs_status", "native_stdout_silenced", "HessianFormat", "MatrixFormat"]

HessianFormat = highspy.HessianFormat
MatrixFormat = highspy.MatrixFormat

_STATUS = {
    highspy.HighsModelStatus.kOptimal: Status.OPTIMAL,
    highspy.HighsModelStatus.kInfeasible: Status.INFEASIBLE,
    highspy.HighsModelStatus.kObjectiveBound: Status.CUTOFF,
    highspy.HighsModelStatus.kTimeLimit: Status.TIME_LIMIT,
    highspy.HighsModelStatus.kMemoryLimit: Status.TIME_LIMIT,
}


def new_highs(presolve: bool = False, **options: Any) -> highspy.Highs:
    """An empty HiGHS model: silent (the banner HiGHS prints on its first construction is swallowed too),
    ``threads = 1``, presolve off unless asked (off keeps the basis between re-solves), then ``options``
    (HiGHS option names, e.g. ``dual_feasibility_tolerance=1e-10``)."""
    with native_stdout_silenced():
        model = highspy.Highs()
    model.setOptionValue("output_flag", False)
    model.setOptionValue("threads", 1)
    model.setOptionValue("presolve", "on" if presolve else "off")
    for name, value in options.items():
        model.setOptionValue(name, value)
    return model


def highs_status(model: highspy.Highs) -> Status:
    """The :class:`Status` of the model's last solve: optimal, infeasible, stopped at the ``objective_bound``
    (``CUTOFF``), at the time or memory limit (``TIME_LIMIT``), else ``FAILED`` (an iteration limit, numerical
    trouble, unbounded-or-infeasible)."""
    return _STATUS.get(model.getModelStatus(), Status.FAILED)


def run_highs(model: highspy.Highs, time_limit: float | None = None, quiet: bool = False) -> Status:
    """Solve ``model`` within ``time_limit`` seconds (``None``: no limit; ``<= 0``: ``TIME_LIMIT`` at once, no
    solve) and return its :class:`Status`. ``quiet``: also silence the process's stdout during the solve (HiGHS'
    QP solver ``printf``-s diagnostics that ``output_flag`` does not stop, see :func:`native_stdout_silenced`)."""
    if time_limit is not None and time_limit <= 0:
        return Status.TIME_LIMIT
    model.setOptionValue("time_limit", math.inf if time_limit is None else float(time_limit))
    with native_stdout_silenced() if quiet else nullcontext():
        model.run()
    return highs_status(model)


@contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """Point the process's file descriptor 1 at ``/dev/null`` inside the block.

    HiGHS prints its banner and its QP solver's diagnostics ("dimension mismatch", "degeneracy? ...") with C's
    ``printf``, which ``output_flag`` does not silence; they would land in the CLI's output. Python's and C's
    buffers are flushed on entry and exit, so nothing written before or after is lost or reordered. Costs two
    ``dup2`` calls (microseconds).
    """
    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    libc.fflush(None)
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
