"""PerceptualBudget: a hard per-example bound on metric(x, x_adv) over any threat."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torch import nn

from mistered.errors import InvalidInputError
from mistered.threats import Additive, Flow, PerceptualBudget, Sequence, Union, bind_features, parse_threat
from mistered.threats.perceptual import _TAIL_AIMS, ACCEPT_RTOL, PerceptualPerturbation


def _digits(n: int = 8) -> torch.Tensor:
    """Real-looking 1x28x28 images: blurred strokes on a black background, in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    strokes = (torch.rand(n, 1, 7, 7, generator=g) > 0.6).float()
    up = torch.nn.functional.interpolate(strokes, size=(28, 28), mode="bilinear", align_corners=False)
    return up.clamp(0, 1)


def _random_grads_(perturbation: PerceptualPerturbation, g: torch.Generator) -> None:
    for param in perturbation.parameters():
        param.grad = torch.randn(param.shape, generator=g)


def _perceptual(perturbation: PerceptualPerturbation) -> torch.Tensor:
    return perturbation.sizes()[perturbation.threat.metric]


def _count_metric_calls(perturbation: PerceptualPerturbation) -> list[int]:
    calls = [0]
    measure = perturbation._measure

    def counted(y, rows):
        calls[0] += y.shape[0]
        return measure(y, rows)

    perturbation._measure = counted
    return calls


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16), metric=st.sampled_from(["lpips", "dssim"]), bound=st.sampled_from([0.005, 0.02, 0.05]))
def test_every_example_satisfies_the_bound_after_init_and_steps(seed, metric, bound):
    g = torch.Generator().manual_seed(seed)
    perturbation = PerceptualBudget(Additive("linf", 0.3), metric, bound).perturbation(_digits(6))
    perturbation.random_init_(g)
    assert (_perceptual(perturbation) <= bound).all()
    for _ in range(3):
        _random_grads_(perturbation, g)
        perturbation.step_(0.5).project_()
        assert (_perceptual(perturbation) <= bound).all()
        assert perturbation.within_budget().all()


def test_combined_chain_satisfies_the_lpips_bound_after_steps():
    g = torch.Generator().manual_seed(1)
    threat = parse_threat("combined")
    bound = threat.bound
    perturbation = threat.perturbation(_digits())
    perturbation.random_init_(g)
    for _ in range(2):
        _random_grads_(perturbation, g)
        perturbation.step_(0.5).project_()
        assert (_perceptual(perturbation) <= bound).all()
        assert perturbation.within_budget().all()


def test_examples_already_inside_are_unchanged_by_project():
    x = _digits()
    perturbation = PerceptualBudget(Additive("linf", 0.3), "dssim", 0.02).perturbation(x)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        delta = (2 * torch.rand(x.shape, generator=g) - 1) * 0.3
        delta[::2] *= 0.01  # even examples: tiny, well inside the SSIM bound
        perturbation.inner.delta.copy_(delta)
        perturbation.inner.project_()
    before = perturbation.inner.delta.detach().clone()
    inside = _perceptual(perturbation) <= 0.02
    assert inside[::2].all() and not inside[1::2].any()
    perturbation.project_()
    assert torch.equal(perturbation.inner.delta[inside], before[inside])
    assert not torch.equal(perturbation.inner.delta[~inside], before[~inside])


def test_violators_end_just_inside_the_bound_not_far_inside():
    # with an L2 metric on an L2 perturbation the distance is linear in the scale: the search is exact
    x = torch.full((6, 1, 8, 8), 0.5)
    perturbation = PerceptualBudget(Additive("l2", 3.0), "l2", 1.0).perturbation(x)
    perturbation.random_init_(torch.Generator().manual_seed(3))
    with torch.no_grad():
        perturbation.inner.delta.mul_(3.0 / perturbation.inner.sizes()["l2"].view(-1, 1, 1, 1))
    perturbation.project_()
    distances = perturbation.sizes()["l2_total"]
    assert (distances <= 1.0).all() and (distances >= 1.0 - ACCEPT_RTOL).all()


def test_projection_evaluates_the_metric_on_violators_only_and_few_times():
    x = torch.full((6, 1, 8, 8), 0.5)
    perturbation = PerceptualBudget(Additive("l2", 3.0), "l2", 1.0).perturbation(x)
    with torch.no_grad():
        perturbation.inner.delta[:2] = 0.25  # two examples over the bound: L2 = 0.25 * sqrt(64) = 2 > 1
    calls = _count_metric_calls(perturbation)
    perturbation.project_()
    # one evaluation of the whole batch at t = 1, then one round for the two violators (a linear metric: a guess
    # lands where aimed, inside the accepted band); so few examples get one guess per tail target
    assert calls[0] == 6 + 2 * len(_TAIL_AIMS)


def test_a_large_batch_of_violators_gets_one_guess_each_per_round():
    x = torch.full((12, 1, 8, 8), 0.5)
    perturbation = PerceptualBudget(Additive("l2", 3.0), "l2", 1.0).perturbation(x)
    with torch.no_grad():
        perturbation.inner.delta[:10] = 0.25  # ten violators, more than the tail's few
    calls = _count_metric_calls(perturbation)
    perturbation.project_()
    assert calls[0] == 12 + 10
    assert (perturbation.sizes()["l2_total"] <= 1.0).all()


def test_zero_bound_leaves_only_the_identity():
    x = _digits(4)
    perturbation = PerceptualBudget(Additive("linf", 0.3), "dssim", 0.0).perturbation(x)
    perturbation.random_init_(torch.Generator().manual_seed(4))
    assert torch.equal(perturbation(x), x)


def test_sizes_and_budgets_report_the_metric_next_to_the_inner_quantities():
    perturbation = PerceptualBudget(Additive("linf", 0.3), "dssim", 0.05).perturbation(_digits(3))
    assert set(perturbation.sizes()) == {"linf", "dssim"}
    assert perturbation.budgets() == {"linf": 0.3, "dssim": 0.05}


def test_perturbation_parameters_are_exactly_the_inner_ones():
    perturbation = PerceptualBudget(Additive("linf", 0.3), "dssim", 0.05).perturbation(_digits(2))
    assert [p is q for p, q in zip(perturbation.parameters(), perturbation.inner.parameters())] == [True]


def test_lpips_weights_are_not_perturbation_parameters():
    perturbation = PerceptualBudget(Additive("linf", 0.3), "lpips", 0.05).perturbation(_digits(2))
    assert len(list(perturbation.parameters())) == 1


def test_union_is_distributed_over_its_alternatives():
    threat = PerceptualBudget(Union((Additive("linf", 0.3), Additive("l2", 2.0))), "dssim", 0.05)
    assert threat.alternatives() == (
        PerceptualBudget(Additive("linf", 0.3), "dssim", 0.05),
        PerceptualBudget(Additive("l2", 2.0), "dssim", 0.05),
    )


@pytest.mark.parametrize(
    "threat",
    [
        PerceptualBudget(Additive("linf", 8 / 255), "lpips", 0.1),
        PerceptualBudget(Union((Additive("linf", 0.3), Additive("l2", 2.0))), "dssim", 0.05),
    ],
)
def test_name_parses_back_to_an_equal_threat(threat):
    assert parse_threat(threat.name) == threat


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("metric, bound", [("psnr", 0.1), ("lpips", -0.1), ("dssim", 2.5), ("ssim", 3.0)])
def test_bad_metric_or_bound_is_rejected(metric, bound):
    with pytest.raises(InvalidInputError):
        PerceptualBudget(Additive("linf", 0.3), metric, bound)


def test_nested_budgets_both_hold_after_projection():
    g = torch.Generator().manual_seed(5)
    threat = parse_threat("linf(0.3)|dssim<=0.03|l2<=1.5")
    perturbation = threat.perturbation(_digits(6))
    perturbation.random_init_(g)
    for _ in range(2):
        _random_grads_(perturbation, g)
        perturbation.step_(0.5).project_()
        sizes = perturbation.sizes()
        assert (sizes["dssim"] <= 0.03).all() and (sizes["l2"] <= 1.5).all()


def test_ssim_budget_is_the_deprecated_name_of_dssim():
    with pytest.warns(FutureWarning, match="deprecated"):
        threat = PerceptualBudget(Additive("linf", 0.3), "ssim", 0.05)
    assert threat == PerceptualBudget(Additive("linf", 0.3), "dssim", 0.05)


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 28 * 28, 10)).eval()


def test_bind_features_sets_the_model_on_every_self_budget_and_keeps_the_threat_equal():
    model = _classifier()
    threat = parse_threat("(linf(0.3)|lpips-self<=0.3)||(flow(0.05)>>linf(0.1)|lpips<=0.02)")
    bound = bind_features(threat, model=model)
    assert bound == threat
    first, second = bound.alternatives()
    assert first.features is model and second.features is None


def test_an_unbound_self_budget_is_one_error_saying_how_to_bind_it():
    threat = parse_threat("linf(0.3)|lpips-self<=0.3")
    with pytest.raises(InvalidInputError, match="bind_features"):
        threat.perturbation(_digits(2))
    with pytest.raises(InvalidInputError, match="needs the model"):
        bind_features(threat)
    with pytest.raises(InvalidInputError, match="--lpips-net file.py:Name"):
        bind_features(parse_threat("linf(0.3)|lpips-net<=0.3"), model=_classifier())


def test_a_self_budget_holds_after_init_and_steps():
    g = torch.Generator().manual_seed(6)
    threat = bind_features(PerceptualBudget(Sequence((Flow(0.05), Additive("linf", 0.3))), "lpips-self", 0.3),
                           model=_classifier())
    perturbation = threat.perturbation(_digits(5))
    perturbation.random_init_(g)
    for _ in range(3):
        _random_grads_(perturbation, g)
        perturbation.step_(0.5).project_()
        assert (_perceptual(perturbation) <= 0.3).all() and perturbation.within_budget().all()
