"""``mistered calibrate``: how far apart a data set's images are under each distance; which budgets mean "the same image"."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import torch

from ..errors import InvalidInputError
from ..progress import Progress
from .common import load_feature_extractor
from .options import config_option, lpips_net_option, quiet_option, resolved_config, write_config

__all__ = ["calibrate"]

_DEFAULT_METRICS = ("lpips", "ssim")


def _feature_networks(metrics: tuple[str, ...], model_spec: str | None, lpips_net: str | None,
                      device: torch.device) -> dict[str, Any]:
    """The networks of ``lpips-self`` (the model) and ``lpips-net`` (``--lpips-net file.py:Name``), loaded only if
    asked."""
    networks: dict[str, Any] = {}
    if "lpips-self" in metrics:
        from ..models import load_model

        networks["lpips-self"] = load_model(model_spec, device=device).eval()
    if "lpips-net" in metrics:
        if lpips_net is None:
            raise InvalidInputError("--metric lpips-net needs --lpips-net file.py:Name (a feature extractor)")
        networks["lpips-net"] = load_feature_extractor(lpips_net, device)
    elif lpips_net is not None:
        raise InvalidInputError("--lpips-net is only used with --metric lpips-net")
    return networks


@click.command("calibrate")
@click.option("--data", default="mnist-5k", show_default=True,
              help="Dataset: a bundled or torchvision name, an image folder, .npz or .pt.")
@click.option("--split", default="test", show_default=True, help="Which split to measure.")
@click.option("--metric", multiple=True,
              help="Distance or similarity to measure; repeat for several: lpips, lpips-vgg, lpips-self, lpips-net, "
                   "ssim, ms-ssim, dssim, ms-dssim, linf, l2, l1 [default: lpips and ssim].")
@click.option("--n", default=1000, show_default=True, type=int,
              help="Images measured (the first n); pairs grow as n².")
@click.option("--model", default=None, help="Model of lpips-self [default: the bundled CNN].")
@lpips_net_option()
@click.option("--batch-size", default=256, show_default=True, type=int, help="Images per network call.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 or auto.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: ./mistered-out/calibrate-<time>/].")
@config_option()
@quiet_option()
def calibrate(**options: Any) -> None:
    """Measure each distance between a data set's images: nearest other-class and same-class pairs, benign changes.

    A budget should allow the benign changes and stay below the 1st percentile of the nearest
    different-class pairs ("largest budget"); every preset's budget is checked against it.
    """
    from rich.console import Console

    from .. import calibrate as calibration
    from ..calibrate.report import check_presets, plot_histograms
    from ..data import load_dataset, materialize, select
    from ..device import resolve_device
    from ..results import default_out_dir, make_record, write_record

    n, batch_size = options["n"], options["batch_size"]
    for name, value in (("--n", n), ("--batch-size", batch_size)):
        if value < 2:
            raise InvalidInputError(f"{name} must be at least 2, got {value}")
    metrics = tuple(dict.fromkeys(options["metric"] or _DEFAULT_METRICS))
    distances = {metric: calibration.distance_name(metric) for metric in metrics}  # validates the names
    started = time.perf_counter()
    torch_device = resolve_device(options["device"])
    data = materialize(select(load_dataset(options["data"], options["split"]), n=n))
    networks = _feature_networks(tuple(distances.values()), options["model"], options["lpips_net"], torch_device)
    images, labels = data.images.to(torch_device), data.labels.to(torch_device)

    count = images.shape[0]
    work = sum(count * (count - 1) // 2 if d in ("dssim", "ms-dssim") else count for d in distances.values())
    with Progress(f"calibrating {', '.join(metrics)} on {count} images", work, unit="measurements",
                  quiet=options["quiet"]) as bar:
        results = calibration.calibrate(images, labels, metrics, networks, batch_size, progress=bar.advance)
    presets = check_presets(results)
    console = Console()
    _print_table(console, results, presets, f"calibration · {data.name} (n={count})")

    out = Path(options["out"]) if options["out"] else default_out_dir("calibrate")
    png = plot_histograms(results, out / "histograms.png", presets)
    settings = {"data": options["data"], "split": options["split"], "metrics": list(metrics), "n": count,
                "model": options["model"], "lpips_net": options["lpips_net"], "batch_size": batch_size}
    summary = {"metrics": {metric: result.to_json() for metric, result in results.items()}, "presets": presets}
    record = make_record("calibrate", settings, torch_device, {"total": time.perf_counter() - started}, summary)
    path = write_record(out, record)
    write_config(out, resolved_config(click.get_current_context(), {"metric": list(metrics)}))
    console.print(f"wrote {path}, {png} and {out / 'config.yaml'}")


def _print_table(console: Any, results: dict[str, Any], presets: list[dict[str, Any]], title: str) -> None:
    """The calibration table and one line per preset: is its budget below the largest budget?"""
    from rich.table import Table

    from ..calibrate.report import TABLE_COLUMNS, table_rows

    table = Table(title=title)
    for column in TABLE_COLUMNS:
        table.add_column(column, justify="left" if column == "distance" else "right")
    for row in table_rows(results):
        table.add_row(*row)
    console.print(table)
    for row in presets:
        mark = "[green]below[/green]" if row["below"] else "[red]NOT below[/red]"
        console.print(f"preset {row['preset']}: {row['metric']} <= {row['budget']:.4g} is {mark} "
                      f"the largest budget {row['largest_budget']:.4g}")
