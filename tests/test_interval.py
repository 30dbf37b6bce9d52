"""Interval bounds are sound: every sampled point's pre-activations lie inside them."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mistered.certify.bounds.chain_interval import interval_bounds, linf_box, stable_masks
from mistered.certify.graph.piecewise import PiecewiseLinearNet


def _net(seed: int) -> PiecewiseLinearNet:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    return PiecewiseLinearNet.from_module(net, (5,)).to(torch.float64)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.0, 0.5))
def test_sampled_pre_activations_lie_within_bounds(seed, eps):
    net = _net(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 5, generator=gen, dtype=torch.float64)
    lower, upper = linf_box(x, eps)
    bounds = interval_bounds(net, lower, upper)
    samples = lower[:, None] + (upper - lower)[:, None] * torch.rand(4, 200, 5, generator=gen, dtype=torch.float64)
    zs = net.pre_activations(samples.reshape(-1, 5))
    for (lo, hi), z in zip(bounds, zs):
        z = z.reshape(4, 200, -1)
        assert (z >= lo[:, None] - 1e-9).all() and (z <= hi[:, None] + 1e-9).all()


def test_zero_width_box_gives_exact_pre_activations():
    net = _net(1)
    x = torch.rand(3, 5, dtype=torch.float64)
    for (lo, hi), z in zip(interval_bounds(net, x, x), net.pre_activations(x)):
        torch.testing.assert_close(lo, z)
        torch.testing.assert_close(hi, z)


def test_stable_masks_agree_with_every_sample():
    net = _net(2)
    x = torch.rand(2, 5, dtype=torch.float64)
    lower, upper = linf_box(x, 0.05)
    masks = stable_masks(interval_bounds(net, lower, upper))
    assert len(masks) == net.num_hidden
    samples = lower + (upper - lower) * torch.rand(2, 5, dtype=torch.float64)
    for (active, inactive), z in zip(masks, net.pre_activations(samples)):
        assert not (active & inactive).any()
        assert (z[active] >= 0).all() and (z[inactive] <= 0).all()


def test_linf_box_is_clipped_to_the_pixel_range_and_takes_per_example_radii():
    x = torch.tensor([[0.0, 0.5], [1.0, 0.2]])
    lower, upper = linf_box(x, torch.tensor([0.1, 0.3]))
    torch.testing.assert_close(lower, torch.tensor([[0.0, 0.4], [0.7, 0.0]]))
    torch.testing.assert_close(upper, torch.tensor([[0.1, 0.6], [1.0, 0.5]]))
