"""LipMIP and the local estimators on a piecewise-linear graph that is not a chain (a residual MLP carrying a signed
value past a ReLU layer): lowered to the chain form on the examples' boxes, LipMIP equals the largest gradient norm a
dense grid of the box finds, and the estimators keep their order around it."""

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from mistered.certify.graph.piecewise_lowering import as_plnet
from mistered.certify.lipschitz.local import EstimatorOptions, estimate_lipschitz
from mistered.cli import main
from mistered.errors import InvalidInputError


class ResidualMLP(nn.Module):
    """``out(relu(h + b(relu(a(h)))))`` with ``h = inp(x)`` signed: the skip carries ``h`` past a ReLU layer."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.a, self.b, self.out = nn.Linear(2, 3), nn.Linear(3, 4), nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        h = self.inp(x)
        return self.out(F.relu(h + self.b(F.relu(self.a(h)))))


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return ResidualMLP().double().eval()


def _grid_max(model: nn.Module, centre: torch.Tensor, radius: float, steps: int = 301) -> float:
    """The largest ``||grad (f_y - f_j)||_1`` (the L∞ -> margin constant) over a ``steps x steps`` grid of the box."""
    axis = torch.linspace(-radius, radius, steps, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2) + centre
    with torch.no_grad():
        y = int(model(centre[None]).argmax())
    grid.requires_grad_(True)
    out = model(grid)
    (grad,) = torch.autograd.grad((out[:, y] - out[:, 1 - y]).sum(), grid)
    return float(grad.abs().sum(1).max())


@pytest.mark.parametrize("seed, radius", [(0, 0.5), (1, 1.0), (2, 2.0), (3, 0.3)])
def test_lipmip_equals_the_densest_sampled_gradient_norm_on_a_residual_mlp(seed, radius):
    model = _model(seed)
    x0 = torch.rand(1, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 0.5
    estimate = estimate_lipschitz(model, x0, radius, "linf", "margin", "lipmip")
    sampled = _grid_max(model, x0[0], radius)
    assert estimate.status == ["exact"]
    assert sampled <= float(estimate.value[0]) * (1 + 1e-7)
    assert float(estimate.value[0]) <= sampled * (1 + 1e-6)


def test_estimators_bracket_lipmip_on_a_residual_mlp():
    model = _model(4)
    x0 = torch.rand(3, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64) - 0.5
    options = EstimatorOptions(seed=0)
    value = {m: estimate_lipschitz(model, x0, 0.7, "linf", "margin", m, options=options).value
             for m in ("sampling", "lipmip", "lp", "fastlip", "naive")}
    tolerance = 1 + 1e-7
    assert bool((value["sampling"] <= value["lipmip"] * tolerance).all())
    for upper in ("lp", "fastlip", "naive"):
        assert bool((value["lipmip"] <= value[upper] * tolerance).all()), upper


def test_lipmip_refuses_a_chain_lowered_without_a_domain_whose_carried_values_change_sign():
    model = _model(0)
    x0 = torch.rand(1, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5
    with pytest.raises(InvalidInputError, match="lowered on a domain that contains the box"):
        estimate_lipschitz(as_plnet(model, (2,)), x0, 0.5, "linf", "margin", "lipmip")


MODEL_PY = '''
import torch
import torch.nn.functional as F
from torch import nn


class ResidualMLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.a, self.b, self.out = nn.Linear(784, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 10)

    def forward(self, x):
        h = self.inp(x.flatten(1))
        return self.out(F.relu(h + self.b(F.relu(self.a(h)))))
'''


def test_the_lipschitz_command_estimates_a_residual_model_in_order(tmp_path):
    (tmp_path / "res.py").write_text(MODEL_PY)
    args = ["lipschitz", "--model", f"{tmp_path / 'res.py'}:ResidualMLP", "--methods", "sampling,lipmip,fastlip",
            "--eps", "0.01", "--n", "2", "--quiet", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    rows = {row["method"]: row for row in record["summary"]["methods"]}
    assert rows["lipmip"]["status"] == ["exact", "exact"]
    for low, exact, high in zip(rows["sampling"]["values"], rows["lipmip"]["values"], rows["fastlip"]["values"]):
        assert low <= exact * (1 + 1e-7) and exact <= high * (1 + 1e-7)
