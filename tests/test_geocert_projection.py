"""GeoCert's fast exact pieces agree with the slow reference: the warm-started L∞ projector equals a fresh LP on
every polytope of a sequence (empty ones included), the memoised row bounds equal the closed form, and the
two-row emptiness certificate never drops a non-empty polytope."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mistered.certify.geocert import _Search
from mistered.certify.halfspace import pair_excludes_box
from mistered.certify.projection import LinfProjector, distance_lp
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


@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_memoised_row_bounds_equal_the_closed_form_for_regions_and_their_neighbours(norm):
    net = random_box_crossing_net(7, (6, 5, 5, 3))
    x0 = torch.rand(6, generator=torch.Generator().manual_seed(7), dtype=torch.float64).numpy()
    search = _Search(net, x0, norm, (0.0, 1.0))
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
