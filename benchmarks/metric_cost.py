"""Cost of the perceptual metrics and of a perceptual-budget step, relative to the bundled CNN.

Measures, on 64 bundled MNIST test digits (1x28x28), the median time of a forward+backward (gradient
w.r.t. the first batch) of: the bundled CNN (cross-entropy), LPIPS-alex, LPIPS-vgg, mistered's SSIM and
MS-SSIM, and ``piq.ssim``; then one PGD step under ``linf(0.3)``, one of the ``combined`` chain without
its perceptual bound, and one of the ``combined`` preset (flow -> affine -> L∞ under the hard LPIPS
bound), each step being perturbation forward + model forward/backward + ``step_`` + ``project_``, and how
many LPIPS evaluations (images measured, per image) a projection of the combined step costs.

Wall time, median of 20 runs (rounds interleaved over the cases), for each ``--threads`` count (default
1 and 2): the machine may be shared, so medians of interleaved rounds, not single runs.
Run: ``python benchmarks/metric_cost.py [--threads 1 2]`` (rewrites the ``metric_cost`` section of RESULTS.md).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from _report import machine_description, update_section

from mistered._compat import import_torchvision
from mistered.data import load_dataset
from mistered.metrics import distance, ms_ssim, ssim
from mistered.models import load_model
from mistered.threats import PRESETS, parse_threat

import_torchvision()
import piq  # noqa: E402  (after import_torchvision)

BATCH, WARMUP, REPEATS = 64, 3, 20


def median_seconds(cases: dict[str, Callable[[], None]]) -> dict[str, float]:
    """Median wall time of each case over ``REPEATS`` interleaved rounds (after ``WARMUP`` rounds)."""
    for _ in range(WARMUP):
        for fn in cases.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(REPEATS):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def forward_backward(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor):
    def run() -> None:
        xr = x.clone().requires_grad_(True)
        fn(xr, y).sum().backward()

    return run


def attack_step(model: torch.nn.Module, spec: str, x: torch.Tensor, labels: torch.Tensor, counter: list[int]):
    perturbation = parse_threat(spec).perturbation(x)
    if hasattr(perturbation, "_measure"):
        measure = perturbation._measure

        def counted(y, rows):
            counter[0] += y.shape[0]
            return measure(y, rows)

        perturbation._measure = counted
    perturbation.random_init_(torch.Generator().manual_seed(0))

    def run() -> None:
        perturbation.zero_grad(set_to_none=True)
        F.cross_entropy(model(perturbation(x)), labels).backward()
        perturbation.step_(0.25).project_()

    return run


def measure(threads: int, model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> list[str]:
    torch.set_num_threads(threads)
    x2 = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    metrics = {
        "CNN forward+backward": forward_backward(lambda a, _b: F.cross_entropy(model(a), labels, reduction="none"), x, x2),
        "LPIPS-alex forward+backward": forward_backward(lambda a, b: distance("lpips", a, b), x, x2),
        "LPIPS-vgg forward+backward": forward_backward(lambda a, b: distance("lpips-vgg", a, b), x, x2),
        "mistered SSIM forward+backward": forward_backward(ssim, x, x2),
        "mistered MS-SSIM forward+backward": forward_backward(ms_ssim, x, x2),
        "piq.ssim forward+backward": forward_backward(lambda a, b: piq.ssim(a, b, reduction="none"), x, x2),
    }
    seconds = median_seconds(metrics)
    base = seconds["CNN forward+backward"]
    combined = parse_threat("combined")
    calls = [0]
    steps = {"PGD step, linf(0.3)": attack_step(model, "linf(0.3)", x, labels, [0]),
             "chain step, combined without its LPIPS bound": attack_step(model, combined.threat.name, x, labels, [0]),
             "combined step (hard LPIPS projection)": attack_step(model, "combined", x, labels, calls)}
    step_seconds = median_seconds(steps)
    evaluations = calls[0] / BATCH / (WARMUP + REPEATS)
    pgd = step_seconds["PGD step, linf(0.3)"]
    return [
        "",
        f"**{threads} torch thread(s)**",
        "",
        "| operation | ms | × CNN fwd+bwd |",
        "|---|---:|---:|",
        *(f"| {name} | {1e3 * s:.2f} | {s / base:.2f} |" for name, s in seconds.items()),
        "",
        "| step | ms | × PGD step |",
        "|---|---:|---:|",
        *(f"| {name} | {1e3 * s:.2f} | {s / pgd:.2f} |" for name, s in step_seconds.items()),
        "",
        f"LPIPS evaluations per image and projection of the combined step: {evaluations:.2f} (the whole batch once "
        "at t = 1, then one guess per round for the images still searched).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    data = load_dataset("mnist-5k", "test").subset(BATCH)
    model = load_model(None, device="cpu").eval().requires_grad_(False)
    lines = [f"Machine: {machine_description()}. Model: bundled mnist-cnn. Batch {BATCH} bundled test digits "
             f"(1x28x28); `combined` = `{PRESETS['combined']}`. Median wall time of {REPEATS} interleaved rounds; "
             "shared machine, so timings are noisy."]
    for threads in args.threads:
        lines += measure(threads, model, data.images, data.labels)
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        update_section("metric_cost", report)


if __name__ == "__main__":
    main()
