"""GeoCert: the exact minimal adversarial distance of an input to a ReLU network (Jordan, Lewis & Dimakis 2019).

The input domain (the pixel box) is partitioned into linear regions, one per activation pattern; inside a region
the network is affine and the region is a polytope. The search grows a ball around ``x0`` through this complex:
regions sit in a priority queue keyed by their distance from ``x0``; the nearest is popped, the distance to its
adversarial part ``{x in region : f_j(x) >= f_c(x)}`` is solved exactly for each class ``j != c`` (an upper bound
on the answer), and its neighbours (one unstable ReLU flipped) are queued. When the nearest queued region is no
closer than the best adversarial point, that point is at the exact minimal distance.

Pruning, cheapest first:
* neighbours are queued with a closed-form lower bound on their distance (the largest distance from ``x0`` to a
  half-space of the region, all computed with tensor ops at once); the exact projection is solved only when such
  an entry reaches the front of the queue, and entries at or beyond the upper bound are dropped;
* ReLUs that interval bounds over the search box prove stable are never flipped and their constraints are dropped;
* the search box is the domain intersected with the L∞ ball of radius = the best upper bound (for L1 and L2 that
  ball encloses the norm ball of the same radius, so it never cuts off the optimum — unlike shrinking it to the L∞
  size of one projection, the original implementation's L2 bug);
* an upper bound (e.g. from an attack) can seed the search.

Projections are exact (see :mod:`mistered.certify.projection`). Everything is float64.
"""

from __future__ import annotations

import heapq
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InvalidInputError
from .certificate import Certificate
from .interval import interval_bounds
from .plnet import PiecewiseLinearNet
from .projection import polytope_distance

__all__ = ["GeoCertResult", "geocert", "certify_geocert", "NORMS"]

logger = logging.getLogger(__name__)
NORMS = ("l1", "l2", "linf")
_DUAL = {"l2": 2, "linf": 1, "l1": np.inf}


@dataclass
class GeoCertResult:
    """Outcome of one GeoCert search.

    Attributes:
        lower, upper: bounds on the minimal adversarial distance (input units, in ``norm``); equal when exact.
        status: ``exact``; ``timeout`` (anytime bounds only); in decision mode ``certified`` (no adversarial
            example within ``eps``: ``lower >= eps``) or ``attacked`` (one found: ``upper <= eps``).
        x_adv: ``(*input_shape)`` an adversarial point at distance ``upper`` (on the decision boundary), or ``None``.
        predicted: the class of ``x0``.
        n_regions: linear regions processed; n_lp_solves: exact projections solved; seconds: wall-clock time.
    """

    lower: float
    upper: float
    status: str
    x_adv: torch.Tensor | None
    predicted: int
    norm: str
    n_regions: int = 0
    n_lp_solves: int = 0
    seconds: float = 0.0
    details: dict = field(default_factory=dict)


class _Search:
    """State of one search (numpy float64)."""

    def __init__(self, net: PiecewiseLinearNet, x0: np.ndarray, norm: str, domain: tuple[float, float]) -> None:
        self.ws = [w.detach().cpu().double().numpy() for w in net.weights]
        self.bs = [b.detach().cpu().double().numpy() for b in net.biases]
        self.net, self.x0, self.norm = net, x0, norm
        self.lo = np.full_like(x0, domain[0])
        self.hi = np.full_like(x0, domain[1])
        self.sizes = [w.shape[0] for w in self.ws[:-1]]
        self.n_solves = 0
        self.unstable = np.ones(sum(self.sizes), dtype=bool)
        self.stable_state = np.zeros(sum(self.sizes), dtype=bool)  # for stable ReLUs: True = always active
        self.box_radius = np.inf

    def box(self, radius: float) -> tuple[np.ndarray, np.ndarray]:
        if not np.isfinite(radius):
            return self.lo, self.hi
        return np.maximum(self.lo, self.x0 - radius), np.minimum(self.hi, self.x0 + radius)

    def shrink(self, radius: float) -> None:
        """Recompute the stable ReLUs over the search box of the given L∞ radius."""
        if radius >= 0.9 * self.box_radius:
            return
        self.box_radius = radius
        lo, hi = self.box(radius)
        dev, dt = self.net.device, self.net.dtype
        bounds = interval_bounds(self.net, torch.as_tensor(lo, device=dev, dtype=dt)[None],
                                 torch.as_tensor(hi, device=dev, dtype=dt)[None])
        l_all = torch.cat([l[0] for l, _ in bounds[:-1]]).cpu().double().numpy()
        u_all = torch.cat([u[0] for _, u in bounds[:-1]]).cpu().double().numpy()
        self.stable_state |= self.unstable & (l_all >= 0)
        self.unstable &= (l_all < 0) & (u_all > 0)

    def forms(self, pattern: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Affine forms inside the region of ``pattern``: hidden pre-activations ``(N, d)``, ``(N,)``; logits."""
        mats, offs = [], []
        m, c = self.ws[0], self.bs[0]
        start = 0
        for i, n in enumerate(self.sizes):
            mats.append(m)
            offs.append(c)
            mask = pattern[start : start + n]
            start += n
            m = self.ws[i + 1] @ (m * mask[:, None])
            c = self.ws[i + 1] @ (c * mask) + self.bs[i + 1]
        return np.concatenate(mats), np.concatenate(offs), m, c

    def region(self, pattern: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Constraints ``A x <= b`` of the region and the logits' affine form.

        ReLUs proved stable over the search box are left out, unless the pattern contradicts their stable state
        (a region queued before the box shrank): then the constraint stays and the region is found empty.
        """
        z_mat, z_off, logit_mat, logit_off = self.forms(pattern)
        rows = self.unstable | (pattern != self.stable_state)
        sign = np.where(pattern, -1.0, 1.0)[rows]  # active: -z <= 0; inactive: z <= 0
        return sign[:, None] * z_mat[rows], -sign * z_off[rows], logit_mat, logit_off

    def halfspace_lower_bound(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Distance from x0 to each half-space ``a_i x <= b_i`` (0 when x0 satisfies it), all rows at once."""
        violation = a @ self.x0 - b
        dual = np.linalg.norm(a, ord=_DUAL[self.norm], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = np.where(violation > 0, violation / dual, 0.0)
        return np.nan_to_num(dist, nan=0.0, posinf=np.inf)

    def solve(self, a: np.ndarray, b: np.ndarray, radius: float):
        self.n_solves += 1
        lo, hi = self.box(radius)
        return polytope_distance(self.norm, a, b, self.x0, lo, hi)


def geocert(
    net: PiecewiseLinearNet,
    x: torch.Tensor,
    norm: str = "l2",
    time_limit: float | None = None,
    decision_eps: float | None = None,
    upper_bound: float | None = None,
    x_adv: torch.Tensor | None = None,
    domain: tuple[float, float] = (0.0, 1.0),
) -> GeoCertResult:
    """Exact minimal adversarial distance of one input ``x`` (``input_shape`` or flat ``(d,)``) in ``norm``.

    Args:
        net: the network in piecewise-linear form (cast to float64 internally for the solves).
        x: one input inside ``domain``; its predicted class ``c`` is the one to keep.
        norm: "l1", "l2" or "linf".
        time_limit: seconds; when reached, returns the current bounds with status ``timeout``.
        decision_eps: decision mode: stop as soon as an adversarial point within ``eps`` is found (``attacked``)
            or the lower bound exceeds ``eps`` (``certified``).
        upper_bound: a known upper bound on the distance (e.g. from an attack) to prune the search with.
        x_adv: a known adversarial input; its distance seeds the upper bound.
        domain: the input box ``(lo, hi)`` the adversary must stay in.

    Returns:
        :class:`GeoCertResult`.
    """
    if norm not in NORMS:
        raise InvalidInputError(f"norm must be one of {NORMS}, got {norm!r}")
    start = time.perf_counter()
    net = net.to(torch.float64)
    x0 = net.flatten_input(x.reshape(1, -1))[0].cpu().numpy()
    if (x0 < domain[0]).any() or (x0 > domain[1]).any():
        raise InvalidInputError(f"x must lie in the domain {domain}, got values in [{x0.min():.4g}, {x0.max():.4g}]")
    search = _Search(net, x0, norm, domain)
    logits = net(torch.as_tensor(x0)[None])[0]
    c = int(logits.argmax())
    best, best_x = np.inf, None
    if upper_bound is not None:
        best = float(upper_bound)
    if x_adv is not None:
        xa = net.flatten_input(x_adv.reshape(1, -1))[0].cpu().numpy()
        if int(net(torch.as_tensor(xa)[None])[0].argmax()) != c:
            dist = float(np.linalg.norm(xa - x0, ord={"l1": 1, "l2": 2, "linf": np.inf}[norm]))
            if dist < best:
                best, best_x = dist, xa
    eps = np.inf if decision_eps is None else float(decision_eps)

    def limit() -> float:  # nothing at or beyond this distance matters (decision mode: nothing beyond eps)
        return min(best, np.nextafter(eps, np.inf))

    search.shrink(limit())
    pattern0 = np.concatenate([(z[0] > 0).numpy() for z in net.pre_activations(torch.as_tensor(x0)[None])[:-1]])
    heap: list[tuple[float, int, bool, np.ndarray]] = [(0.0, 0, True, pattern0)]
    queued = {pattern0.tobytes()}
    counter, n_regions, status = 1, 0, None
    while heap and heap[0][0] < limit():
        if time_limit is not None and time.perf_counter() - start > time_limit:
            status = "timeout"
            break
        key, _, verified, pattern = heapq.heappop(heap)
        a, b, logit_mat, logit_off = search.region(pattern)
        if not verified:  # exact distance to the region, re-queued with it
            sol = search.solve(a, b, limit())
            if sol is not None and sol[1] < limit():
                heapq.heappush(heap, (max(sol[1], key), counter, True, pattern))
                counter += 1
            continue
        n_regions += 1
        # adversarial part of the region, nearest half-space first: (f_c - f_j)(x) <= 0
        adv_a = logit_mat[c][None] - np.delete(logit_mat, c, axis=0)
        adv_b = np.delete(logit_off, c) - logit_off[c]
        adv_lb = np.maximum(search.halfspace_lower_bound(adv_a, adv_b), key)
        for j in np.argsort(adv_lb):
            if adv_lb[j] >= limit():
                break
            sol = search.solve(np.vstack([a, adv_a[j]]), np.append(b, adv_b[j]), limit())
            if sol is not None and sol[1] < best:
                best, best_x = sol[1], sol[0]
                search.shrink(limit())
        if decision_eps is not None and best <= eps:
            break
        # neighbours: flip each unstable ReLU; queue with the half-space lower bound of the neighbour region
        for k in np.flatnonzero(search.unstable):
            flipped = pattern.copy()
            flipped[k] = not flipped[k]
            tag = flipped.tobytes()
            if tag in queued:
                continue
            na, nb, _, _ = search.region(flipped)
            lb = float(search.halfspace_lower_bound(na, nb).max(initial=0.0))
            if lb < limit():
                queued.add(tag)
                heapq.heappush(heap, (lb, counter, False, flipped))
                counter += 1
    lower = min(heap[0][0], best) if heap else best
    if status is None:
        if decision_eps is not None:
            status = "attacked" if best <= eps else "certified"
        else:
            status = "exact"
            lower = best
    seconds = time.perf_counter() - start
    logger.debug("geocert %s: [%g, %g] %s, %d regions, %d solves, %.3fs", norm, lower, best, status, n_regions,
                 search.n_solves, seconds)
    adv = None
    if best_x is not None:
        adv = torch.as_tensor(best_x).reshape(net.input_shape)
    return GeoCertResult(float(lower), float(best), status, adv, c, norm, n_regions, search.n_solves, seconds)


def certify_geocert(
    model: torch.nn.Module | PiecewiseLinearNet,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str = "l2",
    time_limit: float | None = None,
) -> Certificate:
    """GeoCert on a batch: ``x`` ``(B, *input_shape)`` in [0, 1], labels ``y`` ``(B,)``; ``time_limit`` per example.

    Misclassified examples get radius 0 and status ``misclassified``; the others ``exact`` (radius = upper) or
    ``timeout`` (radius = the anytime lower bound). ``details`` holds per-example regions, solves and seconds.
    """
    start = time.perf_counter()
    net = model if isinstance(model, PiecewiseLinearNet) else PiecewiseLinearNet.from_module(model, tuple(x.shape[1:]))
    net = net.to(torch.float64)
    radius, upper, status, preds = [], [], [], []
    details: dict[str, list] = {"n_regions": [], "n_lp_solves": [], "seconds": []}
    for xi, yi in zip(x, y):
        result = geocert(net, xi.cpu(), norm=norm, time_limit=time_limit)
        preds.append(result.predicted)
        if result.predicted != int(yi):
            radius.append(0.0), upper.append(0.0), status.append("misclassified")
        else:
            radius.append(result.lower), upper.append(result.upper), status.append(result.status)
        details["n_regions"].append(result.n_regions)
        details["n_lp_solves"].append(result.n_lp_solves)
        details["seconds"].append(result.seconds)
    return Certificate("geocert", norm, torch.tensor(radius), torch.tensor(upper), status, torch.tensor(preds),
                       y.cpu().clone(), time.perf_counter() - start, details)
