"""Exact minimal adversarial distances (``mistered.certify.exact.exact_distance``) on deeper nets, by search.

Run ``OMP_NUM_THREADS=1 python benchmarks/exact_distance.py [--points 10] [--time-limit 60] [--quick]``. It trains,
deterministically (seed 0, one thread, Adam), on data it makes or the bundled digits:

* ``16-20-40-80-2``: 16 inputs in [0, 1], hidden 20-40-80, 2 outputs, on a synthetic task (the sign of a fixed
  random quadratic form of the centred input);
* ``784-50-50-50-10``: MNIST on the bundled 5,000 digits (``mistered.data``, ``mnist-5k``);
* ``residual CNN``: a stem convolution 1->4 (4x4, stride 4: 7x7), a residual block ``x + conv(relu(conv(relu(x))))``
  (3x3, 4 channels), linear 196->10 (MNIST): a graph that is not a chain, lowered to one (the graph path);

and times ``exact_distance`` per point (the first correctly classified test points) with ``search="branch"`` in
L∞ and L2 and ``search="mip"`` in L∞ (each seeded by the boundary search, whose time is included, like the
lowering's). It prints, and writes to the ``exact_distance`` section of ``benchmarks/RESULTS.md``, per network and
search: points solved exactly within the limit, median and maximum seconds (a timeout counts as the limit), the
median ratio to the MIP's time on L∞ points both solved and the largest radius disagreement with the MIP.
``--quick``: 3 points, 20 s. ``--nets`` / ``--searches`` run a part only (printed, not recorded).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_description, update_section  # noqa: E402

from mistered.certify.exact import exact_distance  # noqa: E402
from mistered.certify.graph.piecewise_lowering import as_plnet  # noqa: E402
from mistered.data import load_dataset  # noqa: E402

SEARCHES = ("branch-linf", "branch-l2", "mip-linf")


class ResidualCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 4, stride=4)
        self.conv1, self.conv2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(196, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.conv2(F.relu(self.conv1(F.relu(x))))
        return self.fc(F.relu(x).flatten(1))


def _mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def synthetic(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points of [0, 1]^16 labelled by the sign of a fixed quadratic form of ``x - 0.5``."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(16, 16, generator=torch.Generator().manual_seed(123))
    x = torch.rand(n, 16, generator=gen)
    centred = x - 0.5
    return x, (torch.einsum("bi,ij,bj->b", centred, q, centred) > 0).long()


def _networks() -> dict:
    """name -> (make the trained model, test inputs, test labels), built on demand."""
    def synthetic_net():
        torch.manual_seed(0)
        return _train(_mlp((16, 20, 40, 80, 2)), *synthetic(4000), epochs=60)

    def mnist(model_fn, epochs):
        def make():
            torch.manual_seed(0)
            train = load_dataset("mnist-5k", "train")
            return _train(model_fn(), train.images, train.labels, epochs)
        return make

    test = load_dataset("mnist-5k", "test")
    x_syn, y_syn = synthetic(500, seed=1)
    return {
        "16-20-40-80-2 (synthetic)": (synthetic_net, x_syn, y_syn),
        "784-50-50-50-10 (MNIST)": (mnist(lambda: _mlp((784, 50, 50, 50, 10)), 10), test.images, test.labels),
        "residual CNN 1x28x28 (MNIST)": (mnist(ResidualCNN, 5), test.images, test.labels),
    }


def _bench(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, time_limit: float,
           searches: tuple[str, ...]) -> dict:
    rows: dict[str, list] = {s: [] for s in searches}
    net = as_plnet(model, tuple(x.shape[1:]), (0.0, 1.0))  # lowered once; the per-point time is the search's
    for i in range(len(x)):
        for key in searches:
            search, norm = key.split("-")
            start = time.perf_counter()
            cert = exact_distance(net, x[i:i + 1], y[i:i + 1], norm, search=search, time_limit=time_limit)
            rows[key].append((cert.status[0], time.perf_counter() - start, float(cert.upper[0]),
                              float(cert.radius[0])))
        print(name, i, {k: (r[-1][0], round(r[-1][1], 2), round(r[-1][2], 5)) for k, r in rows.items()}, flush=True)
    return rows


def _summary(name: str, rows: dict, time_limit: float) -> list[str]:
    lines, mip = [], rows.get("mip-linf", [])
    for key, results in rows.items():
        seconds = [r[1] if r[0] == "exact" else max(r[1], time_limit) for r in results]
        ratio = gap = "-"
        if key == "branch-linf" and mip:
            both = [(b, m) for b, m in zip(results, mip) if b[0] == m[0] == "exact"]
            if both:
                ratio = f"{statistics.median(b[1] / m[1] for b, m in both):.2f}"
                gap = f"{max(abs(b[2] - m[2]) for b, m in both):.1e}"
        solved = sum(r[0] == "exact" for r in results)
        lines.append(f"| {name} | {key} | {solved}/{len(results)} | {statistics.median(seconds):.2f} | "
                     f"{max(seconds):.2f} | {ratio} | {gap} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10, help="test points per network")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per point and search")
    parser.add_argument("--quick", action="store_true", help="3 points, 20 s limit")
    parser.add_argument("--nets", nargs="+", default=None, help="only networks whose name contains one of these")
    parser.add_argument("--searches", nargs="+", choices=SEARCHES, default=list(SEARCHES))
    args = parser.parse_args()
    if args.quick:
        args.points, args.time_limit = 3, 20.0
    torch.set_num_threads(1)
    table = ["| network | search-norm | exact | median s | max s | branch/MIP time (median) | max radius gap |",
             "|---|---|---|---|---|---|---|"]
    nets = {k: v for k, v in _networks().items() if args.nets is None or any(n in k for n in args.nets)}
    started = time.perf_counter()
    for name, (make, images, labels) in nets.items():
        model = make()
        with torch.no_grad():
            correct = model(images).argmax(1) == labels
        accuracy = float(correct.double().mean())
        rows = _bench(name, model, images[correct][: args.points], labels[correct][: args.points], args.time_limit,
                      tuple(args.searches))
        table += _summary(f"{name}, acc {accuracy:.3f}", rows, args.time_limit)
        print("\n".join(table), flush=True)
    if args.nets is not None or tuple(args.searches) != SEARCHES or args.quick:
        return
    command = " ".join(["OMP_NUM_THREADS=1 python benchmarks/exact_distance.py", *sys.argv[1:]])
    update_section("exact_distance", "\n".join([
        f"Exact minimal adversarial distance by `exact_distance`. Machine: {machine_description()}. "
        f"Command: `{command}` ({time.perf_counter() - started:.0f} s in all).",
        f"First {args.points} correctly classified test points per network; time limit {args.time_limit:g} s per "
        "point and search (a timeout counts as the limit); times include the boundary search that seeds every "
        "search. Targets (issue #15): 10/10 within 60 s, median <= 5 s, branch no slower than the MIP.",
        "",
        *table,
    ]))


if __name__ == "__main__":
    main()
