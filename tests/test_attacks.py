"""Attacks: result consistency, budgets, strength vs torchattacks, restarts, early stop, CW, FGSM, adapter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mistered.attacks import FGSM, PGD, CarliniWagnerL2, PerceptualAttack, TorchattacksAttack, build_attack
from mistered.data import load_dataset
from mistered.errors import InvalidInputError
from mistered.threats import Additive, parse_threat


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained briefly on real MNIST, and 48 test images it mostly gets right."""
    torch.manual_seed(0)
    train = load_dataset("mnist-5k", "train").subset(1500)
    model = nn.Sequential(nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 12 * 12, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(2):
        for i in range(0, 1500, 50):
            loss = nn.functional.cross_entropy(model(train.images[i:i + 50]), train.labels[i:i + 50])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    test = load_dataset("mnist-5k", "test").subset(48)
    return model, test.images, test.labels


def _rerun_success(model, result) -> torch.Tensor:
    with torch.no_grad():
        return model(result.x_adv).argmax(1) != result.labels


def test_rerunning_the_model_on_x_adv_reproduces_success_exactly(trained):
    model, x, y = trained
    result = PGD(model, parse_threat("linf(0.1)||l2(1.5)"), steps=5, restarts=2, seed=1)(x, y)
    assert torch.equal(_rerun_success(model, result), result.success)
    assert 0 < int(result.success.sum()) < len(y)  # a non-trivial mix of successes and failures


@pytest.mark.parametrize("spec", ["linf(0.1)", "l2(1.0)", "flow(0.05)", "rotation(10deg)", "affine(10deg,0.1)",
                                  "flow(0.05)>>affine(10deg,0.1)>>linf(0.1)", "linf(0.1)||rotation(20deg)",
                                  "linf(0.3)|dssim<=0.05"])
def test_every_threat_budget_holds_and_images_stay_valid(trained, spec):
    model, x, y = trained
    result = PGD(model, parse_threat(spec), steps=3, seed=0)(x[:16], y[:16])
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert bool((result.sizes["size"] <= 1 + 1e-4).all())
    assert torch.equal(_rerun_success(model, result), result.success)
    if spec == "linf(0.1)":
        assert float(result.distances["linf"].max()) <= 0.1 + 1e-6
    if spec == "l2(1.0)":
        assert float(result.distances["l2"].max()) <= 1.0 + 1e-4
    if "dssim" in spec:
        assert float(result.distances["dssim"].max()) <= 0.05 + 1e-5


def test_pgd_is_at_least_as_strong_as_torchattacks_pgd(trained):
    import torchattacks

    model, x, y = trained
    eps, alpha, steps = 0.1, 0.025, 10
    ours = PGD(model, Additive("linf", eps), steps=steps, step_size=alpha / eps, seed=0)(x, y)
    torch.manual_seed(0)
    x_ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps)(x, y)
    with torch.no_grad():
        theirs = (model(x_ta).argmax(1) == y).float().mean()
    assert float(ours.robust.float().mean()) <= float(theirs) + 0.02


def test_restarts_never_do_worse_than_one_run(trained):
    model, x, y = trained
    threat = Additive("linf", 0.08)
    one = PGD(model, threat, steps=3, restarts=1, seed=3)(x, y)
    three = PGD(model, threat, steps=3, restarts=3, seed=3)(x, y)
    assert not bool((one.success & ~three.success).any())


def test_early_stop_ends_the_search_when_every_example_is_fooled(trained):
    model, x, y = trained
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        result = PGD(model, Additive("linf", 1.0), steps=50, step_size=1.0, random_start=False)(x[:8], y[:8])
    finally:
        handle.remove()
    assert bool(result.success.all())
    assert len(calls) < 10  # 50 steps would take over 50 forward passes


def test_fgsm_is_one_full_budget_sign_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = 0.3 + 0.4 * torch.rand(6, 1, 4, 4)  # far from the box edges: no clipping
    y = model(x).argmax(1)  # every example correct
    delta = torch.zeros_like(x, requires_grad=True)
    grad, = torch.autograd.grad(nn.functional.cross_entropy(model(x + delta), y, reduction="sum"), delta)
    result = FGSM(model, Additive("linf", 0.1))(x, y)
    assert torch.allclose(result.x_adv, x + 0.1 * grad.sign(), atol=1e-6)


def test_targeted_attack_success_means_predicting_the_target(trained):
    model, x, y = trained
    target = (y + 1) % 10
    result = PGD(model, Additive("linf", 0.3), steps=10, loss="margin")(x[:16], y[:16], target=target[:16])
    with torch.no_grad():
        assert torch.equal(model(result.x_adv).argmax(1) == target[:16], result.success)
    assert float(result.success.float().mean()) > 0.5


def test_cw_finds_examples_well_inside_an_l2_budget(trained):
    model, x, y = trained
    eps = 3.0
    result = CarliniWagnerL2(model, Additive("l2", eps), steps=30, lr=0.3, binary_search_steps=3)(x[:16], y[:16])
    fooled = result.success & result.clean_correct
    assert float(fooled.float().sum() / result.clean_correct.float().sum()) >= 0.6
    assert float(result.distances["l2"][fooled].median()) < 0.75 * eps
    assert torch.equal(_rerun_success(model, result), result.success)


def test_torchattacks_adapter_returns_a_valid_result_inside_the_budget(trained):
    model, x, y = trained
    result = TorchattacksAttack(model, Additive("linf", 0.1), "PGD", options={"alpha": 0.02, "steps": 5})(x[:16], y[:16])
    assert float(result.distances["linf"].max()) <= 0.1 + 1e-6
    assert torch.equal(_rerun_success(model, result), result.success)
    assert bool(result.success.any())


def test_perceptual_attack_keeps_the_bound_exactly(trained):
    model, x, y = trained
    result = PerceptualAttack(model, parse_threat("flow(0.05)>>linf(0.3)|dssim<=0.05"), steps=6)(x[:12], y[:12])
    assert float(result.distances["dssim"].max()) <= 0.05 + 1e-5
    assert bool(result.success.any())
    assert torch.equal(_rerun_success(model, result), result.success)


@pytest.mark.parametrize("bad", ["nan", "range", "channels", "shape", "labels"])
def test_bad_inputs_raise_invalid_input_error(trained, bad):
    model, x, y = trained
    x, y = x[:4].clone(), y[:4]
    if bad == "nan":
        x[0, 0, 0, 0] = float("nan")
    elif bad == "range":
        x = x * 2
    elif bad == "channels":
        x = x.repeat(1, 3, 1, 1)
    elif bad == "shape":
        x = x[:, 0]
    else:
        y = y[:2]
    with pytest.raises(InvalidInputError):
        PGD(model, Additive("linf", 0.1), steps=1)(x, y)


@pytest.mark.parametrize("make", [lambda m: PGD(m, Additive("linf", 0.1), steps=0),
                                  lambda m: PGD(m, Additive("linf", 0.1), restarts=0),
                                  lambda m: PGD(m, Additive("linf", 0.1), loss="hinge"),
                                  lambda m: CarliniWagnerL2(m, parse_threat("rotation(10deg)")),
                                  lambda m: PerceptualAttack(m, Additive("linf", 0.1)),
                                  lambda m: build_attack("deepfool", m, Additive("linf", 0.1)),
                                  lambda m: build_attack("torchattacks:NoSuchAttack", m, Additive("linf", 0.1))])
def test_bad_attack_options_raise_invalid_input_error(trained, make):
    with pytest.raises(InvalidInputError):
        make(trained[0])
