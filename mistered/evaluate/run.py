"""``evaluate``: empirical vs certified robustness of one model in one report (see the package docstring)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks.result import AttackResult, measure_distances
from ..device import resolve_device
from ..errors import InvalidInputError
from ..io import atomic_torch_save
from ..results import finite_or_none, make_record, write_record
from ..sharding import SINGLE, ProcessGroup, gather_objects, merge_batches, shard_batches
from ..threats import bind_features
from ..validation import check_batch, check_logits, model_device
from .assemble import Merged, merge_chunks, summarize, union_examples
from .certified import as_certificate, certify_chunk
from .empirical import AUTOATTACK_MODES, EnsembleMember, attack_chunk, build_ensemble, predict
from .plan import CERTIFIERS, CertifierPlan, CertifierSpec, CertifyFn, plan_certifiers
from .plots import plot_examples
from .points import DEFAULT_EPS, EvalPoint, build_points, union_levels
from .report import plot_robustness
from .sanity import check_model_outputs, check_soundness
from .state import RunState, open_state

__all__ = ["EvaluateConfig", "evaluate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateConfig:
    """What to evaluate and how hard to try (every field is recorded and part of the resume check).

    Attributes:
        threats: ``--threat`` entries (see :mod:`.points`); eps: ε list per swept norm; sweep: values per budget
            name (``--sweep``, see :mod:`.budgets`), applied to the entries that have that budget.
        certify: certifier names (keys of :data:`~mistered.evaluate.plan.CERTIFIERS`).
        steps, restarts: attack iterations and PGD restarts; autoattack: ``standard|fast|off``;
        square_queries: gradient-free check (0: off); cw: Carlini-Wagner for L2.
        exact_n: examples the exact search certifies (the first ones); exact_time: its seconds per example.
        batch_size: examples per chunk (the unit saved for resuming); seed: the attacks' seed.
    """

    threats: tuple[str, ...] = ("linf", "l2")
    eps: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_EPS))
    sweep: dict[str, tuple[float, ...]] = field(default_factory=dict)
    certify: tuple[str, ...] = tuple(CERTIFIERS)
    steps: int = 20
    restarts: int = 1
    autoattack: str = "fast"
    square_queries: int = 50
    cw: bool = False
    exact_n: int = 3
    exact_time: float = 5.0
    batch_size: int = 50
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`InvalidInputError` naming the first bad option."""
        for name in ("steps", "restarts", "batch_size"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        for name in ("square_queries", "exact_n"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not self.exact_time > 0:
            raise InvalidInputError(f"--exact-time must be positive seconds, got {self.exact_time}")
        if self.autoattack not in AUTOATTACK_MODES:
            raise InvalidInputError(f"--autoattack must be one of {', '.join(AUTOATTACK_MODES)}, got {self.autoattack!r}")


def evaluate(model: nn.Module, data: Any, out_dir: str | Path, config: EvaluateConfig | None = None, *,
             resume: bool = False, model_name: str = "model", device: str | torch.device | None = None,
             certifiers: Mapping[str, CertifierSpec] = CERTIFIERS, on_chunk: Callable[[str], None] | None = None,
             on_batch: Callable[[int], None] | None = None, group: ProcessGroup = SINGLE,
             inputs: dict[str, Any] | None = None, features: nn.Module | None = None) -> dict[str, Any] | None:
    """Evaluate ``model`` on ``data`` (all of it) and write the report into ``out_dir``.

    Writes ``results.json`` (the record returned), ``adversarial.pt`` (``{"x", "labels", "indices",
    "clean_predictions", "x_adv": {threat: (N, C, H, W)}, "union": {"level<i>": ...}}``, load it with
    :func:`mistered.io.safe_torch_load`), ``robustness.png``, ``examples.png`` and ``state/`` (finished chunks;
    ``resume=True`` skips them). The examples stream through :func:`~mistered.data.make_loader` in batches of
    ``config.batch_size``; each batch is attacked at every point and certified before the next is read.

    Args:
        model: images ``(B, C, H, W)`` in ``[0, 1]`` -> logits ``(B, K)``; put in eval mode.
        data: a :class:`~mistered.data.LabeledDataset` (e.g. a :class:`~mistered.data.LabeledImages` or a
            selection), ``N = len(data)``; its ``indices`` (a selection's) are recorded per example.
        config: see :class:`EvaluateConfig`.
        resume: continue the evaluation saved in ``out_dir`` (same settings required).
        model_name: how the model is named in the settings (its spec or path).
        certifiers: the available certifiers (default the built-in ones).
        on_chunk: called with each chunk's key after it is saved (progress reporting).
        on_batch: called with the number of examples of each finished batch (progress reporting).
        group: the processes sharing the work (``rank``, ``world_size``; see :mod:`mistered.sharding`): each
            runs its batches, rank 0 merges them and writes the files; the others return ``None``.
        inputs: the record's ``inputs`` section (see :func:`mistered.results.input_record`); part of the settings
            a resume must match.
        features: the feature extractor of ``lpips-net`` budgets (``--lpips-net``), if any threat has one.

    Raises:
        UnsoundResultError: a certifier certified an example an attack fooled within the certified radius.
        InvalidInputError: bad options, no examples, or a resume with different settings.
    """
    config = config or EvaluateConfig()
    config.validate()
    started = time.perf_counter()
    dev = resolve_device(device) if device is not None else model_device(model)
    points = [replace(p, threat=bind_features(p.threat, model=model, net=features))
              for p in build_points(config.threats, config.eps, config.sweep)]
    unknown = [m for m in config.certify if m not in certifiers]
    if unknown:  # before any attack runs
        raise InvalidInputError(f"unknown certifier(s) {unknown}; choose from {', '.join(certifiers)}")
    if len(data) == 0:
        raise InvalidInputError(f"{data.name} holds no examples to evaluate")
    settings = {"model": model_name, "data": data.name, "n": len(data), **asdict(config), "device": str(dev)}
    settings["eps"] = {k: list(v) for k, v in config.eps.items()}
    settings["sweep"] = {k: list(v) for k, v in config.sweep.items()}
    settings["threats"], settings["certify"] = list(config.threats), list(config.certify)
    out = Path(out_dir)
    state = open_state(out, {**settings, **({"inputs": inputs} if inputs else {})}, resume, group=group)
    model.eval()
    norms = list(dict.fromkeys(p.norm for p in points if p.norm is not None))
    plans = plan_certifiers(model, tuple(data.sample_shape), norms, config.certify, certifiers)
    ensembles = [build_ensemble(model, p.threat, data.num_classes, min(data.sample_shape[1:]), steps=config.steps,
                                restarts=config.restarts, autoattack=config.autoattack,
                                square_queries=config.square_queries, cw=config.cw, seed=config.seed, device=dev)
                 for p in points]
    work = _BatchWork(model, points, ensembles, plans, certifiers, state, config, dev, data.num_classes, on_chunk)
    payloads = {}
    for index, x, y in shard_batches(data, config.batch_size, group):
        payloads[index] = work(x.cpu(), y.cpu(), index * config.batch_size)
        if on_batch is not None:
            on_batch(int(y.shape[0]))
    count = -(-len(data) // config.batch_size)
    chunks = merge_batches(gather_objects(payloads, group), count)
    if group.rank != 0:
        return None
    merged = merge_chunks(chunks, points, plans)
    record = _write_outputs(model, data, out, merged, points, plans, certifiers, model_name, dev)
    record["settings"], record["inputs"] = settings, inputs or {}
    record["timings"]["total"] = time.perf_counter() - started
    write_record(out, record)
    return record


def _write_outputs(model: nn.Module, data: Any, out: Path, merged: Merged, points: list[EvalPoint],
                   plans: list[CertifierPlan], certifiers: Mapping[str, CertifierSpec], model_name: str,
                   dev: torch.device) -> dict[str, Any]:
    """adversarial.pt, robustness.png and examples.png; returns the record (settings and inputs to be filled in)."""
    summary, union_adv = summarize(merged, points, plans, certifiers)
    n = len(data)
    indices = [int(i) for i in getattr(data, "indices", range(n))]
    radii = {k: c.radius for k, c in merged.certificates.items()}
    examples = [{"index": indices[i], "label": int(merged.y[i]),
                 "clean_prediction": int(merged.clean_logits[i].argmax()),
                 "robust": {p.label: bool(o["robust"][i]) for p, o in zip(points, merged.outcomes)},
                 "radius": {k: finite_or_none(float(r[i])) for k, r in radii.items() if i < r.shape[0]}}
                for i in range(n)]
    out.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(out / "adversarial.pt", {
        "x": merged.x, "labels": merged.y, "indices": torch.tensor(indices, dtype=torch.int64),
        "clean_predictions": merged.clean_logits.argmax(dim=1),
        "x_adv": {p.label: o["x_adv"] for p, o in zip(points, merged.outcomes)}, "union": union_adv})
    plot_robustness(summary, out / "robustness.png", title=f"{model_name} · {data.name} (n={n})")
    levels = union_levels(points)
    last = merged.outcomes[-1]
    robust, strongest = union_examples(merged, levels[-1]) if levels else (last["robust"], last["x_adv"])
    _plot_strongest(model, merged, strongest, robust, out / "examples.png", dev)
    timings = {f"attack {p.label} {name}": s
               for p, o in zip(points, merged.outcomes) for name, s in o["seconds"].items()}
    timings.update({f"certify {k.replace('/', ' ')}": c.seconds for k, c in merged.certificates.items()})
    return make_record("evaluate", {}, dev, timings, summary, examples=examples)


class _BatchWork:
    """Everything done to one batch: clean predictions, the attack ensemble at every point, the certifiers and
    the soundness check between them. Returns the batch's payload (CPU tensors) for :func:`merge_chunks`."""

    def __init__(self, model: nn.Module, points: list[EvalPoint], ensembles: list[list[EnsembleMember]],
                 plans: list[CertifierPlan], certifiers: Mapping[str, CertifierSpec], state: RunState,
                 config: EvaluateConfig, device: torch.device, num_classes: int,
                 on_chunk: Callable[[str], None] | None) -> None:
        self.model, self.points, self.ensembles, self.plans = model, points, ensembles, plans
        self.certifiers, self.state, self.config, self.device = certifiers, state, config, device
        self.num_classes, self.on_chunk = num_classes, on_chunk
        self.built: dict[str, CertifyFn] = {}

    def _certifier(self, plan: CertifierPlan) -> Callable[[], CertifyFn]:
        key = f"{plan.method}/{plan.norm}"

        def get() -> CertifyFn:
            if key not in self.built:
                self.built[key] = self.certifiers[plan.method].build(self.model, plan.norm, self.config.exact_time)
            return self.built[key]

        return get

    def __call__(self, x: torch.Tensor, y: torch.Tensor, start: int) -> dict[str, Any]:
        dev = self.device
        x, y = check_batch(x, y, num_classes=self.num_classes)
        clean_logits = predict(self.model, x, x.shape[0], dev)
        check_logits(clean_logits, y)
        clean_correct = clean_logits.argmax(dim=1) == y
        warnings = check_model_outputs(self.model, x.to(dev), y.to(dev), self.num_classes) if start == 0 else []
        results = [attack_chunk(p.label, members, self.model, x, y, clean_correct, self.state, start, dev,
                                self.on_chunk) for p, members in zip(self.points, self.ensembles)]
        certs = {}
        for plan in (p for p in self.plans if p.applies):
            part = certify_chunk(plan, self.certifiers[plan.method], self._certifier(plan), x, y, start, self.state,
                                 self.config.exact_n, dev, self.on_chunk)
            if part is None:
                continue
            certs[f"{plan.method}/{plan.norm}"] = part
            cert = as_certificate(plan, [part], y)
            for point, result in zip(self.points, results):
                if point.norm == plan.norm:
                    distance = measure_distances(x, result["x_adv"], (plan.norm,))[plan.norm]
                    check_soundness(point.label, cert, result["fooled"] & clean_correct, distance, offset=start)
        return {"x": x, "y": y, "clean_logits": clean_logits, "points": results, "certs": certs, "warnings": warnings}


def _plot_strongest(model: nn.Module, merged: Merged, strongest: torch.Tensor, robust: torch.Tensor, path: Path,
                    device: torch.device, count: int = 8) -> None:
    """examples.png of the strongest adversarial examples ``(N, C, H, W)`` (``robust`` ``(N,)`` their verdicts):
    the first ``count`` fooled ones first, predicted afresh."""
    order = torch.argsort((merged.clean_correct & ~robust).float(), descending=True, stable=True)[:count]
    logits = predict(model, strongest[order], max(order.numel(), 1), device)
    grid = AttackResult(x=merged.x[order], x_adv=strongest[order], labels=merged.y[order], logits=logits,
                        clean_logits=merged.clean_logits[order], success=logits.argmax(dim=1) != merged.y[order],
                        distances={}, sizes={}, alternative=torch.zeros_like(order))
    plot_examples(grid, path, count=count)
