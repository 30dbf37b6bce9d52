"""The auto_LiRPA side of ``bounds_speed.py --lirpa PYTHON``: run by an interpreter that has auto_LiRPA (never a
dependency of mistered; only this script imports it).

    PYTHON benchmarks/_lirpa_side.py DATA.pt METHOD THREADS

``DATA.pt`` holds ``{"state_dict", "x" (B, 3, 32, 32), "y" (B,), "eps"}`` of :func:`bounds_speed.build_network`;
``METHOD`` is "crown" (auto_LiRPA's ``method="CROWN"``), "alpha-crown" (``method="CROWN-Optimized"``, 20
iterations, its other defaults: the slopes of every intermediate bound are optimised too, their bounds recomputed at
every iteration) or "alpha-crown-fixed" (the same with the intermediate bounds fixed at its CROWN bounds, passed as
``interm_bounds``: the problem the bound engine's default α-CROWN solves), all with
``bound_opts={"compare_crown_with_ibp": True}`` (the bound engine's intermediate-bound convention). The CROWN pass
that gives "alpha-crown-fixed" its intermediate bounds is timed with it. Prints one JSON line: wall and CPU seconds
and peak resident-memory growth of ``compute_bounds`` alone, the seconds building the ``BoundedModule``, and the
``(B, K)`` margin lower bounds (``null`` at ``j = y``).
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from mistered._compat import import_torchvision  # noqa: E402

import_torchvision()

from auto_LiRPA import BoundedModule, BoundedTensor  # noqa: E402
from auto_LiRPA.perturbations import PerturbationLpNorm  # noqa: E402
from bounds_speed import build_network  # noqa: E402

from mistered.certify.bounds import margin_spec  # noqa: E402
from mistered.memory import peak_rss_growth  # noqa: E402

__all__: list[str] = []

_METHODS = {"crown": "CROWN", "alpha-crown": "CROWN-Optimized", "alpha-crown-fixed": "CROWN-Optimized"}


def main() -> None:
    path, method, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    data = torch.load(path, weights_only=True)
    net = build_network()
    net.load_state_dict(data["state_dict"])
    x, y, eps = data["x"], data["y"], float(data["eps"])
    start = time.perf_counter()
    opts = {"compare_crown_with_ibp": True, "optimize_bound_args": {"iteration": 20}}
    bounded = BoundedModule(net.eval(), torch.zeros_like(x), bound_opts=opts, device="cpu")
    build_seconds = time.perf_counter() - start
    ptb = PerturbationLpNorm(norm=float("inf"), x_L=(x - eps).clamp(0, 1), x_U=(x + eps).clamp(0, 1))
    spec = margin_spec(y, 10)
    result: dict = {"build_seconds": build_seconds}

    def run() -> None:
        start, cpu = time.perf_counter(), time.process_time()
        fixed = None
        if method == "alpha-crown-fixed":
            bounded.compute_bounds(x=(BoundedTensor(x, ptb),), C=spec, method="CROWN", bound_upper=False)
            skip = {bounded.output_name[0], *(r.name for r in bounded.roots())}
            fixed = {n.name: (n.lower.detach(), n.upper.detach()) for n in bounded.nodes()
                     if n.name not in skip and getattr(n, "lower", None) is not None
                     and getattr(n, "upper", None) is not None}
        lower, _ = bounded.compute_bounds(x=(BoundedTensor(x, ptb),), C=spec, method=_METHODS[method],
                                          bound_upper=False, interm_bounds=fixed)
        result["seconds"], result["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
        result["lower"] = lower.detach()

    result["peak"] = peak_rss_growth(run)
    lower = result.pop("lower")
    margins = torch.full((x.shape[0], 10), float("nan"))
    others = torch.arange(10).expand(x.shape[0], -1) != y[:, None]
    margins = margins.masked_scatter(others, lower)
    result["margins"] = [[None if v != v else v for v in row] for row in margins.tolist()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
