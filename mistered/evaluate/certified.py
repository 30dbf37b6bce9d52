"""Certified robustness: run the planned certifiers chunk by chunk (resumable), and read accuracies off them.

A certificate holds per-example radii, so each certifier runs once per norm and is read at every ε:
certified accuracy is the fraction with ``radius > eps``; an exact certifier (GeoCert) also gives the
exact robust accuracy where every example is decided (``lower > eps``: robust, ``upper <= eps``: not).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..certify.certificate import Certificate
from ..results import fraction
from .plan import CertifierPlan, CertifierSpec
from .state import EvaluationState

__all__ = ["run_certifier", "exact_accuracy"]


def run_certifier(plan: CertifierPlan, specs: Mapping[str, CertifierSpec], model: nn.Module, x: torch.Tensor,
                  y: torch.Tensor, state: EvaluationState, batch_size: int, subset_n: int, time_limit: float,
                  device: torch.device, on_chunk: Callable[[str], None] | None = None) -> Certificate:
    """Certify ``x`` ``(N, C, H, W)`` (CPU) with labels ``y`` ``(N,)`` (the first ``subset_n`` for subset
    certifiers, one example per chunk), skipping chunks saved in ``state``; returns one :class:`Certificate`."""
    spec = specs[plan.method]
    n = min(subset_n, x.shape[0]) if spec.subset else x.shape[0]
    step = 1 if spec.subset else batch_size
    certify = None
    parts: list[dict] = []
    for start in range(0, n, step):
        stop = min(start + step, n)
        chunk_key = f"certify|{plan.method}|{plan.norm}|{start}-{stop}"
        saved = state.load(chunk_key)
        if saved is None:
            if certify is None:
                certify = spec.build(model, plan.norm, time_limit)
            with torch.no_grad():
                cert = certify(x[start:stop].to(device), y[start:stop].to(device))
            saved = {"radius": cert.radius.cpu().float(), "upper": cert.upper.cpu().float(), "status": list(cert.status),
                     "predictions": cert.predictions.cpu(), "seconds": float(cert.seconds)}
            state.save(chunk_key, saved)
            if on_chunk is not None:
                on_chunk(chunk_key)
        parts.append(saved)
    return Certificate(
        method=plan.method, norm=plan.norm,
        radius=torch.cat([p["radius"] for p in parts]), upper=torch.cat([p["upper"] for p in parts]),
        status=[s for p in parts for s in p["status"]], predictions=torch.cat([p["predictions"] for p in parts]),
        labels=y[:n].clone(), seconds=sum(p["seconds"] for p in parts),
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
