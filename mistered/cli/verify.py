"""``mistered verify``: complete verification in the field's formats (VNNLIB in, VNN-COMP answers out).

Three forms:

* ``mistered verify MODEL PROPERTY [--timeout S] [--out FILE]``: one instance (an ONNX model or any model the
  loader takes, with ``--input-shape`` for non-ONNX ones; a ``.vnnlib`` file, possibly gzip'd). The answer is
  printed; ``--out FILE`` writes the VNN-COMP result file there and the JSON record beside it
  (``FILE`` with the suffix ``.json``).
* ``mistered verify --benchmark DIR [--timeout CAP] [--expected FILE] [--out DIR] [--resume]``: every instance
  of a VNN-COMP benchmark folder (2022 on: ``instances.csv``; 2021: ``<name>_instances.csv``), each within its own
  time limit capped at ``--timeout``; writes ``results.csv``, the result files (``instances/``), ``results.json``
  (summary: verified / falsified / unknown, times, VNN-COMP score against ``--expected`` answers) and
  ``config.yaml``. ``--resume`` skips the instances already done; under ``torchrun --nproc_per_node N`` the
  instances are shared out over the processes.
* ``mistered verify [MODEL] --eps E [--data ... --n N | --indices FILE]``: local L∞ robustness of data examples,
  the same engine and outputs as a benchmark.

``--batch-size`` is the most points the attack runs through the model at once (memory).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..errors import InvalidInputError
from .common import start_run
from .options import data_options, eps_option, model_options, parse_channels, parse_model_args, parse_radii, \
    run_options

__all__ = ["verify"]


def _input_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InvalidInputError(f"--input-shape must be positive integers such as 1,28,28, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise InvalidInputError(f"--input-shape must be positive integers such as 1,28,28, got {text!r}")
    return shape


def _verify_options(options: dict[str, Any]):
    from ..certify.verify import AttackOptions, VerifyOptions

    if options["batch_size"] < 1:
        raise InvalidInputError(f"--batch-size must be a positive integer, got {options['batch_size']}")
    return VerifyOptions(attack=AttackOptions(max_batch=options["batch_size"]))


def _load(spec: str, options: dict[str, Any], device: Any):
    from ..models import load_model

    return load_model(spec, weights=options.get("weights"), model_args=parse_model_args(options.get("model_args")),
                      mean=parse_channels(options.get("mean"), "--mean"),
                      std=parse_channels(options.get("std"), "--std"), device=device)


def _describe(result) -> str:
    """One line for people about a :class:`~mistered.certify.verify.VerificationResult`."""
    text = f"{result.status} in {result.seconds:.2f} s"
    cex, low, high = result.counterexample, result.lower_bound, result.upper_bound
    if cex is not None:
        return (f"{text}: a counterexample in region {cex.region} satisfies conjunction {cex.conjunction} "
                f"(re-checked: {', '.join(f'{k} {v:.4g}' for k, v in cex.checks.items() if v is not None)})")
    if result.status == "unsat":
        return f"{text}: no conjunction can hold; each misses by at least {low:.4g} everywhere in the box (proved)"
    bound = f"{low:.4g}" if low > float("-inf") else "none"
    found = f"{high:.4g}" if high < float("inf") else "none"
    return f"{text}: violation lower bound {bound}, least violation found {found} (> 0 everywhere would be unsat)"


def _single(model_file: str, property_file: str, options: dict[str, Any]) -> None:
    """One instance: print the answer; with --out, the result file and the JSON record beside it."""
    from ..certify.bab import BabStep
    from ..certify.verify import read_vnnlib, verify
    from ..certify.verify.instances import materialize
    from ..certify.verify.result_file import write_result_file
    from ..device import resolve_device
    from ..io import atomic_write_json
    from ..models.sources import file_sha256
    from ..results import input_record, make_record

    if options["resume"] is not None:
        raise InvalidInputError("--resume applies to --benchmark and --eps runs")
    out = Path(options["out"]) if options["out"] else None
    record_path = out.with_suffix(".json") if out is not None else None
    if out is not None and (out.is_dir() or record_path == out):
        raise InvalidInputError(f"--out names the result file (the JSON record goes beside it), got {str(out)!r}")
    timeout = options["timeout"] if options["timeout"] is not None else 300.0
    device = resolve_device(options["device"])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mistered-verify-") as cache:
        model = _load(str(materialize(Path(model_file), Path(cache))), options, device)
        prop = read_vnnlib(property_file)
        left = max(timeout - (time.perf_counter() - started), 1e-3)  # loading and parsing count against --timeout
        result = verify(model, prop, left, input_shape=_input_shape(options["input_shape"]),
                        options=_verify_options(options), branch_and_bound=BabStep(), seed=options["seed"])
    click.echo(result.status)
    if not options["quiet"]:
        click.echo(_describe(result), err=True)
    if out is not None:
        write_result_file(out, result)
        settings = {"model": model_file, "property": property_file, "timeout": timeout, "seed": options["seed"],
                    "input_shape": options["input_shape"]}
        digest = file_sha256(Path(property_file))
        inputs = {**input_record(model), "property": {"path": property_file, "sha256": digest}}
        atomic_write_json(record_path, make_record("verify", settings, device, {"total": time.perf_counter() - started},
                                                   result.to_json(), inputs=inputs, result_file=str(out)))


def _print_summary(summary: dict[str, Any], title: str) -> None:
    table = Table(title=title, caption="unsat = verified, sat = falsified (a checked counterexample); median over "
                                       "decided instances")
    for column in ("instances", "unsat", "sat", "timeout", "unknown", "error", "wrong", "score", "median s"):
        table.add_column(column, justify="right")
    median = summary["median_seconds_decided"]
    table.add_row(*(str(summary[k]) for k in ("instances", "verified", "falsified", "timeout", "unknown", "error",
                                              "wrong", "score")), "-" if median is None else f"{median:.2f}")
    Console().print(table)


def _many(options: dict[str, Any], build, title: str, resolved: dict[str, Any]) -> None:
    """A benchmark or data run: ``build(run) -> solver`` gives the jobs and answers them."""
    from ..certify.verify import run_jobs, summarize
    from ..results import make_record

    with start_run("verify", options, shard=True) as run:
        started = time.perf_counter()
        solver = build(run)
        jobs = solver.jobs()

        def told(row: dict[str, Any]) -> None:
            if not run.quiet:
                click.echo(f"[{row['index'] + 1}/{len(jobs)}] {row['model']} {row['property']}: {row['status']} "
                           f"{row['seconds']:.2f} s{' WRONG' if row['wrong'] else ''}", err=True)

        rows = run_jobs(jobs, solver, run.out, settings=solver.settings(), resume=run.resuming, group=run.group,
                        on_row=told)
        if not run.group.is_main:
            return
        summary = summarize(rows)
        timings = {"total": time.perf_counter() - started, "load_models": getattr(solver, "load_seconds", 0.0)}
        record = make_record("verify", run.settings(resolved, world_size=run.group.world_size), run.device, timings,
                             summary, examples=rows, inputs=run.inputs)
        run.write(record, resolved)
        _print_summary(summary, title)
        Console().print(f"wrote {run.out / 'results.csv'} and {run.out / 'results.json'}")


def _benchmark(options: dict[str, Any]) -> None:
    from ..certify.bab import BabStep
    from ..certify.verify import find_instances, read_expected
    from ..certify.verify.solvers import BenchmarkSolver

    folder = options["benchmark"]
    instances = find_instances(folder)
    expected = read_expected(options["expected"]) if options["expected"] else None

    def build(run):
        return BenchmarkSolver(instances, run.out / "cache", timeout_cap=options["timeout"], expected=expected,
                               load=lambda path: _load(path, options, run.device), options=_verify_options(options),
                               seed=options["seed"], branch_and_bound=BabStep())

    _many(options, build, f"verify {folder}", {"benchmark": str(folder)})


def _examples(model_file: str | None, options: dict[str, Any]) -> None:
    from ..certify.bab import BabStep
    from ..certify.verify.solvers import ExampleSolver

    eps = parse_radii(options["eps"])
    timeout = options["timeout"] if options["timeout"] is not None else 60.0
    spec = model_file or options["model"] or "mnist-cnn"

    def build(run):
        model, data = run.load_inputs(spec)
        return ExampleSolver(model, data, eps, timeout, name=spec, options=_verify_options(options),
                             seed=options["seed"], branch_and_bound=BabStep())

    _many(options, build, f"verify {spec}, linf eps {', '.join(f'{e:g}' for e in eps)}",
          {"model": spec, "eps": list(eps), "timeout": timeout})


@click.command("verify")
@click.argument("model_file", metavar="[MODEL]", required=False)
@click.argument("property_file", metavar="[PROPERTY]", required=False)
@click.option("--benchmark", metavar="DIR", default=None,
              help="A VNN-COMP benchmark folder (instances.csv, or <name>_instances.csv) or its csv: run every "
                   "instance.")
@click.option("--timeout", type=float, default=None,
              help="Seconds per instance: the whole instance, every step included [default: MODEL PROPERTY 300; "
                   "--eps 60; --benchmark each instance's own limit, capped by this].")
@click.option("--expected", metavar="FILE", default=None,
              help="--benchmark: known answers (csv rows model,property,sat|unsat) to score against.")
@click.option("--input-shape", metavar="C,H,W", default=None,
              help="The per-example input shape of a model other than ONNX (VNNLIB numbers inputs in this order).")
@eps_option(extra_help=" Verify local L-inf robustness of --data examples at each.")
@click.option("--norm", type=click.Choice(["linf"]), default="linf", show_default=True,
              help="--eps: the norm (VNNLIB properties are boxes).")
@model_options(default="mnist-cnn (with --eps)")
@data_options(n_default=10)
@run_options(batch_size=4096)
def verify(model_file: str | None, property_file: str | None, **options: Any) -> None:
    """Verify properties: MODEL PROPERTY, a VNN-COMP --benchmark DIR, or --eps on data examples.

    \b
    mistered verify net.onnx prop.vnnlib --timeout 60 --out result.txt
        one instance: prints sat / unsat / timeout / unknown; --out FILE is the
        VNN-COMP result file, the JSON record goes beside it (result.json)
    mistered verify --benchmark DIR --timeout 60 --out RUN/ [--resume]
        every instance of a VNN-COMP benchmark (each under its own time limit,
        capped by --timeout): RUN/results.csv, results.json, instances/
    mistered verify --model mnist-fc --eps 0.01 --n 100 --out RUN/
        local L-inf robustness of data examples, written as a benchmark run

    Here --batch-size is the most points the attack puts through the model at once.
    """
    timeout = options["timeout"]
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise InvalidInputError(f"--timeout must be positive seconds, got {timeout}")
    if options["expected"] and not options["benchmark"]:
        raise InvalidInputError("--expected scores a --benchmark run; give it with --benchmark DIR")
    if options["input_shape"] and not property_file:
        raise InvalidInputError("--input-shape applies to MODEL PROPERTY (benchmarks use ONNX models; --eps takes "
                                "the data's shape)")
    if options["benchmark"]:
        if model_file or options["eps"]:
            raise InvalidInputError("--benchmark runs the benchmark's own models and properties; give no MODEL, "
                                    "PROPERTY or --eps with it")
        _benchmark(options)
    elif property_file:
        if options["eps"] or options["model"]:
            raise InvalidInputError("MODEL PROPERTY takes the property from the file; drop --eps/--model")
        _single(model_file, property_file, options)
    elif options["eps"]:
        if model_file and options["model"]:
            raise InvalidInputError(f"give the model once: MODEL {model_file!r} or --model {options['model']!r}")
        _examples(model_file, options)
    else:
        raise InvalidInputError("give MODEL PROPERTY, --benchmark DIR, or [MODEL] --eps E with --data")
