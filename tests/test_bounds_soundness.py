"""The bound engine is sound and ordered on every architecture family: IBP, CROWN and α-CROWN margin bounds never
exceed a margin that random points or PGD reach in the input set, and IBP <= CROWN <= α-CROWN."""

import math

import pytest
import torch

from _bounds_models import ARCHITECTURES, CLASSES, SHAPE, build, images, pgd_margins, sample_margins
from mistered.certify.bounds import AlphaOptions, InputSet, crown_bounds, interval_bounds, margin_lower_bounds
from mistered.certify.graph import trace_graph
from mistered.errors import InvalidInputError

EPS = {"linf": 0.03, "l2": 0.15, "l1": 0.6}
TOL = 1e-9


def _bounds(name: str, norm: str, eps: float | None = None):
    model = build(name)
    x = images(4)
    y = model(x).argmax(dim=1)
    graph = trace_graph(model, SHAPE)
    eps = EPS[norm] if eps is None else eps
    found = {m: margin_lower_bounds(graph, x, y, eps, norm, m) for m in ("ibp", "crown", "alpha-crown")}
    return model, x, y, eps, found


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_bounds_are_below_sampled_and_attacked_margins(name, norm):
    model, x, y, eps, found = _bounds(name, norm)
    reached = torch.minimum(sample_margins(model, x, y, eps, norm), pgd_margins(model, x, y, eps, norm, steps=30))
    for method, lower in found.items():
        assert lower.shape == (4, CLASSES)
        assert bool((lower <= reached + TOL).all()), f"{method} bound above a reachable margin on {name}/{norm}"
        assert bool(torch.isinf(lower[torch.arange(4), y]).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_ibp_crown_alpha_crown_are_ordered(name, norm):
    _, _, y, _, found = _bounds(name, norm)
    finite = torch.arange(CLASSES)[None] != y[:, None]
    ibp, crown, alpha = (found[m][finite] for m in ("ibp", "crown", "alpha-crown"))
    assert bool((ibp <= crown + TOL).all())
    assert bool((crown <= alpha + TOL).all())


def test_bounds_are_tight_at_zero_radius():
    model, x, y, _, found = _bounds("residual-bn", "linf", eps=0.0)
    out = model(x)
    exact = out.gather(1, y[:, None]) - out
    exact[torch.arange(4), y] = math.inf
    for lower in found.values():
        assert torch.allclose(lower, exact, atol=1e-9)


def test_alpha_crown_starts_at_crown():
    model, x, y, eps, found = _bounds("mlp", "linf")
    unchanged = margin_lower_bounds(model, x, y, eps, "linf", "alpha-crown", alpha=AlphaOptions(iterations=0))
    assert torch.equal(unchanged, found["crown"])
    assert bool((found["alpha-crown"] > found["crown"] + 1e-6).any()), "optimising the slopes should help here"


@pytest.mark.parametrize("name", ["mlp", "residual-bn"])
def test_alpha_crown_with_optimised_intermediate_bounds_is_sound_and_tighter(name):
    model, x, y, eps, found = _bounds(name, "linf")
    options = AlphaOptions(iterations=5, optimize_intermediate=True)
    joint = margin_lower_bounds(model, x, y, eps, "linf", "alpha-crown", max_elements=20000, alpha=options)
    finite = torch.arange(CLASSES)[None] != y[:, None]
    assert bool((joint[finite] >= found["crown"][finite] - TOL).all())
    assert bool((joint <= sample_margins(model, x, y, eps, "linf") + TOL).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["residual-bn", "pooling", "cat", "linf-dist-conv"])
def test_intermediate_boxes_contain_every_sampled_activation(name, norm):
    model = build(name)
    x = images(3)
    graph = trace_graph(model, SHAPE)
    input_set = InputSet.ball(x, EPS[norm], norm)
    boxes = crown_bounds(graph, input_set)
    ibp = interval_bounds(graph, input_set)
    gen = torch.Generator().manual_seed(5)
    from _bounds_models import project
    for _ in range(20):
        delta = project(torch.randn(x.shape, generator=gen, dtype=x.dtype) * EPS[norm], x, EPS[norm], norm)
        values = graph.evaluate(x + delta)
        for node, value in values.items():
            lo, hi = boxes[node]
            assert bool((lo - TOL <= value).all() and (value <= hi + TOL).all()), node
            assert bool((lo >= ibp[node][0] - TOL).all() and (hi <= ibp[node][1] + TOL).all()), node


def test_optimising_intermediate_slopes_beyond_the_budget_is_refused():
    model, x, y, eps, _ = _bounds("mlp", "linf")
    with pytest.raises(InvalidInputError, match="max_slopes"):
        margin_lower_bounds(model, x, y, eps, "linf", "alpha-crown",
                            alpha=AlphaOptions(optimize_intermediate=True, max_slopes=10))
