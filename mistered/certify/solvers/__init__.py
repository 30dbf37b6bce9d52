"""The solver layer: the one place that speaks to HiGHS, Clarabel and OR-Tools (SCIP), through public APIs only.

* :mod:`.status` — :class:`~.status.Status` (how every solver call ends) and :class:`~.status.SolveResult`
  (status, objective, the anytime bound, the solution, seconds).
* :mod:`.highs` — HiGHS models (``highspy``): silent, single-threaded, time-limited runs mapped to a Status.
* :mod:`.mip` — MILPs on SCIP (OR-Tools) or HiGHS with time limits and SCIP's memory cap; LipMIP's builder.
* :mod:`.big_m` — the big-M ReLU encoding, written once for every MILP.
* :mod:`.triangle` — the triangle (LP) relaxation's rows, and the relaxation of a ReLU network as an incremental
  HiGHS model used by branch and bound over ReLU splits; :mod:`.l2_cuts` adds the L2 objective's cuts and
  Newton steps.
* :mod:`.polytope_qp` — a convex QP over a polytope whose bounds change in place (Clarabel).
* :mod:`.projection` — exact L1/L2/L∞ distances from a point to a polytope (LP / QP).
"""

__all__: list[str] = []
