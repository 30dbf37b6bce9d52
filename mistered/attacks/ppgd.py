"""Perceptual PGD (PPGD, Laidlaw, Singla & Feizi 2021) over any threat chain under an LPIPS budget.

PPGD is PGD in the geometry of the perceptual distance. With ``θ`` the chain's perturbation parameters
(per example), ``g(θ)`` the perturbed image and ``φ`` the budget's feature map (``ℓ = ||φ(x) - φ(y)||``,
see :mod:`.perceptual_length`), each step solves the linearised problem

    ``max_δ  ∇_θ L · δ   s.t.  ||J δ||_2 <= η``,   ``J = ∂φ(g(θ)) / ∂θ``,

whose solution is ``δ = η v / ||J v||`` with ``(JᵀJ) v = ∇_θ L``. As in the paper, ``v`` comes from a few
conjugate-gradient iterations on ``JᵀJ`` (with a small damping relative to its scale), each product
``JᵀJ p`` being a finite-difference Jacobian-vector product ``J p ≈ (φ(g(θ + h p)) - φ(g(θ))) / h`` followed
by one backward pass (``Jᵀ``). The step is then projected back into the budget by the perturbation's own
projection: its inner budgets, then the hard perceptual bound (a search along the chain's scale, which
for an additive chain is the paper's bisection along the segment from ``x``).

Because the optimised variables are the chain's parameters, the step is invariant to their units: a flow in
grid units, an angle in degrees and an additive ``δ`` in pixels are weighed by what they do to ``φ``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidInputError
from ..threats.base import Perturbation, Threat
from ..threats.perceptual import PerceptualPerturbation
from .base import SearchOutput
from .hard_bound import HardBoundMixin
from .losses import LossFn
from .perceptual_length import PerceptualLength, require_perceptual_budgets
from .pgd import PGD

__all__ = ["PPGD"]

#: A random start is this fraction of a uniform draw inside the inner budget (the paper starts from N(0, 0.01)).
START_SCALE = 0.1


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """Per-example inner product ``(B,)`` of two lists of ``(B, ...)`` tensors."""
    return sum((u * v).reshape(u.shape[0], -1).sum(dim=1) for u, v in zip(a, b))


def _rows(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


class _PerceptualSteps(Perturbation):
    """A view of a :class:`PerceptualPerturbation` whose ``step_`` is PPGD's (module docstring).

    It shares the perturbation's parameters (so snapshots, restores and the base attack's bookkeeping see
    the same tensors); everything but :meth:`step_` and :meth:`random_init_` is delegated.
    """

    def __init__(self, base: PerceptualPerturbation, cg_steps: int, damping: float, fd_step: float) -> None:
        super().__init__(base.threat, base.reference)
        self.base = base
        self.cg_steps, self.damping, self.fd_step = cg_steps, damping, fd_step
        self.length = PerceptualLength(base.threat, base.reference)
        # a copy of the inner chain evaluated at shifted parameters (finite differences), outside any graph;
        # not a submodule: its parameters are not the search's
        object.__setattr__(self, "_probe", base.threat.threat.perturbation(base.reference))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x)

    def random_init_(self, generator: torch.Generator | None = None) -> _PerceptualSteps:
        self.base.inner.random_init_(generator)
        self.base.inner.scale_(torch.full((self.batch_size,), START_SCALE, device=self.reference.device))
        return self

    def project_(self) -> _PerceptualSteps:
        self.base.project_()
        return self

    def sizes(self) -> dict[str, torch.Tensor]:
        return self.base.sizes()

    def budgets(self) -> dict[str, float]:
        return self.base.budgets()

    def scale_(self, t: torch.Tensor) -> _PerceptualSteps:
        self.base.scale_(t)
        return self

    @torch.no_grad()
    def _features_at(self, params: list[torch.Tensor], direction: list[torch.Tensor], h: torch.Tensor) -> torch.Tensor:
        """``φ(g(θ + h d))``, ``(B, F)``, with ``h`` ``(B,)`` per example."""
        for mine, start, step in zip(self._probe.parameters(), params, direction):
            mine.copy_(start + _rows(h, step) * step)
        return self.length.feature_map(self._probe(self.reference))

    def _jvp(self, params: list[torch.Tensor], features: torch.Tensor, v: list[torch.Tensor]) -> torch.Tensor:
        """``J v`` ``(B, F)`` by a finite difference along ``v`` normalised per example (``fd_step`` of its norm)."""
        norm = _dot(v, v).sqrt()
        h = torch.where(norm > 0, self.fd_step / norm.clamp_min(1e-30), torch.zeros_like(norm))
        shifted = self._features_at(params, v, h)
        return (shifted - features) * _rows(norm / self.fd_step, shifted)  # 1 / h, and 0 where v = 0

    def _solve(self, params: list[torch.Tensor], gradient: list[torch.Tensor]
               ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``v ≈ (JᵀJ + μ)⁻¹ ∇L`` by conjugate gradients, and ``||J v||`` ``(B,)``."""
        with torch.enable_grad():
            features = self.length.feature_map(self.base(self.reference))
        frozen = features.detach()

        def product(p: list[torch.Tensor]) -> list[torch.Tensor]:
            jp = self._jvp(params, frozen, p)
            inputs = list(self.base.parameters())
            return list(torch.autograd.grad(features, inputs, grad_outputs=jp, retain_graph=True, allow_unused=True))

        x = [torch.zeros_like(g) for g in gradient]
        r = [g.clone() for g in gradient]
        p = [g.clone() for g in gradient]
        rr = _dot(r, r)
        mu = None
        for _ in range(self.cg_steps):
            if not bool((rr > 0).any()):
                break
            ap = [torch.zeros_like(q) if a is None else a for a, q in zip(product(p), p)]
            pap = _dot(p, ap)
            if mu is None:  # damping relative to JᵀJ's scale along the gradient (its Rayleigh quotient)
                mu = self.damping * pap / rr.clamp_min(1e-30)
            ap = [a + _rows(mu, a) * q for a, q in zip(ap, p)]
            pap = pap + mu * _dot(p, p)
            alpha = torch.where(pap > 0, rr / pap.clamp_min(1e-30), torch.zeros_like(rr))
            x = [u + _rows(alpha, u) * q for u, q in zip(x, p)]
            r = [u - _rows(alpha, u) * a for u, a in zip(r, ap)]
            rr_new = _dot(r, r)
            beta = torch.where(rr > 0, rr_new / rr.clamp_min(1e-30), torch.zeros_like(rr))
            p = [u + _rows(beta, u) * q for u, q in zip(r, p)]
            rr = rr_new
        return x, self._jvp(params, frozen, x).norm(dim=1)

    @torch.no_grad()
    def step_(self, lr: float) -> _PerceptualSteps:
        """Move by ``lr`` times the budget's radius in the linearised perceptual length (``lr`` relative, as PGD's)."""
        params = list(self.base.parameters())
        gradient = [torch.zeros_like(q) if q.grad is None else q.grad.detach() for q in params]
        direction, length = self._solve([q.detach() for q in params], gradient)
        scale = torch.where(length > 0, lr * self.length.radius / length.clamp_min(1e-30), torch.zeros_like(length))
        for param, step in zip(params, direction):
            param.add_(_rows(scale, step) * step)
        return self


class PPGD(HardBoundMixin, PGD):
    """Perceptual projected gradient descent: PGD whose steps are PPGD's (module docstring).

    Every alternative of ``threat`` must carry an LPIPS-type bound (``lpips``, ``lpips-vgg``, ``lpips-self``,
    ``lpips-net``), e.g. ``parse_threat("linf(0.1)|lpips<=0.015")`` or ``"flow(0.05)>>linf(0.1)|lpips<=0.015"``.
    Best-so-far per example, early stopping, restarts and alternatives are PGD's; every returned example is
    inside its bound, which the result records (``result.info["bound_violations"] == 0``).

    Args:
        model, threat: see :class:`~mistered.attacks.Attack`.
        steps: PPGD steps.
        step_size: each step's length in the linearised perceptual length, relative to the budget's radius
            (``bound`` for ``lpips-self``, ``sqrt(bound)`` for LPIPS-alex/vgg); ``None``: the paper's ``2 / steps``.
        cg_steps: conjugate-gradient iterations per step (the paper's 5).
        damping: ``μ`` added to ``JᵀJ``, relative to its Rayleigh quotient along the gradient.
        fd_step: the finite-difference step of ``J v`` along ``v`` normalised to unit length (parameter units).
        random_start: start from a tenth of a uniform draw inside the inner budget (else the identity).
        **kwargs: ``loss`` (default ``"margin"``, the paper's), ``restarts``, ``early_stop``, ``seed``,
            ``distances``, ``device``, ``compile``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
        >>> attack = PPGD(net, parse_threat("linf(0.1)|lpips-self<=0.3"), steps=3)
        >>> result = attack(torch.rand(2, 1, 28, 28), torch.tensor([0, 1]))
        >>> result.info["bound_violations"]
        0
    """

    def __init__(self, model: nn.Module, threat: Threat, *, steps: int = 10, step_size: float | None = None,
                 cg_steps: int = 5, damping: float = 0.01, fd_step: float = 1e-3, random_start: bool = True,
                 **kwargs) -> None:
        kwargs.setdefault("loss", "margin")
        if int(steps) != steps or steps < 1:
            raise InvalidInputError(f"steps must be a positive integer, got {steps!r}")
        super().__init__(model, threat, steps=steps, step_size=2.0 / steps if step_size is None else step_size,
                         random_start=random_start, **kwargs)
        require_perceptual_budgets(self.threat, "ppgd", feature_map=True)
        if int(cg_steps) != cg_steps or cg_steps < 1:
            raise InvalidInputError(f"cg_steps must be a positive integer, got {cg_steps!r}")
        if not (damping >= 0 and fd_step > 0):
            raise InvalidInputError(f"need damping >= 0 and fd_step > 0, got {damping!r}, {fd_step!r}")
        self.cg_steps, self.damping, self.fd_step = int(cg_steps), float(damping), float(fd_step)

    def _search(self, perturbation: Perturbation, x: torch.Tensor, goal: torch.Tensor, loss_fn: LossFn,
                targeted: bool, generator: torch.Generator) -> SearchOutput:
        view = _PerceptualSteps(perturbation, self.cg_steps, self.damping, self.fd_step)
        return super()._search(view, x, goal, loss_fn, targeted, generator)
