"""``mistered evaluate``: empirical vs certified robustness of one model; table, results.json and plots.

Shards over ``torchrun`` processes like ``attack`` (:mod:`mistered.sharding`): the record is identical to a
single-process run's.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from .common import check_lpips_net, check_positive, start_run
from .options import (data_options, eps_option, lpips_net_option, model_options, run_options, split_top_level,
                      threat_option)

__all__ = ["evaluate", "threat_entries"]


def _names(value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if "geocert" in names:
        click.echo("warning: --certify geocert is deprecated; use --certify exact", err=True)
    return tuple("exact" if name == "geocert" else name for name in names)


def _renamed_option(options: dict[str, Any], old: str, new: str) -> Any:
    """The value of ``--new``, or of its deprecated spelling ``--old`` (with a warning) when that was given."""
    if options[old] is None:
        return options[new]
    click.echo(f"warning: --{old.replace('_', '-')} is deprecated; use --{new.replace('_', '-')}", err=True)
    return options[old]


def threat_entries(threat: tuple[str, ...], threats: str | None) -> tuple[str, ...]:
    """The threats to evaluate: every ``--threat`` (each one threat, commas and all), then the deprecated
    ``--threats`` list split on its top-level commas only (so ``affine(10deg,0.1)`` stays one threat)."""
    entries = tuple(t.strip() for t in threat if t.strip()) + tuple(split_top_level(threats or ""))
    return entries or ("linf", "l2")


@click.command("evaluate")
@threat_option(default=("linf", "l2"), extra_help=" linf and l2 are swept over --eps; others (stadv, rotation, "
               "'linf(0.2)') run at their own budget, or over --sweep; several that differ in one budget only "
               "form one curve.")
@click.option("--threats", default=None, hidden=True, help="Deprecated: a comma-separated --threat list.")
@eps_option(extra_help=" Per norm: --eps linf=0.1,0.3 --eps l2=1,2 (a bare list applies to both) [default: "
            "linf=0.05,0.1,0.2,0.3 and l2=0.5,1,1.5,2].")
@click.option("--sweep", multiple=True, metavar="NAME=LIST",
              help="Sweep one budget of the threats that have it, e.g. --threat stadv --sweep smoothness=0.005,0.01,"
                   "0.02 or --threat combined --sweep lpips=0.01,0.015; names: linf, l2, angle, translation, scale, "
                   "flow, smoothness and the metrics of perceptual bounds (lpips, dssim ...). robustness.png plots "
                   "accuracy against it.")
@click.option("--certify", default="lmt,linf-dist,exact", show_default=True,
              help="Certifiers to try (those that do not apply are listed with the reason); empty for none. exact: "
                   "exact minimal distances (geocert: its deprecated name).")
@click.option("--steps", default=20, show_default=True, type=int, help="Attack iterations (PGD, APGD, CW).")
@click.option("--restarts", default=1, show_default=True, type=int, help="PGD random restarts.")
@click.option("--autoattack", type=click.Choice(["standard", "fast", "off"]), default="fast", show_default=True,
              help="torchattacks AutoAttack: standard (slow on CPU), fast (APGD-CE + APGD-DLR) or off.")
@click.option("--square-queries", default=50, show_default=True, type=int,
              help="Queries of the gradient-free Square attack, the gradient-masking check (0: off).")
@click.option("--cw/--no-cw", default=False, show_default=True,
              help="Add Carlini-Wagner L2 to the L2 ensemble (slow on CPU).")
@click.option("--exact-n", default=3, show_default=True, type=int, help="Examples the exact search certifies.")
@click.option("--exact-time", default=5.0, show_default=True, type=float, help="Exact search seconds per example.")
@click.option("--geocert-n", type=int, default=None, hidden=True, help="Deprecated: --exact-n.")
@click.option("--geocert-time", type=float, default=None, hidden=True, help="Deprecated: --exact-time.")
@click.option("--compile/--no-compile", "compile", default=False, show_default=True,
              help="L-inf-dist nets: the compiled p = inf kernel (same results; pays ~2-4 s of compiling per layer "
                   "width; falls back to the eager kernel with a warning when no C++ compiler works).")
@lpips_net_option()
@model_options()
@data_options(n_default=50)
@run_options(batch_size=50)
def evaluate(**options: Any) -> None:
    """Empirical (attacks) vs certified robustness of one model, at every threat and ε, in one report."""
    from rich.console import Console
    from rich.table import Table

    from ..models.linf_dist.nets import set_linf_dist_compiled
    from ..evaluate import EvaluateConfig, build_points, parse_eps, parse_sweeps
    from ..evaluate import evaluate as run_evaluation
    from ..evaluate.report import table_columns, table_rows
    from ..sharding import share_size

    check_positive(n=options["n"])
    threats = threat_entries(options["threat"], options["threats"])
    config = EvaluateConfig(
        threats=threats, eps=parse_eps(options["eps"]), sweep=parse_sweeps(options["sweep"]),
        certify=_names(options["certify"]),
        steps=options["steps"], restarts=options["restarts"], autoattack=options["autoattack"],
        square_queries=options["square_queries"], cw=options["cw"],
        exact_n=_renamed_option(options, "geocert_n", "exact_n"),
        exact_time=_renamed_option(options, "geocert_time", "exact_time"), batch_size=options["batch_size"],
        seed=options["seed"],
    )
    config.validate()
    points = build_points(config.threats, config.eps, config.sweep)  # a bad threat is an error before any work
    check_lpips_net([p.threat for p in points], options["lpips_net"])
    with start_run("evaluate", options, shard=True) as run:
        model, data = run.load_inputs("mnist-cnn")
        features = run.load_lpips_net(data)
        set_linf_dist_compiled(model, options["compile"])  # no-op for models without L-inf-dist layers
        model_name = options["model"] or "mnist-cnn"
        resolved = {"threat": list(threats), "model": model_name,
                    "eps": [f"{norm}={','.join(str(e) for e in values)}" for norm, values in config.eps.items()]}
        # the sanity warnings are printed once, after the table, from the summary (not also as they are logged)
        sanity_logger = logging.getLogger("mistered.evaluate.sanity")
        level = sanity_logger.level
        sanity_logger.setLevel(logging.ERROR)
        try:
            with run.progress("evaluate", share_size(len(data), options["batch_size"], run.group)) as bar:
                record = run_evaluation(model, data, run.out, config, resume=run.resuming, model_name=model_name,
                                        device=run.device, on_batch=bar.advance, group=run.group, inputs=run.inputs,
                                        features=features)
        finally:
            sanity_logger.setLevel(level)
        if record is None:  # a rank other than 0: rank 0 writes
            return
        run.write_config(resolved)
    summary = record["summary"]
    table = Table(title=f"evaluate · {model_name} · {data.name} (n={len(data)})")
    for i, column in enumerate(table_columns(summary)):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in table_rows(summary):
        table.add_row(*row)
    console = Console()
    console.print(table)
    for plan in summary["certifiers"]:
        if not plan["applies"]:
            console.print(f"[dim]{plan['method']} ({plan['norm']}): not applied — {plan['reason']}[/dim]")
    for warning in summary["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    out = run.out
    console.print(f"wrote {out / 'results.json'}, {out / 'robustness.png'}, {out / 'examples.png'}, "
                  f"{out / 'adversarial.pt'}, {out / 'config.yaml'}")
