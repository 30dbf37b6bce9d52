"""LipMIP and the estimators it is compared with, on the LipMIP paper's network shapes (Jordan & Dimakis 2020).

Binary MNIST 1-vs-7 networks 784-20-20-2 (28x28) and 196-20-20-2 (14x14, 2x2 average pooled), trained here on
the bundled ``mnist-5k`` train split (fixed seed, one thread), L∞ boxes of radius 0.1 and 0.2 around a few test
digits, and random synthetic networks with 2-D and 16-D inputs. Every estimator's value and time; the margin
objective f_7 - f_1; primal norm L∞ (dual L1). Writes its section of ``benchmarks/RESULTS.md``.

Reference (original LipMIP + Gurobi, one thread): median 5.6 s (r=0.1) and 8.8 s (r=0.2) on 196-20-20-2.

Usage: ``python benchmarks/lipmip_speed.py [--points 3] [--time-limit 120] [--solver HIGHS] [--bounds auto]
[--compare-bounds [crown lp ...]] [--only 196 --radii 0.2 --methods lipmip --no-write]`` (``--compare-bounds`` adds
one LipMIP row per named bounds, interval-only when none is named, measured in the same run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_description, update_section  # noqa: E402

from mistered.certify.lipschitz.local import METHODS, EstimatorOptions, estimate_lipschitz  # noqa: E402
from mistered.certify.lipschitz.local.lipmip import AUTO_LP_UNSTABLE, PRE_ACTIVATION_BOUNDS  # noqa: E402
from mistered.data import load_dataset  # noqa: E402


def binary_mnist(pool: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-vs-7 train and test images (flattened, optionally ``pool``x``pool`` average pooled) and 0/1 labels."""
    out = []
    for split in ("train", "test"):
        data = load_dataset("mnist-5k", split)
        keep = (data.labels == 1) | (data.labels == 7)
        x = data.images[keep]
        if pool > 1:
            x = nn.functional.avg_pool2d(x, pool)
        out += [x.reshape(len(x), -1), (data.labels[keep] == 7).long()]
    return tuple(out)  # type: ignore[return-value]


def train_binary(x: torch.Tensor, y: torch.Tensor, hidden: tuple[int, ...], seed: int = 0) -> nn.Sequential:
    """A small ReLU MLP trained with Adam for 10 epochs (seconds on one CPU thread)."""
    torch.manual_seed(seed)
    sizes = (x.shape[1], *hidden, 2)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b), nn.ReLU()] if i < len(sizes) - 2 else [nn.Linear(a, b)]
    net = nn.Sequential(*layers)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(10):
        perm = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def synthetic(d: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 2)).eval()


def run_setting(
    name: str, net: nn.Module, x: torch.Tensor, radius: float, runs: list[tuple[str, EstimatorOptions]]
) -> list[str]:
    """One row per ``(method, options)``, each point estimated on its own so that its wall-clock and CPU seconds are
    its own; MIP rows also give the median number of binaries and the bounds used."""
    rows = []
    for method, opts in runs:
        ests, cpu = [], []
        for i in range(len(x)):
            start = time.process_time()
            ests.append(estimate_lipschitz(net, x[i : i + 1], radius, "linf", (1, 0), method, options=opts))
            cpu.append(time.process_time() - start)
        times = [t for est in ests for t in est.details.get("example_seconds", [est.seconds])]
        values = [float(v) for est in ests for v in est.value.tolist()]
        status = f"{sum(s == 'exact' for est in ests for s in est.status)}/{len(x)} exact" if method == "lipmip" \
            else ests[0].kind
        stats = [s for est in ests for s in est.details.get("stats", [])]
        binaries = f"{statistics.median(s['binaries'] for s in stats):.0f}" if stats else ""
        used = "/".join(sorted({s["bounds"] for s in stats})) if stats else ""
        shown = opts.bounds if used == opts.bounds else f"{opts.bounds}: {used}"
        solvers = "/".join(sorted({s["solver"] for s in stats})) if stats else ""
        label = f"{method} ({shown}, {solvers})" if stats else method
        rows.append(f"| {name} | {radius} | {label} | {statistics.median(values):.4g} | "
                    f"{statistics.median(times):.3g} | {max(times):.3g} | {statistics.median(cpu):.3g} | {binaries} | "
                    f"{status} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=3, help="test points per setting")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per LipMIP/LP problem")
    parser.add_argument("--solver", default="HIGHS",
                        help="LipMIP's MIP solver: HIGHS (highspy), or SCIP / CBC through OR-Tools")
    parser.add_argument("--bounds", default="auto", choices=PRE_ACTIVATION_BOUNDS, help="LipMIP's neuron bounds")
    parser.add_argument("--compare-bounds", nargs="*", default=None, choices=PRE_ACTIVATION_BOUNDS,
                        help="add a LipMIP row per named bounds (none named: interval)")
    parser.add_argument("--only", nargs="*", default=["196", "784", "2", "16"], help="networks by input size")
    parser.add_argument("--radii", nargs="*", type=float, default=None, help="radii (default: each setting's own)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--no-write", action="store_true", help="print the rows only, leave RESULTS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    opts = EstimatorOptions(time_limit=args.time_limit, solver=args.solver, bounds=args.bounds)
    runs = [(m, replace(opts, solver=None) if m == "lp" else opts) for m in args.methods]
    if args.compare_bounds is not None and "lipmip" in args.methods:
        runs += [("lipmip", replace(opts, bounds=b)) for b in args.compare_bounds or ["interval"]]
    rows: list[str] = []
    for pool, label in ((2, "MNIST 1v7 196-20-20-2"), (1, "MNIST 1v7 784-20-20-2")):
        if str(784 // pool**2) not in args.only:
            continue
        x_train, y_train, x_test, y_test = binary_mnist(pool)
        net = train_binary(x_train, y_train, (20, 20))
        accuracy = float((net(x_test).argmax(1) == y_test).float().mean())
        for radius in args.radii or (0.1, 0.2):
            rows += run_setting(f"{label} (test acc {accuracy:.3f})", net, x_test[: args.points], radius, runs)
    for d in (2, 16):
        if str(d) not in args.only:
            continue
        x = torch.rand(args.points, d, generator=torch.Generator().manual_seed(d))
        for radius in args.radii or (0.1, 0.5):
            rows += run_setting(f"synthetic {d}-20-20-2", synthetic(d, d), x, radius, runs)
    header = [
        f"Machine: {machine_description()}; one thread; LipMIP's MIP on {args.solver} with {args.bounds} neuron",
        "bounds, forward (tangent) encoding for the margin f_1 - f_0; LP = relaxation of the backward (paper's)",
        f"encoding on GLOP; {args.points} test points per row, time limit {args.time_limit:.0f} s per problem;",
        "value = median over points; s = wall-clock seconds per point, CPU s = the process's CPU seconds per point (the",
        "fair figure when other jobs share the machine); binaries = median number of binaries of the MIP; bounds",
        f"\"auto\" = LP-tightened neuron and tangent bounds (lp) when CROWN leaves more than {AUTO_LP_UNSTABLE} unstable",
        "neurons, else crown.",
        "Reference: original LipMIP + Gurobi, one thread, 196-20-20-2: median 5.6 s (r=0.1), 8.8 s (r=0.2).",
        "Before (SCIP through OR-Tools, cuts off), 2026-12-08 on this machine, 196-20-20-2 r=0.2, the same 3 points:",
        "median 34.8 s wall, 10.4 CPU s (2.7-13.9); on the two slow points HiGHS through OR-Tools' older build took",
        "5.8-6.0 CPU s and SCIP with its root cuts on 7.6-7.9 (SCIP as before: 10.6-14.7).",
        "",
        "| network | radius | method | median value | median s | max s | median CPU s | binaries | kind / status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    if not args.no_write:
        update_section("lipmip_speed", "\n".join(header + rows))


if __name__ == "__main__":
    main()
