"""Speed and memory of the bound engine (IBP, CROWN, α-CROWN) on a CIFAR-size residual CNN, optionally side by side
with auto_LiRPA.

    OMP_NUM_THREADS=1 python benchmarks/bounds_speed.py [--batches 1,4] [--methods crown,alpha-crown] [--threads 1]
        [--alpha-batches 1,4] [--device cpu] [--lirpa PYTHON [--lirpa-skip alpha-crown:4] [--lirpa-timeout 1800]]
        [--record]

Measures, on this machine:

1. IBP / forward-pass time (interval bounds of every node against one plain evaluation of the model), on the
   residual CNN and the bundled-style MNIST CNN, batch 64;
2. CROWN and α-CROWN (20 iterations, intermediate bounds fixed at CROWN's, as auto_LiRPA's default) on the issue's
   network: input 3x32x32; stem conv3x3 3->16, BatchNorm, ReLU; two pre-activation residual blocks at 16 channels
   (``out = x + conv(ReLU(BN(conv(ReLU(BN(x))))))``); BN, ReLU, AvgPool 8, linear 256->10; eps = 1/255 (L∞),
   margins ``e_y - e_j``: wall and CPU time and peak memory per batch size (each measured in a fresh process: the
   growth of its peak resident set on CPU, the peak allocation on CUDA), and the mean margin bound; the issue's
   targets (batch 64 within 24 GB, α-CROWN at batch 1 within 60 s) are checked in the table's last lines.

The weights are a fixed random initialisation (seed 0) with non-trivial BatchNorm statistics. With ``--lirpa
PYTHON`` (an interpreter that has auto_LiRPA, e.g. a scratch virtual environment: never a dependency of mistered),
``_lirpa_side.py`` runs auto_LiRPA's CROWN and α-CROWN (``bound_opts={"compare_crown_with_ibp": True}``, the
engine's intermediate-bound convention; α-CROWN with the intermediate bounds fixed at CROWN's, as ours) in a fresh
process of that interpreter on the same weights, inputs and labels (saved to a temporary file both sides load), and
the table adds its costs, the largest difference of the margin bounds and the time and memory ratios; runs that
would not fit the available memory are skipped with a note. With ``--record`` the table is written to the
``bounds_speed`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from mistered.certify.bounds import AlphaOptions, InputSet, interval_bounds, margin_lower_bounds
from mistered.certify.graph import trace_graph
from mistered.memory import peak_rss_growth
from mistered.models.architectures import mnist_cnn

EPS = 1 / 255
LIRPA_GB_PER_IMAGE = 3.6  # auto_LiRPA's CROWN here, one thread: 4.4 GB at batch 1, 14.2 GB at batch 4
NOTES = ("Each CROWN / α-CROWN figure is one fresh process (one thread); wall time and CPU time of the bound call "
         "alone (the machine is shared: CPU time is the steadier figure), peak memory as the growth of the "
         "process's peak resident set during it. auto_LiRPA 0.7.1 runs in its own interpreter (`--lirpa`, "
         "never a dependency) with `bound_opts={'compare_crown_with_ibp': True}`, CROWN as `method='CROWN'`, "
         "α-CROWN as `method='CROWN-Optimized'` with 20 iterations and its other defaults but the intermediate "
         "bounds fixed at its CROWN bounds (passed as `interm_bounds`; the CROWN pass is timed with it): the "
         "problem our α-CROWN solves by default (`AlphaOptions(optimize_intermediate=False)`). Its own default "
         "also optimises the slopes of every intermediate bound, shared per channel on convolutions; on this "
         "network that took 467 s CPU at batch 1 and gave margins up to 1.3e-5 higher (2026-12-07), and our "
         "per-neuron `optimize_intermediate=True` would need 4.3e9 slopes here (refused). Both sides bound the "
         "same weights, inputs, labels and eps (saved to a file both load); margins `e_y - e_j` over the L∞ ball "
         "within [0, 1]. IBP / forward: CPU times, best of 21 measured alternately, batch 64.")
#: What auto_LiRPA runs beside each of our methods (``_lirpa_side.py``'s METHOD).
LIRPA_METHODS = {"crown": "crown", "alpha-crown": "alpha-crown-fixed"}


class PreActBlock(nn.Module):
    """``x + conv(relu(bn(conv(relu(bn(x))))))`` at a fixed width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(channels), nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))


def build_network(seed: int = 0) -> nn.Module:
    """The issue's CIFAR-size residual CNN, deterministic weights, eval mode."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), PreActBlock(16), PreActBlock(16),
        nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(8), nn.Flatten(), nn.Linear(256, 10),
    )
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _time_pair(first, second, repeat: int = 21) -> tuple[float, float]:
    """Best CPU times of two functions measured alternately, so that both see the same machine load (CPU time:
    other processes on a shared machine inflate wall times)."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.process_time()
            fn()
            bucket.append(time.process_time() - start)
    return min(times[0]), min(times[1])


def ibp_ratio(model: nn.Module, shape: tuple[int, ...], device: torch.device, batch: int = 64) -> tuple[float, float]:
    """``(forward seconds, IBP seconds)`` of CPU time, best of 21 measured alternately, batch ``batch``."""
    graph = trace_graph(model, shape).to(device)
    model = model.to(device)
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0)).to(device)
    input_set = InputSet.ball(x, EPS)
    with torch.no_grad():
        return _time_pair(lambda: model(x), lambda: interval_bounds(graph, input_set))


def save_inputs(path: str, batch: int) -> None:
    """Write ``{"state_dict", "x", "y", "eps"}`` of the residual CNN at ``batch`` (the data both engines bound)."""
    model = build_network()
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    torch.save({"state_dict": model.state_dict(), "x": x, "y": y, "eps": EPS}, path)


def crown_cost(method: str, path: str, device: torch.device) -> dict:
    """``{"seconds", "cpu_seconds", "peak", "margins"}``: wall and CPU time, peak bytes and ``(B, K)`` margin lower
    bounds (``None`` at ``j = y``) of ``method`` on the residual CNN and inputs saved by :func:`save_inputs`."""
    data = torch.load(path, weights_only=True)
    model = build_network()
    model.load_state_dict(data["state_dict"])
    graph = trace_graph(model.to(device), (3, 32, 32))
    x, y = data["x"].to(device), data["y"].to(device)
    result: dict = {}

    def run() -> None:
        start, cpu = time.perf_counter(), time.process_time()
        margins = margin_lower_bounds(graph, x, y, float(data["eps"]), "linf", method,
                                      alpha=AlphaOptions(iterations=20))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        result["seconds"], result["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
        result["margins"] = [[None if v == float("inf") else v for v in row] for row in margins.tolist()]

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        run()
        result["peak"] = torch.cuda.max_memory_allocated(device)
    else:
        result["peak"] = peak_rss_growth(run)
    return result


def _child(command: list[str], threads: int, timeout: float | None = None) -> dict:
    """The last line of ``command``'s output (run with ``OMP_NUM_THREADS=threads``) as JSON, or ``{"error": why}``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {timeout:.0f} s"}
    except OSError as error:
        return {"error": f"cannot run {command[0]}: {error.strerror}"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {last}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ours(method: str, path: str, args: argparse.Namespace) -> dict:
    """:func:`crown_cost` run by a new interpreter (so that its peak memory is its own)."""
    return _child([sys.executable, os.path.abspath(__file__), "--one", method, path, "--device", args.device,
                   "--threads", str(args.threads)], args.threads)


def _theirs(method: str, path: str, args: argparse.Namespace) -> dict:
    """auto_LiRPA's bounds by ``args.lirpa`` running ``_lirpa_side.py`` in a new process."""
    side = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_lirpa_side.py")
    return _child([args.lirpa, side, path, LIRPA_METHODS[method], str(args.threads)], args.threads,
                  timeout=args.lirpa_timeout)


def _available_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))


def _max_difference(a: list[list], b: list[list]) -> float:
    return max(abs(p - q) for ra, rb in zip(a, b) for p, q in zip(ra, rb) if p is not None and q is not None)


def _mean(margins: list[list]) -> float:
    values = [v for row in margins for v in row if v is not None]
    return sum(values) / len(values)


def _fmt(r: dict) -> str:
    """``wall s | CPU s | MB`` of one run."""
    memory = "n/a" if r["peak"] is None else f"{r['peak'] / 2**20:.0f}"
    return f"{r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {memory}"


def _lirpa_skip(method: str, batch: int, args: argparse.Namespace) -> str | None:
    """Why auto_LiRPA does not run ``method`` at ``batch`` here, or ``None``."""
    if not args.lirpa:
        return "not run (no --lirpa)"
    if f"{method}:{batch}" in args.lirpa_skip.split(","):
        return "skipped (--lirpa-skip)"
    need = LIRPA_GB_PER_IMAGE * batch * 2**30
    if _available_bytes() < need * 1.2:
        return f"skipped: needs about {need / 2**30:.0f} GB, {_available_bytes() / 2**30:.0f} GB available"
    return None


def comparison_rows(method: str, batch: int, args: argparse.Namespace) -> tuple[str, dict]:
    """The table row of ``method`` at ``batch`` (ours, and auto_LiRPA's beside it when ``--lirpa`` is given) and our
    run's measurements."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "inputs.pt")
        save_inputs(path, batch)
        ours = _ours(method, path, args)
        if "error" in ours:
            raise RuntimeError(f"{method} at batch {batch} failed: {ours['error']}")
        skip = _lirpa_skip(method, batch, args)
        theirs = {"error": skip} if skip else _theirs(method, path, args)
    row = f"| {method} | {batch} | {_fmt(ours)} | {_mean(ours['margins']):.5f} |"
    if "error" in theirs:
        return row + f" {theirs['error']} |" + " |" * 6, ours
    diff = _max_difference(ours["margins"], theirs["margins"])
    ratio_t, ratio_c = ours["seconds"] / theirs["seconds"], ours["cpu_seconds"] / theirs["cpu_seconds"]
    ratio_m = "n/a" if not (ours["peak"] and theirs["peak"]) else f"{ours['peak'] / theirs['peak']:.2f}"
    return (row + f" {_fmt(theirs)} | {_mean(theirs['margins']):.5f} | {diff:.1e} | "
                  f"{ratio_t:.2f} / {ratio_c:.2f} | {ratio_m} |", ours)


def target_lines(runs: dict[tuple[str, int], dict]) -> list[str]:
    """The issue's targets checked on our runs: any method at batch 64 within 24 GB, α-CROWN at batch 1 in 60 s."""
    lines = []
    for (method, batch), ours in sorted(runs.items()):
        if batch == 64 and ours["peak"] is not None:
            verdict = "met" if ours["peak"] <= 24 * 2**30 else "NOT met"
            lines.append(f"- {method} at batch 64 within 24 GB: {verdict} ({ours['peak'] / 2**30:.2f} GB peak)")
        if method == "alpha-crown" and batch == 1:
            verdict = "met" if ours["seconds"] <= 60 else "NOT met"
            lines.append(f"- α-CROWN at batch 1 within 60 s: {verdict} ({ours['seconds']:.1f} s wall, "
                         f"{ours['cpu_seconds']:.1f} s CPU)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,4", help="batch sizes for CROWN and α-CROWN")
    parser.add_argument("--methods", default="crown,alpha-crown")
    parser.add_argument("--alpha-batches", default=None, help="batch sizes for α-CROWN (default: --batches)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lirpa", metavar="PYTHON", help="an interpreter that has auto_LiRPA: run it side by side")
    parser.add_argument("--lirpa-skip", default="", help="METHOD:BATCH,... not to run with auto_LiRPA")
    parser.add_argument("--lirpa-timeout", type=float, default=1800, help="seconds allowed to one auto_LiRPA run")
    parser.add_argument("--record", action="store_true", help="write the bounds_speed section of RESULTS.md")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.one:
        print(json.dumps(crown_cost(args.one[0], args.one[1], device)))
        return
    lines = [f"threads: {args.threads}, device: {device}", "",
             "| network (batch 64) | forward CPU ms | IBP CPU ms | IBP / forward |", "|---|---|---|---|"]
    for name, model, shape in (("residual CNN 3x32x32", build_network(), (3, 32, 32)),
                               ("mnist-cnn (random init)", mnist_cnn().eval(), (1, 28, 28))):
        forward, ibp = ibp_ratio(model, shape, device)
        lines.append(f"| {name} | {forward * 1e3:.1f} | {ibp * 1e3:.1f} | {ibp / forward:.2f} |")
    lines += ["", "| method | batch | ours wall s | ours CPU s | ours peak MB | ours mean margin | auto_LiRPA wall s | "
              "auto_LiRPA CPU s | auto_LiRPA peak MB | auto_LiRPA mean margin | max abs margin difference | "
              "time ratio ours/theirs (wall / CPU) | memory ratio ours/theirs |", "|" + "---|" * 13]
    runs: dict[tuple[str, int], dict] = {}
    for method in args.methods.split(","):
        batches = args.alpha_batches if method == "alpha-crown" and args.alpha_batches else args.batches
        for batch in (int(b) for b in batches.split(",")):
            row, runs[method, batch] = comparison_rows(method, batch, args)
            lines.append(row)
            logging.info(row)
    text = "\n".join(lines + ["", "Targets:", *target_lines(runs), "", NOTES])
    print(text)
    if args.record:
        from _report import machine_description, update_section

        update_section("bounds_speed", f"## Bound engine speed\n\n{machine_description(device)}\n\n{text}\n")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
