"""Perceptual attacks: PGD over the chain vs PPGD, LPA and Fast-LPA (Laidlaw et al. 2021) under one LPIPS bound.

On the bundled ``mnist-cnn`` and the first ``n`` correctly classified bundled MNIST test digits, for each
LPIPS bound ``b`` every attack searches the ``combined`` chain ``flow(0.05,smoothness=0.01)>>affine(3deg,0.03)>>
linf(0.1)|lpips<=b`` (``b = 0.015`` is the preset). Reported per attack and bound: the success rate, the
time per example, the mean LPIPS of the successes and the examples outside their bound (re-measured by
:func:`mistered.attacks.bound_violations`; must be 0), then the smallest bound at which each attack fools at
least half the digits, and each attack's success and time as ratios to PGD's at the same bound.

Each attack runs with its own defaults (PGD: cross-entropy, relative step 2.5/steps; PPGD: margin loss, 5 CG
iterations, step 2/steps of the radius; LPA: margin loss with kappa 1, 5 rounds of lambda from 0.01; Fast-LPA:
one ramped round) and the same number of steps (LPA: per round), seed and batches.

Run ``OMP_NUM_THREADS=1 python benchmarks/perceptual_attacks.py [--n 200] [--bounds 0.005 0.01 0.015 0.02]
[--steps 20]``; it prints the tables and rewrites the ``perceptual_attacks`` section of
``benchmarks/RESULTS.md`` (``--no-write`` to print only).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch

from _report import machine_description, update_section
from composition import chain_spec, correctly_classified

from mistered.attacks import bound_violations, build_attack
from mistered.models import load_model
from mistered.threats import parse_threat

ATTACKS = ("pgd", "ppgd", "lpa", "fast-lpa")


def run(model: torch.nn.Module, name: str, spec: str, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace
        ) -> dict[str, float]:
    """Success rate, seconds per example, mean LPIPS of the successes and bound violations of attack ``name``."""
    attack = build_attack(name, model, parse_threat(spec), steps=args.steps, seed=args.seed, distances=("lpips",))
    success, lpips, violations, seconds = [], [], 0, 0.0
    for start in range(0, x.shape[0], args.batch):
        began = time.perf_counter()
        result = attack(x[start:start + args.batch], y[start:start + args.batch])
        seconds += time.perf_counter() - began
        violations += int(bound_violations(result, attack.threat).sum())
        success.append(result.success)
        lpips.append(result.distances["lpips"])
    fooled, distances = torch.cat(success), torch.cat(lpips)
    return {"success": fooled.float().mean().item(), "seconds": seconds / x.shape[0], "violations": violations,
            "lpips": distances[fooled].mean().item() if bool(fooled.any()) else float("nan")}


def tables(found: dict[tuple[str, float], dict[str, float]], bounds: list[float]) -> list[str]:
    """The markdown tables: per bound, the ratios to PGD, and the first bound reaching half the digits."""
    head = "| attack | " + " | ".join(f"lpips<={b:g}" for b in bounds) + " |"
    rule = "|---|" + "---|" * len(bounds)
    lines = ["Success rate (mean LPIPS of the successes; examples outside the bound), time per example:", "", head,
             rule]
    for name in ATTACKS:
        cells = [f"{found[name, b]['success']:.3f} ({found[name, b]['lpips']:.4f}; {found[name, b]['violations']}), "
                 f"{found[name, b]['seconds'] * 1e3:.0f} ms" for b in bounds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Ratios to PGD over the chain at the same bound (success ×, time ×):", "", head, rule]
    for name in ATTACKS[1:]:
        cells = [f"{_ratio(found[name, b]['success'], found['pgd', b]['success'])}, "
                 f"{found[name, b]['seconds'] / found['pgd', b]['seconds']:.2f}×" for b in bounds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Smallest bound at which each attack fools at least half the digits:", "",
              "| attack | first bound with success >= 0.5 |", "|---|---|"]
    for name in ATTACKS:
        first = next((b for b in bounds if found[name, b]["success"] >= 0.5), None)
        lines.append(f"| {name} | {_first(first, bounds)} |")
    return lines


def _first(first: float | None, bounds: list[float]) -> str:
    if first is None:
        return f"not reached (> {bounds[-1]:g})"
    return f"<= {first:g} (the smallest measured)" if first == bounds[0] else f"{first:g}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b > 0 else ("=" if a == 0 else "∞")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="correctly classified test digits")
    parser.add_argument("--bounds", type=float, nargs="+", default=[0.005, 0.01, 0.015, 0.02], help="LPIPS bounds")
    parser.add_argument("--linf", type=float, default=0.1, help="L∞ budget of the chain's additive part")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    model = load_model()
    x, y = correctly_classified(model, args.n)
    run(model, "pgd", f"{chain_spec(args.linf)}|lpips<=0.01", x[:2], y[:2], args)  # loads LPIPS: not timed below
    started = time.perf_counter()
    found = {}
    for bound in args.bounds:
        for name in ATTACKS:
            found[name, bound] = run(model, name, f"{chain_spec(args.linf)}|lpips<={bound:g}", x, y, args)
        print(f"lpips<={bound:g} done at {time.perf_counter() - started:.0f} s", flush=True)
    lines = [
        f"Machine: {machine_description()} (OMP_NUM_THREADS={torch.get_num_threads()}, a 2-core CPU shared with other "
        f"jobs). Command: `python benchmarks/perceptual_attacks.py {shlex.join(sys.argv[1:])}`".rstrip() + ".",
        "",
        f"Bundled `mnist-cnn`, first {x.shape[0]} correctly classified bundled MNIST test digits, threat "
        f"`{chain_spec(args.linf)}|lpips<=b`; {args.steps} steps each (LPA: per round), seed {args.seed}, batches of "
        f"{args.batch}, each attack's own defaults (see the script).",
        "",
        *tables(found, args.bounds),
        "",
        f"Total time {time.perf_counter() - started:.0f} s.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        update_section("perceptual_attacks", "## Perceptual attacks: PGD vs PPGD vs LPA under one LPIPS bound "
                                             "(`benchmarks/perceptual_attacks.py`)\n" + text)


if __name__ == "__main__":
    main()
