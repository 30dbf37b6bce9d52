"""Bounds over a box intersected with an L1/L2 ball: the closed-form dual support function equals the convex
program's optimum (never below it), CROWN over box and ball contains every sampled pre-activation and beats CROWN
over the box alone where the ball is what limits the input (784-like: the box of an L2 radius is the whole cube)."""

import clarabel
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from mistered.certify.bounds.chain_linear import ball_box_support, linear_bounds, search_region_bounds
from _nets import random_box_crossing_net


def _max_over_ball_and_box(a: np.ndarray, lo: np.ndarray, hi: np.ndarray, norm: str, radius: float) -> float:
    """``max a·δ`` over ``lo <= δ <= hi``, ``|δ|_norm <= radius`` by a general solver (HiGHS LP / Clarabel SOCP)."""
    d = a.size
    if norm == "l1":  # δ = p - n, Σ p + n <= r
        res = linprog(np.concatenate([-a, a]), A_ub=np.ones((1, 2 * d)), b_ub=[radius],
                      bounds=[(0, h) for h in hi] + [(0, -low) for low in lo], method="highs")
        return -res.fun
    rows = sp.vstack([sp.eye(d), -sp.eye(d), sp.csc_matrix((1, d)), -sp.eye(d)], format="csc")
    settings_ = clarabel.DefaultSettings()
    settings_.verbose = False
    settings_.tol_gap_abs = settings_.tol_gap_rel = 1e-11
    cones = [clarabel.NonnegativeConeT(2 * d), clarabel.SecondOrderConeT(d + 1)]
    solution = clarabel.DefaultSolver(sp.csc_matrix((d, d)), -a, rows, np.concatenate([hi, -lo, [radius], np.zeros(d)]),
                                      cones, settings_).solve()
    return -solution.obj_val


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 15), norm=st.sampled_from(["l1", "l2"]),
       radius=st.floats(0.0, 3.0), scale=st.sampled_from([1e-3, 1.0, 30.0]))
def test_ball_box_support_is_the_convex_programs_maximum_and_never_below_it(seed, d, norm, radius, scale):
    rng = np.random.default_rng(seed)
    coef = rng.standard_normal((1, 3, d)) * scale
    coef[0, 0, : d // 2] = 0.0  # (zero entries, and a row of zeros when d = 1)
    lo, hi = -rng.random((1, d)) * rng.random(), rng.random((1, d))
    support = ball_box_support(torch.as_tensor(coef), torch.as_tensor(lo), torch.as_tensor(hi), norm, radius)
    for r in range(3):
        true = _max_over_ball_and_box(coef[0, r], lo[0], hi[0], norm, radius)
        assert float(support[0, r]) >= true - 1e-8 * (1 + abs(true))
        assert float(support[0, r]) <= true + 1e-6 * (1 + abs(true))


@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("seed", [0, 1])
def test_bounds_over_box_and_ball_contain_every_sampled_pre_activation(norm, seed):
    d = 20
    net = random_box_crossing_net(seed, (d, 12, 10, 3))
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(d, generator=gen, dtype=torch.float64)
    radius = 0.8
    lo, hi = (x0 - radius).clamp(0, 1), (x0 + radius).clamp(0, 1)
    direction = torch.randn(20000, d, generator=gen, dtype=torch.float64)
    if norm == "l1":  # sparse directions reach the L1 ball's corners
        direction = direction * (torch.rand(20000, d, generator=gen, dtype=torch.float64) < 0.15)
    length = torch.linalg.vector_norm(direction, ord=1 if norm == "l1" else 2, dim=1, keepdim=True).clamp_min(1e-12)
    scale = radius * torch.rand(20000, 1, generator=gen, dtype=torch.float64) ** 0.25
    x = torch.minimum(torch.maximum(x0 + direction / length * scale, lo), hi)  # (clipping towards x0 keeps the ball)
    bounds = search_region_bounds(net, x0, norm, lo, hi, radius)
    for (low, up), z in zip(bounds, net.pre_activations(x)):
        assert (z >= low - 1e-9).all() and (z <= up + 1e-9).all()


def test_the_ball_tightens_deep_bounds_where_the_box_is_the_whole_cube():
    d = 100
    net = random_box_crossing_net(3, (d, 16, 16, 3))
    x0 = torch.full((d,), 0.5, dtype=torch.float64)
    lo, hi = torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)  # radius 1 > 0.5: the cube
    box_only, with_ball = linear_bounds(net, lo[None], hi[None]), search_region_bounds(net, x0, "l2", lo, hi, 1.0)
    for (bl, bu), (tl, tu) in zip(box_only, with_ball):
        assert (tl >= bl - 1e-12).all() and (tu <= bu + 1e-12).all()
    width = [float((u - low).sum()) for low, u in with_ball]
    assert width[1] < 0.5 * float((box_only[1][1] - box_only[1][0]).sum())
