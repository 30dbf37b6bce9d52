"""Branch and bound as verify's complete step: it decides what CROWN and α-CROWN leave open, and its answers agree
with brute force on a grid."""

import torch

from _verify_nets import grid_min, mlp, vnnlib
from mistered.certify.bab import BabStep
from mistered.certify.verify import AttackOptions, VerifyOptions, parse_vnnlib, prepare_network, verify

LOWER, UPPER = [-1.0, -0.5], [1.0, 1.5]
ROW = torch.tensor([1.0, -1.0])
QUICK = VerifyOptions(attack=AttackOptions(restarts=2, steps=10), attack_rounds=1)


def _property(c: float):
    """Violated where ``y0 - y1 <= c`` or ``y1 - y0 >= 1e6`` (two conjunctions, the second never true)."""
    return parse_vnnlib(vnnlib(LOWER, UPPER, 2, [[f"(<= (- Y_0 Y_1) {c!r})"], ["(>= (- Y_1 Y_0) 1e6)"]]))


def _hard():
    """A property that holds by 0.2 on a grid but that neither CROWN nor α-CROWN proves."""
    net = mlp([2, 32, 32, 2], seed=0)
    return net, grid_min(net, LOWER, UPPER, ROW) - 0.2


def test_the_step_proves_what_the_incomplete_bounds_leave_open():
    net, c = _hard()
    without = verify(prepare_network(net, (2,)), _property(c), 5, options=QUICK)
    assert without.status != "unsat"
    result = verify(prepare_network(net, (2,)), _property(c), 60, options=QUICK, branch_and_bound=BabStep())
    assert result.status == "unsat" and result.lower_bound > 0
    assert [s["step"] for s in result.steps][-1] == "bab"


def test_the_step_never_proves_a_violated_property():
    net, c = _hard()
    result = verify(prepare_network(net, (2,)), _property(c + 0.21), 20,
                    options=VerifyOptions(attack=AttackOptions(restarts=1, steps=1), first_rounds=0, attack_rounds=0),
                    branch_and_bound=BabStep())
    assert result.status == "sat"
    assert float(ROW.double() @ result.counterexample.y) <= c + 0.21
