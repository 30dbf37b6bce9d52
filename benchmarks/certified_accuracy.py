"""Certified accuracy of the bundled MNIST models and of a CIFAR-size ResNet under IBP, CROWN, α-CROWN and randomized
smoothing, side by side: what each certificate proves and what it costs.

    OMP_NUM_THREADS=1 python benchmarks/certified_accuracy.py [--quick] [--models mnist-cnn,...] [--l2-crown]
        [--record]

For every model, on the first ``n`` test images (the same images for every method):

* IBP, CROWN and α-CROWN (20 iterations, intermediate bounds CROWN's) at a few L∞ radii
  (:func:`mistered.certify.bounds.certify_bounds`), and with ``--l2-crown`` CROWN at a few L2 radii (dense input
  forms for every refined neuron: by far the costliest row on the convolutional nets);
* randomized smoothing (Cohen et al. 2019) at the same L2 radii: ``sigma`` (the noise level the model is judged
  at), ``n0 = 100`` selection and ``n = 1000`` estimation draws, ``alpha = 0.001``. With 1000 draws the largest
  radius smoothing can certify is ``sigma * Phi^-1(0.001 ** (1 / 1000)) ~ 2.46 sigma``; its certificate holds with
  probability ``1 - alpha`` (the bound methods' are deterministic).

Each cell is the fraction of the ``n`` images that are correctly classified and certified at that radius; the times
are the wall and CPU time of the certification call divided by ``n`` (a radius is only tried on images certified at
the smaller ones, so the time covers the whole row; on a shared machine CPU time is the steadier figure), the memory
the growth of the process's peak resident set during it.

The CIFAR-size ResNet (``cifar-resnet``, ``mistered/models/resnet.py``) has no CIFAR data offline: it is trained
here, from seed 0, on Fashion-MNIST (the Debian copy in ``/usr/share/datasets/fashion-mnist``) resized to 32x32
(bilinear, antialiased) with the grey channel repeated three times, by Gaussian noise augmentation
(:class:`mistered.train.smoothing.GaussianNoiseObjective`, ``sigma = 0.25``): SGD, the loop's defaults otherwise.
The exact recipe (examples, epochs, seconds) is printed in the table's notes.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mistered.certify.bounds import AlphaOptions, certify_bounds
from mistered.certify.graph import trace_graph
from mistered.certify.smoothing import smooth
from mistered.data import load_dataset, materialize
from mistered.memory import peak_rss_growth
from mistered.models.loader import load_model
from mistered.models.resnet import cifar_resnet
from mistered.train.loop import TrainConfig, fit
from mistered.train.smoothing import GaussianNoiseObjective

__all__: list[str] = []

SIGMA = 0.25
SMOOTHING = {"n0": 100, "n": 1000, "alpha": 0.001}


@dataclass
class Case:
    """One model of the table: how to get it and its images, and the radii it is judged at."""

    name: str
    model: Callable[[], nn.Module]
    data: Callable[[int], tuple[torch.Tensor, torch.Tensor]]
    n: int
    linf: tuple[float, ...]
    l2: tuple[float, ...]


def mnist_test(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test digits of the bundled MNIST subset, ``(n, 1, 28, 28)`` and ``(n,)``."""
    data = materialize(load_dataset("mnist-5k", "test"))
    return data.images[:n], data.labels[:n]


def fashion32(split: str, n: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` Fashion-MNIST images from ``offset``, resized to ``(n, 3, 32, 32)`` (grey repeated), and labels."""
    data = load_dataset("fashion-mnist", split)
    images = torch.stack([data[i][0] for i in range(offset, offset + n)])
    labels = torch.tensor([data[i][1] for i in range(offset, offset + n)])
    images = F.interpolate(images, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    return images.clamp(0, 1).expand(-1, 3, -1, -1).contiguous(), labels


def train_resnet(examples: int, epochs: int) -> tuple[nn.Module, str]:
    """``cifar-resnet`` (width 8) trained with Gaussian noise augmentation on Fashion-MNIST at 32x32; its recipe."""
    torch.manual_seed(0)
    model = cifar_resnet(width=8)
    train = fashion32("train", examples)
    held_out = fashion32("test", 500, offset=5000)
    config = TrainConfig(epochs=epochs, batch_size=128, lr=0.05, eval_n=0, seed=0)
    start = time.perf_counter()
    result = fit(model, GaussianNoiseObjective(SIGMA), train, held_out, config, progress=False)
    seconds = time.perf_counter() - start
    accuracy = result.history[-1]["clean_acc"] if result.history else float("nan")
    recipe = (f"cifar-resnet (width 8, {sum(p.numel() for p in model.parameters()):,} parameters), seed 0, trained "
              f"here on the first {examples:,} Fashion-MNIST training images at 32x32x3 with Gaussian noise "
              f"augmentation sigma = {SIGMA} for {epochs} epochs ({result.steps} SGD steps, batch 128, lr 0.05 "
              f"cosine, momentum 0.9, weight decay 5e-4) in {seconds:.0f} s on one thread; held-out clean accuracy "
              f"{accuracy:.3f} on 500 test images (not those certified)")
    return model.eval(), recipe


def measured(fn: Callable[[], object]) -> tuple[object, dict]:
    """``(fn(), {"wall", "cpu": seconds, "peak": peak resident-memory growth in bytes or None})``."""
    out: dict = {}

    def run() -> None:
        start, cpu = time.perf_counter(), time.process_time()
        out["value"] = fn()
        out["wall"], out["cpu"] = time.perf_counter() - start, time.process_time() - cpu

    out["peak"] = peak_rss_growth(run)
    return out.pop("value"), out


def _row(case: str, method: str, norm: str, radii: tuple[float, ...], cert, cost: dict) -> str:
    n = len(cert.labels)
    cells = " | ".join(f"{cert.certified_accuracy(r):.2f}" for r in radii)
    shown = ", ".join(_radius(r, norm) for r in radii)
    memory = "n/a" if cost["peak"] is None else f"{cost['peak'] / 2**20:.0f}"
    clean = float((cert.predictions == cert.labels).float().mean())
    return (f"| {case} | {method} | {norm} {shown} | {cells} | {clean:.2f} | {cost['wall'] / n:.3f} | "
            f"{cost['cpu'] / n:.3f} | {memory} |")


def _radius(r: float, norm: str) -> str:
    return f"{r * 255:g}/255" if norm == "linf" else f"{r:g}"


def case_rows(case: Case, quick: bool, l2_crown: bool = True) -> list[str]:
    """The table rows of one model: the bound methods in L∞, then smoothing and (``l2_crown``) CROWN in L2."""
    model = case.model()
    x, y = case.data(case.n)
    graph = trace_graph(model, tuple(x.shape[1:]))
    rows = []
    alpha = AlphaOptions(iterations=20)
    runs = [(m, "linf", case.linf) for m in ("ibp", "crown", "alpha-crown")] + [("smoothing", "l2", case.l2)]
    runs += [("crown", "l2", case.l2)] if l2_crown else []
    draws = dict(SMOOTHING, n=100) if quick else SMOOTHING
    smoothed = smooth(model, SIGMA, batch=500)
    for method, norm, radii in runs:
        if method == "smoothing":
            cert, cost = measured(lambda: smoothed.certify(x, y, generator=torch.Generator().manual_seed(0), **draws))
            method = f"smoothing sigma={SIGMA}"
        else:
            cert, cost = measured(lambda: certify_bounds(graph, x, y, eps=list(radii), norm=norm, method=method,
                                                         alpha=alpha))
        rows.append(_row(case.name, method, norm, radii, cert, cost))
        logging.info(rows[-1])
    return rows


def cases(quick: bool, resnet: Callable[[], nn.Module]) -> list[Case]:
    """The models of the table, with ``n`` and radii sized so that the whole run takes about 15 minutes."""
    small = 2 if quick else 1
    bundled = lambda name: (lambda: load_model(name, device="cpu"))  # noqa: E731
    linf_mnist, l2_mnist = (1 / 255, 4 / 255, 8 / 255), (0.1, 0.25, 0.5)
    resnet_case = Case("cifar-resnet (noise-trained, Fashion-MNIST 32x32x3)", resnet, lambda n: fashion32("test", n),
                       6 // small, (0.5 / 255, 1 / 255, 2 / 255), (0.1, 0.25, 0.5))
    return [  # cheapest first
        Case("mnist-fc", bundled("mnist-fc"), mnist_test, 100 // small, linf_mnist, l2_mnist),
        Case("mnist-linf-dist", bundled("mnist-linf-dist"), mnist_test, 100 // small, linf_mnist, l2_mnist),
        Case("mnist-linf-dist-hybrid", bundled("mnist-linf-dist-hybrid"), mnist_test, 100 // small, linf_mnist,
             l2_mnist),
        resnet_case,
        Case("mnist-lmt", bundled("mnist-lmt"), mnist_test, 10 // small, linf_mnist, l2_mnist),
        Case("mnist-cnn", bundled("mnist-cnn"), mnist_test, 10 // small, linf_mnist, l2_mnist),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="half the images, a short training, 100 draws")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", help="comma-separated model names to run (default: all)")
    parser.add_argument("--l2-crown", action="store_true",
                        help="also CROWN's L2 rows (the costliest: 150 s per ResNet image, ~20 minutes in all)")
    parser.add_argument("--record", action="store_true", help="write the certified_accuracy section of RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    trained: dict = {}

    def resnet() -> nn.Module:
        trained["model"], trained["recipe"] = train_resnet(2000 if args.quick else 10000, 1 if args.quick else 2)
        return trained["model"]

    lines = ["| model | method | norm, radii | certified at radius 1 | radius 2 | radius 3 | clean | "
             "wall s / example | CPU s / example | peak MB |", "|" + "---|" * 10]
    chosen = None if args.models is None else set(args.models.split(","))
    for case in cases(args.quick, resnet):
        if chosen is None or case.name.split()[0] in chosen:
            lines += case_rows(case, args.quick, args.l2_crown)
    notes = [
        f"n images per model: the first of the test split (mnist-cnn and mnist-lmt 10, the cheap nets 100, the ResNet "
        f"6{'; halved by --quick' if args.quick else ''}; few, to keep the run short: read the cells as "
        "estimates with that resolution). Bound methods: `certify_bounds(eps=[...])`, α-CROWN with "
        f"20 iterations; smoothing: sigma {SIGMA}, n0 {SMOOTHING['n0']}, n {SMOOTHING['n']}, alpha "
        f"{SMOOTHING['alpha']} (its certified accuracy holds with probability 1 - alpha per image). "
        "L∞ radii in pixel units of [0, 1] images, L2 radii in the same units.",
        f"ResNet: {trained.get('recipe', 'not trained')}.",
        f"Whole run: {time.perf_counter() - start:.0f} s.",
    ]
    text = "\n".join(lines + [""] + notes)
    print(text)
    if args.record:
        from _report import machine_description, update_section

        update_section("certified_accuracy", "## Certified accuracy: IBP / CROWN / α-CROWN / smoothing "
                       f"(`benchmarks/certified_accuracy.py`)\n\n{machine_description()}\n\n{text}\n")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
