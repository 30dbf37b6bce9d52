"""Randomized smoothing: the statistics, PREDICT and CERTIFY's outcomes, abstention, determinism and batching."""

import math

import pytest
import torch
from scipy import stats
from torch import nn

from mistered.certify.smoothing import (
    ABSTAIN, Smoothed, binomial_pvalue, clopper_pearson_lower, smooth, smoothing_radius,
)
from mistered.errors import InvalidInputError


class _Constant(nn.Module):
    """Always votes for ``label`` among ``classes``."""

    def __init__(self, label: int, classes: int = 3) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.nn.functional.one_hot(torch.tensor(label), classes).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


def _halfplane() -> nn.Module:
    """Two classes split by the hyperplane ``x_0 + x_1 = 1`` of 1x2x2 images (class 1 above)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[0.0, 0, 0, 0], [1.0, 1, 0, 0]]))
        net[1].bias.copy_(torch.tensor([0.0, -1.0]))
    return net


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))


def _images(count: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 1, 4, 4, generator=torch.Generator().manual_seed(seed))


# --- statistics --------------------------------------------------------------------------------------------------

def test_clopper_pearson_lower_bound_matches_textbook_values():
    # the exact 95% interval of 7/10 is (0.3475, 0.9333); of 50/100 at 90%: (0.4136, 0.5864)
    assert clopper_pearson_lower(torch.tensor([7]), torch.tensor([10]), 0.025)[0] == pytest.approx(0.34755, abs=1e-4)
    assert clopper_pearson_lower(torch.tensor([50]), 100, 0.05)[0] == pytest.approx(0.41362, abs=1e-4)


def test_clopper_pearson_lower_bound_is_the_exact_binomial_tail_bound():
    k, n, alpha = torch.tensor([0, 1, 37, 99, 100]), 100, 0.001
    bounds = clopper_pearson_lower(k, n, alpha)
    assert bounds[0] == 0.0 and bounds[-1] == pytest.approx(alpha ** (1 / n), rel=1e-12)
    for count, p in zip(k[1:].tolist(), bounds[1:].tolist()):
        assert stats.binom.sf(count - 1, n, p) == pytest.approx(alpha, rel=1e-6)  # P[Bin(n, p) >= k] = alpha


def test_largest_radius_of_cohen_et_al_settings_is_3_81_sigma():
    p = clopper_pearson_lower(torch.tensor([100_000]), 100_000, 0.001)
    assert float(smoothing_radius(p, 0.5)[0]) == pytest.approx(0.5 * 3.81146, rel=1e-5)


@pytest.mark.parametrize("top, runner_up", [(7, 3), (50, 50), (60, 40), (0, 0), (1000, 0), (13, 2)])
def test_binomial_pvalue_equals_scipy_binomtest(top, runner_up):
    expected = stats.binomtest(top, top + runner_up, 0.5).pvalue if top + runner_up else 1.0
    assert float(binomial_pvalue(torch.tensor([top]), torch.tensor([runner_up]))[0]) == pytest.approx(expected)


def test_radius_is_zero_unless_the_lower_bound_exceeds_one_half():
    radius = smoothing_radius(torch.tensor([0.3, 0.5, 0.8413447460685429]), sigma=0.25)
    assert radius.tolist() == pytest.approx([0.0, 0.0, 0.25])


# --- CERTIFY and PREDICT -----------------------------------------------------------------------------------------

def test_constant_classifier_gets_the_largest_radius_n_can_prove_and_wrong_labels_radius_zero():
    cert = smooth(_Constant(2), sigma=0.5, batch=50).certify(_images(3), torch.tensor([2, 2, 0]), n0=10, n=200,
                                                              alpha=0.01)
    largest = 0.5 * stats.norm.ppf(0.01 ** (1 / 200))
    assert cert.predictions.tolist() == [2, 2, 2]
    assert cert.status == ["certified", "certified", "misclassified"]
    assert cert.radius.tolist() == pytest.approx([largest, largest, 0.0])
    assert cert.method == "smoothing" and cert.norm == "l2" and cert.details["count"].tolist() == [200] * 3
    assert cert.certified_accuracy(largest - 1e-6) == pytest.approx(2 / 3)


def test_certify_and_predict_abstain_on_the_decision_boundary():
    on_boundary = torch.tensor([[0.5, 0.5], [0.2, 0.8]]).view(2, 1, 1, 2).repeat(1, 1, 2, 1)
    g = smooth(_halfplane(), sigma=0.25)
    cert = g.certify(on_boundary, torch.tensor([1, 0]), n0=100, n=2000)
    assert cert.status == ["abstain", "abstain"]
    assert cert.predictions.tolist() == [ABSTAIN, ABSTAIN] and cert.radius.tolist() == [0.0, 0.0]
    assert cert.certified_accuracy(0.0) == 0.0
    assert g.predict(on_boundary, n=2000).tolist() == [ABSTAIN, ABSTAIN]


def test_predict_returns_the_clear_winner():
    far = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).view(2, 1, 1, 2).repeat(1, 1, 2, 1)
    assert smooth(_halfplane(), sigma=0.25).predict(far, n=500).tolist() == [0, 1]


def test_same_generator_seed_gives_the_same_certificate_and_another_seed_other_votes():
    g, x = smooth(_mlp(), sigma=0.5, batch=100), _images(6)
    y = torch.zeros(6, dtype=torch.int64)
    runs = [g.certify(x, y, n0=20, n=300, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(runs[0].details["count"], runs[1].details["count"])
    assert torch.equal(runs[0].radius, runs[1].radius) and runs[0].status == runs[1].status
    assert not torch.equal(runs[0].details["count"], runs[2].details["count"])


@pytest.mark.parametrize("batch", [1, 7, 64, 150, 10_000])
def test_batching_of_draws_does_not_change_the_votes(batch):
    x = _images(5)
    reference = Smoothed(_mlp(), 0.5, batch=1000).counts(x, 150)
    assert torch.equal(Smoothed(_mlp(), 0.5, batch=batch).counts(x, 150), reference)
    assert reference.sum(dim=1).tolist() == [150] * 5


def test_certifying_examples_in_parts_equals_certifying_them_at_once():
    g, x, y = smooth(_mlp(), sigma=0.5, batch=64), _images(5), torch.tensor([0, 1, 2, 0, 1])
    whole = g.certify(x, y, n0=30, n=200, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    parts = [g.certify(x[s], y[s], n0=30, n=200, generator=generator) for s in (slice(0, 2), slice(2, 5))]
    assert torch.equal(whole.radius, torch.cat([p.radius for p in parts]))
    assert whole.status == parts[0].status + parts[1].status


def test_model_runs_in_eval_mode_and_its_training_flags_and_statistics_are_restored():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5), nn.Flatten(), nn.Linear(8, 3))
    net.train()
    running = net[1].running_mean.clone()
    g = smooth(net, sigma=0.25)
    first = g.certify(_images(2), torch.tensor([0, 1]), n0=10, n=50)
    second = g.certify(_images(2), torch.tensor([0, 1]), n0=10, n=50)
    assert all(m.training for m in net.modules()) and torch.equal(net[1].running_mean, running)
    assert torch.equal(first.details["count"], second.details["count"])  # dropout off: deterministic


def test_empty_batch_gives_an_empty_certificate():
    cert = smooth(_mlp(), sigma=0.25).certify(torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.int64), n=10)
    assert cert.radius.shape == (0,) and cert.status == [] and cert.certified_accuracy(0.1) == 0.0
    assert smooth(_mlp(), sigma=0.25).predict(torch.zeros(0, 1, 4, 4), n=10).shape == (0,)


def test_float64_model_votes_in_float64():
    net = _mlp().double()
    cert = smooth(net, sigma=0.25).certify(_images(2), torch.tensor([0, 1]), n0=10, n=50)
    assert len(cert.status) == 2


@pytest.mark.parametrize("make, message", [
    (lambda: Smoothed(_mlp(), 0.0), "sigma"),
    (lambda: Smoothed(_mlp(), float("nan")), "sigma"),
    (lambda: Smoothed(_mlp(), 0.25, batch=0), "batch"),
    (lambda: Smoothed(lambda x: x, 0.25), "nn.Module"),
    (lambda: smooth(_mlp(), 0.25).certify(_images(2), torch.tensor([0, 1]), n0=0), "n0"),
    (lambda: smooth(_mlp(), 0.25).certify(_images(2), torch.tensor([0, 1]), n=2.5), "n must"),
    (lambda: smooth(_mlp(), 0.25).certify(_images(2), torch.tensor([0, 1]), alpha=1.0), "alpha"),
    (lambda: smooth(_mlp(), 0.25).certify(_images(2), torch.tensor([0, 3]), n0=5, n=5), r"\[0, 3\)"),
    (lambda: smooth(_mlp(), 0.25).certify(_images(2) * 2, torch.tensor([0, 1])), r"\[0, 1\]"),
    (lambda: smooth(_mlp(), 0.25).certify(_images(2), torch.tensor([0.0, 1.0])), "integer"),
    (lambda: smooth(_mlp(), 0.25).predict(torch.zeros(2, 16)), r"\(B, C, H, W\)"),
    (lambda: smooth(nn.Identity(), 0.25).predict(torch.zeros(2, 1, 2, 2), n=3), "logits"),
])
def test_bad_input_is_one_clear_error(make, message):
    with pytest.raises(InvalidInputError, match=message):
        make()


def test_radius_grows_with_sigma_times_the_probit_of_the_bound():
    cert = smooth(_Constant(0), sigma=1.0).certify(_images(1), torch.tensor([0]), n0=1, n=1000, alpha=0.05)
    assert float(cert.radius[0]) == pytest.approx(stats.norm.ppf(0.05 ** (1 / 1000)))
    assert math.isclose(float(cert.details["p_lower"][0]), 0.05 ** (1 / 1000))
