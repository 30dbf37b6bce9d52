"""Hybrid L∞-dist nets: sound bisection radii (PGD never beats them), consistency with interval bounds, CLI route."""

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from mistered.certify.bounds.chain_interval import interval_bounds
from mistered.models.linf_dist.hybrid import LinfDistHybrid
from mistered.certify.lipschitz.linf_dist import certify_linf_dist_hybrid, hybrid_margin_lower_bound
from mistered.models.linf_dist.nets import LinfDistNet
from mistered.certify.lipschitz.linf_dist import certify_linf_dist
from mistered.certify.graph.piecewise import PiecewiseLinearNet
from mistered.cli import main
from mistered.errors import InvalidInputError, UnsupportedLayerError
from mistered.models import build_model, save_model

K = 4


def _data(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 1, 8, 8)`` images near one of ``K`` class prototypes, and their labels."""
    prototypes = torch.rand(K, 1, 8, 8, generator=torch.Generator().manual_seed(100))
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    x = (prototypes[y] + 0.15 * torch.randn(n, 1, 8, 8, generator=gen)).clamp(0, 1)
    return x, y


def _hybrid(seed: int = 0) -> LinfDistHybrid:
    torch.manual_seed(seed)
    return LinfDistHybrid((1, 8, 8), num_classes=K, depth=2, width=32, head_hidden=16)


def _trained(seed: int = 0) -> LinfDistHybrid:
    model = _hybrid(seed)
    x, y = _data(64, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def _pgd_worst_margin(model, x, y, eps: torch.Tensor, restarts: int = 8, steps: int = 40) -> torch.Tensor:
    """``(B,)`` smallest margin ``logit_y - max_{j != y} logit_j`` found by L∞ PGD in the ball ``eps`` (per example)."""
    gen = torch.Generator().manual_seed(123)
    e = eps.view(-1, 1, 1, 1)
    worst = torch.full((x.shape[0],), float("inf"))

    def margin(z):
        logits = model(z)
        return logits.gather(1, y[:, None]).squeeze(1) - logits.scatter(1, y[:, None], -float("inf")).amax(dim=1)

    for _ in range(restarts):
        delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * e
        for _ in range(steps):
            delta.requires_grad_(True)
            m = margin((x + delta).clamp(0, 1))
            (grad,) = torch.autograd.grad(m.sum(), delta)
            with torch.no_grad():
                delta = torch.max(torch.min(delta - 0.25 * e * grad.sign(), e), -e)
        with torch.no_grad():
            worst = torch.minimum(worst, margin((x + delta).clamp(0, 1)))
    return worst


@pytest.mark.parametrize("trained", [False, True], ids=["random-init", "trained"])
def test_pgd_never_breaks_the_certified_radius(trained):
    model = _trained() if trained else _hybrid().eval()
    x, y = _data(32, seed=2)
    cert = certify_linf_dist_hybrid(model, x, y, bisection_steps=12)
    assert (cert.radius > 0).sum() >= 4  # something non-trivial to attack
    worst = _pgd_worst_margin(model, x, y, cert.radius)
    certified = cert.radius > 0
    assert (worst[certified] > 0).all()


def test_radius_is_verified_and_within_resolution_of_the_threshold():
    model = _trained()
    x, y = _data(32, seed=2)
    cert = certify_linf_dist_hybrid(model, x, y, bisection_steps=12)
    step = cert.details["resolution"]
    certified = cert.radius > 0
    assert (hybrid_margin_lower_bound(model, x, y, cert.radius)[certified] > 0).all()
    assert (hybrid_margin_lower_bound(model, x, y, (cert.radius + step).clamp(max=1.0))[certified & (cert.radius < 1.0)] <= 0).all()


def test_certified_at_agrees_with_a_direct_interval_check():
    model = _trained()
    x, y = _data(32, seed=2)
    cert = certify_linf_dist_hybrid(model, x, y, bisection_steps=12)
    step = cert.details["resolution"]
    head = PiecewiseLinearNet.from_module(model.head, (32,))
    with torch.no_grad():
        features = model.backbone(x)
    for eps in (0.0, 0.01, 0.03, 0.06, 0.1):
        # independent (looser) check: lower bound of logit_y above every other upper bound, at eps + 2 resolutions
        wider = eps + 2 * step
        lo, hi = interval_bounds(head, features - wider, features + wider)[-1]
        loose = lo.gather(1, y[:, None]).squeeze(1) > hi.scatter(1, y[:, None], -float("inf")).amax(dim=1)
        assert (cert.certified_at(eps) | ~loose).all()  # loose check at eps + 2 steps => certified at eps
        tight = hybrid_margin_lower_bound(model, x, y, eps) > 0
        assert (tight | ~cert.certified_at(eps)).all()  # certified at eps => verified at eps
    assert cert.certified_at(0.0).any()


def test_radius_is_nonnegative_and_zero_when_misclassified():
    model = _trained()
    x, _ = _data(32, seed=2)
    y = torch.randint(0, K, (32,), generator=torch.Generator().manual_seed(5))
    cert = certify_linf_dist_hybrid(model, x, y, bisection_steps=8)
    wrong = cert.predictions != y
    assert wrong.any() and (cert.radius >= 0).all()
    assert (cert.radius[wrong] == 0).all()
    assert all(s == "misclassified" for s, w in zip(cert.status, wrong.tolist()) if w)


def test_certification_restores_training_mode_and_p():
    model = _hybrid()
    layer = model.backbone[1]
    layer.p = 8.0
    certify_linf_dist_hybrid(model.train(), *_data(4), bisection_steps=2)
    assert model.training and layer.p == 8.0


def test_registry_builds_the_hybrid_and_linf_dist_certification_dispatches_to_it():
    model = build_model("linf-dist-hybrid", image_size=8, num_classes=K, depth=2, width=32, head_hidden=16).eval()
    assert isinstance(model, LinfDistHybrid)
    x, y = _data(8)
    via_linf_dist = certify_linf_dist(model, x, y)
    direct = certify_linf_dist_hybrid(model, x, y)
    assert via_linf_dist.method == "linf-dist-hybrid" and via_linf_dist.norm == "linf"
    assert torch.equal(via_linf_dist.radius, direct.radius)


def test_rejects_other_models_and_bad_settings():
    x, y = _data(4)
    with pytest.raises(UnsupportedLayerError, match="linf-dist-hybrid"):
        certify_linf_dist_hybrid(LinfDistNet((1, 8, 8), K, depth=2, width=8), x, y)
    with pytest.raises(InvalidInputError, match="bisection_steps"):
        certify_linf_dist_hybrid(_hybrid(), x, y, bisection_steps=0)
    with pytest.raises(InvalidInputError, match="upper"):
        certify_linf_dist_hybrid(_hybrid(), x, y, upper=float("inf"))


def test_cli_certifies_a_hybrid_checkpoint_with_method_linf_dist(tmp_path):
    kwargs = {"depth": 1, "width": 16, "head_hidden": 8}
    torch.manual_seed(0)
    path = save_model(tmp_path / "hybrid.pt", build_model("linf-dist-hybrid", **kwargs), "linf-dist-hybrid", kwargs, {})
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["certify", "--method", "linf-dist", "--model", str(path), "--n", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "results.json").exists() and json.loads((out / "results.json").read_text())
