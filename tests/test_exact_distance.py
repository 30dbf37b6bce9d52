"""exact_distance on any piecewise-linear graph: the three searches agree with each other and with brute force on
tiny residual, convolutional and pooling nets; the bound engine's margins sit below the exact answer; a network
too large for an exact search gets anytime engine bounds within its time limit."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mistered.certify import exact_distance as public_exact_distance
from mistered.certify.bounds import margin_lower_bounds
from mistered.certify.exact import distance as distance_module
from mistered.certify.exact import exact_distance
from mistered.certify.exact import certify_geocert
from mistered.errors import InvalidInputError

_ORDER = {"l1": 1, "l2": 2, "linf": math.inf}


class ResidualMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.a, self.b, self.out = nn.Linear(4, 5), nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = self.inp(x)
        return self.out(F.relu(h + self.b(F.relu(self.a(F.relu(h))))))


class ResidualCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 2, 2), nn.BatchNorm2d(2)
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.conv(F.relu(self.bn(x)))
        return self.fc(F.relu(x).flatten(1))


class Pooling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 2), nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


NETS = {"residual-mlp": (ResidualMLP, (4,)), "residual-cnn-bn": (ResidualCNN, (1, 3, 3)), "pooling": (Pooling, (1, 3, 3))}


def _near_boundary(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The net with its last bias moved so that the example's margin is a fifth of what it was: an adversarial
    point is near."""
    make, shape = NETS[name]
    torch.manual_seed(seed)
    model = make().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(seed + 1))
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        top = model(x)[0].topk(2)
        last.bias[top.indices[0]] -= 0.8 * (top.values[0] - top.values[1])
    return model, x, model(x).argmax(1)


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("norm", ["linf", "l1", "l2"])
def test_searches_agree_on_lowered_graphs(name, norm):
    model, x, y = _near_boundary(name)
    searches = ["regions", "branch"] + (["mip"] if norm != "l2" else [])
    certs = {s: exact_distance(model, x, y, norm, search=s, time_limit=60) for s in searches}
    for s, cert in certs.items():
        assert cert.status == ["exact"], s
        assert float(cert.upper[0]) == pytest.approx(float(certs["regions"].upper[0]), rel=1e-6, abs=1e-8), s
        assert float(cert.radius[0]) <= float(cert.upper[0]) + 1e-12
    assert math.isfinite(float(certs["regions"].upper[0]))


@pytest.mark.parametrize("name", list(NETS))
def test_no_sampled_point_inside_the_exact_linf_radius_is_adversarial(name):
    model, x, y = _near_boundary(name)
    radius = float(exact_distance(model, x, y, "linf", search="branch").radius[0])
    gen = torch.Generator().manual_seed(3)
    signs = torch.randint(0, 2, (20_000, *x.shape[1:]), generator=gen).float() * 2 - 1  # the ball's corners
    inside = (x + signs * radius * (1 - 1e-4)).clamp(0, 1)
    uniform = (x + (torch.rand(20_000, *x.shape[1:], generator=gen) * 2 - 1) * radius * (1 - 1e-4)).clamp(0, 1)
    with torch.no_grad():
        assert (model(torch.cat([inside, uniform])).argmax(1) == y).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_engine_margins_are_ordered_and_below_the_exact_answer(norm):
    model, x, y = _near_boundary("residual-cnn-bn")
    cert = exact_distance(model, x, y, norm, search="branch")
    upper = float(cert.upper[0])
    # at the exact distance an adversarial point exists: no sound margin bound is positive for every class
    at_adversarial = {m: margin_lower_bounds(model, x, y, upper, norm, m)[0] for m in ("ibp", "crown", "alpha-crown")}
    assert not (at_adversarial["alpha-crown"] > 1e-6).all()
    for eps in (0.25 * upper, 0.5 * upper, upper):
        ibp, crown, alpha = (margin_lower_bounds(model, x, y, eps, norm, m)[0] for m in ("ibp", "crown", "alpha-crown"))
        finite = torch.isfinite(ibp)
        assert (ibp[finite] <= crown[finite] + 1e-5).all() and (crown[finite] <= alpha[finite] + 1e-5).all()


def test_the_adversarial_point_is_misclassified_at_the_reported_distance():
    model, x, y = _near_boundary("pooling")
    cert = exact_distance(model, x, y, "l2", search="regions")
    point = _adversarial_point(model, x, y, "l2")
    assert float(torch.linalg.vector_norm((point - x).flatten())) == pytest.approx(float(cert.upper[0]), rel=1e-5)


def _adversarial_point(model, x, y, norm):
    from mistered.certify.exact.geocert import geocert

    result = geocert(model, x[0], norm=norm)
    point = result.x_adv.reshape(x.shape).float()
    with torch.no_grad():
        assert int(model(point).argmax(1)) != int(y)
    return point


def test_public_names_point_at_one_function():
    assert public_exact_distance is exact_distance is certify_geocert


@pytest.mark.parametrize("kwargs,match", [({"search": "bfs"}, "bfs"), ({"search": "mip", "norm": "l2"}, "MIQP"),
                                          ({"norm": "l3"}, "norm")])
def test_bad_options_are_one_clear_error(kwargs, match):
    model, x, y = _near_boundary("residual-mlp")
    with pytest.raises(InvalidInputError, match=match):
        exact_distance(model, x, y, **{"norm": "linf", **kwargs})


def test_a_network_too_large_for_exact_search_gets_engine_bounds_within_its_limit(monkeypatch):
    monkeypatch.setattr(distance_module, "MAX_EXACT_NEURONS", 4)
    model, x, y = _near_boundary("residual-cnn-bn")
    exact = exact_distance(model, x, y, "linf", search="branch")
    cert = exact_distance(model, x, y, "linf", time_limit=5.0)
    assert cert.status[0] in ("certified", "timeout") and cert.details["search"] == "bounds"
    assert 0 < float(cert.radius[0]) <= float(exact.radius[0]) + 1e-9
    assert float(cert.upper[0]) >= float(exact.upper[0]) - 1e-6
    assert cert.details["seconds"][0] < 5.0 + 2.0
