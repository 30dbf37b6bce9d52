"""Filtered smart branching (FSB, De Palma et al. 2021; as α,β-CROWN's ``fsb``): the split of each subdomain chosen
among its best-scored candidates by bounding their children.

BaBSR's score (:mod:`.bounding`) only estimates how much a split helps. FSB takes each subdomain's ``k``
best-scored neurons, bounds both children of every candidate in one batch — one backward pass each, α and β fixed
at the parent's optimised ones (:func:`~.bounding.evaluate_batch`) — and splits on the candidate whose worse child
has the highest bound (ties: the better BaBSR score). It costs one unoptimised bound of ``2k`` children per parent,
a fraction of the optimised bound of the two children it then splits into.

Example:
    >>> parents = store.pop(64)
    >>> choice = strong_branching(problem, parents, BoundOptions())       # (64, 2)
    >>> children = split(parents.boxes, choice, parents.nodes, problem.split_nodes)
"""

from __future__ import annotations

import torch

from .bounding import BoundOptions, evaluate_batch
from .domains import DomainStore, split
from .problem import BabProblem

__all__ = ["strong_branching"]


def strong_branching(problem: BabProblem, parents: DomainStore, options: BoundOptions) -> torch.Tensor:
    """``(P, 2)``: per parent, the candidate of ``parents.choice`` ``(P, k, 2)`` whose worse child bounds highest.
    Every parent must have a valid first candidate (stuck subdomains are parked before)."""
    candidates = parents.choice
    count, k = candidates.shape[:2]
    valid = candidates[..., 0] >= 0  # (P, k)
    if k == 1 or not bool(valid[:, 1:].any()):
        return candidates[:, 0]
    filled = torch.where(valid[..., None], candidates, candidates[:, :1])
    flat = filled.transpose(0, 1).reshape(k * count, 2)  # candidate-major: row j * P + p
    boxes = {name: (lo.repeat(k, 1), hi.repeat(k, 1)) for name, (lo, hi) in parents.boxes.items()}
    children = split(boxes, flat, parents.nodes, problem.split_nodes)  # the k P "active" children, then "inactive"
    owner = torch.arange(count, device=candidates.device).repeat(2 * k)
    warm = parents.warm.index(owner) if parents.warm is not None else None
    lower = evaluate_batch(problem, children, 2 * k * count, options, warm)
    worse = torch.minimum(lower[: k * count], lower[k * count:]).reshape(k, count)
    worse = torch.where(valid.T, worse, torch.full_like(worse, -torch.inf))
    best = worse.argmax(dim=0)  # the first of equal ones: the better score
    return filled[torch.arange(count, device=candidates.device), best]
