"""Speed and memory of the bound engine (IBP, CROWN, α-CROWN) on a CIFAR-size residual CNN.

    OMP_NUM_THREADS=1 python benchmarks/bounds_speed.py [--batches 1,4] [--methods crown,alpha-crown] [--threads 1]
        [--device cpu] [--record]

Measures, on this machine:

1. IBP / forward-pass time (interval bounds of every node against one plain evaluation of the model), on the
   residual CNN and the bundled-style MNIST CNN, batch 64;
2. CROWN and α-CROWN (20 iterations, intermediate bounds fixed at CROWN's, as auto_LiRPA's default) on the issue's
   network: input 3x32x32; stem conv3x3 3->16, BatchNorm, ReLU; two pre-activation residual blocks at 16 channels
   (``out = x + conv(ReLU(BN(conv(ReLU(BN(x))))))``); BN, ReLU, AvgPool 8, linear 256->10; eps = 1/255 (L∞):
   wall time and peak memory per batch size (each measured in a fresh process: the growth of its peak resident
   set on CPU, the peak allocation on CUDA), and the mean margin bound.

The weights are a fixed random initialisation (seed 0) with non-trivial BatchNorm statistics, so that another
implementation (auto_LiRPA with ``bound_opts={"compare_crown_with_ibp": True}``, the engine's intermediate-bound
convention) can be run on the same network: ``torch.save(build_network().state_dict(), path)`` reproduces it.
With ``--record`` the table is written to the ``bounds_speed`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from mistered.certify.bounds import AlphaOptions, InputSet, interval_bounds, margin_lower_bounds
from mistered.certify.graph import trace_graph
from mistered.memory import peak_rss_growth
from mistered.models.architectures import mnist_cnn

EPS = 1 / 255


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


def _time_pair(first, second, repeat: int = 9) -> tuple[float, float]:
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
    """``(forward seconds, IBP seconds)`` of CPU time, best of 9 measured alternately, batch ``batch``."""
    graph = trace_graph(model, shape).to(device)
    model = model.to(device)
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0)).to(device)
    input_set = InputSet.ball(x, EPS)
    with torch.no_grad():
        return _time_pair(lambda: model(x), lambda: interval_bounds(graph, input_set))


def crown_cost(method: str, batch: int, device: torch.device) -> dict:
    """``{"seconds", "cpu_seconds", "peak", "margin"}``: wall and CPU time, peak bytes and mean margin bound of
    ``method`` at ``batch`` on the residual CNN."""
    model = build_network().to(device)
    graph = trace_graph(model, (3, 32, 32))
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    result: dict = {}

    def run() -> None:
        start, cpu = time.perf_counter(), time.process_time()
        margins = margin_lower_bounds(graph, x, y, EPS, "linf", method, alpha=AlphaOptions(iterations=20))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        result["seconds"], result["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
        result["margin"] = float(margins[torch.isfinite(margins)].mean())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        run()
        result["peak"] = torch.cuda.max_memory_allocated(device)
    else:
        result["peak"] = peak_rss_growth(run)
    return result


def _in_fresh_process(method: str, batch: int, args: argparse.Namespace) -> dict:
    """:func:`crown_cost` run by a new interpreter (so that its peak memory is its own)."""
    command = [sys.executable, __file__, "--one", method, str(batch), "--threads", str(args.threads),
               "--device", args.device]
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=dict(os.environ)).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,4", help="batch sizes for CROWN and α-CROWN")
    parser.add_argument("--methods", default="crown,alpha-crown")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--record", action="store_true", help="write the bounds_speed section of RESULTS.md")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.one:
        print(json.dumps(crown_cost(args.one[0], int(args.one[1]), device)))
        return
    lines = [f"threads: {args.threads}, device: {device}", "",
             "| network (batch 64) | forward CPU ms | IBP CPU ms | IBP / forward |", "|---|---|---|---|"]
    for name, model, shape in (("residual CNN 3x32x32", build_network(), (3, 32, 32)),
                               ("mnist-cnn (random init)", mnist_cnn().eval(), (1, 28, 28))):
        forward, ibp = ibp_ratio(model, shape, device)
        lines.append(f"| {name} | {forward * 1e3:.1f} | {ibp * 1e3:.1f} | {ibp / forward:.2f} |")
    lines += ["", "| method | batch | wall s | CPU s | peak memory MB | mean margin bound (eps = 1/255) |",
              "|---|---|---|---|---|---|"]
    for method in args.methods.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            r = _in_fresh_process(method, batch, args)
            memory = "n/a" if r["peak"] is None else f"{r['peak'] / 2**20:.0f}"
            lines.append(f"| {method} | {batch} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {memory} | "
                         f"{r['margin']:.5f} |")
    text = "\n".join(lines)
    print(text)
    if args.record:
        from _report import machine_description, update_section

        update_section("bounds_speed", f"## Bound engine speed\n\n{machine_description(device)}\n\n{text}\n")


if __name__ == "__main__":
    main()
