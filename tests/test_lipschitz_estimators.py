"""The estimators behind estimate_lipschitz: their order around LipMIP, their errors, time limits and batching."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mistered.certify.lipschitz.local import METHODS, EstimatorOptions, estimate_lipschitz
from mistered.errors import InvalidInputError, UnsupportedLayerError
from test_lipmip import random_net

SOLVER = EstimatorOptions(solver="CBC")


def _all_methods(net, x0, radius, norm, objective) -> dict[str, float]:
    return {m: float(estimate_lipschitz(net, x0, radius, norm, objective, m, options=SOLVER).value[0]) for m in METHODS}


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    norm=st.sampled_from(["linf", "l1"]),
    objective=st.sampled_from(["margin", "vector", 0]),
    radius=st.sampled_from([0.1, 0.5, 1.0]),
)
def test_lower_estimators_below_lipmip_below_upper_estimators(seed, norm, objective, radius):
    net = random_net(seed, (4, 8, 6, 3))
    x0 = torch.rand(1, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    v = _all_methods(net, x0, radius, norm, objective)
    tol = 1e-6 * max(1.0, v["lipmip"])
    assert v["sampling"] <= v["lipmip"] + tol
    assert v["lipmip"] <= v["lp"] + tol
    assert v["lipmip"] <= v["fastlip"] + tol
    assert v["lipmip"] <= v["naive"] + tol


def test_all_methods_but_the_lp_agree_on_an_affine_network():
    net = nn.Sequential(nn.Linear(5, 3)).double()
    x0 = torch.rand(1, 5, dtype=torch.float64)
    expected = float(net[0].weight.detach().abs().sum(1).max())  # ||W||_{inf->inf}: the largest row L1 norm
    values = _all_methods(net, x0, 0.3, "linf", "vector")
    assert values["lp"] >= expected * (1 - 1e-6)  # the LP relaxes the dual-norm binaries too
    del values["lp"]
    assert values == pytest.approx({m: expected for m in values}, rel=1e-6)


def test_kinds_are_declared_per_method():
    assert {m: kind for m, (_, kind) in METHODS.items()} == {
        "naive": "upper", "sampling": "lower", "clever": "estimate", "fastlip": "upper", "lp": "upper", "lipmip": "exact",
    }


def test_timeout_returns_an_upper_bound_above_the_exact_value():
    net = random_net(7, (8, 12, 12, 2), bias_scale=0.1)
    x0 = torch.rand(1, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    exact = estimate_lipschitz(net, x0, 0.5, "linf", "margin", "lipmip", options=SOLVER)
    limited = estimate_lipschitz(net, x0, 0.5, "linf", "margin", "lipmip", options=EstimatorOptions(time_limit=0.01))
    assert exact.status == ["exact"] and limited.status == ["timeout"]
    assert float(limited.value[0]) >= float(exact.value[0]) * (1 - 1e-6)
    assert limited.details["lower"][0] <= float(exact.value[0]) * (1 + 1e-6)


@pytest.mark.parametrize("method", ["lipmip", "lp"])
def test_l2_primal_is_refused_by_the_mips_with_a_reason(method):
    net = random_net(0, (3, 4, 2))
    with pytest.raises(InvalidInputError, match="non-convex"):
        estimate_lipschitz(net, torch.zeros(1, 3, dtype=torch.float64), 0.1, "l2", "margin", method)


@pytest.mark.parametrize("method", ["naive", "sampling", "fastlip"])
def test_l2_primal_works_for_the_tensor_estimators_in_order(method):
    net = random_net(1, (3, 6, 2))
    x0 = torch.rand(1, 3, dtype=torch.float64)
    sampled = float(estimate_lipschitz(net, x0, 0.5, "l2", "margin", "sampling").value[0])
    assert float(estimate_lipschitz(net, x0, 0.5, "l2", "margin", method).value[0]) >= sampled - 1e-9


def test_unsupported_layer_is_named():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match="Tanh"):
        estimate_lipschitz(net, torch.zeros(1, 3), 0.1, method="fastlip")


def test_batch_equals_one_example_at_a_time():
    net = random_net(3, (4, 6, 5, 3))
    x0 = torch.rand(3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for method in ("fastlip", "lipmip"):
        batch = estimate_lipschitz(net, x0, 0.4, method=method, options=SOLVER).value
        single = torch.cat([estimate_lipschitz(net, x0[i : i + 1], 0.4, method=method, options=SOLVER).value for i in range(3)])
        assert torch.allclose(batch, single, rtol=1e-6)


def test_sampling_is_reproducible_with_its_seed():
    net = random_net(4, (4, 8, 3))
    x0 = torch.rand(2, 4, dtype=torch.float64)
    first = estimate_lipschitz(net, x0, 0.5, method="sampling", options=EstimatorOptions(seed=5)).value
    again = estimate_lipschitz(net, x0, 0.5, method="sampling", options=EstimatorOptions(seed=5)).value
    assert torch.equal(first, again)


def test_clever_is_a_finite_positive_estimate():
    net = random_net(5, (4, 8, 8, 3))
    est = estimate_lipschitz(net, torch.rand(2, 4, dtype=torch.float64), 0.5, method="clever")
    assert est.kind == "estimate" and torch.isfinite(est.value).all() and (est.value > 0).all()


def test_convolutional_network_is_bounded_in_order():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()
    x0 = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    v = _all_methods(net, x0, 0.05, "linf", "margin")
    assert v["sampling"] <= v["lipmip"] * (1 + 1e-6) <= v["fastlip"] * (1 + 1e-5)


def test_unknown_method_is_refused():
    with pytest.raises(InvalidInputError, match="unknown Lipschitz method"):
        estimate_lipschitz(random_net(0, (2, 3, 2)), torch.zeros(1, 2, dtype=torch.float64), 0.1, method="magic")
