"""Certificates from the bound engine: certified radii hold against a strong attack, radii at given eps follow the
Certificate's conventions, and results do not depend on chunking, windowing or the device."""

import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from _bounds_models import ARCHITECTURES, SHAPE, build, images, pgd_margins
from mistered.certify.bounds import (
    AlphaOptions, InputSet, certified_radius, certify_bounds, crown_bounds, margin_lower_bounds,
)
from mistered.certify.bounds import crown as crown_module
from mistered.certify.bounds.forms import Form
from mistered.certify.certificate import Certificate
from mistered.certify.graph import trace_graph
from mistered.errors import InvalidInputError, UnsupportedLayerError


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["mlp", "residual-bn", "pooling", "cat", "linf-dist-hybrid"])
def test_certified_radius_survives_a_strong_attack(name, norm):
    model = build(name)
    x = images(4)
    y = model(x).argmax(1)
    radius = certified_radius(model, x, y, norm, "crown", steps=12)
    assert bool((radius > 0).all())
    assert bool((margin_lower_bounds(model, x, y, radius, norm, "crown") > 0).all())
    found = pgd_margins(model, x, y, radius, norm, steps=50, restarts=3)
    assert bool((found > 0).all()), f"an attack beat a certified radius on {name}/{norm}"


def test_certificate_at_given_radii_counts_where_proved():
    model = build("mlp")
    x = images(6)
    y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 3  # one misclassified example
    radius = certified_radius(model, x, y, "linf", "crown")
    eps = sorted({float(radius[2]) * 0.5, float(radius[3]) * 0.9, 0.5})
    cert = certify_bounds(model, x, y, eps, "linf", "crown")
    assert isinstance(cert, Certificate) and cert.method == "crown" and cert.norm == "linf"
    assert cert.status[0] == "misclassified" and float(cert.radius[0]) == 0.0
    for e in eps:
        proved = (margin_lower_bounds(model, x, y, e * (1 + 2**-20), "linf", "crown") > 0).all(1)
        proved &= model(x).argmax(1) == y
        assert torch.equal(cert.certified_at(e), proved)
    assert cert.certified_accuracy(0.0) == pytest.approx(5 / 6)
    assert [r["status"] for r in cert.to_json()] == cert.status


def test_bisection_certificate_reports_proved_radii_and_methods_are_ordered():
    model = build("cnn")
    x = images(4)
    y = model(x).argmax(1)
    radii = {m: certify_bounds(model, x, y, None, "l2", m, steps=8, alpha=AlphaOptions(iterations=8)).radius
             for m in ("ibp", "crown", "alpha-crown")}
    assert bool((radii["ibp"] <= radii["crown"]).all() and (radii["crown"] <= radii["alpha-crown"]).all())
    assert bool((margin_lower_bounds(model, x, y, radii["crown"], "l2", "crown") > 0).all())


def test_bad_arguments_are_refused():
    model = build("mlp")
    x, y = images(2), torch.tensor([0, 1])
    with pytest.raises(InvalidInputError):
        certify_bounds(model, x, y, 0.1, "l3")
    with pytest.raises(InvalidInputError):
        certify_bounds(model, x, y, 0.1, "linf", "deepz")
    with pytest.raises(InvalidInputError):
        certify_bounds(model, x, y, -0.1)
    with pytest.raises(InvalidInputError):
        certify_bounds(model, x * 2, y, 0.1)
    with pytest.raises(InvalidInputError):
        margin_lower_bounds(model, x, torch.tensor([0, 5]), 0.1)
    with pytest.raises(UnsupportedLayerError):
        certify_bounds(nn.Sequential(nn.Flatten(), nn.Linear(72, 3), nn.Sigmoid()).double(), x, y, 0.1)


@pytest.mark.parametrize("name", ["residual-bn", "pooling", "cat", "linf-dist-conv"])
def test_chunking_and_windows_do_not_change_the_bounds(name, monkeypatch):
    model = build(name)
    graph = trace_graph(model, SHAPE)
    input_set = InputSet.ball(images(3), 0.03)
    reference = crown_bounds(graph, input_set)
    small_chunks = crown_bounds(graph, input_set, max_elements=300)
    dense = Form.units
    monkeypatch.setattr(crown_module.Form, "units",
                        staticmethod(lambda *args: dense(*args, windowed=False)))
    without_windows = crown_bounds(graph, input_set)
    for node in reference:
        for other in (small_chunks, without_windows):
            assert torch.allclose(reference[node][0], other[node][0], atol=1e-12)
            assert torch.allclose(reference[node][1], other[node][1], atol=1e-12)


class _LargestStorage(TorchDispatchMode):
    """The most elements any tensor produced inside holds in memory (views of a tensor count for nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self.numel = max(self.numel, t.untyped_storage().nbytes() // t.element_size())
        return out


def test_memory_of_a_chunk_follows_max_elements():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 4)).eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    graph = trace_graph(model, (3, 16, 16))
    input_set = InputSet.ball(x, 0.05)
    budget = 1 << 15
    with _LargestStorage() as small:
        crown_bounds(graph, input_set, max_elements=budget)
    with _LargestStorage() as large:
        crown_bounds(graph, input_set, max_elements=1 << 24)
    dense_chunk = 2 * 2 * 8 * 16 * 16  # one neuron's two forms over a whole feature map, for two examples
    assert small.numel <= 4 * max(budget, dense_chunk) < large.numel


def test_float32_models_and_the_graph_device_are_followed():
    model = build("residual-bn").float()
    x = images(2).float()
    y = model(x).argmax(1)
    lower = margin_lower_bounds(model, x, y, 0.01, "linf", "alpha-crown")
    assert lower.dtype == torch.float32
    reference = margin_lower_bounds(build("residual-bn"), images(2), y, 0.01, "linf", "alpha-crown")
    finite = torch.isfinite(reference)
    assert torch.allclose(lower[finite].double(), reference[finite], atol=1e-4)


# Justified skip: CI and the development machines have no GPU; these run wherever CUDA is present (a lent GPU
# machine) and check that the bound engine gives the CPU's bounds there. The CPU path is tested everywhere above.
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_cuda_gives_the_cpu_bounds(name):
    model = build(name)
    x = images(3)
    y = model(x).argmax(1)
    for method in ("ibp", "crown", "alpha-crown"):
        cpu = margin_lower_bounds(model, x, y, 0.02, "l2", method)
        gpu = margin_lower_bounds(model.cuda(), x.cuda(), y.cuda(), 0.02, "l2", method).cpu()
        model.cpu()
        finite = torch.isfinite(cpu)
        assert torch.allclose(cpu[finite], gpu[finite], atol=1e-6) and math.isinf(float(gpu[0, y[0]]))


def test_the_certify_package_exposes_its_public_api_first():
    import mistered.certify as certify
    from mistered.certify.bounds import certified_radius, margin_lower_bounds
    from mistered.certify.exact import certify_geocert
    from mistered.certify.smoothing import smooth

    assert certify.margin_bounds is margin_lower_bounds and certify.certified_radius is certified_radius
    assert certify.exact_distance is certify_geocert and certify.smooth is smooth
    import mistered.certify.lipschitz  # noqa: F401  (a submodule: a public name must never be shadowed by one)

    assert callable(certify.estimate_lipschitz) and set(certify.__all__) <= set(dir(certify))
    assert all(callable(getattr(certify, name)) for name in certify.__all__)
    with pytest.raises(AttributeError):
        certify.no_such_thing
