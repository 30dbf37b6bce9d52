"""``mistered attack``: attack a model under a threat model; print a summary, write results.json and examples.png."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..errors import InvalidInputError
from ..evaluate.plots import plot_examples
from ..results import fraction

__all__ = ["attack", "summarize", "plot_examples"]


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
    for name in ("lpips", "ssim", "linf", "l2"):
        values = result.distances.get(name)
        summary[f"mean_{name}"] = float(values[fooled].mean()) if values is not None and int(fooled.sum()) else None
    return summary


@click.command("attack")
@click.option("--threat", "threat_spec", default="combined", show_default=True,
              help="Threat preset or spec, e.g. linf, stadv, 'flow(0.05)>>affine(10deg,0.1)>>linf(0.3)|lpips<=0.1'.")
@click.option("--model", "model_spec", default=None, help="Bundled model name or checkpoint path [default: bundled CNN].")
@click.option("--data", "data_name", default="mnist-5k", show_default=True, help="Dataset (test split).")
@click.option("--n", "n", default=100, show_default=True, type=int, help="Number of test examples.")
@click.option("--attack", "attack_name", default="pgd", show_default=True,
              help="pgd | fgsm | cw | perceptual | autoattack | torchattacks:<Name>.")
@click.option("--steps", default=10, show_default=True, type=int, help="Attack iterations.")
@click.option("--restarts", default=1, show_default=True, type=int, help="Random restarts per alternative.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the attack's random starts.")
@click.option("--batch-size", default=100, show_default=True, type=int, help="Examples per batch.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 or auto.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: ./mistered-out/attack-<time>/].")
def attack(threat_spec: str, model_spec: str | None, data_name: str, n: int, attack_name: str, steps: int,
           restarts: int, seed: int, batch_size: int, device: str, out_dir: str | None) -> None:
    """Attack a model under a threat model and report clean and robust accuracy."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from ..attacks import AttackResult, build_attack
    from ..data import load_dataset
    from ..device import resolve_device
    from ..models import load_model
    from ..results import default_out_dir, make_record, write_record
    from ..threats import parse_threat

    for name, value in (("--n", n), ("--steps", steps), ("--restarts", restarts), ("--batch-size", batch_size)):
        if value < 1:
            raise InvalidInputError(f"{name} must be a positive integer, got {value}")
    started = time.perf_counter()
    torch_device = resolve_device(device)
    threat = parse_threat(threat_spec)
    model = load_model(model_spec, device=torch_device)
    data = load_dataset(data_name, "test").subset(n)
    attacker = build_attack(attack_name, model, threat, steps=steps, restarts=restarts, seed=seed,
                            device=torch_device, distances=("linf", "l2", "lpips", "ssim"))
    setup_seconds = time.perf_counter() - started

    console = Console(stderr=True)
    results = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{attack_name} on {threat}", total=len(data.labels))
        for first in range(0, len(data.labels), batch_size):
            x, y = data.images[first:first + batch_size], data.labels[first:first + batch_size]
            results.append(attacker(x.to(torch_device), y.to(torch_device)))
            progress.advance(task, len(y))
    result = AttackResult.cat(results)
    summary = summarize(result)

    table = Table(title=f"{attack_name} · {threat} · {model_spec or 'bundled model'} · {data_name} (n={n})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, "—" if value is None else (str(value) if isinstance(value, int) else f"{value:.4f}"))
    Console().print(table)

    out = Path(out_dir) if out_dir is not None else default_out_dir("attack")
    settings = {"threat": threat_spec, "threat_parsed": str(threat), "model": model_spec, "data": data_name, "n": n,
                "attack": attack_name, "steps": steps, "restarts": restarts, "seed": seed,
                "batch_size": batch_size, "device": str(torch_device)}
    timings = {"setup": setup_seconds, "attack": result.seconds, "total": time.perf_counter() - started}
    record = make_record("attack", settings, torch_device, timings, summary, examples=result.to_json())
    json_path = write_record(out, record)
    png_path = plot_examples(result, out / "examples.png")
    Console().print(f"wrote {json_path} and {png_path}")
