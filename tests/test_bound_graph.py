"""Tracing models into bound graphs: every supported operation is captured faithfully (the graph computes the
model's eval-mode function), and anything else is refused with the operation and its source line named."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _bounds_models import ARCHITECTURES, SHAPE, build, images
from mistered.certify.graph import (
    Affine, Cat, Conv2d, ConvTranspose2d, Linear, LinfDist, MaxPool2d, Permute, PiecewiseLinear, Reshape, Sum,
    trace_graph,
)
from mistered.models.linf_dist.layers import LinfDistLinear
from mistered.models.linf_dist.nets import LinfDistNet
from mistered.errors import InvalidInputError, UnsupportedLayerError
from mistered.models import Normalized


class Lambda(nn.Module):
    """A module whose forward is ``fn`` (with the given submodules registered)."""

    def __init__(self, fn, **modules) -> None:
        super().__init__()
        self.fn = fn
        for name, module in modules.items():
            self.add_module(name, module)

    def forward(self, x):
        return self.fn(self, x)


def _ops(graph):
    return [type(n.op) for n in graph.nodes[1:]]


def _check(model: nn.Module, shape=(2, 6, 6)):
    """Trace ``model`` (float64, eval) and compare the graph with it on fresh inputs; returns the graph."""
    model = model.double().eval()
    graph = trace_graph(model, shape, dtype=torch.float64)  # (a model without parameters would trace in float32)
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(graph(x), model(x), atol=1e-12, rtol=1e-12)
    return graph


CASES = {
    "linear": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(72, 5)), Linear),
    "conv-stride-padding-dilation-groups": (
        lambda: nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2, groups=2), Conv2d),
    "conv-same": (lambda: nn.Conv2d(2, 3, 3, padding="same"), Conv2d),
    "conv-transpose": (lambda: nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1), ConvTranspose2d),
    "batchnorm2d": (lambda: nn.Sequential(nn.ReLU(), nn.BatchNorm2d(2)), Affine),
    "batchnorm1d": (lambda: nn.Sequential(nn.Flatten(), nn.ReLU(), nn.BatchNorm1d(72)), Affine),
    "relu-module": (lambda: nn.ReLU(), PiecewiseLinear),
    "leaky-relu": (lambda: nn.LeakyReLU(0.2), PiecewiseLinear),
    "hardtanh": (lambda: nn.Hardtanh(-0.3, 0.4), PiecewiseLinear),
    "relu6": (lambda: Lambda(lambda m, x: m.a(x * 8.0), a=nn.ReLU6()), PiecewiseLinear),
    "F.relu": (lambda: Lambda(lambda m, x: F.relu(x - 0.5)), PiecewiseLinear),
    "torch.relu": (lambda: Lambda(lambda m, x: torch.relu(x - 0.5)), PiecewiseLinear),
    "x.relu()": (lambda: Lambda(lambda m, x: (x - 0.5).relu()), PiecewiseLinear),
    "clamp": (lambda: Lambda(lambda m, x: torch.clamp(x, 0.2, 0.7) + x.clamp(max=0.4)), PiecewiseLinear),
    "residual-add": (lambda: Lambda(lambda m, x: m.c(x).relu() + x, c=nn.Conv2d(2, 2, 3, padding=1)), Sum),
    "difference": (lambda: Lambda(lambda m, x: m.c(x) - x, c=nn.Conv2d(2, 2, 1)), Sum),
    "constants": (lambda: Lambda(
        lambda m, x: (2.0 - (x * 3.0 + 1.0) / 4.0).relu() * torch.tensor([1.0, -2.0]).view(1, 2, 1, 1)), Affine),
    "normalized": (lambda: Normalized(nn.ReLU(), mean=[0.4, 0.5], std=[0.3, 0.2]), Affine),
    "cat": (lambda: Lambda(lambda m, x: torch.cat([x, m.c(x)], dim=1), c=nn.Conv2d(2, 1, 1)), Cat),
    "reshapes": (lambda: Lambda(
        lambda m, x: x.view(x.size(0), 2, -1).unsqueeze(1).squeeze(1).reshape(-1, 72).flatten(1)), Reshape),
    "permute-transpose": (lambda: Lambda(lambda m, x: x.permute(0, 2, 3, 1).transpose(1, 2).relu()), Permute),
    "avg-pool": (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), Conv2d),
    "adaptive-avg-pool": (lambda: nn.AdaptiveAvgPool2d(3), Conv2d),
    "spatial-mean": (lambda: Lambda(lambda m, x: x.mean(dim=(2, 3))), Conv2d),
    "max-pool": (lambda: nn.MaxPool2d(3, stride=2, padding=1, dilation=1), MaxPool2d),
    "identity-dropout": (
        lambda: nn.Sequential(nn.Identity(), nn.Dropout(0.5), nn.Dropout2d(0.3), nn.ReLU()), PiecewiseLinear),
    "matmul": (lambda: Lambda(lambda m, x: x.flatten(1) @ m.fc.weight.T, fc=nn.Linear(72, 4)), Linear),
    "linf-dist": (lambda: nn.Sequential(nn.Flatten(), LinfDistLinear(72, 5, bias=True)), LinfDist),
}


@pytest.mark.parametrize("case", list(CASES))
def test_supported_operation_is_captured(case):
    build_model, op_type = CASES[case]
    torch.manual_seed(0)
    graph = _check(build_model())
    assert op_type in _ops(graph)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_architectures_trace_to_their_own_function(name):
    model = build(name)
    graph = trace_graph(model, SHAPE)
    x = images(4)
    assert torch.allclose(graph(x), model(x), atol=1e-12)


def test_linf_dist_net_traces_with_its_output_scale():
    torch.manual_seed(0)
    graph = _check(LinfDistNet((2, 6, 6), num_classes=3, depth=3, width=8))
    assert _ops(graph).count(LinfDist) == 3


def test_batchnorm_after_a_convolution_is_folded_into_it():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    graph = _check(nn.Sequential(nn.Conv2d(2, 3, 3), bn, nn.ReLU()))
    assert _ops(graph) == [Conv2d, PiecewiseLinear]


def test_affine_maps_fold_into_linear_layers_and_each_other_but_not_across_positions():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(5)
    bn.running_var.uniform_(0.5, 2)
    assert _ops(_check(nn.Sequential(nn.Flatten(), nn.Linear(72, 5), bn))) == [Reshape, Linear]
    assert _ops(_check(Normalized(nn.ReLU(), mean=[0.4, 0.5], std=[0.3, 0.2]))) == [Affine, PiecewiseLinear]
    pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)  # a per-position divisor
    assert _ops(_check(pool)) == [Conv2d, Affine]


def test_tracing_restores_the_models_training_mode():
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2), nn.Dropout(0.5)).double().train()
    before = model[1].running_mean.clone()
    graph = trace_graph(model, (2, 6, 6))
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model[1].running_mean, before)
    model.eval()
    x = torch.rand(2, 2, 6, 6, dtype=torch.float64)
    assert torch.allclose(graph(x), model(x))


def _refused(model: nn.Module, shape=(2, 6, 6)) -> str:
    with pytest.raises(UnsupportedLayerError) as info:
        trace_graph(model.double().eval(), shape)
    return str(info.value)


def test_unsupported_function_names_it_and_its_source_line():
    message = _refused(Lambda(lambda m, x: torch.sigmoid(m.c(x)), c=nn.Conv2d(2, 2, 1)))
    assert "torch.sigmoid" in message
    assert "test_bound_graph.py" in message and "torch.sigmoid(m.c(x))" in message


def test_unsupported_module_names_it_and_its_path():
    message = _refused(nn.Sequential(nn.Flatten(), nn.Linear(72, 4), nn.GELU()))
    assert "nn.GELU" in message and "'2'" in message


def test_product_of_two_input_dependent_tensors_is_refused():
    message = _refused(Lambda(lambda m, x: x * m.c(x), c=nn.Conv2d(2, 2, 1)))
    assert "not affine" in message and "x * m.c(x)" in message


@pytest.mark.parametrize("model, words", [
    (Lambda(lambda m, x: F.dropout(x, 0.5, training=True)), "random"),
    (nn.Sequential(nn.Flatten(), LinfDistLinear(72, 4)), "p = inf"),
    (nn.MaxPool2d(4, stride=4, ceil_mode=True), "ceil_mode"),
    (Lambda(lambda m, x: x.flatten(0)), "batch"),
    (nn.AdaptiveAvgPool2d(4), "divide"),
])
def test_other_unsupported_operations_are_refused_with_a_reason(model, words):
    for layer in model.modules():
        if isinstance(layer, LinfDistLinear):
            layer.p = 8.0
    assert words in _refused(model)


def test_data_dependent_control_flow_names_its_source_line():
    message = _refused(Lambda(lambda m, x: x.relu() if x.sum() > 0 else x))
    assert "cannot trace" in message and "test_bound_graph.py" in message and "x.sum() > 0" in message


def test_invalid_input_shape_is_refused():
    with pytest.raises(InvalidInputError):
        trace_graph(nn.ReLU(), (0, 3))


def _onnx_roundtrip(model: nn.Module, tmp_path) -> nn.Module:
    from mistered._compat import import_torchvision

    import_torchvision()
    import onnx  # test dependencies ([test] extra): a missing one fails the test rather than skipping it
    import onnx2torch

    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model.float().eval(), torch.rand(1, 2, 6, 6), str(path), dynamo=False, opset_version=13)
    return onnx2torch.convert(onnx.load(str(path))).double().eval()


def test_onnx_model_goes_through_the_same_graph(tmp_path):
    torch.manual_seed(0)
    model = Lambda(
        lambda m, x: m.fc(torch.cat([m.c(x).relu(), F.max_pool2d(x, 1) * 2.0 - 1.0], dim=1).flatten(1)),
        c=nn.Conv2d(2, 3, 3, padding=1), fc=nn.Linear(5 * 36, 4),
    )
    converted = _onnx_roundtrip(model, tmp_path)
    graph = trace_graph(converted, (2, 6, 6))
    x = torch.rand(3, 2, 6, 6, dtype=torch.float64)
    assert torch.allclose(graph(x), model.double()(x), atol=1e-5)
    assert {Conv2d, Linear, Cat, PiecewiseLinear} <= set(_ops(graph))


def test_onnx_residual_cnn_bounds_match_the_original(tmp_path):
    from mistered.certify.bounds import margin_lower_bounds

    model = build("residual-bn")
    converted = _onnx_roundtrip(build("residual-bn"), tmp_path)
    x = images(3)
    y = model(x).argmax(1)
    ours = margin_lower_bounds(model, x, y, 0.02, "linf", "crown")
    theirs = margin_lower_bounds(converted, x, y, 0.02, "linf", "crown")
    finite = torch.isfinite(ours)
    assert torch.allclose(ours[finite], theirs[finite], atol=1e-5)
    assert math.isinf(float(theirs[0, y[0]]))


def test_a_fixed_batch_onnx_model_as_the_loader_wraps_it_is_traced(tmp_path):
    import warnings

    from mistered.models import load_model

    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(1, 1, 4, 4),), str(tmp_path / "n.onnx"), dynamo=False, input_names=["x"])
    model = load_model(tmp_path / "n.onnx", device="cpu")  # a batch of 1 declared: chunked
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(trace_graph(model, (1, 4, 4)).forward(x), net(x), atol=1e-5, rtol=1e-5)
