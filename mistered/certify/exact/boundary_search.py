"""A cheap batched upper bound on the minimal adversarial distance of a ReLU network (no attack library needed).

Inside one linear region the network is affine, so the nearest point of each decision half-space
``{f_j >= f_c}`` to ``x0`` (within the input box) has a closed form (:mod:`mistered.certify.exact.halfspace`). The
search starts at ``x0``, takes the local affine form of the logits at the current point, jumps to the nearest
such point (past the boundary, further at each hop), and repeats from there; every candidate that the network
really misclassifies is a valid upper bound, and the best is finally shrunk toward ``x0`` by bisection along the
segment. It is a heuristic (DeepFool-like, but measured from ``x0`` in the exact norm and box), used to seed
GeoCert's pruning.

Example:
    >>> x_adv, dist = boundary_search(net, x, "linf")  # x (B, d); dist (B,) inf where nothing was found
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .halfspace import halfspace_projection
from ..graph.piecewise import PiecewiseLinearNet

__all__ = ["boundary_search", "local_logit_forms", "FlatModel"]

_ORDER = {"l1": 1, "l2": 2, "linf": float("inf")}


def local_logit_forms(net: PiecewiseLinearNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine map of the logits on the linear region of each input: ``f(x') = J x' + c`` there.

    Args:
        x: ``(B, d)`` inputs (flattened).

    Returns:
        ``J`` ``(B, K, d)`` and ``c`` ``(B, K)``.
    """
    pre = net.pre_activations(x)
    mat = net.weights[0].expand(x.shape[0], -1, -1)
    off = net.biases[0].expand(x.shape[0], -1)
    for i in range(net.num_hidden):
        mask = (pre[i] > 0).to(mat.dtype)
        mat = torch.einsum("kn,bnd->bkd", net.weights[i + 1], mask[..., None] * mat)
        off = (mask * off) @ net.weights[i + 1].T + net.biases[i + 1]
    return mat, off


class FlatModel:
    """Any network ``model`` of inputs ``(B, *input_shape)`` seen on flat inputs ``(B, d)``, with its local affine
    forms by autograd (exact on a piecewise-linear network: ``f(x') = J x' + f(x) - J x`` near ``x``)."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], input_shape: tuple[int, ...]) -> None:
        self.model, self.input_shape = model, tuple(input_shape)

    def flatten_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        return self.model(flat.reshape(flat.shape[0], *self.input_shape))

    def local_forms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``J`` ``(B, K, d)`` and ``c`` ``(B, K)`` at ``x`` ``(B, d)``: one backward pass per class."""
        with torch.enable_grad():
            point = x.detach().requires_grad_(True)
            logits = self(point)
            rows = [torch.autograd.grad(logits[:, k].sum(), point, retain_graph=True)[0]
                    for k in range(logits.shape[1])]
        mat = torch.stack(rows, dim=1).detach()
        return mat, logits.detach() - torch.einsum("bkd,bd->bk", mat, x)


@torch.no_grad()
def boundary_search(
    net: PiecewiseLinearNet | FlatModel,
    x: torch.Tensor,
    norm: str,
    steps: int = 12,
    domain: tuple[float, float] = (0.0, 1.0),
    overshoot: float = 1e-3,
    bisections: int = 30,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Misclassified points near each input, found by repeated closed-form projections on local decision planes.

    Args:
        net: the network in chain form (computations in its dtype; use float64 for GeoCert seeds), or any
            network as a :class:`FlatModel` (local forms by autograd).
        x: ``(B, d)`` or ``(B, *input_shape)`` inputs inside ``domain``.
        norm: "l1", "l2" or "linf" (input units).
        steps: region hops; overshoot: relative step past the boundary; bisections: final refinement steps.

    Returns:
        ``x_adv`` ``(B, d)`` (``x`` itself where nothing was found) and its distance ``(B,)`` (``inf`` there).
    """
    x0 = net.flatten_input(x)
    batch, rows = x0.shape[0], torch.arange(x0.shape[0], device=x0.device)
    lo, hi = torch.full_like(x0, domain[0]), torch.full_like(x0, domain[1])
    cls = net(x0).argmax(1)
    best, best_x = torch.full((batch,), torch.inf, dtype=x0.dtype, device=x0.device), x0.clone()
    cur = x0.clone()
    for step in range(steps):
        mat, off = net.local_forms(cur) if isinstance(net, FlatModel) else local_logit_forms(net, cur)
        a = mat[rows, cls][:, None, :] - mat  # (f_c - f_j)(x) <= 0
        b = off - off[rows, cls][:, None]
        b[rows, cls] = -1.0  # the class itself: an empty half-space
        dist, points = halfspace_projection(norm, a, b, x0, lo, hi)
        cand = (x0[:, None] + (points - x0[:, None]) * (1 + overshoot)).clamp(domain[0], domain[1])
        wrong = net(cand.reshape(-1, x0.shape[1])).argmax(1).reshape(dist.shape) != cls[:, None]
        cand_dist = torch.linalg.vector_norm(cand - x0[:, None], ord=_ORDER[norm], dim=-1)
        cand_dist = torch.where(wrong & torch.isfinite(dist), cand_dist, torch.full_like(cand_dist, torch.inf))
        j = cand_dist.argmin(1)
        improve = cand_dist[rows, j] < best
        best = torch.where(improve, cand_dist[rows, j], best)
        best_x = torch.where(improve[:, None], cand[rows, j], best_x)
        nearest = dist.argmin(1)
        if not torch.isfinite(dist[rows, nearest]).any():
            break
        push = 1 + 0.05 * (step + 1)  # hop further past each plane as the search goes on, so it cannot cycle
        hop = (x0 + (points[rows, nearest] - x0) * push).clamp(domain[0], domain[1])
        cur = torch.where(torch.isfinite(dist[rows, nearest])[:, None], hop, cur)
    # shrink each adversarial point toward x0 along the segment, keeping it misclassified
    found = torch.isfinite(best)
    t_lo, t_hi = torch.zeros_like(best), torch.ones_like(best)
    delta = best_x - x0
    for _ in range(bisections if bool(found.any()) else 0):
        mid = (t_lo + t_hi) / 2
        wrong = net(x0 + mid[:, None] * delta).argmax(1) != cls
        t_hi = torch.where(wrong, mid, t_hi)
        t_lo = torch.where(wrong, t_lo, mid)
    best_x = torch.where(found[:, None], x0 + t_hi[:, None] * delta, x0)
    dist = torch.linalg.vector_norm(best_x - x0, ord=_ORDER[norm], dim=-1)
    return best_x, torch.where(found, dist, torch.full_like(dist, torch.inf))
