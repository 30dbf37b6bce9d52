"""Attack speed: mistered PGD-L∞ vs torchattacks PGD vs the bare forward+backward, and a combined-threat step.

Run ``python benchmarks/attack_speed.py [--repeats R] [--compile]``. On a CIFAR-sized ResNet
(``cifar-resnet``, batch 64, CUDA when present) it times, in one run and interleaved (the minimum
over ``repeats`` rounds is kept, which filters out noise from other processes):

* mistered ``PGD`` on ``linf(8/255)``, 10 steps, step 2/255, random start, early stop off (like for like);
* ``torchattacks.PGD`` with the same settings, alone and followed by the two forward passes a mistered result
  includes (the clean predictions and those on ``x_adv``, which say whether an example was fooled);
* the bare model: 10 x (forward + backward w.r.t. the input only);

with the number of model forward passes of each (a forward hook counts them), the wall time and the process CPU
time (which other processes on a shared machine disturb less);
* optionally (``--compile``) ``PGD(..., compile=True)``, compile time reported apart;

and on the bundled CNN (``mnist-cnn``, 64 bundled test digits) one PGD step of the ``combined`` threat
(flow -> affine -> L∞ under the hard LPIPS bound) against one PGD step of ``linf(0.3)`` (a step = the
time of an 11-step attack minus a 1-step attack, / 10), side by side with one and with two torch
threads (``--threads``), interleaved, the **median** over ``--step-repeats`` rounds (the machine may
be shared: medians of interleaved rounds, not single runs). ``--skip-cifar`` times only the steps.
It prints the ratios and writes them with the machine's description between the ``attack_speed``
markers of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mistered.attacks import PGD, attack_mode
from mistered.data import load_dataset
from mistered.device import describe_device, resolve_device
from mistered.io import atomic_write_text
from mistered.models import build_model, load_model
from mistered.threats import Additive, parse_threat

RESULTS = Path(__file__).with_name("RESULTS.md")
_WITH = "torchattacks PGD + clean and adversarial predictions"
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


def _with_predictions(model: torch.nn.Module, attack: Callable[..., torch.Tensor], x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchattacks' attack plus what a mistered ``AttackResult`` holds besides ``x_adv``: the clean predictions and
    the predictions on ``x_adv`` (whether each example was fooled)."""
    x_adv = attack(x, y)
    with torch.no_grad():
        return model(x).argmax(dim=1), model(x_adv).argmax(dim=1)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def step_ratios(device: torch.device, threads: list[int], repeats: int) -> list[str]:
    """Median time of one PGD step, ``combined`` vs ``linf(0.3)``, on the bundled CNN, per thread count."""
    cnn = load_model(None, device=device)
    data = load_dataset("mnist-5k", "test").subset(64)
    xm, ym = data.images.to(device), data.labels.to(device)
    attacks = {(label, k): PGD(cnn, parse_threat(spec), steps=k, early_stop=False, seed=0, distances=("linf",))
               for label, spec in (("combined", "combined"), ("linf", "linf(0.3)")) for k in (1, 11)}
    lines = ["", "| mnist-cnn, one PGD step, batch 64 | torch threads | combined ms | linf ms | **ratio (medians)** "
             "| ratio (minima) |", "|---|---|---|---|---|---|"]
    previous = torch.get_num_threads()
    for count in threads:
        torch.set_num_threads(count)
        for attack in attacks.values():  # warm-up
            attack(xm, ym)
        seconds: dict[tuple[str, int], list[float]] = {key: [] for key in attacks}
        for _ in range(repeats):
            for key, attack in attacks.items():
                seconds[key].append(_timed(lambda a=attack: a(xm, ym), device))
        step = {(label, how): (how(seconds[(label, 11)]) - how(seconds[(label, 1)])) / 10
                for label in ("combined", "linf") for how in (statistics.median, min)}
        median, minimum = statistics.median, min
        lines.append(f"| rounds: {repeats} | {count} | {step[('combined', median)] * 1e3:.1f} | "
                     f"{step[('linf', median)] * 1e3:.1f} | **{step[('combined', median)] / step[('linf', median)]:.2f}×** | "
                     f"{step[('combined', minimum)] / step[('linf', minimum)]:.2f}× |")
    torch.set_num_threads(previous)
    lines.append("")
    lines.append("Target: combined ≤ 2.5× linf per step, with one thread and with two. Each round times the four "
                 "attacks (1 and 11 steps of each threat) back to back; a step is (11-step time − 1-step time) / 10, "
                 "from the medians over the rounds (and from the minima: the least disturbed rounds).")
    return lines


def _forward_counts(model: torch.nn.Module, cases: dict[str, Callable[[], object]]) -> dict[str, int]:
    """How many times each case runs the model (a forward hook counts the calls)."""
    calls = [0]
    handle = model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    counts = {}
    try:
        for name, fn in cases.items():
            calls[0] = 0
            fn()
            counts[name] = calls[0]
    finally:
        handle.remove()
    return counts


def _minima(cases: dict[str, Callable[[], object]], repeats: int,
            device: torch.device) -> dict[str, tuple[float, float]]:
    """``{case: (min wall seconds, min process CPU seconds)}`` over ``repeats`` interleaved rounds."""
    best = {name: (float("inf"), float("inf")) for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            cpu = time.process_time()
            wall = _timed(fn, device)
            cpu = time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def cifar_lines(args: argparse.Namespace, device: torch.device, header: str) -> list[str]:
    """mistered PGD vs torchattacks PGD vs the bare forward+backward on the CIFAR ResNet (min over rounds)."""
    import torchattacks

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
        _WITH: lambda: _with_predictions(model, theirs, x, y),
        "mistered PGD": lambda: ours(x, y),
    }
    compile_seconds = None
    if args.compile:
        compiled = PGD(model, Additive("linf", eps), steps=steps, step_size=alpha / eps, early_stop=False,
                       compile=True)
        compile_seconds = _timed(lambda: compiled(x, y), device)
        cases["mistered PGD compiled"] = lambda: compiled(x, y)
    forwards = _forward_counts(model, cases)  # also the warm-up
    best = _minima(cases, args.repeats, device)
    bare = best["bare forward+backward x10"]
    cpu_note = " (CPU s: process time, which other processes on a shared machine disturb less)" \
        if device.type == "cpu" else ""
    lines = [
        f"{header} torchattacks {torchattacks.__version__}. CIFAR table: min over {args.repeats} interleaved rounds, "
        f"batch 64, {torch.get_num_threads()} torch threads{cpu_note}.",
        "",
        "| cifar-resnet, PGD-L∞ 8/255, 10 steps | model forwards | wall s | × bare | CPU s | × bare |",
        "|---|---|---|---|---|---|",
        *[f"| {name} | {forwards[name]} | {wall:.3f} | {wall / bare[0]:.2f} | {cpu:.3f} | {cpu / bare[1]:.2f} |"
          for name, (wall, cpu) in best.items()],
        "",
        f"- mistered PGD / torchattacks PGD: **{best['mistered PGD'][0] / best['torchattacks PGD'][0]:.2f}×** wall, "
        f"**{best['mistered PGD'][1] / best['torchattacks PGD'][1]:.2f}×** CPU (target ≤ 1.0×); against torchattacks "
        f"with the two predictions a result needs (clean accuracy, which examples were fooled): "
        f"**{best['mistered PGD'][1] / best[_WITH][1]:.2f}×** CPU",
    ]
    if args.compile:
        ratio_c = best["mistered PGD compiled"][0] / best["torchattacks PGD"][0]
        lines.append(f"- mistered PGD compiled / torchattacks PGD: **{ratio_c:.2f}×** (target ≤ 0.8×; "
                     f"first call incl. compiling {compile_seconds:.1f} s)")
    else:
        lines.append("- compiled path (`PGD(..., compile=True)`): not measured in this run (`--compile`)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time PGD(compile=True)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts for the step ratio")
    parser.add_argument("--step-repeats", type=int, default=9, help="interleaved rounds of the step timing")
    parser.add_argument("--skip-cifar", action="store_true", help="time only the mnist-cnn steps")
    args = parser.parse_args()

    device = resolve_device(args.device)
    load = f"load average {os.getloadavg()[0]:.1f} at the start" if hasattr(os, "getloadavg") else "load unknown"
    header = (f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: {describe_device(device)}; "
              f"{_cpu_name()}, {os.cpu_count()} CPUs; {platform.platform()}; torch {torch.__version__}; shared machine "
              f"({load}): timings are noisy.")
    lines = [header] if args.skip_cifar else cifar_lines(args, device, header)
    lines += step_ratios(device, args.threads, args.step_repeats)
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
