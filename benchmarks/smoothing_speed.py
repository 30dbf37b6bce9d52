"""Randomized smoothing: the cost of the Monte-Carlo machinery, and what it certifies on the bundled CNN.

    python benchmarks/smoothing_speed.py [--threads 1] [--examples 100] [--samples 1000] [--write]

Measures, on this machine (``--write`` rewrites the ``smoothing_speed`` section of ``benchmarks/RESULTS.md``):

1. votes under noise (:func:`mistered.certify.smoothing.sample_counts`: per-example noise streams, draws of several
   examples packed into one forward pass) against bare forward passes over pre-drawn noise, on ``mnist-cnn``;
   target ratio <= 1.1; and that the votes do not change with the draws' batch size;
2. certified L2 accuracy of the bundled ``mnist-cnn`` fine-tuned two epochs on the bundled training images with and
   without Gaussian noise (``--method smoothing`` vs ``standard``), at sigma 0.25 and 0.5, CERTIFY with
   ``n0 = 100``, ``n = --samples``, ``alpha = 0.001`` (so the largest provable radius is about 2.4 sigma at
   n = 1000).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine_description, update_section  # noqa: E402

from mistered.certify.smoothing import sample_counts, smooth  # noqa: E402
from mistered.data import load_dataset  # noqa: E402
from mistered.models import load_model  # noqa: E402
from mistered.train import StandardObjective, TrainConfig, build_objective, fit  # noqa: E402

SIGMAS = (0.25, 0.5)
RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


def overhead(model: torch.nn.Module, x: torch.Tensor, draws: int, batch: int,
             repeat: int = 3) -> tuple[float, float, bool]:
    """Best seconds of ``sample_counts`` and of bare forward passes over the same number of noisy inputs, measured
    alternately (both see the same load) after a warm-up; and whether the votes are the same at another batch."""
    model.eval()
    keys = list(range(len(x)))
    noise = torch.randn(draws, *x.shape[1:], generator=torch.Generator().manual_seed(0)) * 0.25

    def bare() -> None:
        with torch.no_grad():
            for image in x:
                for s in range(0, draws, batch):
                    model(image + noise[s : s + batch]).argmax(dim=1)

    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat + 1):
        for fn, bucket in ((lambda: sample_counts(model, x, keys, draws, 0.25, batch), times[0]), (bare, times[1])):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    counts = sample_counts(model, x, keys, draws, 0.25, batch)
    same = torch.equal(counts, sample_counts(model, x, keys, draws, 0.25, batch // 3 + 1))
    return min(times[0][1:]), min(times[1][1:]), same


def fine_tune(method: str, sigma: float, train) -> tuple[torch.nn.Module, float]:
    """The bundled mnist-cnn after two epochs of ``method`` (deterministic), and the seconds it took."""
    model = copy.deepcopy(load_model("mnist-cnn", device="cpu"))
    generator = torch.Generator().manual_seed(0)
    objective = StandardObjective() if method == "standard" else build_objective(
        "smoothing", sigma=sigma, generator=generator)
    config = TrainConfig(epochs=2, batch_size=64, lr=0.01, schedule="cosine", eval_n=0, seed=0)
    start = time.perf_counter()
    fit(model, objective, (train.images, train.labels), (train.images[:64], train.labels[:64]), config,
        generator=generator, progress=False)
    return model.eval(), time.perf_counter() - start


def overhead_table() -> list[str]:
    x = load_dataset("mnist-5k", "test").images[:4]
    ours, bare, same = overhead(load_model("mnist-cnn", device="cpu"), x, 1000, 500)
    return ["Votes under noise vs bare forward passes over pre-drawn noise (mnist-cnn, 4 images x 1000 draws, 500 per "
            "pass, best of 3; target <= 1.1):", "",
            "| votes (s) | bare forwards (s) | ratio | draws/s | same votes at batch 167 |", "|---|---|---|---|---|",
            f"| {ours:.2f} | {bare:.2f} | {ours / bare:.3f} | {4000 / ours:.0f} | {same} |"]


def accuracy_table(examples: int, samples: int) -> list[str]:
    test, train = load_dataset("mnist-5k", "test"), load_dataset("mnist-5k", "train")
    x, y = test.images[:examples], test.labels[:examples]
    lines = [f"Certified L2 accuracy, {examples} bundled test images, CERTIFY n0 = 100, n = {samples}, alpha = 0.001 "
             "(bundled mnist-cnn fine-tuned 2 epochs on the 4000 bundled training images):", "",
             "| fine-tuning | sigma | train (s) | certify (s) | abstain | " + " | ".join(f"r {r:g}" for r in RADII)
             + " |", "|---|---|---|---|---|" + "---|" * len(RADII)]
    for sigma in SIGMAS:
        for method in ("standard", "smoothing"):
            model, trained = fine_tune(method, sigma, train)
            cert = smooth(model, sigma, batch=1000).certify(x, y, n0=100, n=samples, alpha=0.001)
            cells = " | ".join(f"{cert.certified_accuracy(r):.2f}" for r in RADII)
            lines.append(f"| {method} | {sigma:g} | {trained:.0f} | {cert.seconds:.0f} | "
                         f"{cert.status.count('abstain')} | {cells} |")
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--write", action="store_true", help="rewrite the section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = (f"python benchmarks/smoothing_speed.py --threads {args.threads} --examples {args.examples} "
               f"--samples {args.samples}")
    lines = [f"Machine: {machine_description()}. Command: `{command}`.", "", *overhead_table(), "",
             *accuracy_table(args.examples, args.samples)]
    text = "## Randomized smoothing (`benchmarks/smoothing_speed.py`)\n" + "\n".join(lines)
    print(text)
    if args.write:
        update_section("smoothing_speed", text)


if __name__ == "__main__":
    main()
