"""Branch and bound over ReLU splits (mistered.certify.bab) against exact answers on tiny networks.

The exact minimum of each specification row over the box comes from a big-M MIP (scipy's HiGHS) with interval
bounds, which is exact for ReLU networks; dense grids give the points the falsifier must beat.
"""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from mistered.certify.bab import BabOptions, BabRun, BoundOptions, bab
from mistered.certify.bounds import AlphaOptions, InputSet
from mistered.certify.graph import trace_graph
from mistered.errors import InvalidInputError

PLAIN = BabOptions(batch=16, bound=BoundOptions(iterations=0, recompute_intermediate=True))
BETA = BabOptions(batch=16, bound=BoundOptions(iterations=10))


def _net(seed: int, inputs: int = 2, widths: tuple[int, ...] = (16, 16), outputs: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    layers, last = [], inputs
    for w in widths:
        layers += [nn.Linear(last, w), nn.ReLU()]
        last = w
    return nn.Sequential(*layers, nn.Linear(last, outputs)).double().eval()


def _mip_min(net: nn.Sequential, lower: np.ndarray, upper: np.ndarray, row: np.ndarray) -> float:
    """Exact ``min <row, net(x)>`` over the box, by a big-M MIP (variables: x, then per layer z, a, on/off)."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    lo, hi = lower.copy(), upper.copy()
    n_var = len(lower)
    var_lo, var_hi, integrality = list(lower), list(upper), [0] * len(lower)
    prev = list(range(len(lower)))
    rows, row_lo, row_hi = [], [], []

    def add(coefs: dict[int, float], low: float, high: float) -> None:
        rows.append(coefs)
        row_lo.append(low)
        row_hi.append(high)

    for layer in linears[:-1]:
        w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
        z_lo = np.clip(w, 0, None) @ lo + np.clip(w, None, 0) @ hi + b
        z_hi = np.clip(w, 0, None) @ hi + np.clip(w, None, 0) @ lo + b
        cur = []
        for j in range(w.shape[0]):
            a, d = n_var, n_var + 1
            n_var += 2
            var_lo += [0.0, 0.0]
            var_hi += [max(z_hi[j], 0.0), 1.0]
            integrality += [0, 1]
            pre = {p: w[j, k] for k, p in enumerate(prev)}
            # a >= z, a <= z - l (1 - d), a <= u d
            add({**{p: -c for p, c in pre.items()}, a: 1.0}, b[j], np.inf)
            add({**{p: -c for p, c in pre.items()}, a: 1.0, d: -z_lo[j]}, -np.inf, b[j] - z_lo[j])
            add({a: 1.0, d: -max(z_hi[j], 0.0)}, -np.inf, 0.0)
            cur.append(a)
        prev, lo, hi = cur, np.clip(z_lo, 0, None), np.clip(z_hi, 0, None)
    w, b = linears[-1].weight.detach().numpy(), linears[-1].bias.detach().numpy()
    objective = np.zeros(n_var)
    objective[prev] = row @ w
    matrix = np.zeros((len(rows), n_var))
    for i, coefs in enumerate(rows):
        for k, v in coefs.items():
            matrix[i, k] += v
    res = milp(objective, constraints=LinearConstraint(matrix, row_lo, row_hi), integrality=integrality,
               bounds=Bounds(var_lo, var_hi), options={"mip_rel_gap": 1e-9})
    assert res.success
    return float(res.fun + row @ b)


def _problem(seed: int, eps: float = 0.5):
    net = _net(seed)
    x = torch.full((1, 2), 0.5, dtype=torch.float64)
    y = int(net(x).argmax())
    eye = torch.eye(3, dtype=torch.float64)
    spec = eye[y][None] - eye[[j for j in range(3) if j != y]]
    box = InputSet.ball(x, eps)
    exact = min(_mip_min(net, box.lower[0].numpy(), box.upper[0].numpy(), r.numpy()) for r in spec)
    return net, trace_graph(net, (2,)).to(dtype=torch.float64), box, spec, exact


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("offset", [-0.02, 0.02])
def test_answer_agrees_with_the_exact_mip(seed, offset):
    net, graph, box, spec, exact = _problem(seed)
    rhs = torch.full((spec.shape[0],), exact + offset, dtype=torch.float64)
    result = bab(graph, box, spec, 60, rhs=rhs, options=BETA)
    assert result.status == ("verified" if offset < 0 else "falsified")
    assert math.isfinite(result.lower_bound)
    assert result.lower_bound <= exact - rhs[0] + 1e-9
    if result.status == "falsified":
        x = result.counterexample[None]
        assert bool(((x >= box.lower) & (x <= box.upper)).all())
        assert float((net(x).detach() @ spec.T - rhs).min()) <= 0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("options", [PLAIN, BETA], ids=["crown", "beta"])
def test_never_verified_when_a_counterexample_exists(seed, options):
    _, graph, box, spec, exact = _problem(seed)
    rhs = torch.full((spec.shape[0],), exact + 1e-3, dtype=torch.float64)
    result = bab(graph, box, spec, 2, rhs=rhs, options=options)
    assert result.status != "verified"
    assert result.lower_bound <= exact - float(rhs[0]) + 1e-9


def test_plain_crown_splits_also_prove():
    _, graph, box, spec, exact = _problem(5)
    rhs = torch.full((spec.shape[0],), exact - 0.05, dtype=torch.float64)
    result = bab(graph, box, spec, 60, rhs=rhs, options=PLAIN)
    assert result.status == "verified" and result.lower_bound > 0


def test_a_conjunction_is_violated_only_where_every_row_holds():
    net, graph, box, spec, _ = _problem(1)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(0, 1, 201, dtype=torch.float64)] * 2, indexing="ij"), -1)
    rows = net(grid.reshape(-1, 2)).detach() @ spec.T  # g = max over the rows (one group)
    least = float(rows.max(dim=1).values.min())
    groups = torch.zeros(2)
    falsified = bab(graph, box, spec, 60, rhs=torch.full((2,), least + 0.01, dtype=torch.float64), groups=groups,
                    options=BETA)
    assert falsified.status == "falsified"
    x = falsified.counterexample[None]
    assert float((net(x).detach() @ spec.T - (least + 0.01)).max()) <= 0
    proved = bab(graph, box, spec, 60, rhs=torch.full((2,), least - 0.2, dtype=torch.float64), groups=groups,
                 options=BETA)
    assert proved.status == "verified"


def test_the_anytime_lower_bound_never_decreases_and_stays_below_the_minimum():
    _, graph, box, spec, exact = _problem(4)
    rhs = torch.full((spec.shape[0],), exact - 0.01, dtype=torch.float64)
    plain = BabOptions(batch=2, bound=BoundOptions(iterations=0), root=AlphaOptions(iterations=0))
    bounds = [bab(graph, box, spec, 60, rhs=rhs, options=replace(plain, max_steps=k)).lower_bound for k in range(8)]
    assert all(later >= earlier for earlier, later in zip(bounds, bounds[1:]))
    assert bounds[-1] > bounds[0]
    assert all(b <= 0.01 + 1e-9 for b in bounds)


def test_the_time_limit_stops_the_search_with_a_finite_bound():
    net = _net(0, inputs=8, widths=(64, 64, 64), outputs=4)
    graph = trace_graph(net, (8,)).to(dtype=torch.float64)
    box = InputSet.ball(torch.full((1, 8), 0.5, dtype=torch.float64), 0.5)
    spec = torch.tensor([[1.0, -1.0, 0.0, 0.0]], dtype=torch.float64)
    spec = spec if float(net(box.center).detach() @ spec[0]) > 0 else -spec
    rhs = (net(box.center) @ spec.T)[0] - 1e-3  # positive at the centre, hard to decide on the box
    result = bab(graph, box, spec, 0.3, rhs=rhs.detach(), options=BabOptions(batch=8, attack_steps=0))
    assert result.status in {"timeout", "falsified"}
    assert math.isfinite(result.lower_bound)
    assert result.seconds < 20  # far above 0.3 s: only fails if the limit is ignored


def test_bad_inputs_are_one_clear_error():
    _, graph, box, spec, _ = _problem(0)
    two = InputSet.ball(torch.full((2, 2), 0.5, dtype=torch.float64), 0.1)
    with pytest.raises(InvalidInputError, match="one L∞ box"):
        bab(graph, two, spec, 1)
    with pytest.raises(InvalidInputError, match="L∞"):
        bab(graph, InputSet.ball(box.center, 0.1, "l2"), spec, 1)
    with pytest.raises(InvalidInputError, match="spec"):
        bab(graph, box, spec[:, :2], 1)
    with pytest.raises(InvalidInputError, match="timeout"):
        bab(graph, box, spec, 0)


def test_a_run_continues_where_it_stopped():
    _, graph, box, spec, exact = _problem(4)
    rhs = torch.full((spec.shape[0],), exact - 0.01, dtype=torch.float64)
    run = BabRun(graph, box, spec, rhs, options=BabOptions(batch=2, bound=BoundOptions(iterations=0)))
    first = run.advance(60, steps=3)
    assert first.status == "unknown" and first.steps == 3
    second = run.advance(60, steps=3)
    assert second.steps == 6 and second.domains > first.domains and second.lower_bound >= first.lower_bound


def test_a_network_without_relus_is_decided_at_the_root():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3)).double()
    graph = trace_graph(net, (2,)).to(dtype=torch.float64)
    box = InputSet.ball(torch.full((1, 2), 0.5, dtype=torch.float64), 0.5)
    spec = torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64)
    corners = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    least = float((net(corners).detach() @ spec.T).min())
    assert bab(graph, box, spec, 10, rhs=torch.tensor([least - 0.1])).status == "verified"
    assert bab(graph, box, spec, 10, rhs=torch.tensor([least + 0.1])).status == "falsified"
