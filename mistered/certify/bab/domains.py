"""The open subdomains of a branch and bound, as stacked tensors: worst lower bound first, split in batches.

Each subdomain keeps its lower bound, its boxes of the split nodes (which hold its split decisions, see
:mod:`.bounding`), the neuron it will be split on (chosen when it was bounded) and its optimised α and β, which its
children inherit. Memory per subdomain: two float64 values per splittable neuron, and two float32 per neuron and
specification row.

Example:
    >>> store = DomainStore.from_batch(nodes, bound_batch(problem, {}, 1, options), keep)   # the root
    >>> parents = store.pop(64)                                                            # the 64 worst
    >>> children = split(parents.boxes, parents.choice[:, 0], nodes, problem.split_nodes)  # 128 boxes
"""

from __future__ import annotations

import torch

from .bounding import BatchBounds, DomainBoxes, WarmStart

__all__ = ["DomainStore", "choose_splits", "split"]


def choose_splits(scores: dict[str, torch.Tensor], nodes: list[str], count: int, k: int = 1) -> torch.Tensor:
    """``(D, k, 2)`` int64: per subdomain the ``k`` best-scored neurons over every node, best first, each as the
    split node's index in ``nodes`` and the neuron's flat index; ``(-1, -1)`` where fewer neurons can be split."""
    if not nodes:
        return torch.full((count, k, 2), -1, dtype=torch.int64)
    flat = torch.cat([scores[n] for n in nodes], dim=1)  # (D, total)
    best, where = flat.topk(min(k, flat.shape[1]), dim=1)
    sizes = torch.tensor([scores[n].shape[1] for n in nodes], device=flat.device)
    ends = sizes.cumsum(0)
    node = torch.searchsorted(ends, where, right=True)
    neuron = where - (ends - sizes)[node]
    choice = torch.stack([node, neuron], dim=2)
    choice = torch.where(torch.isfinite(best)[..., None], choice, torch.full_like(choice, -1))
    if choice.shape[1] < k:
        choice = torch.cat([choice, choice.new_full((count, k - choice.shape[1], 2), -1)], dim=1)
    return choice


def split(boxes: DomainBoxes, choice: torch.Tensor, nodes: list[str], thresholds: dict[str, float]) -> DomainBoxes:
    """The ``2P`` children of ``P`` subdomains: first every parent's "active" child (the neuron's lower bound raised
    to the breakpoint), then every "inactive" one (its upper bound lowered to it). ``choice`` ``(P, 2)`` must be
    valid (no ``-1``)."""
    parents = choice.shape[0]
    rows = torch.arange(parents, device=choice.device)
    out: DomainBoxes = {}
    for k, name in enumerate(nodes):
        lo, hi = boxes[name]
        lo_a, hi_a, lo_i, hi_i = lo.clone(), hi.clone(), lo.clone(), hi.clone()
        mine = choice[:, 0] == k
        r, n = rows[mine], choice[mine, 1]
        lo_a[r, n] = torch.clamp(lo_a[r, n], min=thresholds[name])
        hi_i[r, n] = torch.clamp(hi_i[r, n], max=thresholds[name])
        out[name] = (torch.cat([lo_a, lo_i]), torch.cat([hi_a, hi_i]))
    return out


class DomainStore:
    """Open subdomains: ``lower`` ``(N,)``, ``boxes`` (``(N, n)`` per split node), ``choice`` ``(N, k, 2)`` (split
    candidates, best-scored first, see :func:`choose_splits`) and ``warm``
    (their optimised α and β, ``(N, S, n)`` float32 per split node; ``None`` without optimisation)."""

    def __init__(self, nodes: list[str], lower: torch.Tensor, boxes: DomainBoxes, choice: torch.Tensor,
                 warm: WarmStart | None = None) -> None:
        self.nodes, self.lower, self.boxes, self.choice, self.warm = nodes, lower, boxes, choice, warm

    @classmethod
    def from_batch(cls, nodes: list[str], bounds: BatchBounds, keep: torch.Tensor, k: int = 1) -> DomainStore:
        """The subdomains ``keep`` (a bool mask) of a bounded batch, with their ``k`` best-scored split candidates."""
        choice = choose_splits(bounds.scores, nodes, bounds.lower.shape[0], k).to(keep.device)
        return cls(nodes, bounds.lower, bounds.boxes, choice, bounds.warm).select(keep)

    def __len__(self) -> int:
        return self.lower.shape[0]

    def least(self) -> float:
        """The least lower bound of the open subdomains (``inf`` if none)."""
        return float(self.lower.min()) if len(self) else float("inf")

    def add(self, other: DomainStore) -> None:
        self.lower = torch.cat([self.lower, other.lower])
        self.choice = torch.cat([self.choice, other.choice])
        self.boxes = {n: (torch.cat([lo, other.boxes[n][0]]), torch.cat([hi, other.boxes[n][1]]))
                      for n, (lo, hi) in self.boxes.items()}
        self.warm = self.warm.cat(other.warm) if self.warm is not None and other.warm is not None else None

    def pop(self, count: int) -> DomainStore:
        """Remove and return the ``count`` subdomains with the least lower bounds."""
        order = torch.topk(self.lower, min(count, len(self)), largest=False).indices
        keep = torch.ones_like(self.lower, dtype=torch.bool)
        keep[order] = False
        taken = self.select(order)
        rest = self.select(keep)
        self.lower, self.boxes, self.choice, self.warm = rest.lower, rest.boxes, rest.choice, rest.warm
        return taken

    def select(self, index: torch.Tensor) -> DomainStore:
        """The subdomains ``index`` (a bool mask or indices) as a new store."""
        return DomainStore(self.nodes, self.lower[index], {n: (lo[index], hi[index]) for n, (lo, hi) in
                                                           self.boxes.items()}, self.choice[index],
                           self.warm.index(index) if self.warm is not None else None)
