"""The MIP baseline and the CROWN bounds behind its big-M constants: sound, tighter than intervals, exact."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mistered.certify.exact import certify_geocert, geocert
from mistered.certify.bounds.chain_interval import interval_bounds
from mistered.certify.bounds.chain_linear import linear_bounds
from mistered.certify.exact.mip import mindist_mip
from mistered.certify.graph.piecewise import PiecewiseLinearNet
from mistered.errors import InvalidInputError


def _net(seed: int, sizes: tuple[int, ...]) -> PiecewiseLinearNet:
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(sizes[i + 1], sizes[i], generator=gen, dtype=torch.float64) for i in range(len(sizes) - 1)]
    biases = [0.5 * torch.randn(sizes[i + 1], generator=gen, dtype=torch.float64) for i in range(len(sizes) - 1)]
    biases[0] = biases[0] - weights[0] @ torch.full((sizes[0],), 0.5, dtype=torch.float64)
    return PiecewiseLinearNet(weights, biases, (sizes[0],))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), width=st.floats(0.01, 0.5))
def test_linear_bounds_contain_every_sampled_pre_activation(seed, width):
    net = _net(seed, (5, 8, 8, 6, 3))
    gen = torch.Generator().manual_seed(seed)
    lo = torch.rand(2, 5, generator=gen, dtype=torch.float64) * (1 - width)
    hi = lo + width
    x = lo[:, None] + torch.rand(2, 4000, 5, generator=gen, dtype=torch.float64) * (hi - lo)[:, None]
    pre = net.pre_activations(x.reshape(-1, 5))
    for (low, up), z in zip(linear_bounds(net, lo, hi), pre):
        z = z.reshape(2, 4000, -1)
        assert (z >= low[:, None] - 1e-9).all() and (z <= up[:, None] + 1e-9).all()


def test_linear_bounds_are_never_looser_and_tighter_in_deep_layers():
    net = _net(7, (10, 16, 16, 16, 3))
    lo = torch.full((1, 10), 0.3, dtype=torch.float64)
    tight, loose = linear_bounds(net, lo, lo + 0.4), interval_bounds(net, lo, lo + 0.4)
    for (tl, tu), (ll, lu) in zip(tight, loose):
        assert (tl >= ll).all() and (tu <= lu).all()
    assert float((tight[-1][1] - tight[-1][0]).sum()) < 0.9 * float((loose[-1][1] - loose[-1][0]).sum())


@pytest.mark.parametrize("solver", ["scip", "highs"])
@pytest.mark.parametrize("seed", [11, 12])
def test_both_mip_solvers_match_geocert(solver, seed):
    net = _net(seed, (6, 8, 8, 4))
    x0 = torch.rand(6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    exact = geocert(net, x0, norm="linf")
    mip = mindist_mip(net, x0, norm="linf", solver=solver)
    assert mip.status == "exact"
    assert mip.upper == pytest.approx(exact.upper, abs=1e-6)
    logits = net(mip.x_adv[None])[0]
    assert float(torch.cat([logits[: mip.predicted], logits[mip.predicted + 1 :]]).max() - logits[mip.predicted]) >= -1e-5
    assert float((mip.x_adv - x0).abs().max()) == pytest.approx(mip.upper, abs=1e-6)
    assert float((mip.x_adv - x0).abs().max()) <= mip.upper + 1e-15  # never farther than it reports


def test_mip_with_a_tight_upper_bound_keeps_the_exact_distance():
    net, x0 = _net(13, (6, 8, 8, 4)), torch.rand(6, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    plain = mindist_mip(net, x0, norm="l1")
    seeded = mindist_mip(net, x0, norm="l1", upper_bound=plain.upper * 1.01)
    assert seeded.status == "exact" and seeded.upper == pytest.approx(plain.upper, abs=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l1"])
@pytest.mark.parametrize("factor", [1.1, 3.0])
def test_mip_with_a_loose_upper_bound_finds_the_exact_distance(norm, factor):
    net, x0 = _net(14, (6, 8, 8, 4)), torch.rand(6, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    plain = mindist_mip(net, x0, norm=norm)
    seeded = mindist_mip(net, x0, norm=norm, upper_bound=plain.upper * factor)
    assert seeded.status == "exact" and seeded.upper == pytest.approx(plain.upper, abs=1e-6)


def test_unknown_mip_solver_is_named():
    net = _net(1, (4, 4, 2))
    with pytest.raises(InvalidInputError, match="'gurobi'"):
        mindist_mip(net, torch.full((4,), 0.5, dtype=torch.float64), solver="gurobi")


def test_certificate_radii_are_float64():
    net = _net(3, (4, 6, 3))
    x = torch.rand(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cert = certify_geocert(net, x, net(x).argmax(1), norm="linf")
    assert cert.radius.dtype == torch.float64 and cert.upper.dtype == torch.float64
    assert np.allclose(cert.radius.numpy(), cert.upper.numpy())


def test_l1_trial_radius_never_returns_a_point_beyond_it():
    # Logit margin x1 + 0.9 x2 - 1.05 (0.1 short at x0): the L1 distance is exactly 0.1/max|w| = 0.1 (x1 += 0.1).
    # Seeded with 0.11, the trial L∞ box of 0.85 * 0.11 cannot hold that move; its best point, 0.1007, moves
    # both pixels and lies beyond the trial radius, so accepting it would report a wrong "exact" distance.
    eye = torch.eye(2, dtype=torch.float64)
    net = PiecewiseLinearNet([eye, torch.tensor([[0.0, 0.0], [1.0, 0.9]], dtype=torch.float64)],
                             [torch.zeros(2, dtype=torch.float64), torch.tensor([0.0, -1.05], dtype=torch.float64)],
                             (2,))
    result = mindist_mip(net, torch.full((2,), 0.5, dtype=torch.float64), norm="l1", upper_bound=0.11)
    assert result.status == "exact" and result.upper == pytest.approx(0.1, abs=1e-9)
    assert result.x_adv.tolist() == pytest.approx([0.6, 0.5], abs=1e-9)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), factor=st.floats(1.0, 1.4), norm=st.sampled_from(["linf", "l1"]))
def test_trial_radii_from_any_seed_keep_the_exact_distance(seed, factor, norm):
    net = _net(seed, (5, 6, 6, 3))
    x0 = torch.rand(5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    plain = mindist_mip(net, x0, norm=norm)
    seeded = mindist_mip(net, x0, norm=norm, upper_bound=plain.upper * factor)
    assert seeded.status == plain.status == "exact"
    assert seeded.upper == pytest.approx(plain.upper, abs=1e-6)
