"""Shared builders of small random networks for the certification tests."""

import itertools

import numpy as np
import torch

from mistered.certify.graph.piecewise import PiecewiseLinearNet


def random_box_crossing_net(seed: int, sizes: tuple[int, ...]) -> PiecewiseLinearNet:
    """Random float64 ReLU net whose ReLU hyperplanes and decision boundaries cross the unit box."""
    gen = torch.Generator().manual_seed(seed)
    weights, biases = [], []
    for i in range(len(sizes) - 1):
        w = torch.randn(sizes[i + 1], sizes[i], generator=gen, dtype=torch.float64)
        b = 0.3 * torch.randn(sizes[i + 1], generator=gen, dtype=torch.float64)
        weights.append(w)
        biases.append(b - w @ torch.full((sizes[i],), 0.5, dtype=torch.float64) if i == 0 else b)
    return PiecewiseLinearNet(weights, biases, (sizes[0],))


def brute_force_distance_2d(net: PiecewiseLinearNet, x0: np.ndarray, norm: str) -> float:
    """Exact minimal distance for a 2-D input by enumerating every activation pattern and, in each, every
    candidate optimum of a norm over a polygon: its vertices and the points where the norm ball first
    touches an edge (orthogonal foot for L2, diagonals for L∞, axes for L1)."""
    ws = [w.numpy() for w in net.weights]
    bs = [b.numpy() for b in net.biases]
    c = int(np.argmax(net(torch.as_tensor(x0)[None])[0].numpy()))
    sizes = [w.shape[0] for w in ws[:-1]]
    box_a = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    box_b = np.array([1.0, 0, 1, 0])
    dirs = {"l2": None, "linf": np.array([[1, 1], [1, -1]]), "l1": np.array([[1, 0], [0, 1]])}[norm]
    best = np.inf
    for bits in itertools.product([False, True], repeat=sum(sizes)):
        pattern = np.array(bits)
        m, off, rows_a, rows_b, start = ws[0], bs[0], [], [], 0
        for i, n in enumerate(sizes):
            mask = pattern[start : start + n]
            start += n
            sign = np.where(mask, -1.0, 1.0)
            rows_a.append(sign[:, None] * m)
            rows_b.append(-sign * off)
            m, off = ws[i + 1] @ (m * mask[:, None]), ws[i + 1] @ (off * mask) + bs[i + 1]
        for j in range(m.shape[0]):
            if j == c:
                continue
            a = np.vstack(rows_a + [box_a, (m[c] - m[j])[None]])
            b = np.concatenate(rows_b + [box_b, [off[j] - off[c]]])
            p, q = np.triu_indices(len(a), 1)
            det = a[p, 0] * a[q, 1] - a[p, 1] * a[q, 0]
            keep = np.abs(det) > 1e-12
            p, q, det = p[keep], q[keep], det[keep]
            vertices = np.stack([b[p] * a[q, 1] - b[q] * a[p, 1], a[p, 0] * b[q] - a[q, 0] * b[p]], 1) / det[:, None]
            cands = [x0[None], vertices]
            if dirs is None:  # feet of the perpendiculars from x0
                nrm = (a * a).sum(1)
                ok = nrm > 1e-12
                cands.append(x0 - ((a[ok] @ x0 - b[ok]) / nrm[ok])[:, None] * a[ok])
            else:  # where the norm ball's vertices (rays along dirs) meet each line
                for u in dirs:
                    for sgn in (1.0, -1.0):
                        au = a @ (sgn * u)
                        ok = np.abs(au) > 1e-12
                        cands.append(x0 + ((b[ok] - a[ok] @ x0) / au[ok])[:, None] * (sgn * u))
            pts = np.concatenate(cands)
            ok = (pts @ a.T <= b + 1e-9).all(axis=1)
            if ok.any():
                order = {"l2": 2, "linf": np.inf, "l1": 1}[norm]
                best = min(best, np.linalg.norm(pts[ok] - x0, ord=order, axis=1).min())
    return float(best)
