"""PPGD, LPA and Fast-LPA (Laidlaw et al. 2021) over threat chains: hard bounds, the steps' geometry, strength,
the deprecated ``perceptual`` name, and bad input as one clear error."""

from __future__ import annotations

import warnings

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from mistered.attacks import LPA, PGD, PPGD, FastLPA, PerceptualAttack, bound_violations, build_attack
from mistered.attacks.lpa import LPA as LPAClass
from mistered.attacks.perceptual_length import PerceptualLength
from mistered.attacks.ppgd import _PerceptualSteps
from mistered.cli import main
from mistered.data import load_dataset
from mistered.errors import InvalidInputError
from mistered.metrics import distance
from mistered.models import load_model
from mistered.threats import Additive, bind_features, parse_threat

ATTACKS = {"ppgd": PPGD, "lpa": LPA, "fast-lpa": FastLPA}


@pytest.fixture(scope="module")
def digits():
    """The bundled CNN and 16 bundled test digits."""
    test = load_dataset("mnist-5k", "test").subset(16)
    return load_model("mnist-cnn"), test.images, test.labels


def _rerun_success(model, result) -> torch.Tensor:
    with torch.no_grad():
        return model(result.x_adv).argmax(1) != result.labels


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("spec", ["linf(0.3)|lpips-self<=0.8", "flow(0.05)>>affine(3deg,0.03)>>linf(0.1)|lpips<=0.015",
                                  "(linf(0.3)||l2(2))|lpips<=0.01"])
def test_every_returned_example_is_inside_its_bound_and_the_result_says_so(digits, name, spec):
    model, x, y = digits
    attack = ATTACKS[name](model, parse_threat(spec), steps=4, seed=1)
    result = attack(x, y)
    assert result.info["bound_violations"] == 0
    assert not bool(bound_violations(result, attack.threat).any())
    metric, bound = attack.threat.alternatives()[0].metric, attack.threat.alternatives()[0].bound
    features = attack.threat.alternatives()[0].features
    with torch.no_grad():
        assert float(distance(metric, x, result.x_adv, features).max()) <= bound
    assert torch.equal(_rerun_success(model, result), result.success)
    assert bool(result.success.any())


def test_bound_violations_counts_examples_outside_the_bound(digits):
    """The check can fail: L∞ examples against a tight LPIPS bound, a size over 1, a pixel out of range."""
    model, x, y = digits
    result = PGD(model, Additive("linf", 0.3), steps=3)(x, y)
    tight = parse_threat("linf(0.3)|lpips<=0.001")
    assert int(bound_violations(result, tight).sum()) == int((result.alternative == 0).sum()) > 0
    loose = parse_threat("linf(0.3)|lpips<=10")
    assert not bool(bound_violations(result, loose).any())
    self_bound = parse_threat("linf(0.3)|lpips-self<=0.001")
    assert bool(bound_violations(result, self_bound, model=model).all())  # the model measures lpips-self
    result.sizes["size"][0] = 1.01
    result.x_adv[1, 0, 0, 0] = 1.5
    assert bound_violations(result, loose)[:2].tolist() == [True, True]


def test_a_violation_is_counted_in_the_result(digits, monkeypatch):
    """If the final projection were skipped, the attack's own count would say so (no silent wrong answer)."""
    model, x, y = digits
    monkeypatch.setattr("mistered.threats.perceptual.PerceptualPerturbation.project_", lambda self: self)
    result = LPA(model, parse_threat("linf(0.3)|lpips<=0.002"), steps=3, lambda_rounds=1, early_stop=False)(x, y)
    assert result.info["bound_violations"] > 0


def _tiny_problem():
    """A float64 CNN on 1x5x5 images inside (0, 1), an additive threat under a loose lpips-self bound (its
    63 feature directions make JᵀJ over the 25 pixels invertible)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Tanh(), nn.Flatten(), nn.Linear(72, 4)).double()
    x = 0.3 + 0.4 * torch.rand(2, 1, 5, 5, dtype=torch.float64)
    threat = bind_features(parse_threat("l2(1)|lpips-self<=100"), model=net)
    return net, x, threat


def test_a_ppgd_step_solves_the_linearised_problem_exactly():
    """With enough CG iterations the step is ``(JᵀJ)⁻¹∇L`` (J by autograd), of linear length ``lr·radius``."""
    net, x, threat = _tiny_problem()
    perturbation = threat.perturbation(x)
    view = _PerceptualSteps(perturbation, cg_steps=60, damping=0.0, fd_step=1e-6)
    phi = view.length.feature_map
    gradient = torch.randn(2, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    perturbation.inner.delta.grad = gradient.clone()
    view.step_(1e-3)
    for i in range(2):
        jacobian = torch.autograd.functional.jacobian(lambda d: phi((x[i:i + 1] + d.view(1, 1, 5, 5))), torch.zeros(25,
                                                      dtype=torch.float64)).reshape(-1, 25)
        solution = torch.linalg.lstsq(jacobian.T @ jacobian, gradient[i].reshape(25)).solution
        step = perturbation.inner.delta[i].reshape(25)
        assert torch.nn.functional.cosine_similarity(step, solution, dim=0) > 0.999
        assert float((jacobian @ step).detach().norm()) == pytest.approx(1e-3 * view.length.radius, rel=1e-3)


def test_an_lpa_step_has_the_requested_perceptual_length():
    net, x, threat = _tiny_problem()
    attack = LPAClass(net, threat, steps=1)
    perturbation = attack.threat.perturbation(x)
    length = PerceptualLength(perturbation.threat, x)
    params = list(perturbation.inner.parameters())
    x_adv = perturbation.inner(x)
    grads = torch.autograd.grad(net(x_adv).sum(), params)
    attack._step(perturbation.inner, grads, x, x_adv.detach(), length, eta=0.05)
    moved = length.between(x_adv.detach(), perturbation.inner(x))
    assert torch.allclose(moved, torch.full_like(moved, 0.05), rtol=0.05)


@pytest.mark.parametrize("name", ["ppgd", "lpa"])
def test_the_perceptual_attacks_fool_at_least_as_many_as_pgd_under_the_same_bound(digits, name):
    model, x, y = digits
    threat = parse_threat("linf(0.3)|lpips<=0.008")
    pgd = PGD(model, threat, steps=10, seed=0)(x, y)
    ours = build_attack(name, model, threat, steps=10, seed=0)(x, y)
    assert int(ours.success.sum()) >= int(pgd.success.sum())
    assert ours.info["bound_violations"] == 0


@pytest.mark.parametrize("name", list(ATTACKS))
def test_a_targeted_perceptual_attack_reaches_its_targets_inside_the_bound(digits, name):
    model, x, y = digits
    target = (y + 1) % 10
    result = ATTACKS[name](model, parse_threat("linf(0.3)|lpips<=0.02"), steps=6)(x, y, target)
    assert result.info["bound_violations"] == 0
    assert torch.equal(result.success, result.predictions == target) and bool(result.success.any())


def test_perceptual_is_a_deprecated_alias_of_lpa(digits):
    model, _, _ = digits
    with pytest.warns(FutureWarning, match="now LPA"):
        attack = build_attack("perceptual", model, parse_threat("linf(0.1)|dssim<=0.05"))
    assert isinstance(attack, LPA) and isinstance(attack, PerceptualAttack)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(build_attack("lpa", model, parse_threat("linf(0.1)|dssim<=0.05"))) is LPA


@pytest.mark.parametrize("name", list(ATTACKS))
def test_a_threat_without_a_perceptual_bound_is_refused(digits, name):
    with pytest.raises(InvalidInputError, match="perceptual bound.*has none"):
        build_attack(name, digits[0], parse_threat("linf(0.1)||linf(0.2)|lpips<=0.01"))


def test_ppgd_refuses_a_distance_without_a_feature_map_and_points_to_lpa(digits):
    with pytest.raises(InvalidInputError, match="dssim has none.*--attack lpa"):
        PPGD(digits[0], parse_threat("linf(0.1)|dssim<=0.05"))


@pytest.mark.parametrize("options", [{"cg_steps": 0}, {"damping": -1.0}, {"steps": 0}])
def test_bad_ppgd_options_are_refused(digits, options):
    with pytest.raises(InvalidInputError):
        PPGD(digits[0], parse_threat("linf(0.1)|lpips<=0.01"), **options)


@pytest.mark.parametrize("options", [{"lambda_rounds": 0}, {"lambda_factor": 0.5}, {"kappa": 0.0}, {"step_size": 0.0}])
def test_bad_lpa_options_are_refused(digits, options):
    with pytest.raises(InvalidInputError):
        LPA(digits[0], parse_threat("linf(0.1)|lpips<=0.01"), **options)


@pytest.mark.parametrize("args, needle", [(["--attack", "ppgd", "--threat", "linf"], "append one"),
                                          (["--attack", "nope", "--threat", "linf(0.1)|dssim<=0.05"],
                                           "unknown attack")])
def test_the_cli_answers_bad_perceptual_input_with_one_error_line(tmp_path, args, needle):
    result = CliRunner().invoke(main, ["attack", "--n", "2", "--steps", "1", "--out", str(tmp_path / "o"), *args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert needle in lines[0]
