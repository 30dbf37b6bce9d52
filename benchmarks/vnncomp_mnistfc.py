"""VNN-COMP 2021 ``mnistfc``: decided instances, median time and wrong answers of ``mistered verify``.

    python benchmarks/vnncomp_mnistfc.py BENCH_DIR [--nets 256x2,256x4,256x6] [--cap 60] [--first N]
                                          [--properties 0_0.03,...] [--falsify-only] [--out DIR] [--no-write]

``BENCH_DIR`` is the benchmark as published (github stanleybak/vnncomp2021, benchmarks/mnistfc: three ReLU MLPs,
15 MNIST images at L∞ eps 0.03 and 0.05, ``mnistfc_instances.csv``); it is only read. Every instance runs with its
own time limit capped at ``--cap`` seconds, one thread (``OMP_NUM_THREADS=1``, set before torch loads), on the CPU.
``--falsify-only`` runs only the attack (three rounds, no bounds): how many of the known counterexamples it finds,
and how fast. The results go to ``--out`` (default: a temporary folder) and the summary rewrites the
``vnncomp_mnistfc`` section of ``benchmarks/RESULTS.md`` (unless ``--no-write``).

Expected answers: VNN-COMP 2021's published results (github stanleybak/vnncomp2021_results, results_csv/), the
answer of the majority of the tools (RPM, which answered ``violated`` everywhere, and the random baseline left
out; the tools disagree only on 256x2 prop_14_0.03, where nnv alone said ``holds``). Instances no tool decided are
unknown and score nothing either way. 256x2: 18 unsat, 12 sat; 256x4: 16 unsat, 6 sat, 8 unknown; 256x6: 15 unsat,
4 sat, 11 unknown.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from mistered.certify.verify import VerifyOptions, find_instances, run_jobs, summarize  # noqa: E402
from mistered.certify.bab import BabStep  # noqa: E402
from mistered.certify.verify.solvers import BenchmarkSolver  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_description, update_section  # noqa: E402

#: Properties (``<image>_<eps>``) that are violated / that no tool decided in 2021; every other one holds.
SAT = {
    "256x2": "7_0.03 14_0.03 0_0.05 1_0.05 3_0.05 5_0.05 7_0.05 8_0.05 9_0.05 12_0.05 13_0.05 14_0.05",
    "256x4": "2_0.03 1_0.05 2_0.05 3_0.05 7_0.05 14_0.05",
    "256x6": "1_0.05 3_0.05 7_0.05 9_0.05",
}
UNKNOWN = {
    "256x2": "",
    "256x4": "1_0.03 7_0.03 14_0.03 0_0.05 5_0.05 9_0.05 12_0.05 13_0.05",
    "256x6": "1_0.03 3_0.03 7_0.03 9_0.03 14_0.03 0_0.05 5_0.05 8_0.05 12_0.05 13_0.05 14_0.05",
}
#: α,β-CROWN (Dec 2025 release, its own mnistfc configs) on this kind of machine, one thread, 60 s cap (the issue).
REFERENCE = {"256x2": "28/30 (median 3.9 s)", "256x4": "10 of the first 16", "256x6": "4 of the first 10"}


def expected_answers() -> dict[tuple[str, str], str]:
    out = {}
    for net in SAT:
        for image in range(15):
            for eps in ("0.03", "0.05"):
                name = f"{image}_{eps}"
                answer = "sat" if name in SAT[net].split() else None if name in UNKNOWN[net].split() else "unsat"
                if answer:
                    out[(f"mnist-net_{net}.onnx", f"prop_{name}.vnnlib")] = answer
    return out


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args: argparse.Namespace) -> str:
    torch.set_num_threads(1)
    nets = args.nets.split(",")
    instances = [i for i in find_instances(args.bench) if any(f"_{n}." in i.model for n in nets)]
    if args.properties:
        wanted = {f"prop_{p}.vnnlib" for p in args.properties.split(",")}
        instances = [i for i in instances if Path(i.property).name in wanted]
    if args.first:
        kept, counts = [], {}
        for inst in instances:
            counts[inst.model] = counts.get(inst.model, 0) + 1
            if counts[inst.model] <= args.first:
                kept.append(inst)
        instances = kept
    instances = [dataclasses.replace(inst, index=k) for k, inst in enumerate(instances)]
    options = VerifyOptions(methods=(), first_rounds=3, attack_rounds=0) if args.falsify_only else VerifyOptions()
    out = Path(args.out or tempfile.mkdtemp(prefix="vnncomp-mnistfc-"))
    solver = BenchmarkSolver(instances, out / "cache", timeout_cap=args.cap, expected=expected_answers(),
                             device="cpu", options=options, branch_and_bound=None if args.falsify_only else BabStep())

    def told(row: dict) -> None:
        print(f"{row['model']} {row['property']}: {row['status']} {row['seconds']:.2f} s"
              f"{' WRONG' if row['wrong'] else ''}", flush=True)

    load_before = os.getloadavg()[0]
    rows = run_jobs(solver.jobs(), solver, out, settings=solver.settings(), on_row=told)
    load_after = os.getloadavg()[0]
    lines = [f"Machine: {machine_description()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}. Command: "
             f"`python benchmarks/vnncomp_mnistfc.py BENCH_DIR --nets {args.nets} --cap {args.cap:g}"
             f"{f' --first {args.first}' if args.first else ''}"
             f"{f' --properties {args.properties}' if args.properties else ''}"
             f"{' --falsify-only' if args.falsify_only else ''}`.",
             "", "| net | instances | decided | unsat | sat | timeout/unknown | wrong | median s (decided) | max s | "
             "max overrun s | known sat found | reference (issue) |", "|---|" + "---|" * 11]
    for net in nets:
        mine = [r for r in rows if f"_{net}." in r["model"]]
        s = summarize(mine)
        known_sat = [r for r in mine if r["expected"] == "sat"]
        found = sum(r["status"] == "sat" for r in known_sat)
        median = "-" if s["median_seconds_decided"] is None else f"{s['median_seconds_decided']:.2f}"
        lines.append(f"| {net} | {s['instances']} | {s['decided']} | {s['verified']} | {s['falsified']} | "
                     f"{s['timeout'] + s['unknown'] + s['error']} | {s['wrong']} | {median} | "
                     f"{max(float(r['seconds']) for r in mine):.2f} | {s['max_overrun_seconds']:.2f} | "
                     f"{found}/{len(known_sat)} | {REFERENCE[net]} |")
    lines += ["", f"Peak resident memory of the run: {_peak_rss_mib():.0f} MiB. Load average (1 min) at the start and "
              f"the end: {load_before:.1f}, {load_after:.1f} (times are wall-clock: other processes slow them). "
              f"Results: {out}/results.csv."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", help="the mnistfc folder (mnistfc_instances.csv, the .onnx and .vnnlib files)")
    parser.add_argument("--nets", default="256x2", help="comma list of 256x2, 256x4, 256x6")
    parser.add_argument("--cap", type=float, default=60.0, help="most seconds per instance")
    parser.add_argument("--first", type=int, default=None, help="only the first N instances of each net")
    parser.add_argument("--properties", default=None, help="only these properties, e.g. 0_0.03,3_0.03")
    parser.add_argument("--falsify-only", action="store_true", help="attack only (no bounds)")
    parser.add_argument("--out", default=None, help="results folder (default: a new temporary folder)")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite benchmarks/RESULTS.md")
    args = parser.parse_args()
    unknown = set(args.nets.split(",")) - set(SAT)
    if unknown:
        parser.error(f"unknown nets {sorted(unknown)}; choose from {', '.join(SAT)}")
    text = run(args)
    print(text)
    if not args.no_write:
        section = "vnncomp_mnistfc_falsify" if args.falsify_only else "vnncomp_mnistfc"
        update_section(section, text)


if __name__ == "__main__":
    main()
