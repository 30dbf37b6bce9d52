"""The open subdomains of a branch and bound, as stacked tensors: worst lower bound first, split in batches.

Each subdomain keeps its lower bound, its boxes of the split nodes (which hold its split decisions, see
:mod:`.bounding`) and the neuron it will be split on (chosen when it was bounded). Memory per subdomain is two
values per splittable neuron.

Example:
    >>> store = DomainStore.from_batch(nodes, bound_batch(problem, {}, 1, options), keep)   # the root
    >>> parents = store.pop(64)                                                            # the 64 worst
    >>> children = split(parents.boxes, parents.choice, nodes, problem.split_nodes)        # 128 boxes
"""

from __future__ import annotations

import torch

from .bounding import BatchBounds, DomainBoxes

__all__ = ["DomainStore", "choose_splits", "split"]


def choose_splits(scores: dict[str, torch.Tensor], nodes: list[str], count: int) -> torch.Tensor:
    """``(D, 2)`` int64: per subdomain the split node's index in ``nodes`` and the neuron's flat index, the best
    score over every node; ``(-1, -1)`` where no neuron can be split."""
    if not nodes:
        return torch.full((count, 2), -1, dtype=torch.int64)
    flat = torch.cat([scores[n] for n in nodes], dim=1)  # (D, total)
    best, where = flat.max(dim=1)
    sizes = torch.tensor([scores[n].shape[1] for n in nodes], device=flat.device)
    ends = sizes.cumsum(0)
    node = torch.searchsorted(ends, where, right=True)
    neuron = where - (ends - sizes)[node]
    choice = torch.stack([node, neuron], dim=1)
    return torch.where(torch.isfinite(best)[:, None], choice, torch.full_like(choice, -1))


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
    """Open subdomains: ``lower`` ``(N,)``, ``boxes`` (``(N, n)`` per split node), ``choice`` ``(N, 2)``."""

    def __init__(self, nodes: list[str], lower: torch.Tensor, boxes: DomainBoxes, choice: torch.Tensor) -> None:
        self.nodes, self.lower, self.boxes, self.choice = nodes, lower, boxes, choice

    @classmethod
    def from_batch(cls, nodes: list[str], bounds: BatchBounds, keep: torch.Tensor) -> DomainStore:
        """The subdomains ``keep`` (a bool mask) of a bounded batch."""
        boxes = {n: (lo[keep], hi[keep]) for n, (lo, hi) in bounds.boxes.items()}
        choice = choose_splits(bounds.scores, nodes, bounds.lower.shape[0]).to(keep.device)
        return cls(nodes, bounds.lower[keep], boxes, choice[keep])

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

    def pop(self, count: int) -> DomainStore:
        """Remove and return the ``count`` subdomains with the least lower bounds."""
        order = torch.topk(self.lower, min(count, len(self)), largest=False).indices
        keep = torch.ones_like(self.lower, dtype=torch.bool)
        keep[order] = False
        taken = DomainStore(self.nodes, self.lower[order], {n: (lo[order], hi[order]) for n, (lo, hi) in
                                                            self.boxes.items()}, self.choice[order])
        self.lower, self.choice = self.lower[keep], self.choice[keep]
        self.boxes = {n: (lo[keep], hi[keep]) for n, (lo, hi) in self.boxes.items()}
        return taken

    def select(self, mask: torch.Tensor) -> DomainStore:
        """The subdomains where ``mask`` holds (a new store)."""
        return DomainStore(self.nodes, self.lower[mask], {n: (lo[mask], hi[mask]) for n, (lo, hi) in
                                                          self.boxes.items()}, self.choice[mask])
