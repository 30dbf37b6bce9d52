"""GeoCert's fast exact pieces agree with the slow reference: the warm-started L∞ projector equals a fresh LP on
every polytope of a sequence (empty ones included), the memoised row bounds equal the closed form, and the
two-row emptiness certificate never drops a non-empty polytope."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mistered.certify.exact.region_search import RegionSearch
from mistered.certify.exact.halfspace import pair_excludes_box
from mistered.certify.solvers.projection import (LinfProjector, _dual_newton, _interior_point_multipliers,
                                          _least_distance_nnls, distance_lp, project_l2)
from _nets import random_box_crossing_net


def _polytopes(seed: int, d: int, count: int, m: int) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """A centre in [0, 1]^d and random polytopes around it: rows through points near x0, some far (often empty)."""
    rng = np.random.default_rng(seed)
    x0 = rng.random(d)
    x0[: d // 4] = 0.0  # pixels on the box's edge, as in MNIST
    polys = []
    for _ in range(count):
        a = rng.standard_normal((m, d))
        b = a @ x0 - rng.uniform(-0.5, 1.5, m) * np.abs(a).sum(1) * 0.05
        polys.append((a, b))
    return x0, polys


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 12))
def test_linf_projector_equals_a_fresh_lp_on_a_sequence_of_polytopes(seed, m):
    d = 40
    x0, polys = _polytopes(seed, d, 6, m)
    proj = LinfProjector(x0)
    for i, (a, b) in enumerate(polys):
        radius = 0.6 if i % 2 else np.inf  # the search box changes between calls, as when the upper bound shrinks
        lo, hi = np.maximum(0.0, x0 - radius), np.minimum(1.0, x0 + radius)
        fast, slow = proj(a, b, lo, hi), distance_lp("linf", a, b, x0, lo, hi)
        assert (fast is None) == (slow is None)
        if slow is not None:
            x, dist = fast
            assert dist == pytest.approx(slow[1], abs=1e-7)
            assert (a @ x - b).max() <= 1e-7
            assert (x >= lo).all() and (x <= hi).all()
            assert np.abs(x - x0).max() == pytest.approx(dist, abs=1e-12)


def test_linf_projector_detects_an_empty_polytope():
    x0 = np.full(10, 0.5)
    a = np.vstack([np.eye(10)[0], -np.eye(10)[0]])
    b = np.array([0.2, -0.3])  # x_0 <= 0.2 and x_0 >= 0.3
    proj = LinfProjector(x0)
    assert proj(a[:1], b[:1], np.zeros(10), np.ones(10))[1] == pytest.approx(0.3)
    assert proj(a, b, np.zeros(10), np.ones(10)) is None
    assert proj(a[:1], b[:1], np.zeros(10), np.ones(10))[1] == pytest.approx(0.3)  # and recovers after it
    assert proj.n_fallbacks == 0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 12))
def test_l2_projection_equals_least_distance_nnls_and_agrees_with_an_lp_on_emptiness(seed, m):
    d = 12
    x0, polys = _polytopes(seed, d, 3, m)
    lo, hi = np.zeros(d), np.ones(d)
    for a, b in polys:
        result, empty = project_l2(a, b, x0, lo, hi), distance_lp("linf", a, b, x0, lo, hi) is None
        assert (result is None) == empty
        if result is not None:
            x, dist = result
            assert (a @ x - b).max() <= 1e-7 and (x >= lo).all() and (x <= hi).all()
            reference = _least_distance_nnls(a, b, x0, lo, hi)  # the second exact method
            assert dist == pytest.approx(np.linalg.norm(reference - x0), rel=1e-6, abs=1e-9)


def test_l2_projection_reports_an_empty_polytope_where_both_exact_methods_stall():
    """Regression (found by hypothesis in CI): the dual Newton's line search stalls on this empty polytope and
    NNLS's residual is not near zero, so only an LP could tell that it is empty."""
    a = np.array([
        [-0.5123358427629999, 0.6399619407926865, 0.5136621081301792, -0.46706878365772425],
        [0.20779645099474398, 1.6312001298413537, -0.687106445811586, 0.6044477718250987],
        [0.5995304785196288, -0.2513457430298941, 0.09227396488092657, 0.6321392497836101],
        [-0.8065046747413355, 0.2657355286417949, -0.7586408164933675, 0.6318752289024965],
        [-1.4102776562661334, -0.44845038581168567, -0.3303444036017915, 1.753618298880204],
        [-0.8740910047556603, -0.8333745299020366, -0.28565506127385953, 0.6662985637676863],
        [-1.0630584686970113, -0.18399630957307594, -0.12743320689457469, 1.1100234543906518],
        [-0.6731966863755316, 0.2539260153365187, 0.2116744326499469, 0.19349478877095064],
        [-0.9259464000090316, 0.27633504960231126, 0.2335895123334101, 0.366432302953555],
        [-0.4785312115497848, 0.2618386579775582, 0.21466255380292693, 0.02568301156348586],
        [0.25032616086222476, -0.4747885670327729, -0.37891528128737156, 0.4511385727401686],
        [-0.7882571971377328, -1.0176649733884238, -0.790004257657879, 2.034971187545405],
    ])
    b = np.array([0.14827403893780933, 0.7546492343639598, 0.24216962753132282, -0.6613581086334521,
                  -0.39709231845930404, -0.5722244705532835, -0.2008627137532726, 0.11753452908882032,
                  -0.031317351301296856, 0.16121987984422578, 0.6141502568890566, -0.6199706406177962])
    x0 = np.array([0.5386892652963841, 0.5312946915908991, 0.14046230419959405, 0.5482164668978857])
    lo, hi = np.zeros(4), np.array([1.0, 1.0, 0.7662260066804206, 1.0])
    assert distance_lp("linf", a, b, x0, lo, hi) is None
    assert project_l2(a, b, x0, lo, hi) is None


@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_memoised_row_bounds_equal_the_closed_form_for_regions_and_their_neighbours(norm):
    net = random_box_crossing_net(7, (6, 5, 5, 3))
    x0 = torch.rand(6, generator=torch.Generator().manual_seed(7), dtype=torch.float64).numpy()
    search = RegionSearch(net, x0, norm, (0.0, 1.0))
    rng = np.random.default_rng(0)
    for radius in (np.inf, np.inf, 0.3, 0.3):  # repeated radii hit the memo; a new radius clears it
        pattern = rng.random(search.unstable.shape[0]) < 0.5
        a, b, rows, _, _ = search.region(pattern)
        np.testing.assert_array_equal(search.row_bounds(pattern, a, b, rows, radius), search.bound(a, b, radius))
        np.testing.assert_array_equal(search.row_bounds(pattern, a, b, rows, radius, flip=True),
                                      search.bound(-a, -b, radius))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 6))
def test_pair_certificate_only_drops_polytopes_that_are_empty_in_the_box(seed, m):
    rng = np.random.default_rng(seed)
    d = 12
    x0 = rng.random(d)
    a_k = rng.standard_normal(d)
    b_k = a_k @ x0 - rng.uniform(0.0, 0.3) * np.abs(a_k).sum()  # x0 violates it: the row of a flipped ReLU
    a = -a_k + 0.3 * rng.standard_normal((m, d))  # nearly opposite rows: often empty together, sometimes not
    b = a @ x0 + rng.uniform(-0.2, 0.2, m) * np.abs(a).sum(1)
    lo, hi = np.maximum(0.0, x0 - 0.4), np.minimum(1.0, x0 + 0.4)
    if pair_excludes_box(a_k, b_k, a, b, lo, hi):
        assert distance_lp("linf", np.vstack([a_k[None], a]), np.append(b_k, b), x0, lo, hi) is None


def test_pair_certificate_drops_two_parallel_half_spaces_that_do_not_meet():
    d = 8
    lo, hi = np.zeros(d), np.ones(d)
    a_k = np.ones(d)
    assert pair_excludes_box(a_k, 2.0, -2 * a_k[None], np.array([-6.0]), lo, hi)  # sum <= 2 and sum >= 3
    assert not pair_excludes_box(a_k, 2.0, -2 * a_k[None], np.array([-2.0]), lo, hi)  # sum <= 2 and sum >= 1


def _degenerate_polytope(seed: int, d: int = 60, rank: int = 4, m: int = 30):
    """A region-like polytope: ``m`` rows in the ``rank``-dimensional row space of a first layer (as every
    pre-activation of a ReLU region is affine in the first layer's), with ``x0`` outside it."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rank, d))
    a = rng.standard_normal((m, rank)) @ w
    x0 = rng.random(d)
    inside = np.clip(x0 + 0.4 * rng.standard_normal(d), 0.0, 1.0)
    b = a @ inside + rng.random(m) * np.abs(a).sum(1) * 0.01  # through a point near x0: not empty
    return a, b, x0, np.zeros(d), np.ones(d)


@pytest.mark.parametrize("seed", range(6))
def test_l2_projection_of_a_degenerate_polytope_restarts_from_interior_point_multipliers(seed):
    """The dual Newton method stalls on such duals (~1 in 4 regions of a 784-10-50-10-2 net); from the interior-
    point solve's multipliers it verifies at once, and the answer is NNLS's."""
    a, b, x0, lo, hi = _degenerate_polytope(seed)
    if seed in (3, 5):  # (these two stall from λ = 0)
        assert _dual_newton(a, b, x0, lo, hi, 200) is None
    start = _interior_point_multipliers(a, b, x0, lo, hi)
    x = _dual_newton(a, b, x0, lo, hi, 200, start)
    assert isinstance(x, np.ndarray)
    reference = _least_distance_nnls(a, b, x0, lo, hi)
    assert np.linalg.norm(x - x0) == pytest.approx(np.linalg.norm(reference - x0), rel=1e-6)
    assert project_l2(a, b, x0, lo, hi)[1] == pytest.approx(np.linalg.norm(reference - x0), rel=1e-6)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 12), shrink=st.floats(0.3, 1.5))
def test_l2_projection_within_a_radius_gives_up_only_beyond_it(seed, m, shrink):
    d = 12
    x0, polys = _polytopes(seed, d, 3, m)
    lo, hi = np.zeros(d), np.ones(d)
    for a, b in polys:
        full = project_l2(a, b, x0, lo, hi)
        if full is None:
            assert project_l2(a, b, x0, lo, hi, within=1.0) is None
            continue
        within = full[1] * shrink
        result = project_l2(a, b, x0, lo, hi, within=within)
        if result is None:
            assert full[1] > within
        else:
            assert result[1] == pytest.approx(full[1], rel=1e-9, abs=1e-12)
        if shrink > 1.0:
            assert result is not None
