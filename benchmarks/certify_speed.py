"""Fast certification: cost against plain evaluation, the L∞-dist layer against a matmul, certified accuracies.

    python benchmarks/certify_speed.py [--fmnist CHECKPOINT] [--threads 2]

Measures, on this machine, and rewrites the ``certify_speed`` section of ``benchmarks/RESULTS.md``:

1. certification pass / plain evaluation pass time (LMT with its constant computed once; L∞-dist), target <= 1.05;
2. L∞-dist layer forward+backward / same-shape matmul forward+backward (target <= 3 on CPU), and the largest
   intermediate tensor against the naive ``(B, out, in)`` broadcast;
3. certified L2 accuracy of the bundled LMT model beside the standard bundled CNN (LMT bound on both);
4. with ``--fmnist``, the certified accuracy at eps = 0.1 of an L∞-dist checkpoint on Fashion-MNIST
   (trained by ``mistered train --method linf-dist``; its command is read from the checkpoint).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import time
from pathlib import Path

import torch

from mistered.models.linf_dist.layers import linf_dist
from mistered.certify.lipschitz.linf_dist import certify_linf_dist
from mistered.certify.lipschitz.lmt import LMTCertifier
from mistered.data import load_dataset
from mistered.io import atomic_write_text
from mistered.models import load_model, read_checkpoint
from mistered.memory import LargestTensor, peak_rss_growth

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _time_pair(first, second, repeat: int = 9) -> tuple[float, float]:
    """Best wall times of two functions measured alternately, so that both see the same machine load."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def certification_overhead(data) -> list[str]:
    x, y = data.images, data.labels
    rows = []
    lmt_model = load_model("mnist-lmt", device="cpu")
    certifier = LMTCertifier(lmt_model)
    start = time.perf_counter()
    certifier.constant(tuple(x.shape[1:]))
    once = time.perf_counter() - start
    with torch.no_grad():
        plain, cert = _time_pair(lambda: lmt_model(x).argmax(dim=1), lambda: certifier.certify(x, y))
    rows.append(f"| LMT (mnist-lmt, n={len(y)}) | {plain * 1e3:.1f} | {cert * 1e3:.1f} | {cert / plain:.3f} | constant once: {once:.1f} s |")
    linf_model = load_model("mnist-linf-dist", device="cpu")
    with torch.no_grad():
        plain, cert = _time_pair(lambda: linf_model(x).argmax(dim=1), lambda: certify_linf_dist(linf_model, x, y))
    rows.append(f"| L∞-dist (mnist-linf-dist, n={len(y)}) | {plain * 1e3:.1f} | {cert * 1e3:.1f} | {cert / plain:.3f} | |")
    return rows


def layer_speed(batch: int = 128, inp: int = 784, out: int = 1024) -> list[str]:
    rows = []
    x = torch.rand(batch, inp, requires_grad=True)
    w = torch.randn(out, inp, requires_grad=True)
    naive_bytes = batch * out * inp * 4
    start = time.perf_counter()
    linf_dist(x, w, compiled=True)  # first call compiles (or falls back with a warning)
    compile_s = time.perf_counter() - start
    cases = [("p = inf", math.inf, False), (f"p = inf, compiled (first call {compile_s:.1f} s)", math.inf, True)]
    cases += [(f"p = {p:g}", p, False) for p in (8.0, 64.0, 512.0)]  # the training schedule's range (integer p)
    for label, p, compiled in cases:
        matmul, ours = _time_pair(  # interleaved: both see the same load
            lambda: (x @ w.T).sum().backward(), lambda: linf_dist(x, w, p, compiled=compiled).sum().backward(), repeat=5
        )
        if compiled:  # inductor's buffers are invisible to a dispatch mode: the peak RSS growth instead
            growth = peak_rss_growth(lambda: linf_dist(x, w, p, compiled=True).sum().backward())
            if growth is None:
                memory = "not measurable here"
            else:
                memory = f"{growth / 2**20:.1f} MB" if growth >= 2**20 else "< 1 MB"
                memory += " peak RSS growth"
        else:
            with LargestTensor() as mode:
                linf_dist(x, w, p).sum().backward()
            memory = f"{mode.bytes / 2**20:.1f} MB"
        rows.append(
            f"| {label} | {ours * 1e3:.1f} | {matmul * 1e3:.1f} | {ours / matmul:.1f} | {memory} | "
            f"{naive_bytes / 2**20:.0f} MB |"
        )
    return rows


def lmt_accuracies(data, radii=(0.1, 0.3, 0.5, 1.0)) -> list[str]:
    rows = []
    for name in ("mnist-lmt", "mnist-cnn"):
        model = load_model(name, device="cpu")
        cert = LMTCertifier(model).certify(data.images, data.labels)
        clean = float((cert.predictions == cert.labels).float().mean())
        cells = " | ".join(f"{cert.certified_accuracy(r):.3f}" for r in radii)
        rows.append(f"| {name} | {clean:.3f} | {cert.details['lipschitz']:.3g} | {cells} |")
    return rows


def fashion(checkpoint: str) -> list[str]:
    meta = read_checkpoint(checkpoint)["meta"]
    model = load_model(checkpoint, device="cpu")
    data = load_dataset("fashion-mnist", "test")
    certs = [certify_linf_dist(model, data.images[i : i + 1000], data.labels[i : i + 1000]) for i in range(0, 10000, 1000)]
    correct = torch.cat([c.predictions == c.labels for c in certs])
    radius = torch.cat([c.radius for c in certs])
    certified = float((correct & (radius > 0.1)).float().mean())
    record = Path(checkpoint).with_name("results.json")  # the training run's record, when the checkpoint is beside it
    training = "not recorded"
    if record.exists():
        run = json.loads(record.read_text())
        training = f"{run['timings']['total']:.0f} s on {run['device']['name']}"
    return [f"| `{meta.get('command')}` | {meta.get('n_train')} | {training} | "
            f"{float(correct.float().mean()):.4f} | {certified:.4f} | 0.7923 |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fmnist", default=None, help="L∞-dist checkpoint trained on fashion-mnist")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist-5k", "test")
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, CPU, "
        f"torch {torch.__version__} (shared machine: timings are noisy). Command: `python benchmarks/certify_speed.py"
        + (f" --fmnist {args.fmnist}`." if args.fmnist else "`."),
        "",
        "Certification pass vs plain evaluation pass (1000 bundled test images; target ratio <= 1.05):",
        "",
        "| model | plain eval (ms) | certify (ms) | ratio | note |",
        "|---|---|---|---|---|",
        *certification_overhead(data),
        "",
        "L∞-dist layer (B=128, in=784, out=1024) forward+backward vs the same-shape matmul (target <= 3 on CPU), "
        "and the largest intermediate tensor vs the naive broadcast:",
        "",
        "| norm | L∞-dist fwd+bwd (ms) | matmul fwd+bwd (ms) | ratio | memory (largest tensor) | naive (B, out, in) |",
        "|---|---|---|---|---|---|",
        *layer_speed(),
        "",
        "Certified L2 accuracy (LMT bound, 1000 bundled test images):",
        "",
        "| model | clean | L | eps 0.1 | eps 0.3 | eps 0.5 | eps 1.0 |",
        "|---|---|---|---|---|---|---|",
        *lmt_accuracies(data),
    ]
    if args.fmnist:
        lines += ["", "L∞-dist net on Fashion-MNIST (10,000 test images), certified accuracy at eps = 0.1:", "",
                  "| command | train examples | training | clean | certified @0.1 | anchor (v1, full recipe) |",
                  "|---|---|---|---|---|---|", *fashion(args.fmnist)]
    text = RESULTS.read_text()
    section = "<!-- certify_speed:start -->\n" + "\n".join(lines) + "\n<!-- certify_speed:end -->"
    atomic_write_text(RESULTS, re.sub(r"<!-- certify_speed:start -->.*?<!-- certify_speed:end -->", lambda m: section, text, flags=re.S))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
