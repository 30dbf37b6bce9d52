"""Re-checking a candidate counterexample before it is reported: a ``sat`` answer only with a checked point.

A candidate ``x`` of region ``r`` is a counterexample when

* ``x`` lies in the region's box (compared in float64, exactly; where the box is narrower than one step of the
  model's precision, within that gap, :attr:`Falsifier.box_gap <.falsify.Falsifier>`),
* a plain forward pass of the model (its own ``forward``, not the bound graph, in its own precision) gives finite
  outputs ``y`` for which some conjunction ``C y <= d`` of the region holds, every row ``<= 0`` with no tolerance,
* and, for an ONNX model, onnxruntime on the ONNX file gives outputs for which the same conjunction holds, again
  with no tolerance.

The outputs reported are onnxruntime's for an ONNX model (what VNN-COMP's checker recomputes), else the model's;
the largest difference between the two forward passes is recorded.

Example:
    >>> checker = CounterexampleChecker(network)
    >>> cex = checker.check(prop, region=0, x=x)     # a Counterexample, or None
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .network import Network, OnnxRunner
from .property import Property

__all__ = ["Counterexample", "CounterexampleChecker"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Counterexample:
    """A checked counterexample.

    Attributes:
        x: ``(n,)`` float64, the input (exactly the values the model was run on).
        y: ``(m,)`` float64, the outputs it gives (onnxruntime's for ONNX models).
        region: the region's index; conjunction: the index of the conjunction it satisfies.
        violation: ``max_i (C y - d)_i`` of that conjunction (``<= 0``; ``None`` for a conjunction without rows).
        checks: each forward pass run -> its violation of that conjunction (``"torch"``, ``"onnxruntime"``).
        output_difference: the largest ``|y_torch - y_onnxruntime|`` (0 without onnxruntime).
    """

    x: torch.Tensor
    y: torch.Tensor
    region: int
    conjunction: int
    violation: float | None
    checks: dict[str, float | None] = field(default_factory=dict)
    output_difference: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (the full vectors go to the VNN-COMP result file)."""
        return {"region": self.region, "conjunction": self.conjunction, "violation": self.violation,
                "checks": dict(self.checks), "output_difference": self.output_difference}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class CounterexampleChecker:
    """Checks candidates on ``network`` (see the module docstring); the onnxruntime session is made once."""

    def __init__(self, network: Network, box_gap: float = 0.0) -> None:
        self.network, self.box_gap = network, float(box_gap)
        self._runner: OnnxRunner | None = None

    def _onnxruntime(self, x: torch.Tensor) -> torch.Tensor:
        if self._runner is None:
            self._runner = OnnxRunner(self.network.onnx_path, self.network.input_shape)
        return self._runner(x[None])[0]

    def _torch(self, x: torch.Tensor) -> torch.Tensor:
        module = self.network.module
        dtype = next((p.dtype for p in module.parameters()), torch.float32)
        with torch.no_grad():
            out = module(x.to(self.network.device, dtype).reshape(1, *self.network.input_shape))
        return out.reshape(-1).to("cpu", torch.float64)

    def check(self, prop: Property, region: int, x: torch.Tensor) -> Counterexample | None:
        """The :class:`Counterexample` at ``x`` ``(n,)`` (float64) in region ``region``, or ``None`` if it fails any
        check (logged)."""
        box = prop.regions[region]
        x = x.detach().to("cpu", torch.float64).reshape(-1)
        outside = float(torch.clamp(torch.maximum(box.lower - x, x - box.upper), min=0).max())
        if outside > self.box_gap or not bool(torch.isfinite(x).all()):
            logger.info("candidate rejected: %.3g outside the box", outside)
            return None
        passes = {"torch": self._torch(x)}
        if self.network.onnx_path is not None:
            passes["onnxruntime"] = self._onnxruntime(x)
        if not all(bool(torch.isfinite(y).all()) for y in passes.values()):
            logger.info("candidate rejected: the model's outputs are not finite there")
            return None
        values = {name: box.violation(y[None])[0] for name, y in passes.items()}
        worst = torch.stack(list(values.values())).max(dim=0).values  # a conjunction must hold in every pass
        holds = (worst <= 0).nonzero().flatten()
        if not holds.numel():
            logger.info("candidate rejected by the re-check: least violation %s", {
                name: float(v.min()) for name, v in values.items()})
            return None
        k = int(holds[worst[holds].argmin()])
        y = passes.get("onnxruntime", passes["torch"])
        return Counterexample(x, y, region, k, _finite(float(values.get("onnxruntime", values["torch"])[k])),
                              {name: _finite(float(v[k])) for name, v in values.items()},
                              float((passes["torch"] - y).abs().max()))
