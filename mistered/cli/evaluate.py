"""``mistered evaluate``: empirical vs certified robustness of one model; table, results.json and plots."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..errors import InvalidInputError

__all__ = ["evaluate"]


def _names(value: str, option: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names and option != "--certify":
        raise InvalidInputError(f"{option} needs at least one name, got {value!r}")
    return names


@click.command("evaluate")
@click.option("--model", "model_spec", default=None, help="Bundled model name or checkpoint path [default: bundled CNN].")
@click.option("--data", "data_name", default="mnist-5k", show_default=True, help="Dataset (test split).")
@click.option("--n", "n", default=50, show_default=True, type=int, help="Number of test examples (the first ones).")
@click.option("--threats", default="linf,l2", show_default=True,
              help="Comma-separated presets or specs; linf and l2 are swept over --eps, others (stadv, rotation, "
                   "'linf(0.2)') run at their own budget.")
@click.option("--eps", "eps_values", multiple=True,
              help="ε list per norm, e.g. --eps linf=0.1,0.3 --eps l2=1,2 (a bare list applies to both) "
                   "[default: linf=0.05,0.1,0.2,0.3 and l2=0.5,1,1.5,2].")
@click.option("--certify", "certify_names", default="lmt,linf-dist,geocert", show_default=True,
              help="Certifiers to try (those that do not apply are listed with the reason); empty for none.")
@click.option("--steps", default=20, show_default=True, type=int, help="Attack iterations (PGD, APGD, CW).")
@click.option("--restarts", default=1, show_default=True, type=int, help="PGD random restarts.")
@click.option("--autoattack", type=click.Choice(["standard", "fast", "off"]), default="fast", show_default=True,
              help="torchattacks AutoAttack: standard (slow on CPU), fast (APGD-CE + APGD-DLR) or off.")
@click.option("--square-queries", default=50, show_default=True, type=int,
              help="Queries of the gradient-free Square attack, the gradient-masking check (0: off).")
@click.option("--cw/--no-cw", default=False, show_default=True, help="Add Carlini-Wagner L2 to the L2 ensemble (slow on CPU).")
@click.option("--geocert-n", default=3, show_default=True, type=int, help="Examples GeoCert certifies exactly.")
@click.option("--geocert-time", default=5.0, show_default=True, type=float, help="GeoCert seconds per example.")
@click.option("--batch-size", default=50, show_default=True, type=int, help="Examples per batch (the unit saved for --resume).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the attacks' random starts.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 or auto.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: ./mistered-out/evaluate-<time>/].")
@click.option("--resume", "resume_dir", default=None, type=click.Path(file_okay=False),
              help="Continue the interrupted evaluation in this folder (same options required).")
@click.option("--compile/--no-compile", "compile_kernel", default=False, show_default=True,
              help="L-inf-dist nets: the compiled p = inf kernel (same results; pays ~2-4 s of compiling per layer "
                   "width; falls back to the eager kernel with a warning when no C++ compiler works).")
def evaluate(model_spec: str | None, data_name: str, n: int, threats: str, eps_values: tuple[str, ...],
             certify_names: str, steps: int, restarts: int, autoattack: str, square_queries: int, cw: bool,
             geocert_n: int, geocert_time: float, batch_size: int, seed: int, device: str, out_dir: str | None,
             resume_dir: str | None, compile_kernel: bool) -> None:
    """Empirical (attacks) vs certified robustness of one model, at every threat and ε, in one report."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ..certify.linf_dist_nets import set_linf_dist_compiled
    from ..data import load_dataset
    from ..device import resolve_device
    from ..evaluate import EvaluateConfig, parse_eps
    from ..evaluate import evaluate as run_evaluation
    from ..evaluate.report import table_columns, table_rows
    from ..models import load_model
    from ..results import default_out_dir

    if n < 1:
        raise InvalidInputError(f"--n must be a positive integer, got {n}")
    if resume_dir is not None and out_dir is not None and Path(out_dir) != Path(resume_dir):
        raise InvalidInputError("give either --out or --resume DIR (the folder to continue), not both")
    config = EvaluateConfig(
        threats=_names(threats, "--threats"), eps=parse_eps(eps_values), certify=_names(certify_names, "--certify"),
        steps=steps, restarts=restarts, autoattack=autoattack, square_queries=square_queries, cw=cw,
        geocert_n=geocert_n, geocert_time=geocert_time, batch_size=batch_size, seed=seed,
    )
    config.validate()
    torch_device = resolve_device(device)
    model = load_model(model_spec, device=torch_device)
    set_linf_dist_compiled(model, compile_kernel)  # no-op for models without L-inf-dist layers
    data = load_dataset(data_name, "test").subset(n)
    out = Path(resume_dir or out_dir or default_out_dir("evaluate"))

    console = Console(stderr=True)
    # the sanity warnings are printed once, after the table, from the summary (not also as they are logged)
    sanity_logger = logging.getLogger("mistered.evaluate.sanity")
    level = sanity_logger.level
    sanity_logger.setLevel(logging.ERROR)
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                      transient=True) as progress:
            task = progress.add_task("evaluating", total=None)
            record = run_evaluation(
                model, data, out, config, resume=resume_dir is not None, model_name=model_spec or "mnist-cnn",
                device=torch_device,
                on_chunk=lambda key: progress.update(task, description=key.replace("|", " · ")),
            )
    finally:
        sanity_logger.setLevel(level)
    summary = record["summary"]
    table = Table(title=f"evaluate · {model_spec or 'mnist-cnn'} · {data_name} (n={n})")
    for i, column in enumerate(table_columns(summary)):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in table_rows(summary):
        table.add_row(*row)
    Console().print(table)
    for plan in summary["certifiers"]:
        if not plan["applies"]:
            Console().print(f"[dim]{plan['method']} ({plan['norm']}): not applied — {plan['reason']}[/dim]")
    for warning in summary["warnings"]:
        Console().print(f"[yellow]warning:[/yellow] {warning}")
    Console().print(f"wrote {out / 'results.json'}, {out / 'robustness.png'}, {out / 'examples.png'}, "
                    f"{out / 'adversarial.pt'}")
