"""Mixed-integer linear programs: the one place that builds and solves them on SCIP (OR-Tools) or HiGHS.

* :class:`SparseModel` collects a MILP as numpy arrays (columns, then rows as sparse triplets) and
  :func:`solve_milp` solves it on SCIP through OR-Tools' model builder (filled from the sparse matrix in one call)
  or on HiGHS through ``scipy.optimize.milp``, within a time limit, returning a
  :class:`~mistered.certify.solvers.status.SolveResult` with the anytime bounds.
* :class:`MipModel` is the incremental ``pywraplp`` builder LipMIP grows its model in (objectives, re-solves);
  :func:`pywraplp_status` maps its outcomes to :class:`~mistered.certify.solvers.status.Status`;
  :func:`solve_maximisation_on_highs` solves such a model on HiGHS through ``highspy`` (LipMIP's default).

Memory cap: SCIP keeps its branch-and-bound tree in memory and, unlimited by default, can grow until the machine
swaps; every SCIP model made here gets ``limits/memory`` (:data:`MEMORY_LIMIT_MB`, MB), at which it stops with its
best bounds (``Status.TIME_LIMIT``). HiGHS' MILP has no memory option: its time limit is the only cap.

Example:
    >>> model = SparseModel()
    >>> x = model.var(0.0, 1.0, cost=1.0); a = model.binary()
    >>> model.row(0.5, math.inf, [x, a], np.array([1.0, 1.0]))
    >>> result = solve_milp(model.problem(), time_limit=5.0)   # result.status, .objective, .bound, .solution
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from ...errors import InvalidInputError
from .highs import new_highs, run_highs
from .status import SolveResult, Status

__all__ = ["MilpProblem", "SparseModel", "MipModel", "solve_milp", "pywraplp_status", "scip_parameters",
           "SCIP_PARAMETERS", "MEMORY_LIMIT_MB", "MILP_SOLVERS", "solve_maximisation_on_highs"]

MILP_SOLVERS = ("scip", "highs")
#: SCIP's cutting planes off: on the big-M models of certify/ they cost 10-30x the solve time (LipMIP, measured)
SCIP_PARAMETERS = "separating/maxrounds = 0\nseparating/maxroundsroot = 0\n"
#: SCIP's memory cap in MB (``limits/memory``); SCIP stops there with its bounds so far
MEMORY_LIMIT_MB = 4096.0
_TINY = 1e-13  # MipModel drops coefficients below this (dead pixels' 1e-30 only slow the LP down)


def scip_parameters(extra: str = "", memory_limit_mb: float = MEMORY_LIMIT_MB) -> str:
    """SCIP's parameter string for every model here: :data:`SCIP_PARAMETERS`, the memory cap, then ``extra``
    (lines ``name = value``)."""
    return f"{SCIP_PARAMETERS}limits/memory = {float(memory_limit_mb)}\n{extra}"


@dataclass
class MilpProblem:
    """``min costᵀx`` s.t. ``row_lo <= matrix @ x <= row_hi``, ``lb <= x <= ub``, ``x_i`` integer where
    ``integer[i]``; ``(n,)`` arrays, ``matrix`` ``(m, n)`` CSR, ``(m,)`` row bounds (``±inf``: none)."""

    cost: np.ndarray
    integer: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    matrix: sp.csr_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray


class SparseModel:
    """A MILP built column by column and row by row into arrays (variables are column indices); the
    :class:`~mistered.certify.solvers.big_m.LinearBuilder` that :func:`~mistered.certify.solvers.big_m.add_relu_big_m`
    adds to. Exact zeros are dropped from rows, nothing else."""

    def __init__(self) -> None:
        self._lb: list[float] = []
        self._ub: list[float] = []
        self._cost: list[float] = []
        self._integer: list[bool] = []
        self._data: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._cols: list[np.ndarray] = []
        self._row_lo: list[float] = []
        self._row_hi: list[float] = []

    @property
    def n_vars(self) -> int:
        return len(self._lb)

    def var(self, lo: float, hi: float, cost: float = 0.0, integer: bool = False) -> int:
        """A new variable in ``[lo, hi]``; returns its column."""
        self._lb.append(float(lo))
        self._ub.append(float(hi))
        self._cost.append(float(cost))
        self._integer.append(integer)
        return len(self._lb) - 1

    def vars(self, lo: np.ndarray, hi: np.ndarray, cost: float = 0.0) -> np.ndarray:
        """``len(lo)`` new continuous variables in ``[lo, hi]``, each with objective coefficient ``cost``."""
        return np.array([self.var(a, b, cost) for a, b in zip(np.asarray(lo).tolist(), np.asarray(hi).tolist())],
                        dtype=np.int64)

    def binary(self) -> int:
        """A new 0/1 variable."""
        return self.var(0.0, 1.0, integer=True)

    def row(self, lo: float, hi: float, variables: list[int] | np.ndarray, coefs: np.ndarray) -> None:
        """The row ``lo <= Σ coefs[i] x[variables[i]] <= hi``."""
        self.rows(np.array([lo], dtype=float), np.array([hi], dtype=float),
                  sp.csr_matrix(np.asarray(coefs, dtype=float)[None]), np.asarray(variables, dtype=np.int64))

    def rows(self, lo: np.ndarray, hi: np.ndarray, matrix: sp.spmatrix | np.ndarray, variables: np.ndarray) -> None:
        """The rows ``lo <= matrix @ x[variables] <= hi`` (``matrix`` ``(m, k)``, ``variables`` ``(k,)``)."""
        coo = sp.coo_matrix(matrix)
        keep = coo.data != 0
        start = len(self._row_lo)
        self._data.append(coo.data[keep])
        self._rows.append(coo.row[keep] + start)
        self._cols.append(np.asarray(variables, dtype=np.int64)[coo.col[keep]])
        self._row_lo.extend(np.asarray(lo, dtype=float).tolist())
        self._row_hi.extend(np.asarray(hi, dtype=float).tolist())

    def problem(self) -> MilpProblem:
        """The arrays of the model so far."""
        n, m = len(self._lb), len(self._row_lo)
        cat = (lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype))
        matrix = sp.csr_matrix((cat(self._data, float), (cat(self._rows, np.int64), cat(self._cols, np.int64))),
                               shape=(m, n))
        return MilpProblem(np.array(self._cost), np.array(self._integer, dtype=float), np.array(self._lb),
                           np.array(self._ub), matrix, np.array(self._row_lo), np.array(self._row_hi))


def solve_milp(problem: MilpProblem, solver: str = "scip", time_limit: float | None = None,
               parameters: str = "", memory_limit_mb: float = MEMORY_LIMIT_MB) -> SolveResult:
    """Solve ``problem`` (minimisation) on ``solver`` ("scip" or "highs") within ``time_limit`` seconds (``None``:
    no limit; at least 1 ms is given). ``parameters``: extra SCIP lines (``name = value``), after
    :func:`scip_parameters`. Returns the status, the incumbent's objective and values, the best proven bound and
    the seconds; ``FAILED`` (a solver error) carries no values."""
    if solver not in MILP_SOLVERS:
        raise InvalidInputError(f"solver must be one of {MILP_SOLVERS}, got {solver!r}")
    start = time.perf_counter()
    limit = None if time_limit is None else max(float(time_limit), 1e-3)
    if solver == "highs":
        result = _solve_highs(problem, limit)
    else:
        result = _solve_scip(problem, limit, scip_parameters(parameters, memory_limit_mb))
    result.seconds = time.perf_counter() - start
    return result


def _solve_highs(problem: MilpProblem, time_limit: float | None) -> SolveResult:
    """The MILP on HiGHS through ``scipy.optimize.milp`` (relative gap 1e-9)."""
    options: dict[str, Any] = {"mip_rel_gap": 1e-9, "disp": False}
    if time_limit is not None:
        options["time_limit"] = time_limit
    res = milp(problem.cost, integrality=problem.integer, bounds=Bounds(problem.lb, problem.ub),
               constraints=LinearConstraint(problem.matrix, problem.row_lo, problem.row_hi), options=options)
    if res.status == 0:
        return SolveResult(Status.OPTIMAL, float(res.fun), float(res.fun), res.x)
    if res.status == 2:
        return SolveResult(Status.INFEASIBLE, math.inf, math.inf)
    if res.status == 1:  # time (or iteration) limit
        objective = math.inf if res.x is None else float(res.fun)
        bound = getattr(res, "mip_dual_bound", None)
        return SolveResult(Status.TIME_LIMIT, objective, -math.inf if bound is None else float(bound), res.x)
    return SolveResult(Status.FAILED, message=f"HiGHS: {res.message}")


def _solve_scip(problem: MilpProblem, time_limit: float | None, parameters: str) -> SolveResult:
    """The MILP on SCIP through OR-Tools' model builder, filled in one call from the CSR matrix."""
    from ortools.linear_solver.python import model_builder as mb

    model = mb.Model()
    model.helper.fill_model_from_sparse_data(problem.lb, problem.ub, problem.cost, problem.row_lo, problem.row_hi,
                                             problem.matrix)
    for col in np.flatnonzero(problem.integer).tolist():
        model.helper.set_var_integrality(col, True)
    solver = mb.Solver("scip")
    if not solver.solver_is_supported():
        return SolveResult(Status.FAILED, message="this OR-Tools build has no SCIP; use solver='highs'")
    solver.set_solver_specific_parameters(parameters)
    if time_limit is not None:
        solver.set_time_limit_in_seconds(time_limit)
    status = solver.solve(model)
    if status == mb.SolveStatus.OPTIMAL:
        value = solver.objective_value
        return SolveResult(Status.OPTIMAL, value, value, solver.values(model.get_variables()).to_numpy())
    if status == mb.SolveStatus.INFEASIBLE:
        return SolveResult(Status.INFEASIBLE, math.inf, math.inf)
    if status == mb.SolveStatus.FEASIBLE:  # stopped by the time or memory limit with an incumbent
        return SolveResult(Status.TIME_LIMIT, solver.objective_value, solver.best_objective_bound,
                           solver.values(model.get_variables()).to_numpy())
    if status == mb.SolveStatus.NOT_SOLVED:  # stopped before any incumbent
        return SolveResult(Status.TIME_LIMIT)
    return SolveResult(Status.FAILED, message=f"SCIP: {status.name}")


class MipModel:
    """A thin builder over OR-Tools' ``pywraplp`` with dense coefficient rows (LipMIP's incremental model);
    SCIP gets :func:`scip_parameters` (cuts off, the memory cap)."""

    def __init__(self, solver_name: str, relax: bool) -> None:
        from ortools.linear_solver import pywraplp

        self.pywraplp = pywraplp
        self.solver = pywraplp.Solver.CreateSolver(solver_name)
        if self.solver is None:
            raise InvalidInputError(f"OR-Tools solver {solver_name!r} is not available in this build")
        if solver_name == "SCIP":  # SCIP's cutting planes cost 10-30x the solve time on these big-M models
            self.solver.SetSolverSpecificParametersAsString(scip_parameters())
        self.relax = relax
        self.binaries = 0

    def var(self, lo: float, hi: float) -> Any:
        return self.solver.NumVar(float(lo), float(hi), "")

    def binary(self) -> Any:
        self.binaries += 1
        return self.solver.NumVar(0.0, 1.0, "") if self.relax else self.solver.BoolVar("")

    def row(self, lo: float, hi: float, variables: list[Any], coefs: np.ndarray) -> None:
        ct = self.solver.RowConstraint(float(lo), float(hi), "")
        for v, a in zip(variables, coefs.tolist()):
            if abs(a) > _TINY:  # coefficients of 1e-30 (dead pixels) only slow the LP down
                ct.SetCoefficient(v, a)

    def solve(self, time_limit: float | None = None, params: Any = None) -> SolveResult:
        """Solve within ``time_limit`` seconds (``None``: none; at least 1 ms is given) with the optional
        ``pywraplp.MPSolverParameters``. The status is :func:`pywraplp_status`'s; ``objective`` and ``bound`` are
        in the model's own sense (a maximisation's ``bound`` is an upper bound), ``objective`` ``nan`` when no
        incumbent was found and ``bound`` ``nan`` when the solver proved none; ``solution`` is left to the caller
        (its variables are ``pywraplp`` objects)."""
        start = time.perf_counter()
        if time_limit is not None:
            self.solver.SetTimeLimit(max(1, int(1000 * time_limit)))
        code = self.solver.Solve() if params is None else self.solver.Solve(params)
        s, objective = self.pywraplp.Solver, self.solver.Objective()
        found = code in (s.OPTIMAL, s.FEASIBLE)
        return SolveResult(pywraplp_status(code, self.pywraplp), objective.Value() if found else math.nan,
                           objective.BestBound() if found else math.nan, None, time.perf_counter() - start)


def pywraplp_status(code: int, pywraplp: Any = None) -> Status:
    """The :class:`Status` of a ``pywraplp`` result code: ``FEASIBLE`` and ``NOT_SOLVED`` (stopped by a limit)
    are ``TIME_LIMIT``; ``ABNORMAL``, ``MODEL_INVALID`` and ``UNBOUNDED`` are ``FAILED``."""
    if pywraplp is None:
        from ortools.linear_solver import pywraplp
    s = pywraplp.Solver
    return {s.OPTIMAL: Status.OPTIMAL, s.INFEASIBLE: Status.INFEASIBLE, s.FEASIBLE: Status.TIME_LIMIT,
            s.NOT_SOLVED: Status.TIME_LIMIT}.get(code, Status.FAILED)


def _highs_model(model: MipModel) -> highspy.HighsLp:
    """``model``'s MILP (exported from OR-Tools), a maximisation, as the HiGHS minimisation of ``-objective``."""
    from ortools.linear_solver import linear_solver_pb2

    proto = linear_solver_pb2.MPModelProto()
    model.solver.ExportModelToProto(proto)
    if not proto.maximize:
        raise ValueError("solve_maximisation_on_highs needs a maximisation")  # pragma: no cover - a caller's bug
    columns, constraints = proto.variable, proto.constraint
    counts = [len(c.var_index) for c in constraints]
    entries = np.array([a for c in constraints for a in c.coefficient], dtype=float)
    cols = np.array([i for c in constraints for i in c.var_index], dtype=np.int64)
    matrix = sp.csc_matrix((entries, (np.repeat(np.arange(len(constraints)), counts), cols)),
                           shape=(len(constraints), len(columns)))
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = len(columns), len(constraints)
    lp.col_cost_ = np.array([-v.objective_coefficient for v in columns])
    lp.col_lower_ = np.array([v.lower_bound for v in columns])
    lp.col_upper_ = np.array([v.upper_bound for v in columns])
    lp.row_lower_ = np.array([c.lower_bound for c in constraints])
    lp.row_upper_ = np.array([c.upper_bound for c in constraints])
    lp.offset_ = -proto.objective_offset
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = matrix.indptr, matrix.indices, matrix.data
    integer, continuous = highspy.HighsVarType.kInteger, highspy.HighsVarType.kContinuous
    lp.integrality_ = [integer if v.is_integer else continuous for v in columns]
    return lp


def solve_maximisation_on_highs(model: MipModel, time_limit: float | None, mip_gap: float) -> SolveResult:
    """Solve the MILP built in ``model`` (OR-Tools, a maximisation) on HiGHS through ``highspy`` (presolve on, one
    thread, silent) to the relative gap ``mip_gap`` within ``time_limit`` seconds.

    Returns the :class:`~mistered.certify.solvers.status.SolveResult` of the equivalent MINIMISATION of ``-objective``
    (so ``-result.objective`` is the incumbent and ``-result.bound`` the proven upper bound); ``solution`` is indexed
    by the OR-Tools variables' ``index()``.
    """
    highs = new_highs(presolve=True, mip_rel_gap=mip_gap)
    highs.passModel(_highs_model(model))
    status = run_highs(highs, time_limit)
    info = highs.getInfo()
    found = int(info.primal_solution_status) == 2  # kSolutionStatusFeasible
    objective = info.objective_function_value if found else math.inf
    solution = np.array(highs.getSolution().col_value) if found else None
    started = info.mip_node_count >= 0  # stopped in presolve, HiGHS reports a dual bound of 0 that bounds nothing
    bound = info.mip_dual_bound if started and status in (Status.OPTIMAL, Status.TIME_LIMIT) else -math.inf
    bound = bound if math.isfinite(bound) else -math.inf
    if status is Status.OPTIMAL:
        bound = min(bound, objective)
    return SolveResult(status, objective, bound, solution)
