"""The solver layer: the one place that speaks to HiGHS, Clarabel and OR-Tools (SCIP).

* :mod:`.triangle` — the triangle (LP) relaxation of a ReLU network as an incremental HiGHS model, used by branch
  and bound over ReLU splits; :mod:`.l2_cuts` adds the L2 objective's cuts and Newton steps.
* :mod:`.polytope_qp` — a convex QP over a polytope whose bounds change in place (Clarabel).
* :mod:`.projection` — exact L1/L2/L∞ distances from a point to a polytope (LP / QP).
"""

__all__: list[str] = []
