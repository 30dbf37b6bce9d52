"""GeoCert is exact: it matches a brute force over all linear regions, the MIP, and no attack beats it.

The contract tests run both exact searches: through the linear regions (``geocert``) and by branch and bound over
ReLU splits (``branch_and_bound_distance``, more of its own tests in test_branch_distance.py)."""

import time

import pytest
import torch
from torch import nn

from mistered.certify.exact.branch import branch_and_bound_distance
from mistered.certify.exact.geocert import geocert
from mistered.certify.exact.mip import mindist_mip
from mistered.errors import UnsupportedLayerError
from mistered.certify.graph.piecewise_lowering import as_plnet
from _nets import brute_force_distance_2d, random_box_crossing_net


_random_net = random_box_crossing_net
SEARCHES = pytest.mark.parametrize("solve", [geocert, branch_and_bound_distance], ids=["regions", "branch"])


@SEARCHES
@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_radius_equals_brute_force_over_all_regions_2d(solve, norm, seed):
    net = _random_net(seed, (2, 5, 5, 3))
    x0 = torch.rand(2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    result = solve(net, x0, norm=norm)
    assert result.status == "exact"
    assert result.upper == pytest.approx(brute_force_distance_2d(net, x0.numpy(), norm), abs=1e-4)


def _point(seed: int, d: int) -> torch.Tensor:
    return torch.rand(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("norm", ["linf", "l1"])
@pytest.mark.parametrize("seed", [3, 4])
def test_radius_equals_the_mip_on_small_nets(norm, seed):
    net, x0 = _random_net(seed, (6, 6, 6, 3)), _point(seed, 6)
    result, mip = geocert(net, x0, norm=norm), mindist_mip(net, x0, norm=norm)
    assert result.status == mip.status == "exact"
    assert result.upper == pytest.approx(mip.upper, abs=1e-4)


@SEARCHES
@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_x_adv_is_on_the_decision_boundary_at_the_exact_distance(solve, norm):
    net, x0 = _random_net(5, (6, 6, 6, 3)), _point(5, 6)
    result = solve(net, x0, norm=norm)
    order = {"l2": 2, "linf": float("inf"), "l1": 1}[norm]
    assert float(torch.linalg.vector_norm(result.x_adv - x0, ord=order)) == pytest.approx(result.upper, abs=1e-6)
    logits = net(result.x_adv[None])[0]
    others = torch.cat([logits[: result.predicted], logits[result.predicted + 1 :]])
    assert float(others.max() - logits[result.predicted]) >= -1e-6
    assert (result.x_adv >= 0).all() and (result.x_adv <= 1).all()


@SEARCHES
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_no_attack_gets_closer_than_the_radius(solve, norm):
    """A PGD-style search for the closest misclassified point never beats the exact radius (and the L2 radius is
    not over-reported, the original implementation's bug, since ours is at most any adversarial distance)."""
    net, x0 = _random_net(6, (6, 6, 6, 3)), _point(6, 6)
    result = solve(net, x0, norm=norm)
    c = result.predicted
    gen = torch.Generator().manual_seed(0)
    order = {"l2": 2, "linf": float("inf")}[norm]
    for eps in torch.linspace(0.05, 1.0, 5):
        delta = (torch.rand(32, 6, generator=gen, dtype=torch.float64) * 2 - 1) * eps
        for _ in range(30):
            delta.requires_grad_(True)
            logits = net((x0 + delta).clamp(0, 1))
            others = logits.clone()
            others[:, c] = -torch.inf
            loss = (others.max(1).values - logits[:, c]).sum()
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                step = grad.sign() if norm == "linf" else grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
                delta = delta + 0.1 * eps * step
                norms = torch.linalg.vector_norm(delta, ord=order, dim=1, keepdim=True)
                delta = delta * (eps / norms).clamp(max=1.0)
                delta = (x0 + delta).clamp(0, 1) - x0
        with torch.no_grad():
            adv = net(x0 + delta).argmax(1) != c
            dists = torch.linalg.vector_norm(delta, ord=order, dim=1)
        assert (dists[adv] >= result.upper - 1e-6).all()


def test_decision_mode_certifies_below_and_attacks_above_the_radius():
    net, x0 = _random_net(1, (6, 6, 6, 3)), _point(1, 6)
    radius = geocert(net, x0, norm="l2").upper
    below = geocert(net, x0, norm="l2", decision_eps=0.9 * radius)
    above = geocert(net, x0, norm="l2", decision_eps=1.1 * radius)
    assert below.status == "certified" and below.lower >= 0.9 * radius
    assert above.status == "attacked" and above.upper <= 1.1 * radius


def test_time_limit_returns_valid_bounds_with_status_timeout():
    net, x0 = _random_net(7, (10, 12, 12, 3)), _point(7, 10)  # GeoCert needs > 3 s here, the MIP 0.1 s
    exact = mindist_mip(net, x0, norm="linf").upper
    start = time.perf_counter()
    result = geocert(net, x0, norm="linf", time_limit=0.2)
    assert time.perf_counter() - start < 1.5
    assert result.status == "timeout"
    assert result.lower <= exact + 1e-9 <= result.upper + 2e-9


def test_seeding_with_an_upper_bound_keeps_the_exact_radius():
    net, x0 = _random_net(3, (6, 6, 6, 3)), _point(3, 6)
    plain = geocert(net, x0, norm="linf")
    seeded = geocert(net, x0, norm="linf", upper_bound=plain.upper * 1.05)
    assert seeded.upper == pytest.approx(plain.upper, abs=1e-9)
    assert seeded.n_lp_solves <= plain.n_lp_solves


def test_unsupported_layer_is_named():
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match=r"nn\.Tanh \(module '1'\)"):
        as_plnet(model, (4,))
