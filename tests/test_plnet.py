"""The piecewise-linear form reproduces the module it was built from and names what it cannot handle."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mistered.certify.graph.piecewise import PiecewiseLinearNet
from mistered.errors import UnsupportedLayerError
from mistered.certify.graph.piecewise_lowering import as_plnet


class _Normalized(nn.Module):
    """Duck-typed stand-in for mistered.models.Normalized (attributes .net, .mean, .std)."""

    def __init__(self, net, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.as_tensor(mean).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std).reshape(1, -1, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def _randomize_bn(module: nn.Module, gen: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), widths=st.lists(st.integers(1, 12), min_size=1, max_size=3))
def test_fully_connected_form_matches_module(seed, widths):
    torch.manual_seed(seed)
    layers, prev = [nn.Flatten()], 6
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    layers.append(nn.Linear(prev, 3))
    net = nn.Sequential(*layers).eval()
    pl = PiecewiseLinearNet.from_module(net, (1, 2, 3))
    x = torch.rand(7, 1, 2, 3)
    assert pl.layer_sizes == [6, *widths, 3]
    torch.testing.assert_close(pl(x), net(x), rtol=1e-5, atol=1e-5)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), stride=st.integers(1, 2), padding=st.integers(0, 1))
def test_conv_batchnorm_normalized_form_matches_module(seed, stride, padding):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    body = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=stride, padding=padding),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(3, 4, 2), nn.ReLU()),
        nn.Flatten(),
        nn.Identity(),
    )
    with torch.no_grad():
        flat = body(torch.zeros(1, 2, 7, 7)).shape[1]
    body.append(nn.Linear(flat, 6))
    body.append(nn.BatchNorm1d(6))
    body.append(nn.ReLU())
    body.append(nn.Dropout(0.5))
    body.append(nn.Linear(6, 4))
    _randomize_bn(body, gen)
    net = _Normalized(body, [0.3, 0.5], [0.2, 0.4]).eval()
    pl = PiecewiseLinearNet.from_module(net, (2, 7, 7))
    x = torch.rand(5, 2, 7, 7, generator=gen)
    assert pl.num_hidden == 3
    torch.testing.assert_close(pl(x), net(x), rtol=1e-4, atol=1e-4)


def test_consecutive_affine_layers_are_merged():
    net = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3), nn.ReLU(), nn.ReLU(), nn.Linear(3, 2), nn.Linear(2, 2))
    pl = PiecewiseLinearNet.from_module(net, (4,))
    assert pl.layer_sizes == [4, 3, 2]
    x = torch.randn(3, 4)
    torch.testing.assert_close(pl(x), net(x), rtol=1e-5, atol=1e-5)


def test_unsupported_layer_is_named_with_its_position():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Sequential(nn.Identity(), nn.Tanh()), nn.Flatten())
    with pytest.raises(UnsupportedLayerError, match=r"nn\.Tanh \(module '2\.1'\).*bounds support"):
        as_plnet(net, (1, 8, 8))


def test_max_pooling_in_a_sequential_is_lowered_through_the_graph():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Sequential(nn.Identity(), nn.MaxPool2d(2)), nn.Flatten(),
                        nn.Linear(18, 2))
    pl = as_plnet(net, (1, 8, 8))
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(pl(x), net(x), rtol=1e-4, atol=1e-4)


def test_linear_on_unflattened_input_asks_for_flatten():
    with pytest.raises(UnsupportedLayerError, match="Flatten"):
        PiecewiseLinearNet.from_module(nn.Sequential(nn.Linear(4, 2)), (1, 2, 4))


def test_cast_to_float64_keeps_the_function():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    pl = PiecewiseLinearNet.from_module(net, (3,)).to(torch.float64)
    x = torch.randn(6, 3)
    assert pl.dtype == torch.float64
    torch.testing.assert_close(pl(x).float(), net(x), rtol=1e-5, atol=1e-5)
