"""The solver layer (mistered.certify.solvers): statuses, time limits, the memory cap, the encodings written once."""

import itertools
import math
import time

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linprog

from mistered.certify.solvers.big_m import add_relu_layer
from mistered.certify.solvers.highs import new_highs, run_highs
from mistered.certify.solvers.mip import (MipModel, SparseModel, pywraplp_status, scip_parameters, solve_milp)
from mistered.certify.solvers.status import SolveResult, Status
from mistered.certify.solvers.triangle import TriangleRelaxation, triangle_rows


def _lp(cost, a, row_lo, row_hi, col_lo, col_hi, **options):
    """A HiGHS model of ``min cost·x`` s.t. ``row_lo <= a x <= row_hi``, ``col_lo <= x <= col_hi``."""
    model = new_highs(**options)
    n = len(cost)
    model.addCols(n, np.asarray(cost, float), np.asarray(col_lo, float), np.asarray(col_hi, float), 0,
                  np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0))
    a = sp.csr_matrix(np.asarray(a, float))
    model.addRows(a.shape[0], np.asarray(row_lo, float), np.asarray(row_hi, float), a.nnz,
                  a.indptr[:-1].astype(np.int32), a.indices.astype(np.int32), a.data)
    return model


def _market_split(m: int = 3, n: int = 30, seed: int = 0):
    """A market split instance (Cornuéjols & Dawande 1998): ``a x + s - t = b``, ``x`` binary, minimise
    ``Σ s + Σ t``; hard for branch and bound (thousands of nodes at n = 30)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 100, size=(m, n)).astype(float)
    b = np.floor(a.sum(1) / 2)
    model = SparseModel()
    x = np.array([model.binary() for _ in range(n)])
    s, t = (model.vars(np.zeros(m), np.full(m, np.inf), cost=1.0) for _ in range(2))
    model.rows(b, b, sp.hstack([sp.csr_matrix(a), sp.identity(m), -sp.identity(m)]), np.concatenate([x, s, t]))
    return model.problem()


def test_status_values_are_the_old_strings():
    assert [s.value for s in Status] == ["optimal", "infeasible", "cutoff", "time_limit", "failed"]
    assert Status.FAILED == "failed" and isinstance(Status.INFEASIBLE, str)


def test_highs_reports_optimal_with_the_optimum():
    model = _lp([1.0, 1.0], [[1.0, 2.0]], [1.0], [np.inf], [0.0, 0.0], [np.inf, np.inf])
    assert run_highs(model) is Status.OPTIMAL
    assert model.getInfo().objective_function_value == pytest.approx(0.5)


def test_highs_reports_an_empty_lp_infeasible():
    model = _lp([1.0], [[1.0]], [2.0], [np.inf], [0.0], [1.0])  # x >= 2 and x <= 1
    assert run_highs(model) is Status.INFEASIBLE


def test_highs_stops_at_the_objective_bound_as_cutoff():
    rng = np.random.default_rng(0)
    n, m = 60, 40
    a = rng.random((m, n))
    model = _lp(np.ones(n), a, np.ones(m), np.full(m, np.inf), np.zeros(n), np.full(n, np.inf))
    assert run_highs(model) is Status.OPTIMAL
    optimum = model.getInfo().objective_function_value
    model.clearSolver()
    model.setOptionValue("objective_bound", 0.1 * optimum)  # dual simplex: stops once its bound passes this
    assert run_highs(model) is Status.CUTOFF


def test_highs_time_limit_returns_time_limit_and_zero_time_skips_the_solve():
    rng = np.random.default_rng(0)
    n, m = 400, 300
    model = _lp(-rng.random(n), rng.random((m, n)), np.full(m, -np.inf), np.ones(m), np.zeros(n),
                np.full(n, np.inf))
    start = time.perf_counter()
    assert run_highs(model, time_limit=1e-4) is Status.TIME_LIMIT
    assert time.perf_counter() - start < 5.0
    assert run_highs(model, time_limit=0.0) is Status.TIME_LIMIT
    assert run_highs(model) is Status.OPTIMAL  # (the limit does not stick to the model)


def test_highs_prints_nothing(capfd):
    model = _lp([1.0], [[1.0]], [1.0], [np.inf], [0.0], [2.0])
    run_highs(model)
    assert capfd.readouterr().out == ""


@pytest.mark.parametrize("solver", ["scip", "highs"])
def test_milp_matches_brute_force_on_a_small_knapsack(solver):
    rng = np.random.default_rng(1)
    value, weight = rng.integers(1, 20, 8).astype(float), rng.integers(1, 10, 8).astype(float)
    model = SparseModel()
    x = [model.var(0.0, 1.0, cost=-v, integer=True) for v in value]
    model.row(-np.inf, 20.0, x, weight)
    result = solve_milp(model.problem(), solver)
    best = max(value @ np.array(p) for p in itertools.product([0, 1], repeat=8) if weight @ np.array(p) <= 20)
    assert result.status is Status.OPTIMAL
    assert -result.objective == pytest.approx(best) and result.bound == pytest.approx(result.objective)
    assert weight @ np.round(result.solution) <= 20


@pytest.mark.parametrize("solver", ["scip", "highs"])
def test_milp_reports_an_empty_problem_infeasible(solver):
    model = SparseModel()
    a, b = model.binary(), model.binary()
    model.row(3.0, np.inf, [a, b], np.array([1.0, 1.0]))  # a + b >= 3 with binaries
    result = solve_milp(model.problem(), solver)
    assert result.status is Status.INFEASIBLE and result.solution is None


@pytest.mark.parametrize("solver", ["scip", "highs"])
def test_milp_time_limit_on_a_hard_problem_returns_anytime_bounds_in_bounded_time(solver):
    start = time.perf_counter()
    result = solve_milp(_market_split(), solver, time_limit=0.3)
    assert time.perf_counter() - start < 10.0  # (a generous bound: presolve and tear-down on a loaded machine)
    assert result.status is Status.TIME_LIMIT
    assert result.bound <= result.objective  # anytime: a valid lower bound below the incumbent (if any)


def test_scip_memory_cap_stops_the_search():
    assert "limits/memory = 4096.0" in scip_parameters()
    result = solve_milp(_market_split(), "scip", time_limit=20.0, memory_limit_mb=1.0)
    assert result.status is Status.TIME_LIMIT and result.seconds < 10.0


def test_milp_rejects_an_unknown_solver():
    from mistered.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="solver must be one of"):
        solve_milp(SparseModel().problem(), "gurobi")


def test_pywraplp_outcomes_map_to_statuses():
    from ortools.linear_solver import pywraplp

    s = pywraplp.Solver
    assert [pywraplp_status(c) for c in (s.OPTIMAL, s.INFEASIBLE, s.FEASIBLE, s.NOT_SOLVED, s.ABNORMAL)] == [
        Status.OPTIMAL, Status.INFEASIBLE, Status.TIME_LIMIT, Status.TIME_LIMIT, Status.FAILED]


def _tiny_net(seed: int):
    rng = np.random.default_rng(seed)
    sizes = (2, 4, 3, 1)
    return [rng.standard_normal((m, n)) for n, m in zip(sizes[:-1], sizes[1:])], \
        [0.5 * rng.standard_normal(m) for m in sizes[1:]]


def _interval_bounds(ws, bs, lo, hi):
    """Pre-activation bounds of every hidden layer over the box (interval arithmetic)."""
    out = []
    for w, b in zip(ws[:-1], bs[:-1]):
        mid, rad = (lo + hi) / 2, (hi - lo) / 2
        l, u = w @ mid + b - np.abs(w) @ rad, w @ mid + b + np.abs(w) @ rad
        out.append((l, u))
        lo, hi = np.maximum(l, 0.0), np.maximum(u, 0.0)
    return out


def _brute_force_max(ws, bs, lo, hi):
    """The exact maximum of the net's output over the box: one LP per activation pattern (its linear region)."""
    best = -np.inf
    widths = [w.shape[0] for w in ws[:-1]]
    for pattern in itertools.product([0, 1], repeat=sum(widths)):
        masks = np.split(np.array(pattern, float), np.cumsum(widths)[:-1])
        mat, off, rows, rhs = np.eye(2), np.zeros(2), [], []
        for w, b, mask in zip(ws[:-1], bs[:-1], masks):
            z_mat, z_off = w @ mat, w @ off + b
            sign = np.where(mask > 0, -1.0, 1.0)  # active: z >= 0 (-z <= 0); inactive: z <= 0
            rows.append(sign[:, None] * z_mat)
            rhs.append(-sign * z_off)
            mat, off = mask[:, None] * z_mat, mask * z_off
        out_mat, out_off = ws[-1] @ mat, ws[-1] @ off + bs[-1]
        res = linprog(-out_mat[0], A_ub=np.vstack(rows), b_ub=np.concatenate(rhs), bounds=list(zip(lo, hi)))
        if res.status == 0:
            best = max(best, -res.fun + out_off[0])
    return best


@pytest.mark.parametrize("seed", range(3))
def test_big_m_encoding_agrees_with_brute_force_on_both_builders(seed):
    ws, bs = _tiny_net(seed)
    lo, hi = np.full(2, -1.0), np.full(2, 1.0)
    pre = _interval_bounds(ws, bs, lo, hi)
    exact = _brute_force_max(ws, bs, lo, hi)

    sparse = SparseModel()  # the distance MILP's builder, solved by both MILP solvers
    prev = sparse.vars(lo, hi).tolist()
    for (w, b), (l, u) in zip(zip(ws[:-1], bs[:-1]), pre):
        prev, _ = add_relu_layer(sparse, prev, w, b, l, u)
    out = sparse.var(-np.inf, np.inf, cost=-1.0)
    keep = [i for i, v in enumerate(prev) if v is not None]
    sparse.row(bs[-1][0], bs[-1][0], [out] + [prev[i] for i in keep], np.concatenate([[1.0], -ws[-1][0][keep]]))
    for solver in ("scip", "highs"):
        result = solve_milp(sparse.problem(), solver)
        assert result.status is Status.OPTIMAL and -result.objective == pytest.approx(exact, abs=1e-6)

    model = MipModel("SCIP", relax=False)  # LipMIP's builder
    prev = [model.var(a, b) for a, b in zip(lo, hi)]
    for (w, b), (l, u) in zip(zip(ws[:-1], bs[:-1]), pre):
        prev, _ = add_relu_layer(model, prev, w, b, l, u)
    keep = [i for i, v in enumerate(prev) if v is not None]
    objective = model.solver.Objective()
    for i in keep:
        objective.SetCoefficient(prev[i], float(ws[-1][0][i]))
    objective.SetMaximization()
    result = model.solve(time_limit=30.0)
    assert result.status is Status.OPTIMAL and result.objective + bs[-1][0] == pytest.approx(exact, abs=1e-6)
    assert result.bound >= result.objective - 1e-9  # (a maximisation: the bound is above)


def test_big_m_gives_stable_relus_no_binary():
    model = SparseModel()
    x = model.var(-1.0, 1.0)
    outs, phases = add_relu_layer(model, [x], np.array([[1.0], [1.0], [1.0]]), np.array([2.0, -2.0, 0.0]),
                                  np.array([1.0, -3.0, -1.0]), np.array([3.0, -1.0, 1.0]))
    assert phases[0] == 1 and phases[1] == 0 and outs[1] is None
    assert model.problem().integer.sum() == 1  # only the unstable ReLU has a binary


def test_triangle_rows_hold_on_the_relu_and_cut_above_the_chord():
    lower, upper = np.array([-1.0, -2.0]), np.array([3.0, 1.0])
    rows, row_lo, row_hi = triangle_rows(np.array([0, 1]), np.array([2, 3]), lower, upper, 4)
    dense = rows.toarray()

    def inside(z, zhat):
        value = dense @ np.concatenate([z, zhat])
        return bool(np.all(value >= row_lo - 1e-12) and np.all(value <= row_hi + 1e-12))

    for t in np.linspace(0, 1, 7):  # (ẑ, relu(ẑ)) and the triangle's corners are inside
        zhat = lower + t * (upper - lower)
        assert inside(np.maximum(zhat, 0.0), zhat)
    assert inside(np.zeros(2), lower) and inside(upper, upper) and inside(np.zeros(2), np.zeros(2))
    assert not inside(np.array([1.0, 0.5]), np.zeros(2))  # above the chord at ẑ = 0
    assert not inside(np.array([0.0, 0.0]), np.array([0.5, 0.5]))  # below z >= ẑ


def test_triangle_relaxation_returns_time_limit_when_no_time_is_left():
    rng = np.random.default_rng(0)
    ws, bs = [rng.standard_normal((5, 3)), rng.standard_normal((2, 5))], [rng.standard_normal(5), np.zeros(2)]
    x0 = np.full(3, 0.5)
    lower, upper = np.full(5, -1.0), np.full(5, 1.0)
    relax = TriangleRelaxation(ws, bs, x0, "linf", np.zeros(3), np.ones(3), lower, upper, 0)
    relax.set_node(np.zeros(5, np.int8), 1)
    assert relax.solve(time_limit=0.0) is Status.TIME_LIMIT
    unlimited, limited = relax.solve(), relax.solve(time_limit=10.0)  # enough time: the same answer
    assert not isinstance(unlimited, Status) and limited.bound == pytest.approx(unlimited.bound, rel=1e-9)


def test_solve_result_defaults_say_nothing_is_known():
    result = SolveResult(Status.FAILED)
    assert result.objective == math.inf and result.bound == -math.inf and result.solution is None


@pytest.mark.parametrize("method", ["branch-l2", "branch-linf", "mip-linf"])
def test_a_tiny_time_limit_on_a_hard_search_returns_timeout_with_valid_bounds_in_bounded_time(method):
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from _nets import random_box_crossing_net

    from mistered.certify.exact.branch import branch_and_bound_distance
    from mistered.certify.exact.mip import mindist_mip

    net = random_box_crossing_net(0, (40, 40, 40, 3))
    x = 0.5 + 0.1 * torch.randn(40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    start = time.perf_counter()
    if method == "mip-linf":
        result = mindist_mip(net, x, "linf", time_limit=0.3)
    else:
        result = branch_and_bound_distance(net, x, norm=method.split("-")[1], time_limit=0.3)
    assert time.perf_counter() - start < 10.0  # (generous: the point is that it stops, not how fast)
    assert result.status == "timeout" and 0.0 <= result.lower <= result.upper


def test_pywraplp_model_stops_at_its_time_limit_with_the_status():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 100, size=(3, 30)).astype(float)
    model = MipModel("SCIP", relax=False)  # the market split instance again, on LipMIP's builder
    x = [model.binary() for _ in range(30)]
    slack = [(model.var(0.0, np.inf), model.var(0.0, np.inf)) for _ in range(3)]
    objective = model.solver.Objective()
    for i, (s, t) in enumerate(slack):
        model.row(np.floor(a[i].sum() / 2), np.floor(a[i].sum() / 2), x + [s, t], np.concatenate([a[i], [1.0, -1.0]]))
        objective.SetCoefficient(s, 1.0)
        objective.SetCoefficient(t, 1.0)
    objective.SetMinimization()
    start = time.perf_counter()
    result = model.solve(time_limit=0.3)
    assert time.perf_counter() - start < 10.0
    assert result.status is Status.TIME_LIMIT
    assert math.isnan(result.objective) or result.bound <= result.objective + 1e-9


def test_l2_cut_bound_that_runs_out_of_time_returns_its_last_valid_round(monkeypatch):
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from _nets import random_box_crossing_net

    from mistered.certify.exact.branch import _relaxation
    from mistered.certify.exact.mip import margin_net
    from mistered.certify.exact.region_search import RegionSearch, start_search
    from mistered.certify.solvers.l2_cuts import L2CutRelaxation

    d = 100
    x = torch.rand(d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    net, x0, c, _, _ = start_search(random_box_crossing_net(0, (d, 12, 10, 3)), x, "l2", None, None, (0.0, 1.0))
    search = RegionSearch(margin_net(net, c), x0, "l2", (0.0, 1.0))
    search.shrink(0.8)
    rng = np.random.default_rng(0)
    n_hidden = 12 + 10
    splits = np.where(rng.random(n_hidden) < 0.3, rng.choice([-1, 1], n_hidden), 0).astype(np.int8)
    target = [k for k in range(3) if k != c][0]
    relaxations = []
    for _ in range(2):  # (two fresh models: the second must not start from the first's cuts)
        relax = _relaxation(search, x0, "l2", c, l2_cuts=True)
        relax.set_node(splits, target)
        relaxations.append(relax)
    full = relaxations[0].solve(0.3)  # this node takes two cut rounds
    assert not isinstance(full, Status) and full.bound > 0.3

    calls = []
    original = L2CutRelaxation._run

    def one_round_then_out_of_time(self, time_limit=None):
        calls.append(time_limit)
        return original(self, time_limit) if len(calls) == 1 else Status.TIME_LIMIT

    monkeypatch.setattr(L2CutRelaxation, "_run", one_round_then_out_of_time)
    partial = relaxations[1].solve(0.3, time_limit=60.0)
    assert len(calls) == 2 and 0.0 < calls[0] <= 60.0  # (a second round was wanted, and ran out of time)
    assert not isinstance(partial, Status)  # anytime: the first round's bound, valid
    assert 0.0 <= partial.bound <= full.bound * (1 + 1e-9)
