"""LP bound tightening (OBBT): sound, never looser than CROWN, equal to the LP optimum, and LipMIP stays exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from mistered.certify.bounds.chain_interval import interval_bounds, linf_box
from mistered.certify.bounds.chain_linear import linear_bounds
from mistered.certify.lipschitz.local import EstimatorOptions, estimate_lipschitz, lipmip
from mistered.certify.lipschitz.local.milp import MipModel, forward_relus
from mistered.certify.lipschitz.local.tangent import _encode, tangent_bounds
from mistered.certify.bounds.chain_lp import lp_bounds
from mistered.certify.graph.piecewise import PiecewiseLinearNet
from test_lipmip import brute_force_lipschitz, random_net

SIZES = (6, 12, 10, 8, 3)


def _net_and_box(seed: int, radius: float, sizes=SIZES, batch: int = 2):
    net = PiecewiseLinearNet.from_module(random_net(seed, sizes), (sizes[0],))
    x0 = torch.rand(batch, sizes[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return net, *linf_box(x0, radius, clip=None)


def _points(lower: torch.Tensor, upper: torch.Tensor, seed: int) -> torch.Tensor:
    """``(B, 5000, d)``: uniform points and box vertices."""
    batch, d = lower.shape
    u = torch.rand(batch, 4000, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    corners = torch.randint(0, 2, (batch, 1000, d), generator=torch.Generator().manual_seed(seed + 1)).double()
    return lower[:, None] + torch.cat([u, corners], 1) * (upper - lower)[:, None]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), radius=st.sampled_from([0.05, 0.2, 0.5, 1.0]))
def test_lp_bounds_contain_every_sampled_pre_activation(seed, radius):
    net, lower, upper = _net_and_box(seed, radius)
    bounds = lp_bounds(net, lower, upper)
    points = _points(lower, upper, seed)
    for (lo, hi), z in zip(bounds, net.pre_activations(points.reshape(-1, SIZES[0]))):
        z = z.reshape(2, -1, z.shape[-1])
        assert (z >= lo[:, None] - 1e-9).all() and (z <= hi[:, None] + 1e-9).all()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), radius=st.sampled_from([0.2, 0.5, 1.0]))
def test_lp_bounds_are_never_looser_than_crown(seed, radius):
    net, lower, upper = _net_and_box(seed, radius)
    crown = linear_bounds(net, lower, upper)
    for (lo, hi), (c_lo, c_hi) in zip(lp_bounds(net, lower, upper), crown):
        assert (lo >= c_lo).all() and (hi <= c_hi).all()


def test_lp_bounds_are_strictly_tighter_than_crown_on_a_deep_net():
    net, lower, upper = _net_and_box(3, 0.5, (6, 16, 16, 16, 2), batch=1)
    crown = linear_bounds(net, lower, upper)
    tight = lp_bounds(net, lower, upper)
    width = lambda b: float(sum((hi - lo).sum() for lo, hi in b[1:-1]))  # noqa: E731
    assert width(tight) < 0.97 * width(crown)


def test_second_layer_lp_bounds_equal_an_independent_triangle_lp():
    net, lower, upper = _net_and_box(5, 0.5, (4, 6, 5, 2), batch=1)
    bounds = lp_bounds(net, lower, upper, initial=interval_bounds(net, lower, upper))
    (w1, w2), (b1, b2) = [w.numpy() for w in net.weights[:2]], [b.numpy() for b in net.biases[:2]]
    l1, u1 = (t[0].numpy() for t in bounds[0])
    # variables (x (4), h (6)): h >= 0, h >= W1 x + b1, h <= u (W1 x + b1 - l) / (u - l) where unstable, exact else
    rows, rhs, eq_rows, eq_rhs, h_box = [], [], [], [], []
    for i in range(6):
        e = np.zeros(10)
        e[4 + i] = 1.0
        pre = np.concatenate([w1[i], np.zeros(6)])
        if l1[i] >= 0:
            eq_rows.append(e - pre), eq_rhs.append(b1[i])
        elif u1[i] > 0:
            s = u1[i] / (u1[i] - l1[i])
            rows += [pre - e, e - s * pre]
            rhs += [-b1[i], s * (b1[i] - l1[i])]
        h_box.append((0.0, max(u1[i], 0.0)))
    box = [(float(a), float(b)) for a, b in zip(lower[0], upper[0])] + h_box
    for j in range(5):
        obj = np.concatenate([np.zeros(4), w2[j]])
        kw = dict(A_ub=np.array(rows), b_ub=np.array(rhs), A_eq=np.array(eq_rows) if eq_rows else None,
                  b_eq=np.array(eq_rhs) if eq_rhs else None, bounds=box, method="highs")
        lo_j, hi_j = linprog(obj, **kw).fun + b2[j], -linprog(-obj, **kw).fun + b2[j]
        crown_lo, crown_hi = (float(t[0, j]) for t in interval_bounds(net, lower, upper)[1])
        if crown_lo < 0 < crown_hi:  # only the unstable neurons are tightened
            assert float(bounds[1][1][0, j]) == pytest.approx(hi_j, abs=1e-5)
            if hi_j > 1e-6:  # (the lower bound of a neuron proven inactive is left alone)
                assert float(bounds[1][0][0, j]) == pytest.approx(lo_j, abs=1e-5)


def test_lp_bounds_with_no_time_keep_the_initial_bounds():
    net, lower, upper = _net_and_box(8, 0.5)
    crown = linear_bounds(net, lower, upper)
    for (lo, hi), (c_lo, c_hi) in zip(lp_bounds(net, lower, upper, time_limit=0.0), crown):
        assert torch.equal(lo, c_lo) and torch.equal(hi, c_hi)


def _sampled_tangents(net: PiecewiseLinearNet, points: torch.Tensor, v: torch.Tensor) -> list[torch.Tensor]:
    """``t_k = W_k D_{k-1} ... D_1 W_1 v`` at each point (ReLU'(0) = 0) for every hidden layer ``k``."""
    pre = net.pre_activations(points)
    t, out = v @ net.weights[0].T, []
    for k in range(1, len(net.weights)):
        out.append(t)
        t = ((pre[k - 1] > 0).double() * t) @ net.weights[k].T
    return out


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), radius=st.sampled_from([0.2, 0.5, 1.0]), norm=st.sampled_from(["linf", "l1"]))
def test_tangent_bounds_contain_every_sampled_tangent_and_are_tighter_than_intervals(seed, radius, norm):
    net, lower, upper = _net_and_box(seed, radius, batch=1)
    pre = linear_bounds(net, lower, upper)
    lo, hi = lower[0].numpy(), upper[0].numpy()
    tight = tangent_bounds(net, lo, hi, pre, norm)
    model = MipModel("GLOP", relax=True)
    loose = _encode(model, net, forward_relus(model, net, lo, hi, pre)[1], norm, None, None)[2]
    points = _points(lower, upper, seed)[0]
    gen = torch.Generator().manual_seed(seed + 2)
    if norm == "linf":  # vertices of the unit ball
        v = 2.0 * torch.randint(0, 2, (len(points), SIZES[0]), generator=gen).double() - 1
    else:
        v = torch.eye(SIZES[0], dtype=torch.float64)[torch.randint(0, SIZES[0], (len(points),), generator=gen)]
        v = v * (2.0 * torch.randint(0, 2, (len(points), 1), generator=gen).double() - 1)
    for (t_lo, t_hi), (i_lo, i_hi), t in zip(tight, loose, _sampled_tangents(net, points, v)):
        assert (t.numpy() >= t_lo - 1e-9).all() and (t.numpy() <= t_hi + 1e-9).all()
        assert (t_lo >= i_lo).all() and (t_hi <= i_hi).all()
    assert sum((h - l).sum() for l, h in tight) < sum((h - l).sum() for l, h in loose)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), radius=st.sampled_from([0.3, 0.6, 1.0]), norm=st.sampled_from(["linf", "l1"]))
def test_lipmip_with_lp_bounds_equals_lipmip_with_crown_bounds(seed, radius, norm):
    net = PiecewiseLinearNet.from_module(random_net(seed, (5, 10, 8, 2)), (5,))
    x0 = torch.rand(1, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    values = {
        b: estimate_lipschitz(net, x0, radius, norm, "margin", "lipmip", options=EstimatorOptions(solver="CBC", bounds=b))
        for b in ("crown", "lp")
    }
    assert values["lp"].details["stats"][0]["bounds"] == "lp"
    assert float(values["lp"].value[0]) == pytest.approx(float(values["crown"].value[0]), rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_lipmip_with_lp_bounds_equals_brute_force(norm):
    for seed in range(3):
        exact, net, x0 = brute_force_lipschitz(seed, 1.0, "margin", norm)
        got = estimate_lipschitz(net, x0, 1.0, norm, "margin", "lipmip", options=EstimatorOptions(solver="CBC", bounds="lp"))
        assert float(got.value[0]) == pytest.approx(exact, rel=1e-5, abs=1e-9)


def test_auto_bounds_tighten_by_lp_only_above_the_unstable_threshold(monkeypatch):
    net = PiecewiseLinearNet.from_module(random_net(4, (5, 10, 8, 2)), (5,))
    x0 = torch.rand(1, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def used() -> str:
        est = estimate_lipschitz(net, x0, 0.5, "linf", "margin", "lipmip", options=EstimatorOptions(solver="CBC"))
        return est.details["stats"][0]["bounds"]

    assert used() == "crown"  # a handful of unstable neurons: below the default threshold
    monkeypatch.setattr(lipmip, "AUTO_LP_UNSTABLE", 0)
    assert used() == "lp"
