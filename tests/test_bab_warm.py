"""Branch and bound's warm starts, root bounds and strong branching (mistered.certify.bab): each subdomain's α and β
travel with it and seed its children, the root's intermediate bounds are sound and tighter than CROWN's, and FSB
splits on the candidate whose worse child bounds highest."""

import math

import pytest
import torch
from torch import nn

from mistered.certify.bab import BabOptions, BoundOptions, bab
from mistered.certify.bab.bounding import WarmStart, bound_batch, evaluate_batch
from mistered.certify.bab.branching import strong_branching
from mistered.certify.bab.domains import DomainStore, split
from mistered.certify.bab.problem import BabProblem
from mistered.certify.bab.root import root_boxes
from mistered.certify.bounds import AlphaOptions, InputSet, crown_bounds
from mistered.certify.graph import trace_graph


def _setup(seed: int = 0, inputs: int = 4, widths: tuple[int, ...] = (24, 24, 24)):
    """A random ReLU net, a box where it has unstable neurons, and the margin problem of its class at the centre."""
    torch.manual_seed(seed)
    layers, last = [], inputs
    for w in widths:
        layers += [nn.Linear(last, w), nn.ReLU()]
        last = w
    net = nn.Sequential(*layers, nn.Linear(last, 3)).double().eval()
    graph = trace_graph(net, (inputs,)).to(dtype=torch.float64)
    x = torch.full((1, inputs), 0.5, dtype=torch.float64)
    y = int(net(x).argmax())
    eye = torch.eye(3, dtype=torch.float64)
    spec = eye[y][None] - eye[[j for j in range(3) if j != y]]
    box = InputSet.ball(x, 0.3)
    return net, graph, box, BabProblem.build(graph, box, spec)


def _root_store(problem: BabProblem, options: BoundOptions, k: int = 1) -> DomainStore:
    out = bound_batch(problem, {}, 1, options)
    return DomainStore.from_batch(list(problem.split_nodes), out, torch.ones(1, dtype=torch.bool), k)


def test_the_kept_multipliers_reproduce_the_best_bound():
    _, _, _, problem = _setup()
    out = bound_batch(problem, {}, 1, BoundOptions(iterations=10))
    assert out.warm is not None and set(out.warm.alphas) == set(problem.split_nodes)
    assert all(bool(((a >= 0) & (a <= 1)).all()) for a in out.warm.alphas.values())
    assert all(bool((b >= 0).all()) for b in out.warm.betas.values())
    again = evaluate_batch(problem, out.boxes, 1, BoundOptions(), out.warm)  # the stored (float32) α and β
    assert float(again[0]) == pytest.approx(float(out.lower[0]), abs=1e-5)
    crown = evaluate_batch(problem, out.boxes, 1, BoundOptions(), None)
    assert float(out.lower[0]) >= float(crown[0]) - 1e-12


def test_a_child_keeps_at_least_its_warm_start_bound():
    _, _, _, problem = _setup(1)
    parents = _root_store(problem, BoundOptions(iterations=10))
    nodes = list(problem.split_nodes)
    children = split(parents.boxes, parents.choice[:, 0], nodes, problem.split_nodes)
    warm = parents.warm.cat(parents.warm)
    start = evaluate_batch(problem, children, 2, BoundOptions(), warm)
    optimised = bound_batch(problem, children, 2, BoundOptions(iterations=3), warm).lower
    assert bool((optimised >= start - 1e-12).all())


def test_the_store_keeps_each_subdomains_multipliers_with_it():
    nodes = ["a"]
    ids = torch.arange(6, dtype=torch.float64)

    def store(values: torch.Tensor) -> DomainStore:
        n = values.shape[0]
        warm = WarmStart({"a": values.float()[:, None, None].expand(n, 1, 3).clone()},
                         {"a": 2 * values.float()[:, None, None].expand(n, 1, 3).clone()})
        box = (values[:, None].expand(n, 3), values[:, None].expand(n, 3) + 1)
        return DomainStore(nodes, values.clone(), {"a": box}, torch.zeros(n, 1, 2, dtype=torch.int64), warm)

    domains = store(ids[[4, 0, 5]])
    domains.add(store(ids[[2, 3, 1]]))
    taken = domains.pop(2)
    for part in (taken, domains, domains.select(domains.lower > 2)):
        assert torch.equal(part.warm.alphas["a"][:, 0, 0].double(), part.lower)
        assert torch.equal(part.warm.betas["a"][:, 0, 0].double(), 2 * part.lower)
        assert torch.equal(part.boxes["a"][0][:, 0], part.lower)
    assert taken.lower.tolist() == [0.0, 1.0]


def test_root_boxes_are_sound_and_within_crowns():
    net, graph, box, problem = _setup(2)
    spec = problem.spec[:, None]
    crown = crown_bounds(graph, box)
    tight = root_boxes(graph, box, spec, problem.split_nodes, AlphaOptions(iterations=15))
    points = box.lower + (box.upper - box.lower) * torch.rand(4000, 4, generator=torch.Generator().manual_seed(0),
                                                              dtype=torch.float64)
    points = torch.cat([points, box.lower, box.upper])
    values = graph.evaluate(points)
    narrower = 0.0
    for name, (lo, hi) in tight.items():
        c_lo, c_hi = (b.flatten(1) for b in crown[name])
        assert bool((lo >= c_lo - 1e-12).all() and (hi <= c_hi + 1e-12).all())
        v = values[name].flatten(1)
        assert bool((v >= lo - 1e-9).all() and (v <= hi + 1e-9).all())
        narrower += float(((c_hi - c_lo) - (hi - lo)).sum())
    assert narrower > 0
    assert root_boxes(graph, box, spec, problem.split_nodes, AlphaOptions(iterations=0)).keys() == tight.keys()


def test_strong_branching_splits_where_the_worse_child_bounds_highest():
    _, _, _, problem = _setup(3)
    options = BoundOptions(iterations=5)
    parents = _root_store(problem, options, k=4)
    nodes = list(problem.split_nodes)
    assert int((parents.choice[0, :, 0] >= 0).sum()) == 4
    worse = []
    for j in range(4):
        children = split(parents.boxes, parents.choice[:, j], nodes, problem.split_nodes)
        lower = evaluate_batch(problem, children, 2, options, parents.warm.cat(parents.warm))
        worse.append(float(lower.min()))
    chosen = strong_branching(problem, parents, options)
    assert chosen.shape == (1, 2)
    best = max(range(4), key=lambda j: (worse[j], -j))
    assert torch.equal(chosen[0], parents.choice[0, best])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("candidates", [1, 3])
def test_warm_started_search_agrees_with_dense_sampling(seed, candidates):
    net, graph, box, problem = _setup(seed, inputs=2, widths=(16, 16))
    grid = torch.stack(torch.meshgrid(*[torch.linspace(0.2, 0.8, 301, dtype=torch.float64)] * 2, indexing="ij"), -1)
    least = float((net(grid.reshape(-1, 2)).detach() @ problem.spec.T).min())  # an upper bound of the minimum
    options = BabOptions(batch=8, candidates=candidates, bound=BoundOptions(iterations=3))
    above = bab(graph, box, problem.spec, 60, rhs=torch.full((2,), least + 1e-3, dtype=torch.float64),
                options=options)
    assert above.status == "falsified"
    assert float((net(above.counterexample[None]).detach() @ problem.spec.T).min()) <= least + 1e-3
    below = bab(graph, box, problem.spec, 60, rhs=torch.full((2,), least - 0.05, dtype=torch.float64),
                options=options)
    assert below.status == "verified" and 0 < below.lower_bound <= 0.05 + 1e-9 and math.isfinite(below.lower_bound)
