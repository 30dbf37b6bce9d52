"""Adversarial training through mistered.attacks: it helps against its threat; every strategy trains."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mistered.data import load_dataset
from mistered.errors import InvalidInputError
from mistered.threats import Additive, Affine, Union, parse_threat
from mistered.train import (
    AdversarialObjective, StandardObjective, TrainConfig, build_objective, fit, held_out_accuracy,
)
from mistered.train.strategies import combine_adversarial


@pytest.fixture(scope="module")
def digits():
    train, test = load_dataset("mnist-5k", "train").subset(1000), load_dataset("mnist-5k", "test").subset(200)
    return (train.images, train.labels), (test.images, test.labels)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


CONFIG = TrainConfig(epochs=3, batch_size=50, lr=0.1, schedule="constant")


def test_adversarial_training_raises_accuracy_under_its_threat_over_standard_training(digits):
    threat = Additive("linf", 0.1)
    standard = fit(_mlp(), StandardObjective(), *digits, CONFIG, progress=False).model
    robust = fit(_mlp(), AdversarialObjective(threat, steps=5), *digits, CONFIG, progress=False).model
    acc_standard = held_out_accuracy(standard, digits[1], threat, attack_steps=10)
    acc_robust = held_out_accuracy(robust, digits[1], threat, attack_steps=10)
    assert acc_robust > acc_standard + 0.15, (acc_standard, acc_robust)


@pytest.mark.parametrize("strategy", ["random", "avg", "max"])
def test_each_strategy_trains_against_a_union_of_threats(digits, strategy):
    (x, y), held_out = digits
    threats = Union([Additive("linf", 0.1), Affine(10.0, 0.1, 0.0)])
    objective = AdversarialObjective(threats, strategy=strategy, steps=1, generator=torch.Generator().manual_seed(0))
    result = fit(_mlp(), objective, (x[:200], y[:200]), held_out, TrainConfig(epochs=1, batch_size=50), progress=False)
    assert len(objective.threats) == 2
    assert result.steps == 4 and result.history[0]["train_loss"] > 0


def test_max_strategy_scores_each_example_on_its_highest_loss_candidate():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    y = torch.tensor([0, 1, 2, 0])
    candidates = [torch.rand(4, 1, 2, 2) for _ in range(3)]
    loss, logits = combine_adversarial(net, candidates, y, "max")
    per = torch.stack([nn.functional.cross_entropy(net(c), y, reduction="none") for c in candidates])
    assert torch.allclose(loss, per.max(0).values.mean())
    avg, _ = combine_adversarial(net, candidates, y, "avg")
    assert torch.allclose(avg, per.mean()) and avg <= loss


def test_build_objective_wires_methods_and_refuses_mismatches():
    assert isinstance(build_objective("standard"), StandardObjective)
    assert isinstance(build_objective("adversarial", threats=[parse_threat("linf")]), AdversarialObjective)
    with pytest.raises(InvalidInputError, match="needs a threat"):
        build_objective("adversarial")
    with pytest.raises(InvalidInputError, match="does not train against a threat"):
        build_objective("lmt", threats=[parse_threat("linf")])
    with pytest.raises(InvalidInputError, match="unknown training method"):
        build_objective("magic")
    assert type(build_objective("lmt", c=0.5, pairwise=True)).__name__ == "LMTObjective"


@pytest.mark.parametrize("metric", ["dssim", "lpips"])
def test_perceptual_adversarial_training_keeps_every_training_example_inside_the_bound(metric):
    from mistered.metrics import distance
    from mistered.threats import parse_threat
    from mistered.train.adversarial import attack_batch

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # every example starts correctly classified, so every one is attacked
    threat = parse_threat(f"flow(0.05)>>linf(0.3)|{metric}<=0.05")
    x_adv = attack_batch(model, threat, x, y, steps=3)
    assert bool((distance(metric, x, x_adv) <= 0.05 * (1 + 1e-4)).all())
    assert bool(((x_adv - x).flatten(1).abs().amax(dim=1) > 0).all())
