"""The composition claim: under one LPIPS bound, the combined threat fools at least as often as each component.

The ``combined`` preset is a chain ``flow >> affine >> linf`` under ``|lpips<=b``; each component alone gets the
same bound ``b`` and the same attack (PGD: steps, step size, restarts, random start, seed) on the bundled model
and the first correctly classified bundled MNIST test digits. The full table is ``benchmarks/composition.py``.
"""

from __future__ import annotations

import pytest
import torch

from mistered.attacks import PGD
from mistered.data import load_dataset
from mistered.models import load_model
from mistered.threats import PerceptualBudget, Threat, parse_threat


N_DIGITS, STEPS, SEED = 48, 10, 0


@pytest.fixture(scope="module")
def success_rates() -> dict[str, float]:
    """Success rate of one PGD configuration on the ``combined`` preset and on each of its components alone."""
    model = load_model()
    data = load_dataset("mnist-5k", "test")
    with torch.no_grad():
        correct = model(data.images).argmax(dim=1) == data.labels
    x, y = data.images[correct][:N_DIGITS], data.labels[correct][:N_DIGITS]
    combined = parse_threat("combined")
    threats: dict[str, Threat] = {"combined": combined}
    for component in combined.threat.components:
        threats[component.name] = PerceptualBudget(component, combined.metric, combined.bound)
    rates = {}
    for name, threat in threats.items():
        attack = PGD(model, threat, steps=STEPS, seed=SEED, distances=())  # the same settings for every threat
        rates[name] = attack(x, y).success.float().mean().item()
    return rates


def test_each_component_alone_stays_below_full_success_at_the_combined_bound(success_rates):
    components = {name: rate for name, rate in success_rates.items() if name != "combined"}
    assert len(components) == 3
    assert all(rate < 1.0 for rate in components.values()), components


def test_combined_threat_fools_at_least_as_often_as_each_component_alone(success_rates):
    combined = success_rates["combined"]
    for name, rate in success_rates.items():
        assert combined >= rate, f"{name}: {rate:.3f} > combined {combined:.3f} ({success_rates})"
