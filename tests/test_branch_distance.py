"""Branch and bound over ReLU splits is exact: it matches GeoCert and the MIP, and its anytime bounds are valid.

Its brute-force, boundary-point and attack tests are test_geocert.py's, run for both searches."""

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mistered.certify.exact.branch import _CUTS_FROM, _relaxation, branch_and_bound_distance
from mistered.certify.exact import certify_geocert, geocert
from mistered.certify.exact.region_search import start_search
from mistered.certify.exact.region_search import RegionSearch
from mistered.certify.exact.mip import margin_net, mindist_mip
from mistered.certify.solvers.projection import project_l2
from mistered.certify.solvers.l2_cuts import FirstLayerDistance
from mistered.certify.solvers.status import Status
from mistered.errors import InvalidInputError
from _nets import random_box_crossing_net

_ORDER = {"l1": 1, "l2": 2, "linf": float("inf")}


def _point(seed: int, d: int) -> torch.Tensor:
    return torch.rand(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
@pytest.mark.parametrize("seed,sizes", [(1, (10, 12, 12, 4)), (3, (6, 6, 6, 3)), (4, (8, 10, 5))])
def test_radius_equals_geocert_on_small_multiclass_nets(norm, seed, sizes):
    net, x0 = random_box_crossing_net(seed, sizes), _point(seed, sizes[0])
    exact, result = geocert(net, x0, norm=norm), branch_and_bound_distance(net, x0, norm=norm)
    assert exact.status == result.status == "exact"
    assert result.upper == pytest.approx(exact.upper, rel=1e-6)
    assert result.lower <= result.upper <= result.lower * (1 + 1e-7)  # (a node closed within 1e-7 of its bound)


@pytest.mark.parametrize("norm", ["linf", "l1"])
@pytest.mark.parametrize("seed", [5, 6])
def test_radius_equals_the_mip(norm, seed):
    net, x0 = random_box_crossing_net(seed, (8, 10, 10, 4)), _point(seed, 8)
    mip, result = mindist_mip(net, x0, norm=norm), branch_and_bound_distance(net, x0, norm=norm)
    assert mip.status == result.status == "exact"
    assert result.upper == pytest.approx(mip.upper, rel=1e-6)


def test_decision_mode_certifies_below_and_attacks_above_the_radius():
    net, x0 = random_box_crossing_net(1, (10, 12, 12, 4)), _point(1, 10)
    radius = branch_and_bound_distance(net, x0, norm="l2").upper
    below = branch_and_bound_distance(net, x0, norm="l2", decision_eps=0.9 * radius)
    above = branch_and_bound_distance(net, x0, norm="l2", decision_eps=1.1 * radius)
    assert below.status == "certified" and below.lower >= 0.9 * radius
    assert above.status == "attacked" and above.upper <= 1.1 * radius


def test_time_limit_returns_valid_bounds_with_status_timeout():
    net, x0 = random_box_crossing_net(2, (10, 12, 12, 4)), _point(2, 10)
    exact = mindist_mip(net, x0, norm="linf").upper
    start = time.perf_counter()
    result = branch_and_bound_distance(net, x0, norm="linf", time_limit=0.0)
    assert time.perf_counter() - start < 1.0
    assert result.status == "timeout"
    assert result.lower <= exact * (1 + 1e-9) and exact <= result.upper * (1 + 1e-9)


def test_a_seed_above_the_radius_keeps_it_exact_and_one_below_is_returned():
    net, x0 = random_box_crossing_net(3, (6, 6, 6, 3)), _point(3, 6)
    plain = branch_and_bound_distance(net, x0, norm="l2")
    seeded = branch_and_bound_distance(net, x0, norm="l2", upper_bound=plain.upper * 1.05)
    assert seeded.upper == pytest.approx(plain.upper, rel=1e-9)
    assert branch_and_bound_distance(net, x0, norm="l2", upper_bound=plain.upper * 0.5).upper == plain.upper * 0.5


def test_certify_geocert_with_branch_search_matches_regions():
    net = random_box_crossing_net(3, (6, 6, 6, 3))
    x = torch.stack([_point(s, 6) for s in range(3)])
    y = net(x).argmax(1)
    regions = certify_geocert(net, x, y, norm="linf")
    branch = certify_geocert(net, x, y, norm="linf", search="branch")
    assert torch.allclose(branch.radius, regions.radius, rtol=1e-6)


def test_unknown_norm_and_search_are_rejected():
    net, x0 = random_box_crossing_net(1, (4, 5, 3)), _point(1, 4)
    with pytest.raises(InvalidInputError, match="norm"):
        branch_and_bound_distance(net, x0, norm="l3")
    with pytest.raises(InvalidInputError, match="search"):
        certify_geocert(net, x0[None], torch.tensor([0]), search="bfs")


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["l1", "l2", "linf"]))
def test_bounds_bracket_geocert_radius_under_a_tight_time_limit(seed, norm):
    net, x0 = random_box_crossing_net(seed, (4, 6, 6, 3)), _point(seed, 4)
    exact = geocert(net, x0, norm=norm).upper
    result = branch_and_bound_distance(net, x0, norm=norm, time_limit=0.01)
    assert result.lower <= exact * (1 + 1e-7) + 1e-12
    assert exact <= result.upper * (1 + 1e-7) + 1e-12
    if np.isfinite(result.upper):
        order = _ORDER[norm]
        assert float(torch.linalg.vector_norm(result.x_adv - x0, ord=order)) == pytest.approx(result.upper, rel=1e-9)


def test_l2_cuts_are_below_the_first_layer_distance_and_tight_at_the_dual_optimum():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 30, generator=gen, dtype=torch.float64).numpy()
    x0 = torch.rand(30, generator=gen, dtype=torch.float64).numpy()
    lo, hi = -x0, 1 - x0  # the unit box, as displacements
    cuts = FirstLayerDistance(w, np.zeros(4), lo, hi)
    for trial in range(5):
        y = w @ (0.3 * torch.rand(30, generator=gen, dtype=torch.float64).numpy() * (hi - lo) + lo)  # reachable
        exact = project_l2(np.vstack([w, -w]), np.concatenate([y, -y]), np.zeros(30), lo, hi)[1] ** 2
        mu, value, _ = cuts.dual(y)
        assert value == pytest.approx(exact, rel=1e-6)
        for _ in range(10):  # any multiplier gives a lower bound
            mu = torch.randn(4, generator=gen, dtype=torch.float64).numpy()
            v = w.T @ mu
            delta = np.clip(v / 2, lo, hi)
            assert delta @ delta - v @ delta + mu @ y <= exact + 1e-9


def test_l2_support_function_is_the_lp_maximum_over_the_box():
    from scipy.optimize import linprog

    gen = np.random.default_rng(0)
    w, lo = gen.standard_normal((4, 30)), -gen.random(30)
    hi = lo + 1.0
    cuts = FirstLayerDistance(w, np.zeros(4), lo, hi)
    for _ in range(5):
        u = gen.standard_normal(4)
        best = -linprog(-(w.T @ u), bounds=list(zip(lo, hi)), method="highs").fun
        assert cuts.support(u) == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_l2_cut_bound_never_exceeds_the_qp_and_reaches_it_when_that_prunes(seed):
    """The cut relaxation (LP over the hidden units + Newton steps on φ) against the exact 30-D QP, on random nodes:
    valid (never above the QP's optimum) and tight (it reaches any pruning level just below that optimum). On as
    many pixels as branch and bound gives it (``_CUTS_FROM``): with few pixels free the optimum can sit on the
    boundary of the first layer's reachable set, which the cuts approach slowly (a valid bound, looser than 1e-6)."""
    d = _CUTS_FROM
    net, x = random_box_crossing_net(seed, (d, 12, 10, 3)), _point(seed, d)
    net, x0, c, _, _ = start_search(net, x, "l2", None, None, (0.0, 1.0))
    search = RegionSearch(margin_net(net, c), x0, "l2", (0.0, 1.0))
    search.shrink(0.8)
    qp, cuts = _relaxation(search, x0, "l2", c), _relaxation(search, x0, "l2", c, l2_cuts=True)
    rng = np.random.default_rng(seed)
    compared = 0
    for trial in range(6):
        target = [k for k in range(3) if k != c][trial % 2]
        splits = np.where(rng.random(qp.n_hidden) < 0.3, rng.choice([-1, 1], qp.n_hidden), 0).astype(np.int8)
        if qp.contradicts(splits):
            continue
        qp.set_node(splits, target)
        cuts.set_node(splits, target)
        exact = qp.solve()
        if exact is Status.INFEASIBLE:
            assert cuts.solve() is Status.INFEASIBLE
            continue
        if isinstance(exact, Status):
            continue
        enough = exact.bound * (1 - 1e-6)
        bound = cuts.solve(enough).bound
        assert bound <= exact.bound * (1 + 1e-6) + 1e-9
        if exact.bound > 1e-6:  # (a node that reaches x0's class boundary has bound 0 up to rounding)
            assert bound ** 2 >= enough ** 2 - 1e-8  # (|δ|² to 1e-8: the rigorous dual bound's accuracy)
            compared += 1
    assert compared >= 2


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_lp_cutoff_stops_above_the_pruning_level_and_never_above_the_optimum(norm):
    """With ``enough`` below a node's LP optimum the dual simplex stops early, with a (rigorous) bound between the
    two; with ``enough`` above it the answer is the full solve's."""
    d = 12
    net, x = random_box_crossing_net(2, (d, 10, 8, 3)), _point(2, d)
    net, x0, c, _, _ = start_search(net, x, norm, None, None, (0.0, 1.0))
    search = RegionSearch(margin_net(net, c), x0, norm, (0.0, 1.0))
    search.shrink(0.8 if norm == "l1" else 0.3)
    relax = _relaxation(search, x0, norm, c)
    rng = np.random.default_rng(0)
    nodes = []
    for trial in range(16):
        target = [k for k in range(3) if k != c][trial % 2]
        splits = np.where(rng.random(relax.n_hidden) < 0.3, rng.choice([-1, 1], relax.n_hidden), 0).astype(np.int8)
        if not relax.contradicts(splits):
            relax.set_node(splits, target)
            full = relax.solve()
            if not isinstance(full, Status) and full.bound > 1e-6:
                nodes.append((splits, target, full))
    assert len(nodes) >= 4
    stopped = 0
    for splits, target, full in nodes:  # (each from the previous node's basis, as in the search)
        relax.set_node(splits, target)
        early = relax.solve(0.5 * full.bound)
        assert 0.5 * full.bound <= early.bound <= full.bound * (1 + 1e-7)
        stopped += not early.delta.any()  # (a stopped solve has only its bound)
    assert stopped >= 1
    for splits, target, full in nodes:
        relax.set_node(splits, target)
        late = relax.solve(2.0 * full.bound)
        assert late.bound == pytest.approx(full.bound, rel=1e-9)


def test_l2_on_a_large_input_bounds_nodes_with_cuts_and_stays_exact():
    net, x0 = random_box_crossing_net(8, (120, 6, 6, 3)), _point(8, 120)
    exact, result = geocert(net, x0, norm="l2"), branch_and_bound_distance(net, x0, norm="l2")
    assert exact.status == result.status == "exact"
    assert result.upper == pytest.approx(exact.upper, rel=1e-6)


def test_native_stdout_is_silenced_inside_the_block_and_restored_after(capfd):
    import ctypes

    from mistered.certify.solvers.highs import native_stdout_silenced

    libc = ctypes.CDLL(None)
    libc.printf(b"before\n")
    with native_stdout_silenced():
        libc.printf(b"solver noise\n")  # what HiGHS' QP solver does
    libc.printf(b"after\n")
    libc.fflush(None)
    assert capfd.readouterr().out == "before\nafter\n"
