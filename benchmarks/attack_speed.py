"""Attack speed: mistered PGD-L∞ vs torchattacks PGD vs the bare forward+backward, and a combined-threat step.

Run ``python benchmarks/attack_speed.py [--repeats R] [--compile]``. On a CIFAR-sized ResNet
(``cifar-resnet``, batch 64, CUDA when present) it times, in one run and interleaved (the minimum
over ``repeats`` rounds is kept, which filters out noise from other processes):

* mistered ``PGD`` on ``linf(8/255)``, 10 steps, step 2/255, random start, early stop off (like for like);
* ``torchattacks.PGD`` with the same settings;
* the bare model: 10 x (forward + backward w.r.t. the input only);
* optionally (``--compile``) ``PGD(..., compile=True)``, compile time reported apart;

and on the bundled CNN architecture (``mnist-cnn``, batch 64) one PGD step of the ``combined`` threat
against one PGD step of ``linf(0.3)`` (a step = the time of an 11-step attack minus a 1-step attack, / 10).
It prints the ratios and writes them with the machine's description between the ``attack_speed``
markers of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mistered.attacks import PGD, attack_mode
from mistered.device import describe_device, resolve_device
from mistered.io import atomic_write_text
from mistered.models import build_model
from mistered.threats import Additive, parse_threat

RESULTS = Path(__file__).with_name("RESULTS.md")
START, END = "<!-- attack_speed:start -->", "<!-- attack_speed:end -->"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _bare(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    with attack_mode(model):
        for _ in range(steps):
            xi = x.clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(xi), y)
            torch.autograd.grad(loss, xi)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time PGD(compile=True)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    import torchattacks

    device = resolve_device(args.device)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build_model("cifar-resnet").to(device).eval()
    x = torch.rand(64, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (64,), generator=gen).to(device)
    eps, alpha, steps = 8 / 255, 2 / 255, 10
    ours = PGD(model, Additive("linf", eps), steps=steps, step_size=alpha / eps, early_stop=False, seed=0)
    theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    cases: dict[str, Callable[[], object]] = {
        "bare forward+backward x10": lambda: _bare(model, x, y, steps),
        "torchattacks PGD": lambda: theirs(x, y),
        "mistered PGD": lambda: ours(x, y),
    }
    compile_seconds = None
    if args.compile:
        compiled = PGD(model, Additive("linf", eps), steps=steps, step_size=alpha / eps, early_stop=False,
                       compile=True)
        compile_seconds = _timed(lambda: compiled(x, y), device)
        cases["mistered PGD compiled"] = lambda: compiled(x, y)

    cnn = build_model("mnist-cnn").to(device).eval()
    xm = torch.rand(64, 1, 28, 28, generator=gen).to(device)
    ym = torch.randint(0, 10, (64,), generator=gen).to(device)
    for label, spec in (("combined", "combined"), ("linf", "linf(0.3)")):
        threat = parse_threat(spec)
        for k in (1, 11):
            attack = PGD(cnn, threat, steps=k, early_stop=False, seed=0, distances=("linf",))
            cases[f"cnn {label} PGD-{k}"] = (lambda a=attack: a(xm, ym))

    for fn in cases.values():  # warm-up
        fn()
    best = {name: float("inf") for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            best[name] = min(best[name], _timed(fn, device))

    bare = best["bare forward+backward x10"]
    step = {label: (best[f"cnn {label} PGD-11"] - best[f"cnn {label} PGD-1"]) / 10 for label in ("combined", "linf")}
    rows = [(name, seconds, seconds / bare) for name, seconds in best.items() if not name.startswith("cnn ")]
    ratio_ta = best["mistered PGD"] / best["torchattacks PGD"]
    lines = [
        f"Machine: {describe_device(device)}; {_cpu_name()}; {platform.platform()}; torch {torch.__version__}; "
        f"torchattacks {torchattacks.__version__}. Min over {args.repeats} interleaved rounds, batch 64.",
        "",
        "| cifar-resnet, PGD-L∞ 8/255, 10 steps | seconds | × bare fwd+bwd |",
        "|---|---|---|",
        *[f"| {name} | {seconds:.3f} | {ratio:.2f} |" for name, seconds, ratio in rows],
        "",
        f"- mistered PGD / torchattacks PGD: **{ratio_ta:.2f}×** (target ≤ 1.0×)",
    ]
    if args.compile:
        ratio_c = best["mistered PGD compiled"] / best["torchattacks PGD"]
        lines.append(f"- mistered PGD compiled / torchattacks PGD: **{ratio_c:.2f}×** (target ≤ 0.8×; "
                     f"first call incl. compiling {compile_seconds:.1f} s)")
    else:
        lines.append("- compiled path (`PGD(..., compile=True)`): not measured in this run (`--compile`)")
    lines.append(f"- mnist-cnn, one PGD step: combined {step['combined'] * 1e3:.1f} ms vs linf {step['linf'] * 1e3:.1f} ms "
                 f"= **{step['combined'] / step['linf']:.2f}×** (target ≤ 2.5×)")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        old = RESULTS.read_text() if RESULTS.exists() else f"# Benchmark results\n\n{START}\n{END}\n"
        if START not in old:
            old += f"\n## Attack speed (`benchmarks/attack_speed.py`)\n{START}\n{END}\n"
        new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: f"{START}\n{text}\n{END}", old, flags=re.S)
        atomic_write_text(RESULTS, new)


if __name__ == "__main__":
    main()
