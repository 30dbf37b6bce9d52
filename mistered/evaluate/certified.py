"""Certified robustness: run the planned certifiers chunk by chunk (resumable), and read accuracies off them.

A certificate holds per-example radii, so each certifier runs once per norm and is read at every ε:
certified accuracy is the fraction with ``radius > eps``; an exact certifier (``exact``) also gives the
exact robust accuracy where every example is decided (``lower > eps``: robust, ``upper <= eps``: not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..certify.certificate import Certificate
from ..results import fraction
from .plan import CertifierPlan, CertifierSpec, CertifyFn
from .state import RunState

__all__ = ["certify_chunk", "as_certificate", "exact_accuracy"]


def certify_chunk(plan: CertifierPlan, spec: CertifierSpec, certify: Callable[[], CertifyFn], x: torch.Tensor,
                  y: torch.Tensor, start: int, state: RunState, subset_n: int, device: torch.device,
                  on_chunk: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Certify one chunk ``x`` ``(b, C, H, W)`` (CPU; examples ``start ... start + b - 1``) with labels ``y``,
    skipping what ``state`` holds; a subset certifier takes only the examples below ``subset_n``, one per saved
    chunk. ``certify()`` returns the batch certifier (built on first use).

    Returns ``{"radius", "upper" (m,), "status" [m], "predictions" (m,), "seconds"}`` for the ``m`` examples
    certified (``None`` when the chunk holds none of a subset certifier's examples).
    """
    stop = start + x.shape[0]
    end = min(stop, subset_n) if spec.subset else stop
    step = 1 if spec.subset else x.shape[0]
    parts = []
    for first in range(start, end, step):
        last = min(first + step, end)
        chunk_key = f"certify|{plan.method}|{plan.norm}|{first}-{last}"
        saved = state.load(chunk_key)
        if saved is None:
            rows = slice(first - start, last - start)
            with torch.no_grad():
                cert = certify()(x[rows].to(device), y[rows].to(device))
            saved = {"radius": cert.radius.cpu().float(), "upper": cert.upper.cpu().float(),
                     "status": list(cert.status), "predictions": cert.predictions.cpu(), "seconds": float(cert.seconds)}
            state.save(chunk_key, saved)
            if on_chunk is not None:
                on_chunk(chunk_key)
        parts.append(saved)
    if not parts:
        return None
    return {"radius": torch.cat([p["radius"] for p in parts]), "upper": torch.cat([p["upper"] for p in parts]),
            "status": [s for p in parts for s in p["status"]],
            "predictions": torch.cat([p["predictions"] for p in parts]), "seconds": sum(p["seconds"] for p in parts)}


def as_certificate(plan: CertifierPlan, parts: list[dict[str, Any]], labels: torch.Tensor) -> Certificate:
    """One :class:`Certificate` from the chunks of :func:`certify_chunk` in order; ``labels`` ``(N,)`` (the first
    ``m`` are the certified examples')."""
    radius = torch.cat([p["radius"] for p in parts]) if parts else torch.zeros(0)
    m = radius.shape[0]
    return Certificate(
        method=plan.method, norm=plan.norm, radius=radius,
        upper=torch.cat([p["upper"] for p in parts]) if parts else torch.zeros(0),
        status=[s for p in parts for s in p["status"]],
        predictions=torch.cat([p["predictions"] for p in parts]) if parts else torch.zeros(0, dtype=torch.long),
        labels=labels[:m].clone(), seconds=sum(p["seconds"] for p in parts),
    )


def exact_accuracy(cert: Certificate, eps: float) -> tuple[float | None, int]:
    """``(accuracy, undecided)``: the exact robust accuracy at ``eps`` on the certificate's examples, or
    ``None`` with the number of examples whose bounds straddle ``eps`` (a timeout left them undecided)."""
    correct = cert.predictions == cert.labels
    robust = correct & (cert.radius > eps)
    attacked = ~correct | (cert.upper <= eps)
    undecided = int((~robust & ~attacked).sum())
    if undecided or not cert.radius.numel():
        return None, undecided
    return fraction(robust), 0
