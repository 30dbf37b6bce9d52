"""Seconds per epoch of adversarial training (PGD, k steps) against standard training, in one run.

The ideal cost of adversarial training is ``(k + 1) x`` standard (k attack forward/backward passes
plus the training step); the ratio measured against that ideal shows the overhead (or, with PGD's
early stop on examples already fooled, the saving). Writes the ``train_speed`` section of
``benchmarks/RESULTS.md``. Run: ``python benchmarks/train_speed.py [--n-train N] [--steps K]``.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import torch

from mistered.data import load_dataset
from mistered.device import describe_device, resolve_device
from mistered.models import build_model
from mistered.threats import parse_threat
from mistered.train import AdversarialObjective, StandardObjective, TrainConfig, fit

__all__: list[str] = []


def _epoch_seconds(objective, train, device, batch_size: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = build_model("mnist-cnn")
    tiny = (train[0][:2], train[1][:2])  # the per-epoch evaluation is not what is timed
    start = time.perf_counter()
    fit(model, objective, train, tiny, TrainConfig(epochs=1, batch_size=batch_size, seed=seed), progress=False)
    return time.perf_counter() - start


def _write_section(text: str) -> None:
    path = Path(__file__).with_name("RESULTS.md")
    pattern = re.compile(r"(<!-- train_speed:start -->\n).*?(<!-- train_speed:end -->)", re.S)
    path.write_text(pattern.sub(lambda m: m.group(1) + text + "\n" + m.group(2), path.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--steps", type=int, nargs="+", default=[3, 7])
    parser.add_argument("--threat", default="linf")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = load_dataset("mnist-5k", "train").subset(args.n_train)
    train = (data.images.to(device), data.labels.to(device))
    threat = parse_threat(args.threat)
    _epoch_seconds(StandardObjective(), (train[0][:128], train[1][:128]), device, args.batch_size, 0)  # warm-up
    standard = min(_epoch_seconds(StandardObjective(), train, device, args.batch_size, 0) for _ in range(2))
    rows = [f"| standard | - | - | {standard:.2f} | 1.00 | 1 | - |"]
    for k in args.steps:
        for early_stop in (False, True):
            generator = torch.Generator().manual_seed(0)
            objective = AdversarialObjective(threat, steps=k, generator=generator, early_stop=early_stop)
            seconds = _epoch_seconds(objective, train, device, args.batch_size, 0)
            ratio = seconds / standard
            name = f"adversarial PGD-{k} ({threat.name})"
            stop = "yes" if early_stop else "no"
            rows.append(f"| {name} | {k} | {stop} | {seconds:.2f} | {ratio:.2f} | {k + 1} | {ratio / (k + 1):.2f} |")
    text = (
        f"One epoch of `mnist-cnn` on {args.n_train} bundled MNIST training digits, batch {args.batch_size}, "
        f"on {describe_device(device)}; both measured in the same run "
        f"(`python benchmarks/train_speed.py --n-train {args.n_train} --steps {' '.join(map(str, args.steps))}`).\n\n"
        "| training | attack steps k | early stop | seconds / epoch | × standard | ideal × (k + 1) | measured / ideal |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Without early stop every example takes all k steps: measured / ideal is the attack's overhead (its clean and "
        "final eval-mode forward passes, validation, best-so-far bookkeeping) against the k+1 ideal, partly offset by "
        "its backward passes needing input gradients only. With early stop (the default) examples leave the search "
        "once misclassified, so the cost depends on how robust the model already is; from scratch it is far below "
        "the ideal."
    )
    _write_section(text)
    print(text)


if __name__ == "__main__":
    main()
