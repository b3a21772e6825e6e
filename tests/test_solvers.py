"""The LTC solvers converge to the same ODE solution at their stated order."""

import mlx.core as mx
import numpy as np
import pytest

from ncps_mlx import LTCCell
from ncps_mlx.wirings import AutoNCP

UNFOLDS = (4, 8, 16, 32, 64)
ORDERS = {"semi_implicit": 1.0, "explicit_euler": 1.0, "rk4": 4.0}


@pytest.fixture(scope="module")
def problem():
    mx.random.seed(1)
    cell = LTCCell(AutoNCP(12, 3), 4)
    cell.set_dtype(mx.float64)  # the finest solutions are below float32 resolution
    x = mx.random.normal((2, 4)).astype(mx.float64)
    v0 = mx.random.uniform(-0.5, 0.5, (2, 12)).astype(mx.float64)
    return cell, x, v0


def solve(problem, solver, unfolds, dt=2.0):
    cell, x, v0 = problem
    cell.solver, cell.ode_unfolds = solver, unfolds
    return np.array(cell(x, v0, dt)[1])


@pytest.mark.parametrize("solver", sorted(ORDERS))
def test_convergence_order(problem, solver):
    exact = solve(problem, "rk4", 4096)
    errors = [np.abs(solve(problem, solver, n) - exact).max() for n in UNFOLDS]
    slope = np.polyfit(np.log(UNFOLDS), np.log(errors), 1)[0]
    assert slope == pytest.approx(-ORDERS[solver], abs=0.4)
    assert errors[-1] < 1e-2


def test_solvers_agree_with_each_other(problem):
    fine = [solve(problem, solver, 512) for solver in ORDERS]
    for other in fine[1:]:
        np.testing.assert_allclose(other, fine[0], atol=2e-3)
