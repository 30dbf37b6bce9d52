"""What "the Lipschitz constant" is taken of: the set of output weightings ``c`` and the norms.

Every estimator in this package bounds or computes

    L = max_{x in B} max_{c in C} || J(x)^T c ||_*

where ``J(x)`` is the ``(m, d)`` Jacobian of the logits ``f`` at ``x``, ``B`` the input box, ``||.||_*`` the
dual of the primal (input) norm (L∞ -> L1, L1 -> L∞, L2 -> L2) and ``C`` a polytope of output weightings:

* scalar output ``c^T f``: ``C = {c}`` (``lower == upper == c``);
* margin ``f_i - f_j``: ``C = {e_i - e_j}``;
* vector output ``f`` with the same norm on outputs as on inputs: ``C`` is the unit ball of the output
  dual norm, so ``L = max_x ||J(x)||_{p->p}``. For ``p = ∞`` that ball is the L1 ball; by symmetry its
  half ``{c >= 0, sum c = 1}`` (a simplex) gives the same value, ``max_j ||J_j||_1`` (largest row L1
  norm). For ``p = 1`` it is the box ``[-1, 1]^m`` and the value is the largest column L1 norm.

Because ``c -> ||J^T c||_*`` is convex, maximising over the polytope ``C`` equals maximising over its
vertices, which is what lets the MIP treat ``c`` as continuous variables.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ....errors import InvalidInputError

__all__ = ["NORMS", "DUAL_NORMS", "OutputDirections", "resolve_objective", "dual_norm", "max_dual_norm"]

NORMS = ("linf", "l1", "l2")
DUAL_NORMS = {"linf": "l1", "l1": "linf", "l2": "l2"}


@dataclass(frozen=True)
class OutputDirections:
    """The polytope ``C`` of output weightings, one per example.

    Attributes:
        lower, upper: ``(B, m)`` coordinate bounds of ``c``.
        simplex: ``True`` when ``c`` is also constrained to ``c >= 0, sum(c) = 1``.
        description: e.g. ``"margin f_3 - f_5"`` or ``"vector output (linf -> linf)"``.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    simplex: bool
    description: str

    @property
    def fixed(self) -> bool:
        """``True`` when ``C`` is a single vector per example (scalar or margin objective)."""
        return not self.simplex and bool(torch.equal(self.lower, self.upper))

    def select(self, index: int) -> OutputDirections:
        """The directions of example ``index`` as a batch of one."""
        return OutputDirections(
            self.lower[index : index + 1], self.upper[index : index + 1], self.simplex, self.description
        )


def _check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise InvalidInputError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def resolve_objective(objective: object, logits: torch.Tensor, norm: str) -> OutputDirections:
    """Turn a user objective into :class:`OutputDirections`.

    Args:
        objective: ``"margin"`` (predicted class minus runner-up at ``x0``, per example), ``(i, j)`` (the
            margin ``f_i - f_j``), an ``int`` ``k`` (the logit ``f_k``), a tensor ``c`` of shape ``(m,)`` or
            ``(B, m)`` (the scalar ``c^T f``), or ``"vector"`` (all logits, ``||J||_{p->p}``).
        logits: ``(B, m)`` logits at the box centres (for ``"margin"`` and shapes).
        norm: the primal norm, ``"linf"``, ``"l1"`` or ``"l2"``.
    """
    _check_norm(norm)
    batch, m = logits.shape
    kw = {"dtype": logits.dtype, "device": logits.device}
    if isinstance(objective, str) and objective == "vector":
        if norm == "l2":
            raise InvalidInputError(
                "the vector objective supports norm 'linf' or 'l1' (its C must be a polytope); use a scalar or "
                "margin objective for 'l2'"
            )
        if norm == "linf":
            lo, hi = torch.zeros(batch, m, **kw), torch.ones(batch, m, **kw)
            return OutputDirections(lo, hi, True, "vector output (linf -> linf)")
        lo, hi = -torch.ones(batch, m, **kw), torch.ones(batch, m, **kw)
        return OutputDirections(lo, hi, False, "vector output (l1 -> l1)")
    if isinstance(objective, str) and objective == "margin":
        if m < 2:
            raise InvalidInputError("the 'margin' objective needs at least 2 outputs; use objective=0 instead")
        top2 = logits.topk(2, dim=1).indices
        c = torch.zeros(batch, m, **kw)
        c.scatter_(1, top2[:, :1], 1.0)
        c.scatter_(1, top2[:, 1:], -1.0)
        return OutputDirections(c, c.clone(), False, "margin f_pred - f_runner_up")
    if isinstance(objective, tuple) and len(objective) == 2 and all(isinstance(k, int) for k in objective):
        i, j = objective
        if not (0 <= i < m and 0 <= j < m) or i == j:
            raise InvalidInputError(f"margin objective (i, j) needs two distinct classes in [0, {m}), got {objective}")
        c = torch.zeros(batch, m, **kw)
        c[:, i], c[:, j] = 1.0, -1.0
        return OutputDirections(c, c.clone(), False, f"margin f_{i} - f_{j}")
    if isinstance(objective, int) and not isinstance(objective, bool):
        if not 0 <= objective < m:
            raise InvalidInputError(f"output index must lie in [0, {m}), got {objective}")
        c = torch.zeros(batch, m, **kw)
        c[:, objective] = 1.0
        return OutputDirections(c, c.clone(), False, f"logit f_{objective}")
    if isinstance(objective, torch.Tensor):
        c = objective.to(**kw)
        if c.dim() == 1:
            c = c.expand(batch, -1)
        if c.shape != (batch, m) or not torch.isfinite(c).all():
            raise InvalidInputError(f"objective vector c must be finite of shape ({m},) or ({batch}, {m}), got {tuple(objective.shape)}")
        return OutputDirections(c.clone(), c.clone(), False, "scalar c^T f")
    raise InvalidInputError(
        f"objective must be 'margin', 'vector', an output index, a pair (i, j) or a tensor c; got {objective!r}"
    )


def dual_norm(g: torch.Tensor, norm: str) -> torch.Tensor:
    """The dual norm of the primal ``norm`` of ``g (..., d)`` over its last dimension -> ``(...)``."""
    dual = DUAL_NORMS[_check_norm(norm)]
    if dual == "l1":
        return g.abs().sum(-1)
    if dual == "linf":
        return g.abs().amax(-1)
    return g.norm(dim=-1)


def max_dual_norm(jac: torch.Tensor, directions: OutputDirections, norm: str) -> torch.Tensor:
    """``max_{c in C} ||J^T c||_*`` for Jacobians ``jac (B, S, m, d)`` (``S`` points per example) -> ``(B, S)``.

    Also used with ``jac`` the last weight matrix for the naive bound. Handles the three shapes of ``C``
    :func:`resolve_objective` produces: a single vector, the simplex (largest row), and the box ``[lo, hi]``
    with primal L1 (largest column of ``|J^T c|`` maximised coordinatewise).
    """
    lower, upper = directions.lower[:, None, :, None], directions.upper[:, None, :, None]
    if directions.fixed:
        return dual_norm((lower * jac).sum(-2), norm)
    if directions.simplex:
        rows = dual_norm(jac, norm)  # (B, S, m)
        allowed = directions.upper[:, None, :] > 0
        return rows.masked_fill(~allowed, float("-inf")).amax(-1)
    if DUAL_NORMS[norm] != "linf":
        raise InvalidInputError(f"a box of output weightings is only supported with primal norm 'l1', got {norm!r}")
    high = torch.maximum(lower * jac, upper * jac).sum(-2)
    low = torch.minimum(lower * jac, upper * jac).sum(-2)
    return torch.maximum(high, -low).amax(-1)
