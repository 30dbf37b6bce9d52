"""Randomized smoothing is sound: on a linear classifier, whose smoothed classifier is known in closed form, the
certified radius never exceeds the true one and approaches it as n grows; on a small MLP, an attack on the smoothed
classifier never changes PREDICT's answer inside the certified radius."""

import pytest
import torch
from torch import nn

from mistered.certify.smoothing import ABSTAIN, smooth

SIGMA = 0.25


def _linear(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A two-class linear classifier on 1x2x2 images, with its margin direction ``w`` and offset ``b``: class 1
    where ``w . x + b > 0``."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(2, 4, generator=gen, dtype=torch.float64))
        w = net[1].weight[1] - net[1].weight[0]
        # the boundary passes through the centre of the cube
        net[1].bias.copy_(torch.stack([torch.zeros((), dtype=torch.float64), -w.sum() / 2]))
    return net, w.detach(), (net[1].bias[1] - net[1].bias[0]).detach()


def _true_radius(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The smoothed linear classifier's exact L2 robustness radius: ``P[f(x + delta) = 1] = Phi((w.x + b) / (sigma
    |w|))``, so Cohen et al.'s radius ``sigma Phi^-1(pA)`` is the distance ``|w.x + b| / |w|`` to the hyperplane,
    which is also where the smoothed prediction flips."""
    return (x.flatten(1) @ w + b).abs() / w.norm()


def _points(net: nn.Module, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(count, 1, 2, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        return x, net(x).argmax(dim=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_certified_radius_never_exceeds_the_exact_radius_of_the_smoothed_linear_classifier(seed):
    net, w, b = _linear(seed)
    x, y = _points(net, 40, seed)
    cert = smooth(net, SIGMA, batch=4096).certify(x, y, n0=50, n=2000, alpha=0.001,
                                                  generator=torch.Generator().manual_seed(seed))
    exact = _true_radius(w, b, x)
    certified = torch.tensor([s == "certified" for s in cert.status])
    assert certified.sum() >= 20
    assert (cert.radius[certified] <= exact[certified]).all()
    assert (cert.predictions[certified] == y[certified]).all()


def test_certified_radius_approaches_the_exact_radius_as_n_grows():
    net, w, b = _linear(3)
    x, y = _points(net, 8, 3)
    exact = _true_radius(w, b, x)
    x, y, exact = x[exact < 2 * SIGMA], y[exact < 2 * SIGMA], exact[exact < 2 * SIGMA]  # pA <= 0.977: n is the limit
    gaps = []
    for n in (1_000, 200_000):
        cert = smooth(net, SIGMA, batch=20_000).certify(x, y, n0=100, n=n, generator=torch.Generator().manual_seed(0))
        assert (cert.radius <= exact).all()
        gaps.append(exact - cert.radius)
    # the lower bound's slack shrinks like 1/sqrt(n): from ~0.04 at n = 1,000 to below 0.005 at n = 200,000
    assert (gaps[1] < gaps[0] / 4).all() and float(gaps[1].max()) < 0.01, gaps


def _smoothed_probabilities(net: nn.Module, x: torch.Tensor, draws: int, gen: torch.Generator) -> torch.Tensor:
    """``(B, K)`` expected softmax of ``net`` under ``draws`` Gaussian draws: the soft smoothed classifier that
    SmoothAdv (Salman et al. 2019) attacks, differentiable in ``x``."""
    noise = torch.randn((draws, *x.shape), generator=gen, dtype=x.dtype) * SIGMA
    return net((x[None] + noise).flatten(0, 1)).softmax(dim=1).view(draws, len(x), -1).mean(dim=0)


def _attack_smoothed(net: nn.Module, x: torch.Tensor, label: torch.Tensor, radius: torch.Tensor,
                     steps: int = 40, draws: int = 64) -> torch.Tensor:
    """L2 PGD on the soft smoothed classifier: lowers the probability of ``label`` within ``radius`` ``(B,)``,
    keeping images in ``[0, 1]``."""
    gen = torch.Generator().manual_seed(1)
    r = radius.view(-1, 1, 1, 1)
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        probs = _smoothed_probabilities(net, (x + delta).clamp(0, 1), draws, gen)
        (grad,) = torch.autograd.grad(probs.gather(1, label[:, None]).sum(), delta)
        with torch.no_grad():
            delta = delta - 0.2 * r * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            delta = (x + delta).clamp(0, 1) - x
            delta = delta * (r / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)).clamp(max=1)
    return (x + delta).clamp(0, 1).detach()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        net[1].bias.sub_(net[1].weight.sum(dim=1) / 2)  # decision boundaries through the unit cube
    return net


def test_an_attack_on_the_smoothed_classifier_never_changes_its_prediction_inside_the_certified_radius():
    net, x = _mlp(), torch.rand(24, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    g = smooth(net, SIGMA, batch=8192)
    with torch.no_grad():
        y = net(x).argmax(dim=1)
    cert = g.certify(x, y, n0=100, n=4000, alpha=0.001)
    certified = torch.tensor([s == "certified" for s in cert.status])
    assert certified.sum() >= 10
    xs, labels, radius = x[certified], y[certified], cert.radius[certified].float()
    inside = g.predict(_attack_smoothed(net, xs, labels, radius), n=4000, alpha=0.001)
    assert ((inside == labels) | (inside == ABSTAIN)).all(), (inside, labels)
    # the same attack is strong enough to matter: with 1.5 times the budget it flips most predictions
    outside = g.predict(_attack_smoothed(net, xs, labels, 1.5 * radius), n=4000, alpha=0.001)
    assert (outside != labels).float().mean() > 0.5, (outside, labels)
