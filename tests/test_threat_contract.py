"""The Perturbation contract (mistered.threats.base), checked on every threat the package offers."""

import pytest
import torch

from mistered.threats import Additive, Affine, Flow, PerceptualBudget, Sequence, parse_threat

COMBINED_RAW = Sequence((Flow(0.05), Affine(10.0, 0.1), Additive("linf", 0.3)))
THREATS = {
    "linf": Additive("linf", 0.3),
    "l2": Additive("l2", 2.0),
    "affine": Affine(10.0, 0.1, 0.1),
    "rotation": Affine(30.0, 0.0, 0.0),
    "flow": Flow(0.05),
    "flow-smooth": Flow(0.05, smoothness=0.01),
    "combined-unbounded": COMBINED_RAW,
    "combined-smooth": Sequence((Flow(0.1, 0.02), Affine(10.0, 0.1, 0.1), Additive("l2", 1.0))),
    "combined-dssim": PerceptualBudget(COMBINED_RAW, "dssim", 0.1),
    "flow-dssim": PerceptualBudget(Flow(0.1), "dssim", 0.05),
    "linf-l2": PerceptualBudget(Additive("linf", 0.3), "l2", 1.0),
}
BATCH, SIZE = 4, 16


@pytest.fixture(params=sorted(THREATS))
def threat(request):
    return THREATS[request.param]


@pytest.fixture
def x():
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(BATCH, 1, SIZE // 4, SIZE // 4, generator=gen)  # smooth-ish images, like digits
    return torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)


def _inside(perturbation) -> torch.Tensor:
    """Every example inside every budget (and the flag agrees with size() <= 1)."""
    inside = perturbation.within_budget()
    assert torch.equal(inside, perturbation.size() <= 1 + 1e-5)
    return inside


def _random_grads_(perturbation, gen: torch.Generator) -> None:
    for param in perturbation.parameters():
        param.grad = torch.randn(param.shape, generator=gen)


def test_a_fresh_perturbation_is_exactly_the_identity(threat, x):
    assert torch.equal(threat.perturbation(x)(x), x)


def test_scale_zero_returns_exactly_the_input(threat, x):
    perturbation = threat.perturbation(x).random_init_(torch.Generator().manual_seed(1))
    perturbation.scale_(torch.zeros(BATCH))
    assert torch.equal(perturbation(x), x)


def test_scale_one_changes_nothing(threat, x):
    perturbation = threat.perturbation(x).random_init_(torch.Generator().manual_seed(2))
    before = perturbation.snapshot()
    perturbation.scale_(torch.ones(BATCH))
    assert all(torch.equal(a, b) for a, b in zip(before, perturbation.snapshot()))


def test_random_init_is_inside_the_budget_and_moves_every_example(threat, x):
    perturbation = threat.perturbation(x).random_init_(torch.Generator().manual_seed(3))
    assert _inside(perturbation).all()
    assert (perturbation.size() > 0).all()


def test_random_init_is_reproducible_from_the_generator(threat, x):
    first = threat.perturbation(x).random_init_(torch.Generator().manual_seed(4)).snapshot()
    second = threat.perturbation(x).random_init_(torch.Generator().manual_seed(4)).snapshot()
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def _steps_stay_inside(threat, x, rounds: int) -> None:
    gen = torch.Generator().manual_seed(5)
    perturbation = threat.perturbation(x).random_init_(gen)
    for _ in range(rounds):
        _random_grads_(perturbation, gen)
        perturbation.step_(0.7).project_()
        assert _inside(perturbation).all()
        out = perturbation(x)
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_steps_then_projection_stay_inside_the_budget_and_the_image_box(threat, x):
    _steps_stay_inside(threat, x, rounds=4)


def test_the_combined_preset_holds_every_budget_and_the_lpips_bound_after_steps(x):
    _steps_stay_inside(parse_threat("combined"), x, rounds=2)


def test_a_step_moves_along_the_gradient(threat, x):
    gen = torch.Generator().manual_seed(6)
    perturbation = threat.perturbation(x)
    _random_grads_(perturbation, gen)
    grads = [param.grad.clone() for param in perturbation.parameters()]
    perturbation.step_(0.1)
    for param, grad in zip(perturbation.parameters(), grads):
        assert (param.detach() * grad).sum() > 0


def test_gradients_reach_every_parameter_of_every_example(threat, x):
    gen = torch.Generator().manual_seed(7)
    perturbation = threat.perturbation(x).random_init_(gen)
    weights = torch.randn(x.shape, generator=gen)
    (perturbation(x) * weights).sum().backward()
    params = list(perturbation.named_parameters())
    assert params
    for name, param in params:
        assert param.grad is not None, name
        assert (param.grad.reshape(BATCH, -1).abs().sum(dim=1) > 0).all(), name


def test_scale_between_zero_and_one_stays_inside_the_budget(threat, x):
    gen = torch.Generator().manual_seed(8)
    perturbation = threat.perturbation(x).random_init_(gen)
    for _ in range(3):  # push towards the boundary first
        _random_grads_(perturbation, gen)
        perturbation.step_(1.0).project_()
    perturbation.scale_(torch.rand(BATCH, generator=gen))
    assert _inside(perturbation).all()


def test_changing_one_example_leaves_the_others_untouched(threat, x):
    gen = torch.Generator().manual_seed(9)
    perturbation = threat.perturbation(x).random_init_(gen)
    before = perturbation(x).detach()
    t = torch.ones(BATCH)
    t[0] = 0.0
    perturbation.scale_(t)
    after = perturbation(x).detach()
    assert torch.equal(after[1:], before[1:])
    assert torch.equal(after[0], x[0]) and not torch.equal(before[0], x[0])
