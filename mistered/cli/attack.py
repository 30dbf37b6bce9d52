"""``mistered attack``: attack a model under a threat model; print a summary and write results.json,
adversarial.pt, examples.png and config.yaml.

The examples stream in batches; under ``torchrun --nproc_per_node N -m mistered attack ...`` the batches are
shared out over the processes and merged into one record identical to a single-process run
(:mod:`mistered.sharding`). Finished batches are saved under ``state/`` so ``--resume`` skips them.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import click

from ..errors import InvalidInputError
from ..evaluate.plots import plot_examples
from ..results import fraction
from .common import check_lpips_net, check_positive, start_run
from .options import (data_options, eps_option, lpips_net_option, model_options, parse_radii, run_options,
                      threat_option)

__all__ = ["attack", "summarize", "build_threat"]

#: Threats whose radius ``--eps`` sets.
_NORMS = ("linf", "l2")


def summarize(result) -> dict[str, float | int | None]:
    """The summary of an :class:`~mistered.attacks.AttackResult`: accuracies and mean distances.

    ``attack_success_rate`` is over clean-correct examples; mean distances are over successful
    attacks on clean-correct examples (``None`` when there is none).
    """
    correct = result.clean_correct
    fooled = correct & result.success
    n = int(result.labels.shape[0])
    summary: dict[str, float | int | None] = {
        "n": n,
        "clean_accuracy": fraction(correct),
        "robust_accuracy": fraction(result.robust),
        "attack_success_rate": int(fooled.sum()) / int(correct.sum()) if int(correct.sum()) else 0.0,
    }
    for name in ("lpips", "dssim", "linf", "l2"):
        values = result.distances.get(name)
        summary[f"mean_{name}"] = float(values[fooled].mean()) if values is not None and int(fooled.sum()) else None
    if "bound_violations" in result.info:
        summary["bound_violations"] = int(result.info["bound_violations"])
    return summary


def build_threat(specs: tuple[str, ...], eps: tuple[str, ...]):
    """The threat of ``--threat`` (several: their union, the worst case per example) with ``--eps`` as the
    radius of bare norm threats (``linf``, ``l2``)."""
    from ..threats import Additive, Union, parse_threat

    radii = parse_radii(eps)
    if len(radii) > 1:
        raise InvalidInputError(f"attack takes one --eps radius, got {len(radii)}; 'mistered evaluate' sweeps several")
    threats = []
    for spec in specs:
        if not radii:
            threats.append(parse_threat(spec))
        elif spec.strip() in _NORMS:
            threats.append(Additive(spec.strip(), radii[0]))
        else:
            raise InvalidInputError(f"--eps sets the radius of a bare {' or '.join(_NORMS)} threat; give the budget of "
                                    f"{spec!r} in its spec, e.g. linf(0.1)")
    return threats[0] if len(threats) == 1 else Union(tuple(threats))


@click.command("attack")
@threat_option(default=("combined",), extra_help=" Several: the worst case over them, per example.")
@eps_option(extra_help=" Here one value: the radius of a bare linf or l2 threat.")
@click.option("--attack", default="pgd", show_default=True,
              help="pgd | fgsm | cw | ppgd | lpa | fast-lpa | autoattack | torchattacks:<Name> (perceptual: a "
                   "deprecated alias of lpa). ppgd/lpa/fast-lpa need a perceptual bound, e.g. combined.")
@click.option("--steps", default=10, show_default=True, type=int, help="Attack iterations.")
@click.option("--restarts", default=1, show_default=True, type=int, help="Random restarts per alternative.")
@lpips_net_option()
@model_options()
@data_options(n_default=100)
@run_options(batch_size=100)
def attack(**options: Any) -> None:
    """Attack a model under a threat model and report clean and robust accuracy."""
    from ..attacks import build_attack
    from ..evaluate.state import open_state
    from ..sharding import gather_objects, merge_batches, shard_batches, share_size

    check_positive(n=options["n"], steps=options["steps"], restarts=options["restarts"],
                   batch_size=options["batch_size"])
    started = time.perf_counter()
    threat_specs = options["threat"] or ("combined",)
    threat = build_threat(threat_specs, options["eps"])
    check_lpips_net([threat], options["lpips_net"])
    with start_run("attack", options, shard=True) as run:
        model, data = run.load_inputs("mnist-cnn")
        net = run.load_lpips_net(data)
        if net is not None:
            from ..threats import bind_features

            threat = bind_features(threat, net=net)
        attacker = build_attack(options["attack"], model, threat, steps=options["steps"], restarts=options["restarts"],
                                seed=options["seed"], device=run.device, distances=_distances(data.sample_shape))
        resolved = {"threat": list(threat_specs), "model": options["model"] or "mnist-cnn",
                    "eps": list(parse_radii(options["eps"]))}
        settings = run.settings(resolved, threat_parsed=str(threat))
        # the results do not depend on how many processes share the work: a run may resume with another number
        state = open_state(run.out, {"settings": settings, "inputs": run.inputs}, run.resuming, what="attack",
                           group=run.group)
        settings["world_size"] = run.group.world_size
        setup_seconds = time.perf_counter() - started
        batch_size, payloads = options["batch_size"], {}
        with run.progress(f"{options['attack']} on {threat}", share_size(len(data), batch_size, run.group)) as bar:
            for index, x, y in shard_batches(data, batch_size, run.group):
                key = f"attack|{index * batch_size}-{index * batch_size + len(y)}"
                payloads[index] = state.load(key)
                if payloads[index] is None:
                    payloads[index] = _payload(_checked(attacker, x.to(run.device), y.to(run.device)))
                    state.save(key, payloads[index])
                bar.advance(len(y))
        batches = merge_batches(gather_objects(payloads, run.group), -(-len(data) // batch_size))
        if run.group.is_main:
            _report(run, batches, data, threat, settings, resolved,
                    {"setup": setup_seconds, "total": time.perf_counter() - started})


def _checked(attacker, x, y):
    """The attack's result on one batch with ``info["bound_violations"]``: how many returned examples lie outside
    their threat's budgets, re-measured (0 unless an attack is wrong; the perceptual attacks count it themselves)."""
    from ..attacks import bound_violations

    result = attacker(x, y)
    if "bound_violations" not in result.info:
        result.info["bound_violations"] = int(bound_violations(result, attacker.threat).sum())
    return result


def _distances(sample_shape: tuple[int, ...]) -> tuple[str, ...]:
    """The distances measured on every example: L∞, L2, LPIPS, and DSSIM where the images are large enough for
    SSIM's window."""
    from ..metrics.ssim import SSIM_WINDOW

    return ("linf", "l2", "lpips") + (("dssim",) if min(sample_shape[1:]) >= SSIM_WINDOW else ())


def _shown_distance(threat, measured: dict[str, Any]) -> str | None:
    """The distance examples.png captions each example with: the threat's perceptual bound, an additive threat's
    norm, else LPIPS (when measured)."""
    preferred = getattr(threat, "metric", None) or getattr(threat, "norm", None) or "lpips"
    return next((name for name in (preferred, "lpips", "linf") if name in measured), None)


def _payload(result) -> dict[str, Any]:
    """A batch's :class:`~mistered.attacks.AttackResult` as a dict of CPU tensors (saved and gathered)."""
    return _to_cpu({f.name: getattr(result, f.name) for f in dataclasses.fields(result)})


def _to_cpu(value: Any) -> Any:
    if hasattr(value, "cpu"):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


def _report(run, batches: list[dict[str, Any]], data, threat, settings, resolved, timings) -> None:
    """Rank 0: the table, results.json, adversarial.pt, examples.png and config.yaml."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from ..attacks import AttackResult
    from ..io import atomic_torch_save
    from ..results import make_record

    result = AttackResult.cat([AttackResult(**b) for b in batches])
    summary = summarize(result)
    indices = [int(i) for i in getattr(data, "indices", range(len(data)))]
    examples = result.to_json()
    for row, index in zip(examples, indices):
        row["index"] = index
    model_name = resolved["model"]
    table = Table(title=f"{settings['attack']} · {threat} · {model_name} · {data.name} (n={len(data)})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, "—" if value is None else (str(value) if isinstance(value, int) else f"{value:.4f}"))
    Console().print(table)
    timings = {**timings, "attack": result.seconds}
    atomic_torch_save(run.out / "adversarial.pt", {
        "x_adv": result.x_adv, "labels": result.labels, "clean_predictions": result.clean_logits.argmax(dim=1),
        "adversarial_predictions": result.predictions, "success": result.success,
        "indices": torch.tensor(indices, dtype=torch.int64), "threat": str(threat)})
    png_path = plot_examples(result, run.out / "examples.png", distance=_shown_distance(threat, result.distances))
    record = make_record("attack", settings, run.device, timings, summary, examples=examples, inputs=run.inputs)
    json_path = run.write(record, resolved)
    Console().print(f"wrote {json_path}, {run.out / 'adversarial.pt'} and {png_path}")
