"""Falsification: the attack stays inside the box, its surrogate gradient reaches what plain PGD cannot, and a
counterexample is reported only after the re-check (plain forward pass and onnxruntime)."""

import math

import pytest
import torch
from torch import nn

from _verify_nets import export_onnx, mlp, vnnlib
from mistered.certify.verify import (
    AttackOptions, CounterexampleChecker, Deadline, Falsifier, parse_vnnlib, prepare_network,
)
from mistered.certify.verify.falsify import inward_box, surrogate_forward
from mistered.models import load_model


class _Hidden(nn.Module):
    """``y0 = 10 relu(mean(x) - 0.9)``, ``y1 = 0.5``: violated (``y0 >= y1``) only where ``mean(x) >= 0.95``; at
    random points of ``[0, 1]^20`` the ReLU is off and passes no gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = nn.Linear(20, 1)
        self.out = nn.Linear(1, 2)
        with torch.no_grad():
            self.mean.weight.fill_(1 / 20)
            self.mean.bias.fill_(-0.9)
            self.out.weight.copy_(torch.tensor([[10.0], [0.0]]))
            self.out.bias.copy_(torch.tensor([0.0, 0.5]))

    def forward(self, x):
        return self.out(torch.relu(self.mean(x)))


def _hidden_property():
    return parse_vnnlib(vnnlib([0.0] * 20, [1.0] * 20, 2, [["(>= Y_0 Y_1)"]]))


def test_inward_box_keeps_every_float32_point_inside_the_float64_box():
    lower = torch.tensor([0.1, -0.3, 0.05000000074505806, 0.2], dtype=torch.float64)
    upper = torch.tensor([0.7, 0.3, 0.05000000074505806, 0.2 + 1e-12], dtype=torch.float64)
    lo, hi, gap = inward_box(lower, upper, torch.float32)
    assert lo.dtype == torch.float32
    assert bool((lo.double() >= lower)[:3].all() and (hi.double() <= upper)[:3].all())
    assert gap[:3].tolist() == [0.0, 0.0, 0.0]  # 0.05000000074505806 is a float32 number
    assert lo[3] == hi[3] and 0 < gap[3] < 1e-8  # no float32 number lies in [0.2, 0.2 + 1e-12]


def test_surrogate_forward_is_the_exact_output_with_a_gradient_through_dead_relus():
    net = prepare_network(_Hidden(), (20,))
    x = torch.full((2, 20), 0.2, requires_grad=True)
    beta = torch.tensor([math.inf, 10.0], dtype=torch.float64)
    y = surrogate_forward(net.graph, x, beta)
    assert torch.equal(y.detach(), net.module(x).detach())
    grad = torch.autograd.grad(y[:, 0].sum(), x)[0]
    assert grad[0].abs().max() == 0 and bool((grad[1] > 0).all())


def test_plain_pgd_stalls_where_the_surrogate_gradient_finds_the_counterexample():
    net, prop = prepare_network(_Hidden(), (20,)), _hidden_property()
    plain = Falsifier(net, prop, AttackOptions(betas=(math.inf,)), seed=0)
    assert plain.run_round(Deadline(30)) == [] and plain.best_value[0].item() == 0.5
    found = Falsifier(net, prop, seed=0).run_round(Deadline(30))
    assert found and all(float(x.mean()) >= 0.95 for _, x in found)


def test_attack_points_lie_in_the_box_and_best_values_are_what_the_model_gives():
    net = prepare_network(mlp([3, 16, 16, 3], seed=1), (3,))
    prop = parse_vnnlib(vnnlib([0.1, -0.2, 0.3], [0.2, 0.4, 0.35], 3, [["(>= Y_1 Y_0)"], ["(>= Y_2 Y_0)"]]))
    falsifier = Falsifier(net, prop, AttackOptions(restarts=4, steps=20), seed=3)
    falsifier.run_round(Deadline(30))
    region = prop.regions[0]
    assert bool(region.contains(falsifier.best_x[0]).all())
    with torch.no_grad():
        values = region.violation(net.module(falsifier.best_x[0].float()))
    assert torch.allclose(values.diagonal(), falsifier.best_value[0], atol=1e-5)


def test_the_deadline_stops_a_round():
    net = prepare_network(mlp([3, 8, 2]), (3,))
    prop = parse_vnnlib(vnnlib([0.0] * 3, [0.001] * 3, 2, [["(>= Y_1 1000)"]]))
    deadline = Deadline(1e-9)
    assert Falsifier(net, prop).run_round(deadline) == []


def test_recheck_accepts_a_true_counterexample_and_rejects_the_rest(tmp_path):
    path = export_onnx(_Hidden(), tmp_path / "hidden.onnx", (20,))
    net = prepare_network(load_model(path, device="cpu"))
    assert net.onnx_path == str(path) and net.input_shape == (20,)
    prop, checker = _hidden_property(), CounterexampleChecker(net)
    cex = checker.check(prop, 0, torch.ones(20, dtype=torch.float64))
    assert cex is not None and set(cex.checks) == {"torch", "onnxruntime"}
    assert cex.violation == pytest.approx(-0.5, abs=1e-5) and cex.y.tolist() == pytest.approx([1.0, 0.5], abs=1e-5)
    assert checker.check(prop, 0, torch.full((20,), 0.5, dtype=torch.float64)) is None  # not violating
    outside = torch.ones(20, dtype=torch.float64)
    outside[3] = 1.0 + 1e-9
    assert checker.check(prop, 0, outside) is None  # violating, but outside the box


def test_an_onnx_model_whose_conversion_disagrees_with_onnxruntime_is_refused(tmp_path, monkeypatch):
    from mistered.certify.verify import network as network_module
    from mistered.errors import InvalidInputError

    model = load_model(export_onnx(_Hidden(), tmp_path / "hidden.onnx", (20,)), device="cpu")
    original = network_module.OnnxRunner.__call__
    monkeypatch.setattr(network_module.OnnxRunner, "__call__", lambda self, x: original(self, x) + 0.01)
    with pytest.raises(InvalidInputError, match="disagrees with onnxruntime"):
        prepare_network(model)


def test_recheck_without_onnx_uses_the_models_forward_only():
    net = prepare_network(_Hidden(), (20,))
    cex = CounterexampleChecker(net).check(_hidden_property(), 0, torch.ones(20, dtype=torch.float64))
    assert cex is not None and set(cex.checks) == {"torch"}


def test_recheck_rejects_non_finite_outputs():
    class Infinite(nn.Module):
        def forward(self, x):
            return torch.stack([x[:, 0] * float("inf"), -x[:, 0]], dim=1)

    net = prepare_network(Infinite(), (1,))
    prop = parse_vnnlib(vnnlib([0.5], [1.0], 2, [["(>= Y_0 Y_1)"]]))
    assert CounterexampleChecker(net).check(prop, 0, torch.ones(1, dtype=torch.float64)) is None
