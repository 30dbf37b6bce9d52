"""The L2 Lipschitz bound on any traced graph: never below the network's local constants (sampled exactly and pushed
up by gradient ascent), equal to the exact constant of a linear chain, tighter than the layer-by-layer bound where
it folds BatchNorm, differentiable for LMT, and clear errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _bounds_models import SHAPE, build
from mistered.certify.lipschitz.global_bound import LipschitzBound
from mistered.certify.lipschitz.graph_bound import GraphLipschitzBound, bound_for_model, is_layered, lipschitz_bound
from mistered.errors import UnsupportedLayerError

PIECEWISE_LINEAR = ["mlp", "cnn", "residual-bn", "pooling", "cat"]


class Shapes(nn.Module):
    """Normalisation by constants, Dropout, Identity, a transpose, a residual difference and LeakyReLU(2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.drop, self.skip = nn.Dropout(0.5), nn.Identity()
        self.fc = nn.Linear(72, 3)

    def forward(self, x):
        h = (x - 0.5) / 0.25 * 0.5
        h = self.skip(h) - F.leaky_relu(self.drop(self.conv(h)), 2.0)
        return self.fc(h.transpose(2, 3).flatten(1))


def _model(name: str, seed: int = 0) -> nn.Module:
    if name == "shapes":
        torch.manual_seed(seed)
        return Shapes().double().eval()
    return build(name, seed)


def _local_constants(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` the exact L2 norm of the Jacobian of ``model`` at each point of ``x`` (SVD in float64)."""
    jacobian = torch.func.vmap(torch.func.jacrev(lambda xi: model(xi[None])[0]))(x)
    return torch.linalg.matrix_norm(jacobian.flatten(2), ord=2)


def _ascended_ratio(model: nn.Module, seed: int, pairs: int = 32, steps: int = 60) -> float:
    """The largest ``||f(a) - f(b)|| / ||a - b||`` gradient ascent finds over ``pairs`` pairs of points."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.rand(pairs, *SHAPE, generator=generator, dtype=torch.float64).requires_grad_(True)
    b = (a.detach() + 0.05 * torch.randn(a.shape, generator=generator, dtype=torch.float64)).requires_grad_(True)
    optimizer = torch.optim.Adam([a, b], lr=0.01)
    best = 0.0
    for _ in range(steps):
        ratio = (model(a) - model(b)).norm(dim=1) / (a - b).flatten(1).norm(dim=1).clamp_min(1e-9)
        best = max(best, float(ratio.detach().max()))
        optimizer.zero_grad()
        (-ratio.sum()).backward()
        optimizer.step()
    return best


@pytest.mark.parametrize("name", PIECEWISE_LINEAR + ["shapes"])
def test_bound_is_never_below_the_exact_local_constant_at_sampled_points(name):
    model = _model(name)
    bound = float(GraphLipschitzBound(model, SHAPE).exact())
    x = torch.rand(128, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 0.5
    local = _local_constants(model, x)
    assert float(local.detach().max()) <= bound * (1 + 1e-9)
    assert float(local.detach().max()) > 0


@pytest.mark.parametrize("name", PIECEWISE_LINEAR + ["shapes"])
def test_bound_is_never_below_the_ratio_gradient_ascent_finds(name):
    model = _model(name, seed=3)
    bound = float(GraphLipschitzBound(model, SHAPE).exact())
    assert _ascended_ratio(model, seed=4) <= bound * (1 + 1e-9)


class _LinearChain(nn.Module):
    """Normalisation, convolution, BatchNorm, average pooling, a permute, a flatten and a matrix product: one linear
    map (a final nn.Linear module would be a map of its own, the head of the pairwise bound)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Linear(27, 4)
        self.bn.running_var.uniform_(0.2, 3.0)
        self.bn.weight.data.uniform_(-2.0, 2.0)

    def forward(self, x):
        return F.avg_pool2d(self.bn(self.conv((x - 0.3) / 0.7)), 2).permute(0, 2, 3, 1).flatten(1) @ self.fc.weight.T


class _LinearResidual(_LinearChain):
    def forward(self, x):
        h = self.conv(x)
        return self.fc(F.avg_pool2d(h + self.bn(h), 2).flatten(1))


def _jacobian_norm(model: nn.Module) -> float:
    return float(_local_constants(model, torch.zeros(1, *SHAPE, dtype=torch.float64)).detach()[0])


def test_bound_of_a_linear_chain_is_its_exact_constant():
    torch.manual_seed(0)
    model = _LinearChain().double().eval()
    exact = _jacobian_norm(model)
    bound = float(GraphLipschitzBound(model, SHAPE).exact())
    assert exact <= bound <= exact * (1 + 1e-4)


def test_bound_of_a_linear_residual_graph_is_above_its_exact_constant():
    torch.manual_seed(0)
    model = _LinearResidual().double().eval()
    assert _jacobian_norm(model) <= float(GraphLipschitzBound(model, SHAPE).exact())


def test_sequential_without_batchnorm_keeps_the_layer_by_layer_number():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(72, 16), nn.ReLU(), nn.Linear(16, 8), nn.LeakyReLU(0.1),
                        nn.Linear(8, 3))
    layered = float(LipschitzBound(net, SHAPE).exact())
    assert float(GraphLipschitzBound(net, SHAPE).exact()) == pytest.approx(layered, rel=1e-6)


def test_folding_batchnorm_makes_the_graph_bound_tighter_than_layer_by_layer():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    bn.running_var.uniform_(0.2, 3.0)
    bn.weight.data.uniform_(-2, 2)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), bn, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(27, 3)).double().eval()
    graph, layered = float(GraphLipschitzBound(net, SHAPE).exact()), float(LipschitzBound(net, SHAPE).exact())
    assert graph < layered
    x = torch.rand(64, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(_local_constants(net, x).detach().max()) <= graph


def test_overlapping_max_pooling_and_leaky_relu_get_their_constants():
    class Pool(nn.Module):
        def forward(self, x):
            return F.leaky_relu(F.max_pool2d(x, 3, stride=1), -3.0)

    bound = GraphLipschitzBound(Pool(), (1, 5, 5))
    assert float(bound.exact()) == pytest.approx(3.0 * 3.0)


def test_cat_of_branches_takes_the_root_of_the_sum_of_squares():
    class Branches(nn.Module):
        def forward(self, x):
            return torch.cat([x * 3.0, F.relu(x) * 4.0], dim=1)

    assert float(GraphLipschitzBound(Branches(), (2,)).exact()) == pytest.approx(5.0, rel=1e-4)


def test_residual_addition_adds_the_bounds():
    class Doubled(nn.Module):
        def forward(self, x):
            return x + F.relu(x) * 2.0

    assert float(GraphLipschitzBound(Doubled(), (3,)).exact()) == pytest.approx(3.0, rel=1e-4)


def test_training_bound_is_differentiable_in_every_parameter_and_approaches_the_exact_one():
    model = build("residual-bn").float().train()
    bound = GraphLipschitzBound(model, SHAPE)
    for _ in range(100):
        value = bound()
    value.backward()
    inner = model.net
    for layer in (inner.stem, inner.bn1, inner.c1, inner.bn2, inner.c2, inner.fc):
        assert layer.weight.grad is not None and float(layer.weight.grad.abs().sum()) > 0, layer
    assert float(value.detach()) == pytest.approx(float(bound.exact()), rel=1e-2)
    assert inner.bn1.training  # the model's mode is left alone


def test_training_bound_does_not_touch_batchnorm_statistics():
    model = build("residual-bn").float().train()
    before = model.net.bn1.running_mean.clone()
    GraphLipschitzBound(model, SHAPE)()
    assert torch.equal(model.net.bn1.running_mean, before)


def test_pairwise_body_bound_stops_before_the_last_linear_layer():
    model = _model("cnn")
    bound = GraphLipschitzBound(model, SHAPE)
    assert bound.head is model.fc
    whole, body = float(bound.exact()), float(bound.exact(exclude_head=True))
    head = float(torch.linalg.matrix_norm(model.fc.weight.detach(), ord=2))
    assert whole == pytest.approx(body * head, rel=1e-4)


def test_bound_for_model_reads_sequentials_layer_by_layer_and_any_other_model_as_a_graph():
    assert is_layered(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    assert isinstance(bound_for_model(nn.Sequential(nn.Flatten(), nn.Linear(72, 2)), SHAPE), LipschitzBound)
    assert isinstance(bound_for_model(_model("residual-bn"), SHAPE), GraphLipschitzBound)
    model = _model("residual-bn")
    assert lipschitz_bound(model, SHAPE) == pytest.approx(float(GraphLipschitzBound(model, SHAPE).exact()), rel=1e-9)


def test_unsupported_operation_is_named_with_its_source_line():
    class Squashed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return torch.sigmoid(self.fc(x))

    with pytest.raises(UnsupportedLayerError, match=r"Squashed: .*torch\.sigmoid at test_lipschitz_graph\.py:\d+"):
        GraphLipschitzBound(Squashed(), (4,))


def test_linf_dist_layers_are_refused_with_a_pointer_to_their_certificate():
    with pytest.raises(UnsupportedLayerError, match="LinfDistConvNet: the L∞-dist layer .*linf-dist"):
        GraphLipschitzBound(build("linf-dist-conv"), SHAPE)


def test_state_keeps_one_power_iteration_vector_per_linear_map():
    bound = GraphLipschitzBound(_model("cat"), SHAPE)
    vectors = [k for k in bound.state_dict() if k.endswith(".vector")]
    assert len(vectors) == len(bound.operators) > 0
    assert math.isfinite(float(bound.exact()))


def test_lmt_radii_of_a_residual_batchnorm_net_survive_a_strong_attack():
    from test_lmt import _strongest_attack_success

    from mistered.certify.lipschitz.lmt import LMTCertifier

    model = build("residual-bn").float()
    x = torch.rand(12, *SHAPE, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    for pairwise in (False, True):
        cert = LMTCertifier(model, pairwise=pairwise).certify(x, y)
        assert bool((cert.radius > 0).all())
        assert not bool(_strongest_attack_success(model, x, y, cert.radius * (1 - 1e-4), restarts=8, steps=30).any())


def test_lmt_training_of_a_residual_batchnorm_net_enlarges_its_certified_radius():
    from mistered.certify.lipschitz.lmt import certify_lmt
    from mistered.train.lmt import LMTObjective

    model = build("residual-bn").float()
    x = torch.rand(32, *SHAPE, generator=torch.Generator().manual_seed(5))
    y = torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(6))
    before = float(certify_lmt(model.eval(), x, y).radius.mean())
    objective = LMTObjective(c=0.5, warmup=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(25):
        loss, _ = objective(model, x, y, step / 25)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert isinstance(objective.bound_for(model, SHAPE), GraphLipschitzBound)
    operators = objective.bound_for(model, SHAPE).operators
    assert set(objective.state_dict()) == {f"operators.{i}.vector" for i in range(len(operators))}
    assert float(certify_lmt(model.eval(), x, y).radius.mean()) > before


def test_a_model_in_training_mode_is_bounded_as_its_eval_mode_function():
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(F.dropout(F.relu(x), 0.5, self.training))

    torch.manual_seed(0)
    model = Noisy().train()
    bound = GraphLipschitzBound(model, (4,))
    assert model.training
    assert float(bound.exact()) == pytest.approx(float(torch.linalg.matrix_norm(model.fc.weight.detach(), ord=2)),
                                                 rel=1e-4)


def test_the_bound_owns_no_parameter_of_the_model():
    bound = GraphLipschitzBound(_model("cnn"), SHAPE)
    assert list(bound.parameters()) == [] and bound.head is not None
