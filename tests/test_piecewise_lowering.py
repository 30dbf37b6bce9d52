"""Lowering traced graphs to the chain form: the chain is the model's function (everywhere, or on the domain with
carried values single and provably active), and what has no chain form is named."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mistered.certify.bounds.chain_interval import interval_bounds
from mistered.certify.graph.piecewise import PiecewiseLinearNet
from mistered.certify.graph.piecewise_lowering import as_plnet
from mistered.certify.graph.piecewise_lowering import lower_graph, lower_module
from mistered.certify.graph.trace import trace_graph
from mistered.errors import UnsupportedLayerError
from mistered.models.linf_dist.layers import LinfDistLinear


class ResidualMLP(nn.Module):
    def __init__(self, d: int = 6, width: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.inp, self.a, self.b, self.out = nn.Linear(d, width), nn.Linear(width, width), nn.Linear(width, width), \
            nn.Linear(width, classes)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.b(F.relu(self.a(F.relu(h))))
        return self.out(F.relu(h))


class ResidualCNN(nn.Module):
    """A pre-activation residual block with BatchNorm: out = x + conv(relu(bn(conv(relu(bn(x))))))."""

    def __init__(self, channels: int = 2, size: int = 4, classes: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.bn1, self.bn2 = nn.BatchNorm2d(channels), nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.fc = nn.Linear(channels * size * size, classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return self.fc(F.relu(x).flatten(1))


class Pooling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class Concatenation(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(5, 4), nn.Linear(5, 3), nn.Linear(12, 2)

    def forward(self, x):
        return self.out(torch.cat([F.relu(self.a(x)), F.leaky_relu(self.b(x), 0.1), x], 1))


class Normalised(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, padding=1), nn.Flatten(),
                                 nn.Linear(8, 2))

    def forward(self, x):
        return self.net((x - 0.13) / 0.31)


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


ARCHITECTURES = {
    "mlp": (lambda: nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2)), (5,)),
    "cnn": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(18, 2)),
            (1, 7, 7)),
    "residual-mlp": (ResidualMLP, (6,)),
    "residual-cnn-bn": (ResidualCNN, (1, 4, 4)),
    "pooling": (Pooling, (1, 4, 4)),
    "cat-leaky": (Concatenation, (5,)),
    "normalised-maxpool-padding": (Normalised, (1, 5, 5)),
}


def _model(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    make, shape = ARCHITECTURES[name]
    torch.manual_seed(0)
    return _randomise_bn(make()), shape


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_lowered_chain_equals_the_model_everywhere(name):
    model, shape = _model(name)
    net = lower_module(model, shape)
    x = 3 * torch.randn(64, *shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(net(x.double()), model(x).double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_lowered_chain_equals_the_model_on_the_domain(name):
    model, shape = _model(name)
    net = lower_module(model, shape, domain=(0.0, 1.0))
    x = torch.rand(64, *shape, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(net(x.double()), model(x).double(), rtol=1e-5, atol=1e-5)


def test_carried_values_on_a_domain_are_single_neurons_that_bounds_prove_active():
    model, shape = _model("residual-cnn-bn")
    everywhere, on_box = lower_module(model, shape), lower_module(model, shape, domain=(0.0, 1.0))
    carried = sum(int(m.sum()) for m in on_box.carried)
    assert carried > 0
    assert sum(int(m.sum()) for m in everywhere.carried) == 2 * carried  # relu(v) - relu(-v) off the domain
    lo, hi = torch.zeros(1, 16, dtype=torch.float64), torch.ones(1, 16, dtype=torch.float64)
    for (low, _), mask in zip(interval_bounds(on_box, lo, hi), on_box.carried):
        assert (low[0][mask] > 0).all()


def test_max_pooling_of_relu_outputs_carries_without_pairs():
    model, shape = _model("pooling")
    net = lower_module(model, shape)  # the carried maxima are non-negative: no domain needed
    hidden = [w.shape[0] for w in net.weights[:-1]]
    # conv1 (32 ReLUs); two tournament rounds over 2x2 windows of 8 outputs; conv2 (8 ReLUs)
    assert hidden == [32, 32, 16, 8]
    assert [int(m.sum()) for m in net.carried] == [0, 16, 8, 0]


def test_from_module_keeps_plain_chains_and_lowers_the_rest():
    chain = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert PiecewiseLinearNet.from_module(chain, (4,)).carried is None
    model, shape = _model("residual-mlp")
    net = as_plnet(model, shape, domain=(0.0, 1.0))
    assert net.carried is not None and net.dtype == torch.float32
    x = torch.rand(8, *shape)
    torch.testing.assert_close(net(x), model(x), rtol=1e-4, atol=1e-4)


def test_lowering_a_graph_directly_gives_the_same_chain():
    model, shape = _model("cat-leaky")
    a, b = lower_graph(trace_graph(model, shape)), lower_module(model, shape)
    assert a.layer_sizes == b.layer_sizes
    for wa, wb in zip(a.weights, b.weights):
        torch.testing.assert_close(wa, wb)


def test_an_operation_without_a_piecewise_linear_form_is_named_with_its_line():
    class Smooth(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.tanh(x))

    with pytest.raises(UnsupportedLayerError, match=r"torch\.tanh at test_piecewise_lowering\.py:\d+"):
        as_plnet(Smooth(), (4,))


def test_linf_dist_layers_are_refused_by_name():
    model = nn.Sequential(LinfDistLinear(4, 3), nn.Linear(3, 2))
    with pytest.raises(UnsupportedLayerError, match="LinfDist"):
        lower_module(model, (4,))


def test_a_network_too_large_for_dense_matrices_is_refused_before_building_them():
    model, shape = _model("residual-cnn-bn")
    with pytest.raises(UnsupportedLayerError, match="too large for the dense"):
        lower_graph(trace_graph(model, shape), max_entries=100)
