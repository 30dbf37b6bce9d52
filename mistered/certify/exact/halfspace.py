"""Closed-form nearest points on half-spaces inside a box, in L1, L2 and L∞, for many half-spaces at once.

The exact distance from ``x0`` to ``{x : a·x <= b} ∩ [lo, hi]`` is a lower bound on its distance to any polytope
that has ``a·x <= b`` among its constraints (and lies in the box) — GeoCert's cheap pruning — and the nearest
point itself is a cheap adversarial candidate when the half-space is a decision boundary. With ``v = a·x0 - b > 0``
to remove and ``u_i >= 0`` the move of coordinate ``i`` against ``sign(a_i)`` (at most ``cap_i``, the room to the
box), the problem is ``min |u| s.t. Σ |a_i| u_i >= v, 0 <= u <= cap``; its solution saturates coordinates in a
fixed order:

* L∞: ``u_i = min(cap_i, τ)``, coordinates saturate by increasing ``cap_i``; distance ``τ``;
* L2: ``u_i = min(cap_i, τ |a_i|)``, they saturate by increasing ``cap_i / |a_i|``; distance ``|u|_2``;
* L1: a fractional knapsack: fill the coordinates by decreasing ``|a_i|``; distance ``Σ u_i``.

One sort per half-space, everything else is tensor ops (batched over examples and half-spaces).
:func:`pair_excludes_box` uses the same box minimum to prove two half-spaces disjoint inside the box.

Example:
    >>> dist, point = halfspace_projection("linf", a, b, x0, lo, hi)  # a (B, m, d), b (B, m), x0/lo/hi (B, d)
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import InvalidInputError

__all__ = ["halfspace_projection", "pair_excludes_box"]

_NORMS = ("l1", "l2", "linf")
_RATIOS = np.geomspace(1e-2, 1e2, 17)  # multipliers tried in pair_excludes_box


def halfspace_projection(
    norm: str, a: torch.Tensor, b: torch.Tensor, x0: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest point to ``x0`` of each ``{x : a_k·x <= b_k} ∩ [lo, hi]`` in ``norm``, and its distance.

    Args:
        norm: "l1", "l2" or "linf".
        a: ``(B, m, d)`` half-space normals; ``b``: ``(B, m)`` offsets.
        x0: ``(B, d)`` centres inside ``[lo, hi]`` (``(B, d)`` each; input units).

    Returns:
        ``dist`` ``(B, m)``: the exact distance (0 where ``x0`` satisfies the half-space, ``inf`` where the
        half-space misses the box), and ``point`` ``(B, m, d)``: the nearest point (``x0`` where the distance is
        0 or ``inf``).
    """
    if norm not in _NORMS:
        raise InvalidInputError(f"norm must be one of {_NORMS}, got {norm!r}")
    need = torch.einsum("bmd,bd->bm", a, x0) - b  # how much a·x must drop
    weight = a.abs()
    room = torch.where(a > 0, (x0 - lo)[:, None, :], (hi - x0)[:, None, :]).clamp_min(0)
    gain = weight * room  # drop obtained by saturating each coordinate
    feasible = gain.sum(-1) >= need
    if norm == "l1":
        key = -weight
    elif norm == "linf":
        key = room
    else:
        key = torch.where(weight > 0, room / weight.clamp_min(1e-300), torch.full_like(room, torch.inf))
    order = key.argsort(dim=-1)
    key_s, gain_s, room_s = key.gather(-1, order), gain.gather(-1, order), room.gather(-1, order)
    weight_s = weight.gather(-1, order)
    gain_before = gain_s.cumsum(-1) - gain_s  # drop from the coordinates saturated before each one
    if norm == "l1":  # coordinate k is the first whose saturation reaches the need
        reach = gain_before + gain_s
        k = (reach < need[..., None]).sum(-1, keepdim=True).clamp(max=room.shape[-1] - 1)
        partial = (need[..., None] - gain_before.gather(-1, k)) / weight_s.gather(-1, k).clamp_min(1e-300)
        rank = torch.arange(room.shape[-1], device=a.device)
        move_s = torch.where(rank < k, room_s, torch.where(rank == k, partial.clamp_min(0), torch.zeros_like(room_s)))
    else:
        slope = weight_s if norm == "linf" else weight_s**2  # d(drop)/dτ of an unsaturated coordinate
        slope_after = slope.flip(-1).cumsum(-1).flip(-1)  # Σ over this coordinate and later ones
        tail = slope_after - slope
        at_break = gain_before + gain_s + torch.where(tail > 0, key_s * tail, torch.zeros_like(tail))
        k = (at_break < need[..., None]).sum(-1, keepdim=True).clamp(max=room.shape[-1] - 1)
        tau = (need[..., None] - gain_before.gather(-1, k)) / slope_after.gather(-1, k).clamp_min(1e-300)
        tau = tau.clamp_min(0)
        per = tau if norm == "linf" else tau * weight_s
        move_s = torch.minimum(room_s, per)
    move = torch.zeros_like(move_s).scatter(-1, order, move_s)
    active = feasible & (need > 0)
    move = torch.where(active[..., None], move, torch.zeros_like(move))
    point = x0[:, None, :] - torch.sign(a) * move
    order_p = {"l1": 1, "l2": 2, "linf": float("inf")}[norm]
    dist = torch.linalg.vector_norm(move, ord=order_p, dim=-1)
    dist = torch.where(feasible, dist, torch.full_like(dist, torch.inf))
    return dist, point


def pair_excludes_box(
    a_k: np.ndarray, b_k: float, a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> bool:
    """A cheap emptiness certificate: True only if ``{a_k·x <= b_k, a_j·x <= b_j} ∩ [lo, hi]`` is empty for a row j.

    For any ``λ >= 0`` the aggregate ``(a_k + λ a_j)·x <= b_k + λ b_j`` holds on that set; if its minimum over the
    box (closed form) exceeds the right-hand side, the set is empty (Farkas with two rows). A few ``λ`` on a log
    grid are tried for every ``j`` at once; False means "not proved", never "non-empty".

    Args:
        a_k: ``(d,)``, b_k: the row to test; a: ``(m, d)``, b: ``(m,)`` the other rows; lo, hi: ``(d,)`` the box.
    """
    if a.shape[0] == 0:
        return False
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    comb = a_k[None, None, :] + _RATIOS[None, :, None] * a[:, None, :]  # (m, g, d)
    low = (a_k @ mid + _RATIOS[None, :] * (a @ mid)[:, None]) - np.abs(comb) @ half
    rhs = b_k + _RATIOS[None, :] * b[:, None]
    slack = 1e-9 * (1.0 + np.abs(rhs) + np.abs(comb) @ np.maximum(np.abs(lo), np.abs(hi)))  # against rounding
    return bool((low > rhs + slack).any())
