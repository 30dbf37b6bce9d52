"""``mistered calibrate``: how far apart a data set's images are under each distance; which budgets mean "the same image"."""

from __future__ import annotations

import time
from typing import Any

import click

from ..errors import InvalidInputError

__all__ = ["calibrate"]

_DEFAULT_METRICS = ("lpips", "ssim")


def _feature_networks(metrics: tuple[str, ...], model_spec: str | None, lpips_net: str | None, device) -> dict[str, Any]:
    """The networks of ``lpips-self`` (the model) and ``lpips-net`` (``--lpips-net file.py:Name``), loaded only if asked."""
    networks: dict[str, Any] = {}
    if "lpips-self" in metrics:
        from ..models import load_model

        networks["lpips-self"] = load_model(model_spec, device=device).eval()
    if "lpips-net" in metrics:
        if lpips_net is None:
            raise InvalidInputError("--metric lpips-net needs --lpips-net file.py:Name (a feature extractor)")
        from ..models.python_source import load_python_model
        from ..models.sources import parse_python_spec

        spec = parse_python_spec(lpips_net)
        if spec is None:
            raise InvalidInputError(f"--lpips-net takes file.py:Name or package.module:Name, got {lpips_net!r}")
        networks["lpips-net"] = load_python_model(spec, {})[0].to(device).eval().requires_grad_(False)
    elif lpips_net is not None:
        raise InvalidInputError("--lpips-net is only used with --metric lpips-net")
    return networks


@click.command("calibrate")
@click.option("--data", "data_name", default="mnist-5k", show_default=True,
              help="Dataset: a bundled or torchvision name, an image folder, .npz or .pt.")
@click.option("--split", default="test", show_default=True, help="Which split to measure.")
@click.option("--metric", "metrics", multiple=True,
              help="Distance or similarity to measure; repeat for several: lpips, lpips-vgg, lpips-self, lpips-net, "
                   "ssim, ms-ssim, dssim, ms-dssim, linf, l2, l1 [default: lpips and ssim].")
@click.option("--n", "n", default=1000, show_default=True, type=int,
              help="Images measured (the first n); pairs grow as n².")
@click.option("--model", "model_spec", default=None, help="Model of lpips-self [default: the bundled CNN].")
@click.option("--lpips-net", "lpips_net", default=None, help="Feature extractor of lpips-net: file.py:Name.")
@click.option("--batch-size", default=256, show_default=True, type=int, help="Images per network call.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 or auto.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: ./mistered-out/calibrate-<time>/].")
def calibrate(data_name: str, split: str, metrics: tuple[str, ...], n: int, model_spec: str | None,
              lpips_net: str | None, batch_size: int, device: str, out_dir: str | None) -> None:
    """Measure each distance between a data set's images: nearest other-class and same-class pairs, benign changes.

    A budget should allow the benign changes and stay below the 1st percentile of the nearest
    different-class pairs ("largest budget"); every preset's budget is checked against it.
    """
    from pathlib import Path

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from .. import calibrate as calibration
    from ..calibrate.report import TABLE_COLUMNS, check_presets, plot_histograms, table_rows
    from ..data import load_dataset, materialize, select
    from ..device import resolve_device
    from ..results import default_out_dir, make_record, write_record

    for name, value in (("--n", n), ("--batch-size", batch_size)):
        if value < 2:
            raise InvalidInputError(f"{name} must be at least 2, got {value}")
    metrics = tuple(dict.fromkeys(metrics or _DEFAULT_METRICS))
    distances = {metric: calibration.distance_name(metric) for metric in metrics}  # validates the names
    started = time.perf_counter()
    torch_device = resolve_device(device)
    data = materialize(select(load_dataset(data_name, split), n=n))
    networks = _feature_networks(tuple(distances.values()), model_spec, lpips_net, torch_device)
    images, labels = data.images.to(torch_device), data.labels.to(torch_device)

    console = Console(stderr=True)
    count = images.shape[0]
    work = sum(count * (count - 1) // 2 if d in ("dssim", "ms-dssim") else count for d in distances.values())
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"calibrating {', '.join(metrics)} on {count} images", total=work)
        results = calibration.calibrate(images, labels, metrics, networks, batch_size,
                                        progress=lambda done: progress.advance(task, done))
    presets = check_presets(results)

    table = Table(title=f"calibration · {data.name} (n={count})")
    for column in TABLE_COLUMNS:
        table.add_column(column, justify="left" if column == "distance" else "right")
    for row in table_rows(results):
        table.add_row(*row)
    Console().print(table)
    for row in presets:
        mark = "[green]below[/green]" if row["below"] else "[red]NOT below[/red]"
        Console().print(f"preset {row['preset']}: {row['metric']} <= {row['budget']:.4g} is {mark} "
                        f"the largest budget {row['largest_budget']:.4g}")

    out = Path(out_dir) if out_dir else default_out_dir("calibrate")
    png = plot_histograms(results, out / "histograms.png", presets)
    settings = {"data": data_name, "split": split, "metrics": list(metrics), "n": count, "model": model_spec,
                "lpips_net": lpips_net, "batch_size": batch_size}
    summary = {"metrics": {metric: result.to_json() for metric, result in results.items()}, "presets": presets}
    record = make_record("calibrate", settings, torch_device, {"total": time.perf_counter() - started}, summary)
    path = write_record(out, record)
    Console().print(f"wrote {path} and {png}")
