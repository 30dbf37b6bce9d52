"""The two kinds of job lists :func:`~.runner.run_jobs` runs, each with the ``solve`` that answers one job:

* :class:`BenchmarkSolver`: a VNN-COMP benchmark's instances (ONNX + VNNLIB files, gzip'd or not), each under its
  own time limit, capped; the last model loaded is kept for the next instance (benchmarks list instances model by
  model);
* :class:`ExampleSolver`: local L∞ robustness of labelled examples of a data set at one or more radii
  (:func:`~.property.robustness_property`), on one model.

Example:
    >>> solver = BenchmarkSolver(find_instances("mnistfc"), cache=Path("out/cache"), timeout_cap=60)
    >>> rows = run_jobs(solver.jobs(), solver, Path("out"), settings=solver.settings())
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import InvalidInputError
from .complete import CompleteStep
from .instances import Instance, expected_key, materialize
from .network import Network, prepare_network
from .property import robustness_property
from .runner import Job
from .verifier import VerificationResult, VerifyOptions, verify
from .vnnlib import read_vnnlib

__all__ = ["BenchmarkSolver", "ExampleSolver"]


class BenchmarkSolver:
    """Answers the jobs of ``instances`` (see the module docstring).

    Args:
        instances: from :func:`~.instances.find_instances`.
        cache: where gzip'd models are decompressed (never the benchmark folder).
        timeout_cap: the most seconds per instance (``None``: each instance's own limit).
        expected: known answers (:func:`~.instances.read_expected`).
        load: the model loader (``path -> nn.Module``, default :func:`mistered.models.load_model` on ``device``).
        options, seed, branch_and_bound: :func:`~.verifier.verify`'s.
    """

    def __init__(self, instances: Sequence[Instance], cache: Path, *, timeout_cap: float | None = None,
                 expected: dict[tuple[str, str], str] | None = None, device: str | torch.device | None = None,
                 load: Callable[[str], nn.Module] | None = None, options: VerifyOptions = VerifyOptions(),
                 seed: int = 0, branch_and_bound: CompleteStep | None = None) -> None:
        if timeout_cap is not None and not (timeout_cap > 0 and math.isfinite(timeout_cap)):
            raise InvalidInputError(f"--timeout must be positive seconds, got {timeout_cap}")
        self.instances, self.cache, self.cap = list(instances), cache, timeout_cap
        self.expected = expected or {}
        self.options, self.seed, self.branch_and_bound = options, seed, branch_and_bound
        self.load = load or self._load_model(device)
        self._network: tuple[Path, Network] | None = None
        self.load_seconds = 0.0

    @staticmethod
    def _load_model(device: str | torch.device | None) -> Callable[[str], nn.Module]:
        from ...models import load_model

        return lambda path: load_model(path, device=device)

    def jobs(self) -> list[Job]:
        """One job per instance, its time limit capped, its expected answer filled in where known."""
        return [Job(i.index, i.model, i.property, min(i.timeout, self.cap) if self.cap else i.timeout,
                    self.expected.get(expected_key(i.model, i.property))) for i in self.instances]

    def settings(self) -> dict[str, Any]:
        """What the answers depend on (for resuming): the time limits and the attack's seed."""
        return {"timeout_cap": self.cap, "seed": self.seed, "instances": [j.timeout for j in self.jobs()]}

    def network(self, instance: Instance) -> Network:
        """The network of ``instance`` (the previous instance's when it uses the same file)."""
        if self._network is None or self._network[0] != instance.model_path:
            self._network = None  # release the previous model before loading the next
            started = time.perf_counter()
            path = materialize(instance.model_path, self.cache)
            self._network = (instance.model_path, prepare_network(self.load(str(path))))
            self.load_seconds += time.perf_counter() - started
        return self._network[1]

    def __call__(self, job: Job) -> VerificationResult:
        instance = self.instances[job.index]
        network = self.network(instance)
        prop = read_vnnlib(instance.property_path)
        return verify(network, prop, job.timeout, options=self.options, branch_and_bound=self.branch_and_bound,
                      seed=self.seed + job.index)


class ExampleSolver:
    """Local robustness jobs: every example of ``data`` at every radius of ``eps`` (example-major per radius).

    Args:
        model: the classifier (``(B, *sample_shape) -> (B, K)``); data: a labelled selection
            (:class:`~mistered.data.LabeledDataset`) with ``indices`` into its parent where it has them.
        eps: the L∞ radii; timeout: seconds per job; name: the model's name in the rows.
        options, seed, branch_and_bound: :func:`~.verifier.verify`'s.
    """

    def __init__(self, model: nn.Module, data: Any, eps: Sequence[float], timeout: float, *, name: str = "model",
                 options: VerifyOptions = VerifyOptions(), seed: int = 0,
                 branch_and_bound: CompleteStep | None = None) -> None:
        if not (timeout > 0 and math.isfinite(timeout)):
            raise InvalidInputError(f"--timeout must be positive seconds, got {timeout}")
        if not eps:
            raise InvalidInputError("give at least one --eps radius")
        self.data, self.eps, self.timeout, self.name = data, list(eps), float(timeout), name
        self.options, self.seed, self.branch_and_bound = options, seed, branch_and_bound
        self.network = prepare_network(model, tuple(data.sample_shape))
        self.indices = list(getattr(data, "indices", range(len(data))))

    def jobs(self) -> list[Job]:
        n = len(self.indices)
        return [Job(e * n + p, self.name, f"example {self.indices[p]} linf eps {eps:g}", self.timeout)
                for e, eps in enumerate(self.eps) for p in range(n)]

    def settings(self) -> dict[str, Any]:
        return {"eps": self.eps, "timeout": self.timeout, "seed": self.seed, "indices": self.indices}

    def __call__(self, job: Job) -> VerificationResult:
        n = len(self.indices)
        eps, position = self.eps[job.index // n], job.index % n
        x, label = self.data[position]
        prop = robustness_property(x, int(label), eps, self.network.num_outputs, name=job.property)
        return verify(self.network, prop, job.timeout, options=self.options, branch_and_bound=self.branch_and_bound,
                      seed=self.seed + job.index)
