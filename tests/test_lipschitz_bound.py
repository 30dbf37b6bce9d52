"""Per-layer and network L2 Lipschitz bounds: exact against SVD, never below sampled gradients, clear errors."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mistered.certify.lipschitz.global_bound import LipschitzBound, Residual, operator_norm
from mistered.errors import UnsupportedLayerError
from mistered.models.normalized import Normalized


def _conv_matrix_norm(conv: nn.Conv2d, shape: tuple[int, int, int]) -> float:
    """The largest singular value of the unrolled convolution matrix (bias-free), by SVD in float64."""
    n = shape[0] * shape[1] * shape[2]
    basis = torch.eye(n, dtype=torch.float64).view(n, *shape)
    out = F.conv2d(basis, conv.weight.double(), None, conv.stride, conv.padding, conv.dilation, conv.groups)
    return float(torch.linalg.svdvals(out.detach().reshape(n, -1))[0])


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1}, (2, 6, 6)),
        ({"in_channels": 2, "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1}, (2, 7, 7)),
        ({"in_channels": 1, "out_channels": 2, "kernel_size": 4, "stride": 2}, (1, 8, 8)),
        ({"in_channels": 4, "out_channels": 4, "kernel_size": 3, "dilation": 2, "groups": 2, "padding": 2}, (4, 6, 6)),
    ],
)
def test_conv_bound_matches_svd_of_unrolled_matrix_and_is_not_below_it(kwargs, shape):
    torch.manual_seed(0)
    conv = nn.Conv2d(**kwargs)
    truth = _conv_matrix_norm(conv, shape)
    bound = float(LipschitzBound(nn.Sequential(conv), shape).exact())
    assert bound >= truth
    assert (bound - truth) / truth <= 1e-4


def test_conv_bound_differs_from_reshaped_kernel_norm():
    """The kernel reshaped to (out, in*k*k) has a different norm from the convolution on an image: the
    bound follows the operator, not the reshaped kernel."""
    torch.manual_seed(1)
    conv = nn.Conv2d(1, 1, 3, padding=1)
    shape = (1, 8, 8)
    reshaped = float(torch.linalg.matrix_norm(conv.weight.detach().reshape(1, -1), ord=2))
    assert abs(operator_norm(conv, shape) - _conv_matrix_norm(conv, shape)) < 1e-6 * reshaped
    assert abs(reshaped - _conv_matrix_norm(conv, shape)) > 1e-3


def test_linear_bound_equals_spectral_norm():
    torch.manual_seed(0)
    layer = nn.Linear(7, 5)
    truth = float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
    bound = float(LipschitzBound(nn.Sequential(layer), (7,)).exact())
    assert truth <= bound <= truth * (1 + 1e-4)


def test_training_bound_converges_with_one_iteration_per_call():
    torch.manual_seed(0)
    layer = nn.Linear(20, 20)
    bound = LipschitzBound(nn.Sequential(layer), (20,))
    for _ in range(200):
        value = float(bound().detach())
    assert abs(value - float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))) < 1e-3


def test_bound_is_differentiable_with_respect_to_weights():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    bound = LipschitzBound(net, (1, 6, 6))
    for _ in range(50):
        bound()
    bound().backward()
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0
    assert net[3].weight.grad is not None and net[3].weight.grad.abs().sum() > 0


def _random_net(seed: int, kind: str) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3))
    if kind == "cnn":
        bn = nn.BatchNorm2d(3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(-2, 2)
        return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), bn, nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(12, 3)).eval()
    if kind == "residual":
        body = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
        return nn.Sequential(nn.Flatten(), Residual(body), nn.LeakyReLU(0.1), nn.Linear(16, 3))
    return Normalized(nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(), nn.MaxPool2d(1), nn.Flatten(), nn.Linear(2, 3)),
                      mean=[0.5], std=[0.25])


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["mlp", "cnn", "residual", "normalized"]))
def test_network_bound_is_never_below_sampled_gradient_norms(seed, kind):
    net = _random_net(seed, kind)
    bound = float(LipschitzBound(net, (1, 4, 4)).exact())
    x = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    out = net(x)
    for k in range(out.shape[1]):  # the Jacobian's rows: ||J||_2 >= each row's norm, and ||J v|| for random v
        (grad,) = torch.autograd.grad(out[:, k].sum(), x, retain_graph=True)
        assert float(grad.flatten(1).norm(dim=1).max()) <= bound * (1 + 1e-6)
    v = torch.randn(64, 3, generator=torch.Generator().manual_seed(seed + 1))
    v = v / v.norm(dim=1, keepdim=True)
    (grad,) = torch.autograd.grad((out * v).sum(), x)
    assert float(grad.flatten(1).norm(dim=1).max()) <= bound * (1 + 1e-6)


def test_maxpool_with_overlap_gets_constant_above_one():
    bound = LipschitzBound(nn.Sequential(nn.MaxPool2d(3, stride=1)), (1, 5, 5))
    assert float(bound.exact()) == pytest.approx(3.0)


def test_pairwise_body_bound_excludes_last_linear():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    bound = LipschitzBound(net, (1, 2, 2))
    assert bound.head is net[3]
    body = float(bound.exact(exclude_head=True))
    assert body == pytest.approx(float(torch.linalg.matrix_norm(net[1].weight.detach().double(), ord=2)), rel=1e-4)


def test_unsupported_layer_error_names_the_layer():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match=r"model\.2.*GELU"):
        LipschitzBound(net, (1, 2, 2))


def test_custom_container_is_unsupported_and_named():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) * 2

    with pytest.raises(UnsupportedLayerError, match="Block"):
        LipschitzBound(nn.Sequential(nn.Flatten(), Block()), (1, 2, 2))


def test_batchnorm_without_running_stats_is_refused():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.raises(UnsupportedLayerError, match="running statistics"):
        LipschitzBound(net, (1, 5, 5))
