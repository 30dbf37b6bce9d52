"""Composition: under the same LPIPS bound, is the chain at least as strong as each of its components?

The mister_ed paper's claim: composing flow, affine and additive perturbations under one perceptual
bound fools a model at least as often as any one of them alone under that bound. On the bundled
``mnist-cnn`` and the first ``n`` correctly classified bundled MNIST test digits, for each LPIPS
bound ``b`` it runs the **same** attack (PGD, same steps, restarts, step size and seed) against

* ``flow(0.05,smoothness=0.01)|lpips<=b``, ``affine(3deg,0.03)|lpips<=b``, ``linf(eps)|lpips<=b`` (each
  component alone: the flow and affine parts of the ``combined`` preset),
* ``flow(0.05,smoothness=0.01)>>affine(3deg,0.03)>>linf(eps)|lpips<=b`` (the chain; ``combined`` is
  ``eps = 0.1``, ``b = 0.015``),

and reports the success rate of each (plus "any component": the fraction fooled by at least one
component alone, the per-example best of the three) and the mean LPIPS of the successful examples.

Run ``python benchmarks/composition.py [--n 200] [--bounds 0.0125 0.015 0.02] [--linf 0.1 0.3] [--steps 20]``;
it prints the table and rewrites the ``composition`` section of ``benchmarks/RESULTS.md``
(``--no-write`` to print only).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch

from _report import machine_description, update_section

from mistered.attacks import PGD
from mistered.data import load_dataset
from mistered.models import load_model
from mistered.threats import parse_threat

FLOW, AFFINE = (component.name for component in parse_threat("combined").threat.components[:2])


def component_specs(linf: float) -> dict[str, str]:
    """The three components (label -> spec) with an L∞ component of budget ``linf``."""
    return {"flow": FLOW, "affine": AFFINE, f"linf({linf:g})": f"linf({linf:g})"}


def chain_spec(linf: float) -> str:
    return f"{FLOW}>>{AFFINE}>>linf({linf:g})"


def correctly_classified(model: torch.nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` bundled test digits (``(n, 1, 28, 28)``, ``(n,)``) that ``model`` classifies correctly."""
    data = load_dataset("mnist-5k", "test")
    with torch.no_grad():
        keep = model(data.images).argmax(dim=1) == data.labels
    return data.images[keep][:n], data.labels[keep][:n]


def run_attack(model: torch.nn.Module, spec: str, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(success (n,) bool, lpips (n,))`` of PGD on ``spec``, in batches of ``args.batch``."""
    attack = PGD(model, parse_threat(spec), steps=args.steps, restarts=args.restarts, seed=args.seed,
                 random_start=not args.zero_start, distances=("lpips",))
    success, lpips = [], []
    for start in range(0, x.shape[0], args.batch):
        result = attack(x[start:start + args.batch], y[start:start + args.batch])
        success.append(result.success)
        lpips.append(result.distances["lpips"])
    return torch.cat(success), torch.cat(lpips)


def cell(success: torch.Tensor, lpips: torch.Tensor | None) -> str:
    rate = f"{success.float().mean().item():.3f}"
    if lpips is None:
        return rate
    mean = f"{lpips[success].mean().item():.3f}" if bool(success.any()) else "-"
    return f"{rate} ({mean})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="correctly classified test digits")
    parser.add_argument("--bounds", type=float, nargs="+", default=[0.0125, 0.015, 0.02], help="LPIPS bounds")
    parser.add_argument("--linf", type=float, nargs="+", default=[0.1, 0.3], help="L∞ budgets of the additive part")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zero-start", action="store_true", help="start PGD at the identity, not at random")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    model = load_model()
    x, y = correctly_classified(model, args.n)
    lines = [
        f"Machine: {machine_description()}. Command: `python benchmarks/composition.py "
        f"{shlex.join(sys.argv[1:])}`".rstrip() + ".",
        "",
        f"Bundled `mnist-cnn`, first {x.shape[0]} correctly classified bundled MNIST test digits. Every threat is "
        f"attacked by the same PGD ({args.steps} steps, relative step 2.5/steps, {args.restarts} restart(s), "
        f"{'zero' if args.zero_start else 'random'} start, seed {args.seed}, cross-entropy). Cell: success rate (mean LPIPS of the successes). "
        "\"any component\": fooled by at least one component alone (per-example best of the three).",
    ]
    started = time.perf_counter()
    for linf in args.linf:
        rows: dict[str, list[str]] = {}
        for bound in args.bounds:
            alone = []
            for label, spec in component_specs(linf).items():
                success, lpips = run_attack(model, f"{spec}|lpips<={bound:g}", x, y, args)
                alone.append(success)
                rows.setdefault(f"{label} alone", []).append(cell(success, lpips))
            rows.setdefault("any component", []).append(cell(torch.stack(alone).any(dim=0), None))
            success, lpips = run_attack(model, f"{chain_spec(linf)}|lpips<={bound:g}", x, y, args)
            rows.setdefault("**chain** flow>>affine>>linf", []).append(cell(success, lpips))
            print(f"linf {linf:g}, lpips<={bound:g} done at {time.perf_counter() - started:.0f} s", flush=True)
        lines += ["", f"L∞ component `linf({linf:g})`:", "",
                  "| threat | " + " | ".join(f"lpips<={b:g}" for b in args.bounds) + " |",
                  "|---|" + "---|" * len(args.bounds)]
        lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows.items()]
    lines += ["", f"Total time {time.perf_counter() - started:.0f} s."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        update_section("composition", text)


if __name__ == "__main__":
    main()
