"""PolytopeQP (Clarabel) solves QPs over a polytope whose bounds change in place; checked against exact projections."""

import numpy as np
import pytest
import scipy.sparse as sp

from mistered.certify.solvers.polytope_qp import PolytopeQP
from mistered.certify.solvers.projection import project_l2


@pytest.mark.parametrize("seed", range(5))
def test_projection_as_a_qp_equals_the_exact_l2_projection_as_bounds_and_rows_change(seed):
    rng = np.random.default_rng(seed)
    d, m = 6, 4
    a, x0 = rng.standard_normal((m, d)), rng.random(d)
    b = a @ x0 - 0.3  # x0 violates every row
    qp = PolytopeQP(a, np.full(m, -np.inf), b, np.zeros(d), np.ones(d))
    for step in range(3):
        x = qp.solve(-x0, sp.identity(d, format="csc"))  # min ½|x|² - x0·x = ½|x - x0|² + const
        exact = project_l2(a if step < 2 else np.vstack([a, np.ones((1, d))]),
                           b if step < 2 else np.append(b, 2.0), x0, qp.col_lo, qp.col_hi)
        if exact is None:
            assert x is None
        else:
            assert np.linalg.norm(x - x0) == pytest.approx(exact[1], rel=1e-6, abs=1e-7)
        if step == 0:
            qp.col_hi[0] = 0.5  # a bound changed in place
        else:
            qp.add_row(np.arange(d), np.ones(d), -np.inf, 2.0)  # Σ x <= 2


def test_forgetting_added_rows_keeps_the_given_ones_and_the_last_added():
    qp = PolytopeQP(np.array([[1.0, 1.0]]), np.array([-np.inf]), np.array([1.0]), np.zeros(2), np.ones(2))
    for bound in (0.9, 0.8, 0.7):
        qp.add_row(np.array([0]), np.array([1.0]), -np.inf, bound)  # x0 <= bound
    qp.forget_added(1)
    assert qp.row_hi.tolist() == [1.0, 0.7]
    x = qp.solve(np.array([-1.0, 0.0]), sp.identity(2, format="csc"))  # nearest to (1, 0)
    assert x == pytest.approx([0.7, 0.0], abs=1e-3)  # (an interior point: near the bound, not on it)


def test_an_empty_polytope_and_an_equality_row():
    qp = PolytopeQP(np.array([[1.0, 1.0]]), np.array([1.5]), np.array([1.5]), np.zeros(2), np.ones(2))
    x = qp.solve(np.zeros(2), sp.identity(2, format="csc"))
    assert x == pytest.approx([0.75, 0.75], abs=1e-6)
    qp.col_hi[:] = 0.5  # x1 + x2 = 1.5 is out of reach
    assert qp.solve(np.zeros(2), sp.identity(2, format="csc")) is None
    qp.col_hi[:] = 1.0
    qp.col_lo[0] = 2.0  # crossed bounds
    assert qp.solve(np.zeros(2), sp.identity(2, format="csc")) is None
