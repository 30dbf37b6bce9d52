"""GeoCert's cheap pruning rules are valid bounds: closed-form half-space distances, neighbour bounds, ball-based
stable neurons, the boundary-search seed; and pruning never changes the exact radius."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mistered.certify.exact.boundary_search import boundary_search
from mistered.certify.exact import certify_geocert, geocert
from mistered.certify.exact.region_search import RegionSearch
from mistered.certify.exact.halfspace import halfspace_projection
from mistered.certify.solvers.projection import polytope_distance
from _nets import random_box_crossing_net

_ORDER = {"l1": 1, "l2": 2, "linf": float("inf")}


_random_net = random_box_crossing_net


def _point(seed: int, d: int) -> torch.Tensor:
    return torch.rand(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["l1", "l2", "linf"]))
def test_halfspace_distance_equals_the_exact_projection(seed, norm):
    gen = torch.Generator().manual_seed(seed)
    d, m = 9, 5
    a = torch.randn(1, m, d, generator=gen, dtype=torch.float64)
    x0 = torch.rand(1, d, generator=gen, dtype=torch.float64)
    x0[0, :3] = 0.0  # pixels at the box's edge, as in MNIST
    b = torch.einsum("bmd,bd->bm", a, x0) - 2 * torch.rand(1, m, generator=gen, dtype=torch.float64) + 0.5
    lo, hi = torch.zeros(1, d, dtype=torch.float64), torch.ones(1, d, dtype=torch.float64)
    dist, point = halfspace_projection(norm, a, b, x0, lo, hi)
    for k in range(m):
        exact = polytope_distance(norm, a[0, k : k + 1].numpy(), b[0, k : k + 1].numpy(), x0[0].numpy(),
                                  lo[0].numpy(), hi[0].numpy())
        if exact is None:
            assert dist[0, k] == float("inf")
            continue
        assert float(dist[0, k]) == pytest.approx(exact[1], abs=1e-9)
        assert float(a[0, k] @ point[0, k] - b[0, k]) <= 1e-9
        moved = float(torch.linalg.vector_norm(point[0, k] - x0[0], ord=_ORDER[norm]))
        assert moved == pytest.approx(exact[1], abs=1e-9)
        assert (point[0, k] >= 0).all() and (point[0, k] <= 1).all()


@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_neighbour_bounds_never_exceed_the_neighbours_exact_distance(norm):
    net, x0 = _random_net(7, (6, 5, 5, 3)), _point(7, 6).numpy()
    search = RegionSearch(net, x0, norm, (0.0, 1.0))
    pattern = np.concatenate([(z[0] > 0).numpy() for z in net.pre_activations(torch.as_tensor(x0)[None])[:-1]])
    a, b, rows, _, _ = search.region(pattern)
    ks, lbs = search.neighbour_bounds(pattern, a, b, rows, search.bound(a, b, np.inf), np.inf)
    assert len(ks) == 10
    for k, lb in zip(ks, lbs):
        flipped = pattern.copy()
        flipped[k] = not flipped[k]
        na, nb, _, _, _ = search.region(flipped)
        exact = search.solve(na, nb, np.inf)
        assert exact is None or lb <= exact[1] + 1e-9


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_ball_interval_bounds_only_fix_neurons_that_are_stable_in_the_ball(norm):
    net, x0 = _random_net(8, (6, 8, 8, 3)), _point(8, 6)
    radius = 0.15
    search = RegionSearch(net, x0.numpy(), norm, (0.0, 1.0))
    search.shrink(radius)
    assert (~search.unstable).any()  # the bound does fix something here
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(4000, 6, generator=gen, dtype=torch.float64)
    direction /= torch.linalg.vector_norm(direction, ord=_ORDER[norm], dim=1, keepdim=True)
    points = (x0 + direction * radius * torch.rand(4000, 1, generator=gen, dtype=torch.float64)).clamp(0, 1)
    patterns = torch.cat(net.activation_pattern(points), dim=1).numpy()
    stable = ~search.unstable
    assert (patterns[:, stable] == search.stable_state[stable]).all()


@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_boundary_search_finds_misclassified_points_no_closer_than_the_radius(norm):
    net = _random_net(9, (6, 8, 8, 3))
    x = torch.stack([_point(s, 6) for s in range(4)])
    x_adv, dist = boundary_search(net, x, norm)
    assert torch.isfinite(dist).all()
    assert (net(x_adv).argmax(1) != net(x).argmax(1)).all()
    assert (x_adv >= 0).all() and (x_adv <= 1).all()
    for i in range(4):
        assert float(dist[i]) >= geocert(net, x[i], norm=norm).upper - 1e-9


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("seed", [11, 12])
def test_seeded_search_gives_the_same_radius_as_the_plain_search(norm, seed):
    net, x0 = _random_net(seed, (6, 6, 6, 3)), _point(seed, 6)
    plain = geocert(net, x0, norm=norm)
    x_adv, _ = boundary_search(net, x0[None], norm)
    seeded = geocert(net, x0, norm=norm, x_adv=x_adv[0])
    assert seeded.status == plain.status == "exact"
    assert seeded.upper == pytest.approx(plain.upper, abs=1e-9)


def test_misclassified_examples_get_radius_zero_without_a_search():
    net = _random_net(4, (6, 6, 6, 3))
    x = torch.stack([_point(1, 6), _point(2, 6)])
    pred = net(x).argmax(1)
    labels = torch.stack([pred[0], (pred[1] + 1) % 3])
    cert = certify_geocert(net, x, labels, norm="l2")
    assert cert.status[1] == "misclassified" and float(cert.radius[1]) == 0.0
    assert cert.details["n_regions"][1] == 0
    assert cert.status[0] == "exact"
    assert float(cert.radius[0]) == pytest.approx(geocert(net, x[0], norm="l2").upper, abs=1e-6)  # float32 radii
