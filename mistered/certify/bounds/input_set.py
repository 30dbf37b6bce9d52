"""The set of inputs the bounds hold over: an Lp ball around each example intersected with the pixel box.

For ``norm = "linf"`` the set is the box ``[max(x - eps, 0), min(x + eps, 1)]`` itself. For ``"l2"`` and ``"l1"``
it is that box (which contains the ball's intersection with ``[0, 1]``) intersected with the ball; a linear form is
minimised over box and ball together by the closed-form dual of
:func:`mistered.certify.bounds.chain_linear.ball_box_support`. Interval propagation starts from the box.

Example:
    >>> s = InputSet.ball(x, 0.1, "l2")        # x (B, C, H, W) in [0, 1]
    >>> s.lower_bound(A)                       # A (R, B, C, H, W) -> (R, B): min over the set of <A[r, b], x'>
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import InvalidInputError
from .chain_linear import ball_box_support
from .forms import Form

__all__ = ["InputSet", "NORMS"]

NORMS = ("linf", "l2", "l1")


@dataclass(frozen=True)
class InputSet:
    """``{x' : |x' - x|_norm <= eps, lower <= x' <= upper}`` per example.

    Attributes:
        center: ``(B, *shape)`` the examples ``x``.
        eps: ``(B,)`` radii (input units).
        norm: "linf", "l2" or "l1".
        lower, upper: ``(B, *shape)`` the box ``[max(x - eps, lo), min(x + eps, hi)]`` of the domain ``[lo, hi]``.
    """

    center: torch.Tensor
    eps: torch.Tensor
    norm: str
    lower: torch.Tensor
    upper: torch.Tensor

    @classmethod
    def ball(cls, x: torch.Tensor, eps: float | torch.Tensor, norm: str = "linf",
             domain: tuple[float, float] = (0.0, 1.0)) -> InputSet:
        """The ``norm`` ball of radius ``eps`` (a float or ``(B,)``) around ``x`` ``(B, *shape)`` within ``domain``.

        Raises:
            InvalidInputError: unknown norm, a negative or non-finite radius, or ``x`` outside ``domain``.
        """
        if norm not in NORMS:
            raise InvalidInputError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0]).clone()
        if not bool(torch.isfinite(eps_t).all()) or bool((eps_t < 0).any()):
            raise InvalidInputError(f"eps must be finite and non-negative, got {eps}")
        if x.numel() and (float(x.min()) < domain[0] or float(x.max()) > domain[1]):
            raise InvalidInputError(f"inputs must lie in {list(domain)}, got values in [{float(x.min()):.4g}, "
                                    f"{float(x.max()):.4g}]")
        radius = eps_t.reshape(-1, *([1] * (x.dim() - 1)))
        lower = (x - radius).clamp(min=domain[0])
        upper = (x + radius).clamp(max=domain[1])
        return cls(x, eps_t, norm, lower, upper)

    @classmethod
    def box(cls, lower: torch.Tensor, upper: torch.Tensor) -> InputSet:
        """Exactly the boxes ``[lower, upper]`` ``(B, *shape)`` (a VNNLIB input region: never clipped to ``[0, 1]``);
        as an L∞ set of radius 0 around the centre, whose box is the whole region.

        Raises:
            InvalidInputError: shapes that differ, or a lower bound above its upper bound.
        """
        if lower.shape != upper.shape or bool((lower > upper).any()):
            raise InvalidInputError(f"a box needs lower <= upper of one shape, got {tuple(lower.shape)} and "
                                    f"{tuple(upper.shape)}")
        return cls((lower + upper) / 2, lower.new_zeros(lower.shape[0]), "linf", lower, upper)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> InputSet:
        """The same set with its tensors on ``device`` / in ``dtype``."""
        move = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        return InputSet(move(self.center), move(self.eps), self.norm, move(self.lower), move(self.upper))

    @property
    def batch(self) -> int:
        return self.center.shape[0]

    def lower_bound(self, form: Form) -> torch.Tensor:
        """``(R, B)``: ``min <form[r, b], x'>`` over ``x'`` in example ``b``'s set, for a :class:`~.forms.Form` on
        the input (``(R, B, *shape)``).

        Exact for "linf" (the box); for "l2"/"l1" the dual bound of ``ball_box_support`` (never above the minimum).
        """
        if self.norm == "linf":
            mid, rad = (self.upper + self.lower) / 2, (self.upper - self.lower) / 2
            return form.dot(mid) - form.like(form.coef.abs()).dot(rad)
        flat = form.dense().flatten(2)
        centre = self.center.flatten(1)
        value = torch.einsum("rbd,bd->rb", flat, centre)
        lo, hi = (self.lower.flatten(1) - centre), (self.upper.flatten(1) - centre)
        support = torch.empty_like(value)
        for radius in torch.unique(self.eps).tolist():  # ball_box_support takes one radius at a time
            rows = (self.eps == radius).nonzero().flatten()
            forms = -flat[:, rows].transpose(0, 1)  # (B', R, d): max of -<coef, delta> = -min
            support[:, rows] = ball_box_support(forms, lo[rows], hi[rows], self.norm, radius).transpose(0, 1)
        return value - support
