"""Falsification: projected gradient descent inside a property's input boxes, looking for a counterexample.

Every restart targets one conjunction ``C_k y <= d_k`` of a region and minimises its violation
``max_i (C_k y - d_k)_i`` (``<= 0``: the conjunction holds, a counterexample). All restarts of all conjunctions run
as one batch: signed gradient steps of ``step_size`` times the box's width per input, decayed by a cosine
schedule, projected back into the box after every step. The schedule runs over ``steps`` or over the time the round
has, whichever ends first, so a round cut short by its deadline still ends with small steps.

What makes it strong on ReLU networks is the **surrogate gradient**: a ReLU whose input is negative passes no
gradient, so a plain attack cannot see that switching it on would help, and stalls far from counterexamples that
exist (on VNN-COMP's mnistfc 256x2 net, property 0 at eps 0.05: plain PGD gets no lower than 0.96, the surrogate
finds a counterexample in a fraction of a second). The forward pass stays exact; the backward pass of every ReLU
term of a :class:`~mistered.certify.graph.ops.PiecewiseLinear` uses ``sigmoid(beta z)`` (the derivative of
``softplus(beta z) / beta``) in place of the step. Restarts cycle through several sharpnesses ``beta`` (``inf``: the
exact gradient), so the attack works whatever the scale of the pre-activations. Models without a bound graph get the
exact gradient.

Points are kept inside the box in the model's own precision: the box is rounded inwards to float32 (a point of the
attack, converted to float64, satisfies the file's bounds exactly); where a box is narrower than one float32
step, the nearest float32 is used and the distance outside is recorded (:attr:`Falsifier.box_gap`).

Every candidate is only a candidate: :mod:`.recheck` decides whether it is a counterexample.

Example:
    >>> falsifier = Falsifier(network, prop, AttackOptions(), seed=0)
    >>> candidates = falsifier.run_round(deadline)      # [(region, x (n,) float64)], most violating first
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...errors import InvalidInputError
from ..graph.ops import Input, PiecewiseLinear
from .deadline import Deadline
from .network import Network
from .property import Property, Region

__all__ = ["AttackOptions", "Falsifier", "surrogate_forward", "inward_box"]


@dataclass(frozen=True)
class AttackOptions:
    """Settings of one attack round.

    Attributes:
        restarts: random starts per conjunction and round.
        steps: gradient steps per start.
        step_size: the first step, as a fraction of each input's box width (cosine-decayed to 0).
        betas: sharpnesses of the surrogate ReLU gradient, cycled over the restarts (``inf``: exact gradient).
        max_batch: most points in one forward pass (memory).
    """

    restarts: int = 16
    steps: int = 100
    step_size: float = 0.3
    betas: tuple[float, ...] = (math.inf, 30.0, 10.0, 3.0)
    max_batch: int = 4096

    def __post_init__(self) -> None:
        if self.restarts < 1 or self.steps < 1 or self.max_batch < 1:
            raise InvalidInputError("attack restarts, steps and max_batch must be positive integers")
        if not 0 < self.step_size <= 1:
            raise InvalidInputError(f"attack step_size must be in (0, 1], got {self.step_size}")
        if not self.betas or any(not b > 0 for b in self.betas):
            raise InvalidInputError(f"attack betas must be positive (inf: exact gradient), got {self.betas}")


def inward_box(lower: torch.Tensor, upper: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The box ``[lower, upper]`` (float64) in ``dtype``, rounded inwards: ``(lo, hi, gap)`` with every ``dtype``
    point of ``[lo, hi]`` inside the float64 box, except where no ``dtype`` number lies in it: there ``lo = hi``
    is the nearest one and ``gap`` ``(n,)`` float64 its distance outside (else 0)."""
    lo, hi = lower.to(dtype), upper.to(dtype)
    lo = torch.where(lo.double() < lower, torch.nextafter(lo, torch.full_like(lo, math.inf)), lo)
    hi = torch.where(hi.double() > upper, torch.nextafter(hi, torch.full_like(hi, -math.inf)), hi)
    empty = lo > hi
    nearest = ((lower + upper) / 2).to(dtype)
    lo, hi = torch.where(empty, nearest, lo), torch.where(empty, nearest, hi)
    gap = torch.clamp(torch.maximum(lower - lo.double(), lo.double() - upper), min=0.0)
    return lo, hi, gap


class _SurrogateReLU(torch.autograd.Function):
    """``relu(z)`` forward (exactly); backward the derivative of ``softplus(beta z) / beta``, ``sigmoid(beta z)``
    (the exact step where ``beta = inf``)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 - autograd's signature
        ctx.save_for_backward(z, beta)
        return torch.relu(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        z, beta = ctx.saved_tensors
        finite = torch.isfinite(beta)
        slope = torch.where(finite, torch.sigmoid(z * torch.where(finite, beta, torch.ones_like(beta))),
                            (z > 0).to(z.dtype))
        return grad * slope, None


def surrogate_forward(graph, x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The graph's exact output on ``x`` ``(B, *input_shape)``, with the surrogate ReLU gradient of sharpness
    ``beta`` ``(B,)`` per point in every :class:`PiecewiseLinear` node."""
    values: dict[str, torch.Tensor] = {}
    for node in graph:
        if isinstance(node.op, Input):
            values[node.name] = x
            continue
        args = [values[i] for i in node.inputs]
        if isinstance(node.op, PiecewiseLinear):
            op, z = node.op, args[0]
            b = beta.to(z.dtype).reshape(-1, *([1] * (z.dim() - 1)))
            out = z * op.slope if op.slope else None  # the terms of PiecewiseLinear.forward, in its order
            for w, t in zip(op.weights, op.breaks):
                term = _SurrogateReLU.apply(z - t if t else z, b)
                term = term if w == 1 else term * w
                out = term if out is None else out + term
            out = torch.zeros_like(z) if out is None else out
            values[node.name] = out + op.offset if op.offset else out
        else:
            values[node.name] = node.op.forward(*args)
    return values[graph.output]


class _RegionTarget:
    """One region's box (in the model's dtype) and its stacked conjunction rows."""

    def __init__(self, region: Region, dtype: torch.dtype, device: torch.device) -> None:
        self.lo, self.hi, self.gap = (t.to(device) for t in inward_box(region.lower, region.upper, dtype))
        coef, rhs, owner = region.stacked()
        self.coef, self.rhs, self.owner = coef.to(device), rhs.to(device), owner.to(device)
        self.k = len(region.disjuncts)

    def violation(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` float64 violations of each conjunction for outputs ``y`` ``(B, m)``."""
        rows = y.reshape(y.shape[0], -1).to(torch.float64) @ self.coef.T - self.rhs
        out = rows.new_full((y.shape[0], self.k), -math.inf)
        return out.scatter_reduce(1, self.owner.expand_as(rows), rows, reduce="amax", include_self=True)


class Falsifier:
    """Attack rounds over every region of ``prop`` on ``network``; keeps the best point per conjunction.

    Attributes:
        best_value: per region, ``(K,)`` float64: the least violation reached per conjunction (an upper bound of
            its minimum over the box; ``inf`` before any round).
        best_x: per region, ``(K, n)`` float64: where it was reached.
        box_gap: the largest distance outside a box of any point the attack may return (0 almost always).
    """

    def __init__(self, network: Network, prop: Property, options: AttackOptions = AttackOptions(),
                 seed: int = 0) -> None:
        self.network, self.prop, self.options = network, prop, options
        graph = network.graph
        self.dtype = graph.dtype if graph is not None else next(
            (p.dtype for p in network.module.parameters()), torch.float32)
        self.device = network.device
        self.targets = [_RegionTarget(r, self.dtype, self.device) for r in prop.regions]
        self.box_gap = max(float(t.gap.max()) for t in self.targets)
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self.best_value = [torch.full((t.k,), math.inf, dtype=torch.float64) for t in self.targets]
        self.best_x = [torch.zeros(t.k, prop.num_inputs, dtype=torch.float64) for t in self.targets]
        self.rounds = 0

    def _forward(self, x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        shaped = x.reshape(x.shape[0], *self.network.input_shape)
        if self.network.graph is not None:
            return surrogate_forward(self.network.graph, shaped, beta)
        return self.network.module(shaped)

    def _record(self, r: int, x: torch.Tensor, values: torch.Tensor) -> None:
        """Keep the best point per conjunction among ``x`` ``(B, n)`` with violations ``values`` ``(B, K)``."""
        least, where = values.min(dim=0)
        better = least.cpu() < self.best_value[r]
        if bool(better.any()):
            self.best_value[r] = torch.where(better, least.cpu(), self.best_value[r])
            self.best_x[r][better] = x[where.cpu()[better]].detach().to("cpu", torch.float64)

    def _pgd(self, r: int, target: torch.Tensor, deadline: Deadline) -> list[torch.Tensor]:
        """One batch of restarts on region ``r``, restart ``i`` aimed at conjunction ``target[i]``, within
        ``deadline`` (its step sizes decay over ``steps`` or over the time left, whichever ends first); returns the
        points found violating (float64, most violating first), empty if none."""
        t, opts = self.targets[r], self.options
        budget = deadline.remaining()
        width = t.hi - t.lo
        n = target.shape[0]
        betas = torch.tensor(opts.betas, dtype=torch.float64, device=self.device)
        beta = betas[torch.arange(n, device=self.device) % len(opts.betas)]
        x = t.lo + torch.rand(n, t.lo.numel(), generator=self.generator, device=self.device, dtype=self.dtype) * width
        for step in range(opts.steps + 1):
            x.requires_grad_(True)
            with torch.enable_grad():
                values = t.violation(self._forward(x, beta))
                aimed = values.gather(1, target[:, None]).squeeze(1)
                grad = torch.autograd.grad(aimed.clamp(min=-1e30).sum(), x)[0] if step < opts.steps else None
            x = x.detach()
            values = values.detach()
            self._record(r, x, values)
            hit = (values <= 0).any(dim=1)
            if bool(hit.any()):
                order = values[hit].min(dim=1).values.argsort()
                return [x[hit][i].to("cpu", torch.float64) for i in order.tolist()]
            spent = 1 - deadline.remaining() / budget if 0 < budget < math.inf else 0.0
            progress = max(step / opts.steps, spent)
            if grad is None or progress >= 1:
                return []
            rate = opts.step_size * 0.5 * (1 + math.cos(math.pi * progress))
            x = torch.minimum(torch.maximum(x - rate * width * grad.sign(), t.lo), t.hi)
        return []

    def run_round(self, deadline: Deadline) -> list[tuple[int, torch.Tensor]]:
        """One round (fresh random starts) over every region, stopping at the first region with candidates.

        Returns:
            ``[(region index, x (n,) float64)]``: points whose violation of some conjunction is ``<= 0`` in the
            attack's forward pass, most violating first; empty if none (or the deadline passed).
        """
        self.rounds += 1
        chunks = [(r, chunk) for r, t in enumerate(self.targets)
                  for chunk in torch.arange(t.k, device=self.device).repeat(self.options.restarts).split(
                      self.options.max_batch)]
        for i, (r, chunk) in enumerate(chunks):
            if deadline.expired():
                return []
            found = self._pgd(r, chunk, deadline.within(deadline.remaining() / (len(chunks) - i)))
            if found:
                return [(r, x) for x in found]
        return []
