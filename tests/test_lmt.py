"""LMT: certified L2 radii are sound against a strong PGD, the pairwise form is tighter, and the training loss."""

import math

import pytest
import torch
from torch import nn

from mistered.certify.lipschitz.global_bound import LipschitzBound
from mistered.certify.lipschitz.lmt import LMTCertifier, certify_lmt, lmt_radius, pairwise_radius
from mistered.errors import InvalidInputError, UnsupportedLayerError
from mistered.train.lmt import LMTObjective


def _small_net(seed: int) -> nn.Module:
    """A random conv net whose decision boundaries cross the unit cube (zero biases, centred input)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 5, 8), nn.ReLU(), nn.Linear(8, 3)
    )
    with torch.no_grad():
        net[0].bias.fill_(-0.5 * float(net[0].weight.sum(dim=(1, 2, 3)).mean()))
        net[3].bias.zero_()
        net[5].bias.zero_()
    return net.eval()


def _strongest_attack_success(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor,
                              restarts: int = 16, steps: int = 50) -> torch.Tensor:
    """Batched L2 PGD on the CW margin, ``restarts`` random starts per example, each at its own radius ``eps``
    (``(B,)``), images kept in ``[0, 1]``; ``(B,)`` bool: an adversarial example was found."""
    batch = x.shape[0]
    generator = torch.Generator().manual_seed(0)
    xs, ys = x.repeat(restarts, 1, 1, 1), y.repeat(restarts)
    radius = eps.repeat(restarts).view(-1, 1, 1, 1)
    delta = torch.randn(xs.shape, generator=generator)
    delta = delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * radius * torch.rand(xs.shape[0], 1, 1, 1, generator=generator)
    found = torch.zeros(xs.shape[0], dtype=torch.bool)
    for _ in range(steps):
        delta.requires_grad_(True)
        logits = net((xs + delta).clamp(0, 1))
        other = logits.scatter(1, ys[:, None], float("-inf")).amax(dim=1)
        margin = other - logits.gather(1, ys[:, None]).squeeze(1)
        found |= (margin > 0).detach()
        (grad,) = torch.autograd.grad(margin.sum(), delta)
        with torch.no_grad():
            step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            delta = delta + 0.1 * radius * step
            delta = delta * (radius / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)).clamp(max=1)
    with torch.no_grad():
        found |= net((xs + delta).clamp(0, 1)).argmax(dim=1) != ys
    return found.view(restarts, batch).any(dim=0)


@pytest.mark.parametrize("seed, pairwise", [(0, False), (1, True), (2, True)])
def test_pgd_never_succeeds_inside_certified_l2_radius(seed, pairwise):
    net = _small_net(seed)
    x = torch.rand(12, 1, 5, 5, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = net(x).argmax(dim=1)  # certify the model's own predictions: every example has a radius > 0
    cert = LMTCertifier(net, pairwise=pairwise).certify(x, y)
    assert bool((cert.radius > 0).all())
    assert not bool(_strongest_attack_success(net, x, y, cert.radius * (1 - 1e-4)).any())


def test_attack_does_succeed_well_beyond_the_radius():
    """The soundness test's attack is able to find adversarial examples where they exist."""
    net = _small_net(0)
    x = torch.rand(8, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x).argmax(dim=1)
    cert = certify_lmt(net, x, y)
    assert bool(_strongest_attack_success(net, x, y, cert.radius * 20).any())


def test_radius_formula_is_margin_over_sqrt2_l():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.5, 2.0]])
    assert torch.allclose(lmt_radius(logits, 2.0), torch.tensor([2.0, 1.5]) / (2 * math.sqrt(2)))


def test_pairwise_radius_is_at_least_the_global_radius():
    net = _small_net(3)
    x = torch.rand(16, 1, 5, 5, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(4))
    global_cert = certify_lmt(net, x, y)
    pairwise_cert = certify_lmt(net, x, y, pairwise=True)
    assert bool((pairwise_cert.radius >= global_cert.radius * (1 - 1e-5)).all())


def test_pairwise_radius_uses_row_differences():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    norms = torch.tensor([[0.0, 1.0, 4.0], [1.0, 0.0, 1.0], [4.0, 1.0, 0.0]])
    assert float(pairwise_radius(logits, norms, 0.5)) == pytest.approx(min(1 / (1 * 0.5), 2 / (4 * 0.5)))


def test_misclassified_examples_get_radius_zero():
    net = _small_net(0)
    x = torch.rand(6, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        wrong = (net(x).argmax(dim=1) + 1) % 3
    cert = certify_lmt(net, x, wrong)
    assert bool((cert.radius == 0).all()) and set(cert.status) == {"misclassified"}


def test_certifier_computes_the_constant_once():
    net = _small_net(0)
    certifier = LMTCertifier(net)
    x = torch.rand(4, 1, 5, 5)
    certifier.certify(x, torch.zeros(4, dtype=torch.long))
    first = certifier.constant((1, 5, 5))
    certifier.certify(x, torch.zeros(4, dtype=torch.long))
    assert certifier.constant((1, 5, 5))[0] is first[0]


def test_lmt_rejects_unsupported_layer_by_name():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.SiLU(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match=r"model\.2.*SiLU"):
        certify_lmt(net, torch.rand(2, 1, 2, 2), torch.zeros(2, dtype=torch.long))


def test_objective_raises_non_target_logits_by_sqrt2_c_l():
    net = _small_net(0).train()
    x, y = torch.rand(5, 1, 5, 5), torch.tensor([0, 1, 2, 0, 1])
    objective = LMTObjective(c=0.5, warmup=0.0)
    loss, logits = (t.detach() for t in objective(net, x, y, progress=0.5))
    lipschitz = float(objective.bound_for(net, (1, 5, 5))().detach())  # converged enough after the first call's iteration
    raised = logits + math.sqrt(2) * 0.5 * lipschitz * (1 - nn.functional.one_hot(y, 3))
    assert float(loss) == pytest.approx(float(nn.functional.cross_entropy(raised, y)), rel=0.05)
    assert float(loss) > float(nn.functional.cross_entropy(logits, y))


def test_objective_warms_c_up_linearly():
    objective = LMTObjective(c=2.0, warmup=0.5)
    assert objective.current_c(0.0) == 0.0
    assert objective.current_c(0.25) == pytest.approx(1.0)
    assert objective.current_c(0.9) == 2.0


def test_pairwise_objective_trains_to_a_larger_certified_radius():
    net = _small_net(5).train()
    x = torch.rand(32, 1, 5, 5, generator=torch.Generator().manual_seed(5))
    y = torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(6))
    before = certify_lmt(net.eval(), x, y, pairwise=True).radius.mean()
    objective = LMTObjective(c=0.5, warmup=0.0, pairwise=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for step in range(30):
        loss, _ = objective(net, x, y, step / 30)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert certify_lmt(net.eval(), x, y, pairwise=True).radius.mean() > before


def test_objective_validates_options():
    with pytest.raises(InvalidInputError):
        LMTObjective(c=-1.0)
    with pytest.raises(InvalidInputError):
        LMTObjective(warmup=2.0)


def test_bound_of_bundled_style_normalized_model_includes_inverse_std():
    from mistered.models.normalized import Normalized

    torch.manual_seed(0)
    inner = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    plain = float(LipschitzBound(inner, (1, 2, 2)).exact())
    wrapped = float(LipschitzBound(Normalized(inner, [0.5], [0.25]), (1, 2, 2)).exact())
    assert wrapped == pytest.approx(plain / 0.25, rel=1e-6)
