"""Certified training of hybrid L∞-dist nets: the IBP objective, its schedules, and what it buys at certification."""

import json
import math
from functools import cache

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from test_linf_dist_hybrid import K, _data, _hybrid, _pgd_worst_margin

from mistered.models.linf_dist.layers import LinfDistLinear
from mistered.models.linf_dist.hybrid import LinfDistHybrid
from mistered.certify.lipschitz.linf_dist import certify_linf_dist_hybrid, hybrid_margin_bounds
from mistered.models.linf_dist.nets import LinfDistNet
from mistered.cli import main
from mistered.errors import InvalidInputError, UnsupportedLayerError
from mistered.models import load_model
from mistered.train import build_objective
from mistered.train.linf_dist import LinfDistHybridObjective, LinfDistObjective

EPS = 0.15  # training and certification radius of the small problem


def _at_inf(**kwargs) -> LinfDistHybridObjective:
    """The objective at ``p = inf`` and full radius from the first step (an empty p- and eps-phase at 0)."""
    return LinfDistHybridObjective(eps=EPS, p_phase=(0.0, 0.0), eps_phase=(0.0, 0.0), **kwargs)


def _train(objective, steps: int = 60, seed: int = 0) -> LinfDistHybrid:
    model = _hybrid(seed).train()
    x, y = _data(64, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(steps):
        optimizer.zero_grad()
        loss, _ = objective(model, x, y, step / steps)
        loss.backward()
        optimizer.step()
    return model.eval()


@cache
def _ibp_trained() -> LinfDistHybrid:
    """One IBP-trained net shared by the tests that only read it."""
    return _train(_at_inf())


def _cross_entropy(model, x, y, progress):
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def test_loss_reaches_every_parameter_and_decreases_on_a_tiny_problem():
    objective = _at_inf()
    model = _hybrid().train()
    x, y = _data(64, seed=1)
    loss, logits = objective(model, x, y, 0.0)
    loss.backward()
    assert logits.shape == (64, K)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    trained = _ibp_trained()
    with torch.no_grad():  # eval mode: the shared net's running means stay as they are
        assert float(objective(trained, x, y, 1.0)[0]) < 0.5 * float(loss)


def test_worst_case_term_is_the_clean_cross_entropy_at_radius_zero():
    model = _hybrid().eval()
    x, y = _data(16)
    with torch.no_grad():
        features = model.backbone(x)
        logits = model.head(features)
        bounds = hybrid_margin_bounds(model, features, y, 0.0)
    assert torch.allclose(bounds, logits.gather(1, y[:, None]) - logits, atol=1e-5)
    assert torch.allclose(F.cross_entropy(-bounds, y), F.cross_entropy(logits, y), atol=1e-5)


def test_margin_bounds_never_exceed_margins_of_sampled_features():
    model = _hybrid().eval()
    x, y = _data(16)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        features = model.backbone(x)
        bounds = hybrid_margin_bounds(model, features, y, EPS)
        for _ in range(20):
            corner = features + EPS * (2 * torch.randint(0, 2, features.shape, generator=gen) - 1)
            logits = model.head(corner)
            assert (bounds <= logits.gather(1, y[:, None]) - logits + 1e-5).all()


def test_radius_ramps_linearly_and_p_follows_the_shared_schedule():
    objective = LinfDistHybridObjective(eps=0.3, eps_phase=(0.0, 0.2), p_phase=(0.2, 0.8))
    assert objective.eps_at(0.0) == 0.0
    assert objective.eps_at(0.1) == pytest.approx(0.15) and objective.eps_at(0.5) == pytest.approx(0.3)
    assert objective.p_at(0.1) == 8.0 and objective.p_at(0.8) == math.inf
    values = [objective.p_at(t / 10) for t in range(2, 8)]
    assert values == sorted(values) and values[-1] < 1000.0
    reference = LinfDistObjective(p_phase=(0.2, 0.8))
    assert all(objective.p_at(t / 20) == reference.p_at(t / 20) for t in range(21))


def test_objective_sets_p_on_every_backbone_layer():
    model = _hybrid().train()
    LinfDistHybridObjective(p_phase=(0.5, 1.0))(model, *_data(4), 0.0)
    assert all(m.p == 8.0 for m in model.modules() if isinstance(m, LinfDistLinear))


def test_ibp_training_certifies_more_than_cross_entropy_from_the_same_start():
    x, y = _data(64, seed=2)  # held out
    ibp = certify_linf_dist_hybrid(_ibp_trained(), x, y, bisection_steps=12)
    plain = certify_linf_dist_hybrid(_train(_cross_entropy), x, y, bisection_steps=12)
    assert ibp.certified_at(EPS).float().mean() >= plain.certified_at(EPS).float().mean() + 0.5


def test_pgd_never_breaks_the_certified_radius_of_an_ibp_trained_net():
    model = _ibp_trained()
    x, y = _data(32, seed=2)
    cert = certify_linf_dist_hybrid(model, x, y, bisection_steps=12)
    certified = cert.radius > 0
    assert certified.sum() >= 16 and float(cert.radius[certified].median()) >= EPS / 2
    worst = _pgd_worst_margin(model, x, y, cert.radius, restarts=8)
    assert (worst[certified] > 0).all()


def test_objectives_refuse_the_other_architecture_and_bad_settings():
    x, y = _data(4)
    with pytest.raises(UnsupportedLayerError, match="linf-dist-hybrid"):
        LinfDistHybridObjective()(LinfDistNet((1, 8, 8), K, depth=2, width=8), x, y, 0.0)
    with pytest.raises(UnsupportedLayerError, match="linf-dist-hybrid"):
        LinfDistObjective()(_hybrid(), x, y, 0.0)
    with pytest.raises(InvalidInputError, match="kappa"):
        LinfDistHybridObjective(kappa=1.5)
    with pytest.raises(InvalidInputError, match="eps"):
        LinfDistHybridObjective(eps=0.0)
    with pytest.raises(InvalidInputError, match="eps_phase"):
        LinfDistHybridObjective(eps_phase=(0.5, 0.2))


def test_build_objective_names_the_hybrid_method():
    objective = build_objective("linf-dist-hybrid", eps=0.2, kappa=0.7)
    assert isinstance(objective, LinfDistHybridObjective) and objective.kappa == 0.7


def test_cli_linf_dist_on_the_hybrid_architecture_trains_it_with_the_hybrid_objective(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--method", "linf-dist", "--model", "linf-dist-hybrid", "--width", "16", "--depth", "1",
            "--n-train", "64", "--epochs", "1", "--eps", "0.2", "--eval-n", "0", "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["method"] == "linf-dist-hybrid" and settings["eps"] == 0.2
    assert isinstance(load_model(str(out / "model.pt")), LinfDistHybrid)
