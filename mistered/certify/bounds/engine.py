"""Lower bounds of linear specifications of a network's output over an input set, by IBP, CROWN or α-CROWN, and
of the classification margins ``logit_y - logit_j`` that certify robustness.

Example:
    >>> margins = margin_lower_bounds(model, x, y, eps=2 / 255, norm="linf", method="crown")   # (B, K)
    >>> certified = (margins > 0).all(dim=1)                                                   # (B,)
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import InvalidInputError
from ...validation import check_labels
from ..graph.graph import BoundGraph
from ..graph.trace import trace_graph
from .alpha import AlphaOptions, alpha_crown
from .backward import backward_lower
from .crown import DEFAULT_MAX_ELEMENTS, crown_bounds
from .input_set import InputSet
from .interval import interval_bounds
from .relaxations import AdaptiveSlopes

__all__ = ["METHODS", "as_graph", "spec_lower_bounds", "margin_spec", "margin_lower_bounds"]

#: The bound methods, loosest and cheapest first.
METHODS = ("ibp", "crown", "alpha-crown")


def as_graph(model: nn.Module | BoundGraph, input_shape: tuple[int, ...]) -> BoundGraph:
    """``model`` itself if it is a :class:`BoundGraph`, else its traced graph for inputs of ``input_shape``."""
    return model if isinstance(model, BoundGraph) else trace_graph(model, input_shape)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise InvalidInputError(f"bound method must be one of {', '.join(METHODS)}, got {method!r}")


def spec_lower_bounds(graph: BoundGraph, input_set: InputSet, spec: torch.Tensor, method: str = "crown",
                      max_elements: int = DEFAULT_MAX_ELEMENTS, alpha: AlphaOptions = AlphaOptions()) -> torch.Tensor:
    """``(B, S)`` lower bounds of ``<spec[b, s], f(x')>`` over every ``x'`` in example ``b``'s input set.

    Args:
        graph: the network ``f``; its dtype and device are used (the input set and spec are moved there).
        input_set: the inputs, ``(B, *graph.input_shape)``.
        spec: ``(B, S, *graph.output_shape)`` the linear specifications (auto_LiRPA's ``C``).
        method: "ibp" (interval bounds, the affine layers after the last nonlinearity folded into the
            specification), "crown" or "alpha-crown".
        max_elements: memory bound of CROWN's chunks (:mod:`.crown`).
        alpha: α-CROWN's settings.
    """
    _check_method(method)
    if tuple(spec.shape[2:]) != graph.output_shape or spec.shape[0] != input_set.batch:
        raise InvalidInputError(f"spec must have shape (B, S, {graph.output_shape}) with B = {input_set.batch}, "
                                f"got {tuple(spec.shape)}")
    device, dtype = graph.device, graph.dtype
    input_set = input_set.to(device, dtype)
    forms = spec.to(device=device, dtype=dtype).transpose(0, 1)
    if method == "alpha-crown":
        return alpha_crown(graph, input_set, forms, alpha, max_elements).T
    with torch.no_grad():
        if method == "ibp":
            boxes = interval_bounds(graph, input_set)
            return backward_lower(graph, graph.output, forms, boxes, input_set, None, linear_only=True).T
        boxes = crown_bounds(graph, input_set, max_elements=max_elements)
        return backward_lower(graph, graph.output, forms, boxes, input_set, AdaptiveSlopes()).T


def margin_spec(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, K - 1, K)``: rows ``e_y - e_j`` for the classes ``j != y`` in increasing order."""
    eye = torch.eye(num_classes, device=y.device)
    others = torch.arange(num_classes, device=y.device).expand(y.shape[0], -1)
    others = others[others != y[:, None]].reshape(y.shape[0], num_classes - 1)
    return eye[y][:, None, :] - eye[others]


def margin_lower_bounds(model: nn.Module | BoundGraph, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor,
                        norm: str = "linf", method: str = "crown", max_elements: int = DEFAULT_MAX_ELEMENTS,
                        alpha: AlphaOptions = AlphaOptions()) -> torch.Tensor:
    """``(B, K)`` lower bounds of ``logit_y - logit_j`` over the ``norm`` ball of radius ``eps`` around ``x``
    intersected with ``[0, 1]``, ``+inf`` at ``j = y``; every entry positive proves that no input of the set is
    classified other than ``y``.

    Args:
        model: a network (traced with :func:`~mistered.certify.graph.trace_graph`) or its bound graph.
        x: ``(B, *input_shape)`` in ``[0, 1]``; y: ``(B,)`` labels; eps: a float or ``(B,)`` (pixel units).
        norm: "linf", "l2" or "l1"; method: "ibp", "crown" or "alpha-crown" (see :func:`spec_lower_bounds`).
    """
    graph = as_graph(model, tuple(x.shape[1:]))
    if len(graph.output_shape) != 1:
        raise InvalidInputError(f"margins need a model with (B, K) logits, got output shape {graph.output_shape}")
    num_classes = graph.output_shape[0]
    check_labels(y, x.shape[0], num_classes)
    input_set = InputSet.ball(x.to(device=graph.device, dtype=graph.dtype), eps, norm)
    y = y.to(graph.device)
    spec = margin_spec(y, num_classes).to(graph.dtype)
    lower = spec_lower_bounds(graph, input_set, spec, method, max_elements, alpha)
    margins = torch.full((x.shape[0], num_classes), float("inf"), dtype=lower.dtype, device=lower.device)
    others = torch.arange(num_classes, device=y.device).expand(y.shape[0], -1)
    return margins.masked_scatter(others != y[:, None], lower)
