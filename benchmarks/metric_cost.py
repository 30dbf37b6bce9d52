"""Cost of the perceptual metrics and of a perceptual-budget step, relative to the bundled CNN.

Measures, on a batch of 64 MNIST images (1x28x28), the median time of a forward+backward of:
the bundled CNN, LPIPS-alex, mistered's SSIM and ``piq.ssim``; then one PGD step under ``linf(0.3)``
and one of the bare chain against one step of the ``combined`` threat (flow -> affine -> linf under ``lpips<=0.1``), each step
being perturbation forward + model forward/backward + ``step_`` + ``project_``.

Times are process CPU time with one torch thread (steadier than wall time on a shared machine).
Run: ``python benchmarks/metric_cost.py`` (rewrites the ``metric_cost`` section of RESULTS.md).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from _report import machine_description, update_section

from mistered._compat import import_torchvision
from mistered.data import load_dataset
from mistered.errors import MisteredError
from mistered.metrics import get_lpips, ssim
from mistered.models import build_model, load_model
from mistered.threats import parse_threat

import_torchvision()
import piq  # noqa: E402  (after import_torchvision)

BATCH, WARMUP, REPEATS = 64, 3, 20


def median_seconds(fn) -> float:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(REPEATS):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def forward_backward(fn, x: torch.Tensor, y: torch.Tensor):
    def run() -> None:
        xr = x.clone().requires_grad_(True)
        fn(xr, y).sum().backward()

    return run


def attack_step(model: torch.nn.Module, spec: str, x: torch.Tensor, labels: torch.Tensor, counter: list[int]):
    perturbation = parse_threat(spec).perturbation(x)
    if hasattr(perturbation, "_measure"):
        measure = perturbation._measure

        def counted(y, rows):
            counter[0] += 1
            return measure(y, rows)

        perturbation._measure = counted
    perturbation.random_init_(torch.Generator().manual_seed(0))

    def run() -> None:
        perturbation.zero_grad(set_to_none=True)
        F.cross_entropy(model(perturbation(x)), labels).backward()
        perturbation.step_(0.1).project_()

    return run


def main() -> None:
    torch.set_num_threads(1)
    data = load_dataset("mnist-5k", "test").subset(BATCH)
    x, labels = data.images, data.labels
    x2 = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    try:
        model = load_model(None, device="cpu")
        model_name = "bundled mnist-cnn"
    except MisteredError:
        model = build_model("mnist-cnn").eval()
        model_name = "mnist-cnn architecture (untrained: bundled weights not loadable)"
    model.requires_grad_(False)
    lpips = get_lpips("cpu")

    rows = {
        "CNN forward+backward": forward_backward(lambda a, _b: F.cross_entropy(model(a), labels, reduction="none"), x, x2),
        "LPIPS-alex forward+backward": forward_backward(lpips, x, x2),
        "mistered SSIM forward+backward": forward_backward(ssim, x, x2),
        "piq.ssim forward+backward": forward_backward(lambda a, b: piq.ssim(a, b, reduction="none"), x, x2),
    }
    seconds = {name: median_seconds(fn) for name, fn in rows.items()}
    base = seconds["CNN forward+backward"]

    pgd_calls, combined_calls = [0], [0]
    pgd = median_seconds(attack_step(model, "linf(0.3)", x, labels, pgd_calls))
    chain = median_seconds(attack_step(model, "flow(0.05)>>affine(10deg,0.1)>>linf(0.3)", x, labels, [0]))
    combined = median_seconds(attack_step(model, "combined", x, labels, combined_calls))
    evaluations = combined_calls[0] / (WARMUP + REPEATS + 1)  # +1: random_init_ projects once

    lines = [
        f"Machine: {machine_description()}. Model: {model_name}. Batch {BATCH} x 1x28x28, "
        f"median CPU time of {REPEATS} runs.",
        "",
        "| operation | ms | × CNN fwd+bwd |",
        "|---|---:|---:|",
        *(f"| {name} | {1e3 * s:.2f} | {s / base:.2f} |" for name, s in seconds.items()),
        "",
        "| step | ms | × PGD step |",
        "|---|---:|---:|",
        f"| PGD step, linf(0.3) | {1e3 * pgd:.2f} | 1.00 |",
        f"| chain step, flow>>affine>>linf (no perceptual budget) | {1e3 * chain:.2f} | {chain / pgd:.2f} |",
        f"| combined step, flow>>affine>>linf under lpips<=0.1 | {1e3 * combined:.2f} | {combined / pgd:.2f} |",
        "",
        f"LPIPS evaluations per projection of the combined step: {evaluations:.2f} (batch-sized calls, "
        "the first on the whole batch, later ones on the violators only).",
    ]
    report = "\n".join(lines)
    print(report)
    update_section("metric_cost", report)


if __name__ == "__main__":
    main()
