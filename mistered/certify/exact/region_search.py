"""The pieces both exact distance searches share (GeoCert through linear regions, :mod:`.geocert`, and branch and
bound over ReLU splits, :mod:`.branch_distance`): the result record, the per-search state (:class:`RegionSearch`:
the float64 net, ``x0``, the norm, CROWN-pruned ReLUs, memoised half-space bounds and exact projections) and the
common start (:func:`start_search`). Both searches import from here, so neither imports the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ...errors import InvalidInputError
from ...validation import check_inputs
from .halfspace import halfspace_projection
from ..bounds.chain_linear import search_region_bounds
from ..graph.piecewise import PiecewiseLinearNet
from ..graph.piecewise_lowering import as_plnet
from ..solvers.projection import LinfProjector, polytope_distance

__all__ = ["NORMS", "GeoCertResult", "RegionSearch", "start_search"]

NORMS = ("l1", "l2", "linf")
_SAFETY = 1e-9  # relative slack on closed-form bounds


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


class RegionSearch:
    """State of one search (numpy float64; closed-form bounds in torch on the same memory)."""

    def __init__(self, net: PiecewiseLinearNet, x0: np.ndarray, norm: str, domain: tuple[float, float]) -> None:
        self.ws = [w.detach().cpu().double().numpy() for w in net.weights]
        self.bs = [b.detach().cpu().double().numpy() for b in net.biases]
        self.net, self.x0, self.norm = net, x0, norm
        self.lo = np.full_like(x0, domain[0])
        self.hi = np.full_like(x0, domain[1])
        self.sizes = [w.shape[0] for w in self.ws[:-1]]
        ends = np.cumsum(self.sizes)
        self.layer_bounds = list(zip(ends - np.array(self.sizes), ends))
        self.n_solves = 0
        self.unstable = np.ones(sum(self.sizes), dtype=bool)
        self.stable_state = np.zeros(sum(self.sizes), dtype=bool)  # for stable ReLUs: True = always active
        self.box_radius = np.inf
        self.bounds: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.layer_start = np.repeat(ends - np.array(self.sizes), self.sizes)  # first ReLU of each ReLU's layer
        self._row_cache: dict[tuple[int, bool, bytes], float] = {}
        self._row_cache_radius = np.nan
        self.linf_projector = LinfProjector(x0) if norm == "linf" else None

    def box(self, radius: float) -> tuple[np.ndarray, np.ndarray]:
        if not np.isfinite(radius):
            return self.lo, self.hi
        return np.maximum(self.lo, self.x0 - radius), np.minimum(self.hi, self.x0 + radius)

    def shrink(self, radius: float) -> None:
        """Recompute the stable ReLUs over the search box (and, for L1/L2, the norm ball) of the given radius;
        ``bounds`` keeps the pre-activation bounds of every layer (``[(l_i, u_i)]``, ``(1, n_i)``, logits last)."""
        if self.bounds and radius >= 0.9 * self.box_radius:
            return
        self.box_radius = radius
        lo, hi = (torch.as_tensor(v) for v in self.box(radius))
        bounds = search_region_bounds(self.net, torch.as_tensor(self.x0), self.norm, lo, hi, radius)
        self.bounds = bounds
        l_all = torch.cat([l[0] for l, _ in bounds[:-1]]).numpy()
        u_all = torch.cat([u[0] for _, u in bounds[:-1]]).numpy()
        self.stable_state |= self.unstable & (l_all >= 0)
        self.unstable &= (l_all < 0) & (u_all > 0)

    def forms(self, pattern: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Affine forms inside the region of ``pattern``: hidden pre-activations ``(N, d)``, ``(N,)``; logits."""
        mats, offs = [], []
        m, c = self.ws[0], self.bs[0]
        for i, (start, end) in enumerate(self.layer_bounds):
            mats.append(m)
            offs.append(c)
            mask = pattern[start:end]
            m = self.ws[i + 1] @ (m * mask[:, None])
            c = self.ws[i + 1] @ (c * mask) + self.bs[i + 1]
        return np.concatenate(mats), np.concatenate(offs), m, c

    def region(self, pattern: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Constraints ``A x <= b`` of the region, the ReLU index of each row, and the logits' affine form.

        ReLUs proved stable are left out, unless the pattern contradicts their stable state (a region queued
        before the bounds tightened): then the constraint stays and the region is found empty.
        """
        z_mat, z_off, logit_mat, logit_off = self.forms(pattern)
        rows = np.flatnonzero(self.unstable | (pattern != self.stable_state))
        sign = np.where(pattern[rows], -1.0, 1.0)  # active: -z <= 0; inactive: z <= 0
        return sign[:, None] * z_mat[rows], -sign * z_off[rows], rows, logit_mat, logit_off

    def bound(self, a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
        """``(m,)`` exact distance from x0 to each half-space ``a_i x <= b_i`` inside the search box of ``radius``."""
        if a.shape[0] == 0:
            return np.zeros(0)
        lo, hi = self.box(radius)
        dist, _ = halfspace_projection(self.norm, torch.from_numpy(a)[None], torch.from_numpy(b)[None],
                                       torch.from_numpy(self.x0)[None], torch.from_numpy(lo)[None],
                                       torch.from_numpy(hi)[None])
        return dist[0].numpy() * (1 - _SAFETY)  # a hair below, against rounding

    def row_bounds(self, pattern: np.ndarray, a: np.ndarray, b: np.ndarray, rows: np.ndarray, radius: float,
                   flip: bool = False) -> np.ndarray:
        """:meth:`bound` of the region's rows ``a x <= b`` (ReLUs ``rows`` of ``pattern``; with ``flip``, of the
        opposite half-spaces), memoised: a ReLU's row depends only on the pattern of the layers before its own, so
        neighbouring regions share most rows. The memo holds for one search box and is cleared when it shrinks."""
        if radius != self._row_cache_radius:
            self._row_cache.clear()
            self._row_cache_radius = radius
        keys = [(k, s, pattern[:start].tobytes()) for k, s, start in
                zip(rows.tolist(), (pattern[rows] ^ flip).tolist(), self.layer_start[rows].tolist())]
        out = np.array([self._row_cache.get(key, np.nan) for key in keys])
        missing = np.flatnonzero(np.isnan(out))
        if missing.size:
            sign = -1.0 if flip else 1.0
            out[missing] = self.bound(sign * a[missing], sign * b[missing], radius)
            self._row_cache.update(zip((keys[i] for i in missing), out[missing].tolist()))
        return out

    def neighbour_bounds(self, pattern, a, b, rows, row_dist, radius) -> tuple[np.ndarray, np.ndarray]:
        """Unstable ReLUs ``k`` and lower bounds on the distance to the region with ``k`` flipped: the flipped row
        and every row of the layers up to ``k``'s (those rows do not depend on ``k``), all at once."""
        full = np.zeros(self.unstable.shape[0])
        full[rows] = row_dist
        pick = self.unstable[rows]
        ks = rows[pick]
        flipped = self.row_bounds(pattern, a[pick], b[pick], ks, radius, flip=True)
        lbs = np.empty(ks.shape[0])
        before = 0.0
        for start, end in self.layer_bounds:
            seg = full[start:end]
            in_layer = (ks >= start) & (ks < end)
            if seg.size:
                top = int(seg.argmax())
                second = np.delete(seg, top).max(initial=0.0)
                own = np.where(ks[in_layer] == start + top, second, seg[top])
                lbs[in_layer] = np.maximum(np.maximum(flipped[in_layer], own), before)
                before = max(before, float(seg[top]))
        return ks, lbs

    def solve(self, a: np.ndarray, b: np.ndarray, radius: float):
        self.n_solves += 1
        lo, hi = self.box(radius)
        if self.linf_projector is not None:
            return self.linf_projector(a, b, lo, hi)
        return polytope_distance(self.norm, a, b, self.x0, lo, hi, within=radius)


def start_search(
    net: PiecewiseLinearNet | torch.nn.Module,
    x: torch.Tensor,
    norm: str,
    upper_bound: float | None,
    x_adv: torch.Tensor | None,
    domain: tuple[float, float],
) -> tuple[PiecewiseLinearNet, np.ndarray, int, float, np.ndarray | None]:
    """The common start of an exact distance search: validates ``norm`` and ``x`` (finite, inside ``domain``) and
    returns the float64 net (an ``nn.Module`` is converted for inputs of ``x``'s shape), ``x0`` ``(d,)``, its class
    ``c``, and the seed: the best upper bound (``upper_bound``, or the distance of ``x_adv`` if that is
    misclassified, in the domain and nearer) with its point (or ``None``)."""
    if norm not in NORMS:
        raise InvalidInputError(f"norm must be one of {NORMS}, got {norm!r}")
    check_inputs(x[None] if isinstance(x, torch.Tensor) else x, images=False, domain=domain, name="x")
    net = as_plnet(net, tuple(x.shape), domain).to(torch.float64)
    x0 = net.flatten_input(x.reshape(1, -1))[0].cpu().numpy()
    c = int(net(torch.as_tensor(x0)[None])[0].argmax())
    best, best_x = (np.inf if upper_bound is None else float(upper_bound)), None
    if x_adv is not None:
        xa = net.flatten_input(x_adv.reshape(1, -1))[0].cpu().numpy()
        if int(net(torch.as_tensor(xa)[None])[0].argmax()) != c and (xa >= domain[0]).all() and (xa <= domain[1]).all():
            dist = float(np.linalg.norm(xa - x0, ord={"l1": 1, "l2": 2, "linf": np.inf}[norm]))
            if dist < best:
                best, best_x = dist, xa
    return net, x0, c, best, best_x
