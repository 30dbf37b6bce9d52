"""``verify``: answers agree with brute force on small nets, time limits end the search, the branch-and-bound hook
is called and checked, and disagreements stop with an error instead of an answer."""

import json
import math

import pytest
import torch
from torch import nn

from _verify_nets import grid_min, mlp, vnnlib
from mistered.certify.verify import (
    AttackOptions, CompleteOutcome, VerifyOptions, parse_vnnlib, prepare_network, verify,
)
from mistered.certify.verify import recheck
from mistered.errors import InvalidInputError, UnsoundResultError

LOWER, UPPER = [-1.0, -0.5], [1.0, 1.5]
ROW = torch.tensor([1.0, -1.0])
QUICK = VerifyOptions(attack=AttackOptions(restarts=8, steps=40), attack_rounds=1)


def _property(c: float):
    """Violated where ``y0 - y1 <= c``."""
    return parse_vnnlib(vnnlib(LOWER, UPPER, 2, [[f"(<= (- Y_0 Y_1) {c!r})"]]))


def _lipschitz(net: nn.Module) -> float:
    return math.prod(torch.linalg.matrix_norm(m.weight, 2).item() for m in net if isinstance(m, nn.Linear)) * 2 ** 0.5


def _hard():
    """A net and a threshold whose property holds (by 0.2 on a grid) but which neither CROWN nor α-CROWN proves
    (their bounds are ~0.4 looser here)."""
    net = mlp([2, 32, 32, 2], seed=0)
    return net, grid_min(net, LOWER, UPPER, ROW) - 0.2


@pytest.mark.parametrize("seed, width", [(0, 12), (1, 12), (2, 12), (1, 32)])
def test_answers_agree_with_brute_force_on_small_nets(seed, width):
    net = mlp([2, width, width, 2], seed=seed)
    network = prepare_network(net, (2,))
    best = grid_min(net, LOWER, UPPER, ROW)  # an upper bound of the true minimum
    slack = _lipschitz(net) * (UPPER[0] - LOWER[0]) / 400  # the true minimum is above best - slack
    answers = {}
    for c in [best - 3.0, best - 1.0, best - 0.3, best - 2 * slack, best + 0.01, best + 0.3]:
        result = verify(network, _property(c), 30, options=QUICK, seed=seed)
        answers[c] = result.status
        if result.status == "unsat":
            assert c < best and result.lower_bound > 0
        if result.status == "sat":
            assert c >= best - slack
            x, region = result.counterexample.x, _property(c).regions[0]
            assert bool(region.contains(x[None])) and float(ROW.double() @ result.counterexample.y) <= c
    assert answers[best - 3.0] == "unsat" and answers[best + 0.01] == "sat" and answers[best + 0.3] == "sat"


def test_an_unprovable_instance_runs_until_its_deadline_and_reports_its_bounds():
    net, c = _hard()
    options = VerifyOptions(attack=AttackOptions(restarts=2, steps=10))
    result = verify(net, _property(c), 1.0, input_shape=(2,), options=options)
    assert result.status == "timeout" and result.seconds >= 1.0
    assert [s["step"] for s in result.steps] == ["attack", "crown", "alpha-crown", "attack"]
    assert math.isfinite(result.lower_bound) and result.lower_bound <= 0 < result.upper_bound
    json.dumps(result.to_json(), allow_nan=False)  # every number finite


def test_when_every_step_ends_before_the_deadline_the_answer_is_unknown():
    net, c = _hard()
    result = verify(net, _property(c), 60, input_shape=(2,), options=VerifyOptions(
        attack=AttackOptions(restarts=2, steps=10), methods=("crown",), attack_rounds=0))
    assert result.status == "unknown"


class _Step:
    """A complete step that claims ``lower`` bounds and offers ``candidates``, recording its calls."""

    name = "test-step"

    def __init__(self, shift: float = 0.0, candidates=()):
        self.shift, self.candidates, self.calls = shift, list(candidates), []

    def __call__(self, network, prop, open_regions, deadline):
        self.calls.append(([r.index for r in open_regions], [r.open for r in open_regions], deadline.remaining()))
        return CompleteOutcome([r.lower + self.shift for r in open_regions], self.candidates)


def test_the_branch_and_bound_hook_gets_the_open_regions_and_its_proof_is_taken():
    net, c = _hard()
    options = VerifyOptions(attack=AttackOptions(restarts=2, steps=10), methods=("crown",), attack_rounds=0)
    lower = verify(net, _property(c), 60, input_shape=(2,), options=options).lower_bound
    assert lower < 0  # CROWN alone does not prove it
    step = _Step(shift=0.05 - lower)  # a step proving 0.05 (the grid shows 0.2 holds)
    result = verify(net, _property(c), 60, input_shape=(2,), options=options, branch_and_bound=step)
    assert result.status == "unsat" and step.calls[0][:2] == ([0], [(0,)]) and 0 < step.calls[0][2] <= 60
    assert "test-step" in [s["step"] for s in result.steps]


def test_a_hook_candidate_is_rechecked_before_it_answers_sat():
    net, c = _hard()
    options = VerifyOptions(first_rounds=0, methods=("crown",), attack_rounds=0)
    corner = torch.tensor(LOWER, dtype=torch.float64)
    with torch.no_grad():
        value = float(net(corner[None].float())[0] @ ROW)
    prop = _property(value + 1e-3)  # the corner violates it
    assert verify(net, prop, 60, input_shape=(2,), options=options, branch_and_bound=_Step(
        candidates=[(0, corner)])).status == "sat"
    bogus = torch.tensor([5.0, 5.0], dtype=torch.float64)  # outside the box
    assert verify(net, _property(c), 60, input_shape=(2,), options=options, branch_and_bound=_Step(
        candidates=[(0, bogus)])).status == "unknown"


def test_a_bound_crossing_a_point_the_attack_evaluated_is_an_error_not_an_answer():
    net, c = _hard()
    options = VerifyOptions(attack=AttackOptions(restarts=2, steps=10), methods=("crown",), attack_rounds=0)
    with pytest.raises(UnsoundResultError, match="exceeds the violation"):
        verify(net, _property(c), 60, input_shape=(2,), options=options, branch_and_bound=_Step(shift=100.0))


def test_no_sat_without_a_passed_recheck(monkeypatch):
    monkeypatch.setattr(recheck.CounterexampleChecker, "check", lambda self, prop, region, x: None)
    net = mlp([2, 12, 12, 2], seed=0)
    best = grid_min(net, LOWER, UPPER, ROW)
    result = verify(net, _property(best + 0.3), 60, input_shape=(2,), options=QUICK)
    assert result.status == "unknown" and result.counterexample is None


def test_the_counterexample_names_the_region_it_lies_in():
    class Identity(nn.Module):
        def forward(self, x):
            return torch.cat([x, torch.zeros_like(x)], dim=1)

    text = """(declare-const X_0 Real)(declare-const Y_0 Real)(declare-const Y_1 Real)
        (assert (or (and (>= X_0 0) (<= X_0 1)) (and (>= X_0 -1) (<= X_0 0.25))))
        (assert (<= Y_0 -0.5))"""
    result = verify(Identity(), parse_vnnlib(text), 30, input_shape=(1,), options=QUICK)
    assert result.status == "sat" and result.counterexample.region == 1 and result.counterexample.x.item() <= -0.5
    assert len(result.attack_values) == 2


def test_a_model_without_bounds_is_attacked_but_never_proved():
    net = nn.Sequential(nn.Linear(2, 4), nn.Sigmoid(), nn.Linear(4, 2))
    result = verify(net, _property(-100.0), 60, input_shape=(2,), options=QUICK)
    assert result.status == "unknown" and "no bounds" in result.notes[0]
    assert result.to_json()["lower_bound"] is None


def test_a_property_that_does_not_fit_the_model_is_one_error():
    with pytest.raises(InvalidInputError, match="has 2 inputs and 2 outputs; the model takes 3 inputs"):
        verify(mlp([3, 4, 2]), _property(0.0), 10, input_shape=(3,))
    with pytest.raises(InvalidInputError, match="input shape is unknown"):
        verify(mlp([2, 4, 2]), _property(0.0), 10)
