"""LipMIP is exact: it equals the largest gradient dual norm over every activation pattern the box reaches."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from torch import nn

from mistered.certify.lipschitz.local import EstimatorOptions, estimate_lipschitz, resolve_objective
from mistered.certify.bounds.chain_interval import linf_box
from mistered.certify.bounds.chain_linear import linear_bounds
from mistered.certify.graph.piecewise import PiecewiseLinearNet
from mistered.errors import InvalidInputError


def random_net(seed: int, sizes: tuple[int, ...], bias_scale: float = 0.5) -> nn.Sequential:
    """A float64 ReLU MLP with N(0, 1/fan_in) weights and N(0, bias_scale^2) biases."""
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(n_in, n_out).double()
        with torch.no_grad():
            linear.weight.copy_(torch.randn(n_out, n_in, generator=generator, dtype=torch.float64) / math.sqrt(n_in))
            linear.bias.copy_(bias_scale * torch.randn(n_out, generator=generator, dtype=torch.float64))
        layers += [linear, nn.ReLU()] if i < len(sizes) - 2 else [linear]
    return nn.Sequential(*layers)


def _pattern_value(jac: np.ndarray, c_lower: np.ndarray, c_upper: np.ndarray, simplex: bool, norm: str) -> float:
    """max over the output weightings of the dual norm of J^T c, by the closed forms of each objective."""
    dual = (lambda g: np.abs(g).sum()) if norm == "linf" else (lambda g: np.abs(g).max())
    if simplex:  # vector output, linf -> linf: the largest row L1 norm
        return max(dual(row) for row in jac)
    if not np.array_equal(c_lower, c_upper):  # vector output, l1 -> l1: the largest column L1 norm
        return float(np.abs(jac).sum(0).max())
    return float(dual(jac.T @ c_lower))


def _feasible(rows: list[np.ndarray], rhs: list[np.ndarray], box: list[tuple[float, float]]) -> bool:
    lp = linprog(np.zeros(len(box)), A_ub=np.vstack(rows), b_ub=np.concatenate(rhs), bounds=box, method="highs")
    return lp.status == 0


@functools.lru_cache(maxsize=None)
def reachable_jacobians(seed: int, radius: float) -> tuple[PiecewiseLinearNet, torch.Tensor, list[np.ndarray]]:
    """The net of ``seed``, its centre, and the Jacobian of every activation pattern with a point in the box.

    Patterns are enumerated layer by layer; an LP checks that the closed region of the pattern prefix meets the
    box (an infeasible prefix prunes all its extensions).
    """
    net = PiecewiseLinearNet.from_module(random_net(seed, SIZES), (SIZES[0],))
    x0 = torch.rand(1, SIZES[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 0.5
    ws, bs = [w.numpy() for w in net.weights], [b.numpy() for b in net.biases]
    box = [(float(v) - radius, float(v) + radius) for v in x0[0]]
    found: list[np.ndarray] = []

    def extend(layer: int, a_mat: np.ndarray, a_vec: np.ndarray, rows: list, rhs: list) -> None:
        if layer == len(ws) - 1:
            found.append(ws[-1] @ a_mat)
            return
        pre_mat, pre_vec = ws[layer] @ a_mat, ws[layer] @ a_vec + bs[layer]
        for bits in itertools.product((0.0, 1.0), repeat=ws[layer].shape[0]):
            d = np.array(bits)
            sign = 1 - 2 * d  # active: -pre <= 0; inactive: pre <= 0
            new_rows, new_rhs = rows + [sign[:, None] * pre_mat], rhs + [-sign * pre_vec]
            if _feasible(new_rows, new_rhs, box):
                extend(layer + 1, d[:, None] * pre_mat, d * pre_vec, new_rows, new_rhs)

    extend(0, np.eye(SIZES[0]), np.zeros(SIZES[0]), [], [])
    return net, x0, found


def brute_force_lipschitz(seed: int, radius: float, objective, norm: str) -> tuple[float, PiecewiseLinearNet, torch.Tensor]:
    """The largest value over reachable patterns, with the net and centre it was computed for."""
    net, x0, jacs = reachable_jacobians(seed, radius)
    directions = resolve_objective(objective, net(x0), norm)
    c_lo, c_hi = directions.lower[0].numpy(), directions.upper[0].numpy()
    return max(_pattern_value(j, c_lo, c_hi, directions.simplex, norm) for j in jacs), net, x0


SIZES = (2, 5, 4, 3)
CASES = [(norm, objective) for norm in ("linf", "l1") for objective in ("margin", "vector", 0, (1, 2))]


@pytest.mark.parametrize("norm,objective", CASES)
def test_lipmip_equals_brute_force_over_reachable_patterns(norm, objective):
    for seed in range(3):
        exact, net, x0 = brute_force_lipschitz(seed, 1.0, objective, norm)
        got = estimate_lipschitz(net, x0, 1.0, norm, objective, "lipmip", options=EstimatorOptions(solver="CBC"))
        assert sum(s["binaries"] for s in got.details["stats"]) > 0  # the box is wide enough to need binaries
        assert got.status == ["exact"]
        assert float(got.value[0]) == pytest.approx(exact, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_forward_and_backward_formulations_agree(norm):
    net = PiecewiseLinearNet.from_module(random_net(11, (6, 10, 8, 3)), (6,))
    x0 = torch.rand(2, 6, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    values = [
        estimate_lipschitz(net, x0, 0.5, norm, "margin", "lipmip", options=EstimatorOptions(solver="CBC", formulation=f)).value
        for f in ("forward", "backward")
    ]
    assert torch.allclose(values[0], values[1], rtol=1e-5)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 50), radius=st.sampled_from([0.3, 0.6, 1.0]), norm=st.sampled_from(["linf", "l1"]))
def test_lipmip_with_crown_bounds_equals_brute_force_on_random_nets_and_radii(seed, radius, norm):
    exact, net, x0 = brute_force_lipschitz(seed, radius, "margin", norm)
    got = estimate_lipschitz(net, x0, radius, norm, "margin", "lipmip", options=EstimatorOptions(solver="CBC"))
    assert got.details["stats"][0]["bounds"] == "crown"
    assert float(got.value[0]) == pytest.approx(exact, rel=1e-5, abs=1e-9)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), radius=st.sampled_from([0.05, 0.2, 0.5, 1.0]))
def test_crown_bounds_contain_every_sampled_pre_activation(seed, radius):
    net = PiecewiseLinearNet.from_module(random_net(seed, (6, 12, 10, 8, 3)), (6,))
    x0 = torch.rand(2, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    lower, upper = linf_box(x0, radius, clip=None)
    bounds = linear_bounds(net, lower, upper)
    u = torch.rand(2, 4000, 6, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    corners = torch.randint(0, 2, (2, 1000, 6), generator=torch.Generator().manual_seed(seed + 2)).double()
    points = lower[:, None] + torch.cat([u, corners], 1) * (upper - lower)[:, None]  # interior and vertices
    for (lo, hi), z in zip(bounds, net.pre_activations(points.reshape(-1, 6))):
        z = z.reshape(2, -1, z.shape[-1])
        assert (z >= lo[:, None] - 1e-9).all() and (z <= hi[:, None] + 1e-9).all()


def test_crown_bounds_give_fewer_binaries_and_the_same_value_as_interval_bounds():
    net = PiecewiseLinearNet.from_module(random_net(23, (6, 10, 10, 10, 2), bias_scale=0.3), (6,))
    x0 = torch.rand(1, 6, generator=torch.Generator().manual_seed(23), dtype=torch.float64)
    runs = {
        b: estimate_lipschitz(net, x0, 0.2, "linf", "margin", "lipmip", options=EstimatorOptions(solver="CBC", bounds=b))
        for b in ("interval", "crown")
    }
    binaries = {b: r.details["stats"][0]["binaries"] for b, r in runs.items()}
    assert binaries["crown"] < binaries["interval"]
    assert float(runs["crown"].value[0]) == pytest.approx(float(runs["interval"].value[0]), rel=1e-6)


def test_unknown_bounds_are_refused():
    net = random_net(0, (2, 3, 2))
    with pytest.raises(InvalidInputError, match="bounds must be one of"):
        estimate_lipschitz(net, torch.zeros(1, 2, dtype=torch.float64), 0.1, method="lipmip",
                           options=EstimatorOptions(bounds="magic"))
