"""CROWN computes exactly the standard relaxation (against an independent re-implementation on an MLP), is exact
where every neuron is stable, and α-CROWN reaches the triangle-relaxation LP on a one-hidden-layer net."""

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from _bounds_models import SHAPE, build, images
from mistered.certify.bounds import AlphaOptions, InputSet, crown_bounds, margin_lower_bounds, spec_lower_bounds
from mistered.certify.graph import PiecewiseLinear, trace_graph


def _mlp(sizes, seed):
    torch.manual_seed(seed)
    layers = [nn.Flatten()]
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).double().eval()


def _weights(model):
    linears = [m for m in model if isinstance(m, nn.Linear)]
    return [m.weight.detach().numpy() for m in linears], [m.bias.detach().numpy() for m in linears]


def _relax(a, l, u):
    """Backward through relu over [l, u] for coefficients ``a``: (new coefficients, constant) — CROWN's choice."""
    new, const = a.copy(), 0.0
    for n in range(a.shape[0]):
        if l[n] >= 0:
            continue
        if u[n] <= 0:
            new[n] = 0.0
            continue
        chord = u[n] / (u[n] - l[n])
        if a[n] >= 0:
            new[n] = a[n] * (1.0 if u[n] > -l[n] else 0.0)
        else:
            new[n] = a[n] * chord
            const += a[n] * (-l[n] * chord)
    return new, const


def _reference_crown(ws, bs, lo, hi, spec):
    """Lower bound of ``spec . f(x)`` for ``x`` in ``[lo, hi]`` by CROWN with intermediate bounds intersected with
    interval bounds, written independently of the engine (numpy, one neuron at a time)."""

    def backward(a, k, pre):  # a: coefficients on layer k's pre-activation
        const = 0.0
        for j in range(k, 0, -1):
            const += a @ bs[j]
            a = a @ ws[j]
            a, c = _relax(a, *pre[j - 1])
            const += c
        const += a @ bs[0]
        a = a @ ws[0]
        return const + np.minimum(a * lo, a * hi).sum()

    pre = []
    for k in range(len(ws) - 1):
        l_in, u_in = (lo, hi) if k == 0 else (np.maximum(pre[-1][0], 0), np.maximum(pre[-1][1], 0))
        mid, rad = ws[k] @ ((l_in + u_in) / 2) + bs[k], np.abs(ws[k]) @ ((u_in - l_in) / 2)
        l, u = mid - rad, mid + rad
        if k > 0:
            eye = np.eye(len(l))
            l = np.maximum(l, [backward(e, k, pre) for e in eye])
            u = np.minimum(u, [-backward(-e, k, pre) for e in eye])
        pre.append((l, u))
    return backward(spec, len(ws) - 1, pre)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crown_equals_an_independent_implementation_on_an_mlp(seed):
    model = _mlp((4, 7, 6, 3), seed)
    ws, bs = _weights(model)
    x = torch.rand(5, 1, 2, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    eps = 0.15
    spec = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
    ours = spec_lower_bounds(trace_graph(model, (1, 2, 2)), InputSet.ball(x, eps), spec, "crown")
    for b in range(5):
        flat = x[b].flatten().numpy()
        lo, hi = np.clip(flat - eps, 0, 1), np.clip(flat + eps, 0, 1)
        for s in range(2):
            assert ours[b, s].item() == pytest.approx(_reference_crown(ws, bs, lo, hi, spec[b, s].numpy()), abs=1e-10)


def test_crown_is_exact_where_every_neuron_is_stable():
    model = build("residual-bn")  # convolutions (windowed forms), BatchNorm, residual addition, normalisation
    graph = trace_graph(model, SHAPE)
    x, eps = images(3), 1e-6
    y = model(x).argmax(1)
    boxes = crown_bounds(graph, InputSet.ball(x, eps))
    for node in graph.nodes:
        if isinstance(node.op, PiecewiseLinear):
            lo, hi = boxes[node.inputs[0]]
            assert not bool(((lo < 0) & (hi > 0)).any()), "test premise: no unstable neuron"
    lower = margin_lower_bounds(graph, x, y, eps, "linf", "crown")
    for b in range(3):  # the margin is affine on the box: its exact minimum is at a vertex chosen per gradient sign
        for j in range(3):
            if j == y[b]:
                continue
            point = x[b:b + 1].clone().requires_grad_(True)
            out = model(point)
            margin = out[0, y[b]] - out[0, j]
            (grad,) = torch.autograd.grad(margin, point)
            lo, hi = (x[b] - eps).clamp(0, 1), (x[b] + eps).clamp(0, 1)
            exact = margin.item() + torch.minimum(grad[0] * (lo - x[b]), grad[0] * (hi - x[b])).sum().item()
            assert lower[b, j].item() == pytest.approx(exact, abs=1e-12)


def _triangle_lp(w1, b1, w2, b2, lo, hi, spec):
    """min spec . (W2 relu(W1 x + b1) + b2) over the box, ReLUs replaced by their triangle relaxation (exact
    pre-activation bounds): variables (x, h)."""
    d, n = w1.shape[1], w1.shape[0]
    mid, rad = w1 @ ((lo + hi) / 2) + b1, np.abs(w1) @ ((hi - lo) / 2)
    l, u = mid - rad, mid + rad
    rows, rhs, eq_rows, eq_rhs = [], [], [], []
    for i in range(n):
        z = np.concatenate([w1[i], np.zeros(n)])
        e = np.zeros(d + n)
        e[d + i] = 1.0
        if l[i] >= 0:
            eq_rows.append(e - z), eq_rhs.append(b1[i])
        elif u[i] <= 0:
            eq_rows.append(e), eq_rhs.append(0.0)
        else:  # h >= z, h <= u (z - l) / (u - l)
            rows.append(z - e), rhs.append(-b1[i])
            slope = u[i] / (u[i] - l[i])
            rows.append(e - slope * z), rhs.append(slope * (b1[i] - l[i]))
    bounds = [(lo[k], hi[k]) for k in range(d)] + [(0, None)] * n
    cost = np.concatenate([np.zeros(d), spec @ w2])
    result = linprog(cost, A_ub=np.array(rows) if rows else None, b_ub=np.array(rhs) if rhs else None,
                     A_eq=np.array(eq_rows) if eq_rows else None, b_eq=np.array(eq_rhs) if eq_rhs else None,
                     bounds=bounds, method="highs")
    assert result.status == 0
    return result.fun + spec @ b2


def test_alpha_crown_reaches_the_lp_relaxation_on_one_hidden_layer():
    model = _mlp((3, 10, 3), 4)
    (w1, w2), (b1, b2) = _weights(model)
    x = torch.rand(4, 1, 1, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    spec = torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    graph, input_set = trace_graph(model, (1, 1, 3)), InputSet.ball(x, 0.3)
    crown = spec_lower_bounds(graph, input_set, spec, "crown")
    alpha = spec_lower_bounds(graph, input_set, spec, "alpha-crown", alpha=AlphaOptions(iterations=200, lr=0.1))
    for b in range(4):
        flat = x[b].flatten().numpy()
        lo, hi = np.clip(flat - 0.3, 0, 1), np.clip(flat + 0.3, 0, 1)
        for s in range(3):
            lp = _triangle_lp(w1, b1, w2, b2, lo, hi, spec[b, s].numpy())
            assert crown[b, s] <= alpha[b, s] + 1e-12
            assert alpha[b, s] <= lp + 1e-7
            assert alpha[b, s] == pytest.approx(lp, abs=1e-3 * (1 + abs(lp)))
    assert bool((alpha > crown + 1e-6).any())
