r"""ODE solvers for the LTC membrane equation.

The LTC vector field is linear in the membrane potential with potential-dependent
conductances:

$$
C_m \frac{dv}{dt} = n(v) - d(v)\, v
$$

where $n(v) = g_l v_l + \sum_i A_i(v) E_i$ and $d(v) = g_l + \sum_i A_i(v)$
(leak plus synaptic terms). A *field* is a callable ``v -> (n(v), d(v))``; a solver
advances ``v`` over ``dt`` in ``unfolds`` equal sub-steps. Solvers know nothing of the
cell, and the cell nothing of how it is integrated.

Near a state the field decays at a rate $\lambda = d(v) / C_m$ (per neuron). The
explicit solvers stay stable while each sub-step ``h`` keeps $h \lambda$ within
their `STABILITY_LIMITS`; beyond it their errors grow at every sub-step until the
potentials overflow. The semi-implicit solver is stable for any ``h``, but computes
$C_m / h$, which overflows a low-precision dtype when ``h`` is tiny (float16's
largest value is 65504).
"""

import math
from collections.abc import Callable

import mlx.core as mx

Field = Callable[[mx.array], tuple[mx.array, mx.array]]
Solver = Callable[[Field, mx.array, mx.array, "mx.array | float", int, float], mx.array]


def semi_implicit_euler(
    field: Field, v: mx.array, cm: mx.array, dt: mx.array | float, unfolds: int, epsilon: float
) -> mx.array:
    """The reference's fused solver: implicit in the leak, explicit in the conductances.

    ``v <- (C/h v + n(v)) / (C/h + d(v) + epsilon)`` with ``h = dt / unfolds``; stable for
    any step size because the update is a convex combination of bounded potentials.
    """
    cm_t = cm / (dt / unfolds)
    for _ in range(unfolds):
        numerator, denominator = field(v)
        v = (cm_t * v + numerator) / (cm_t + denominator + epsilon)
    return v


def _derivative(field: Field, v: mx.array, cm: mx.array) -> mx.array:
    numerator, denominator = field(v)
    return (numerator - denominator * v) / cm


def explicit_euler(
    field: Field, v: mx.array, cm: mx.array, dt: mx.array | float, unfolds: int, epsilon: float
) -> mx.array:
    """Forward Euler, first order; needs small steps for stiff (large conductance) cells."""
    h = dt / unfolds
    for _ in range(unfolds):
        v = v + h * _derivative(field, v, cm)
    return v


def rk4(
    field: Field, v: mx.array, cm: mx.array, dt: mx.array | float, unfolds: int, epsilon: float
) -> mx.array:
    """The classical fourth-order Runge-Kutta method (four field evaluations a sub-step)."""
    h = dt / unfolds
    for _ in range(unfolds):
        k1 = _derivative(field, v, cm)
        k2 = _derivative(field, v + 0.5 * h * k1, cm)
        k3 = _derivative(field, v + 0.5 * h * k2, cm)
        k4 = _derivative(field, v + h * k3, cm)
        v = v + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return v


SOLVERS: dict[str, Solver] = {
    "semi_implicit": semi_implicit_euler,
    "explicit_euler": explicit_euler,
    "rk4": rk4,
}
"""The ODE solvers by the name an [`LTCCell`][ncps_mlx.cells.LTCCell]'s `solver` takes."""
# Field evaluations per sub-step of each solver.
FIELD_EVALUATIONS: dict[str, int] = {"semi_implicit": 1, "explicit_euler": 1, "rk4": 4}
#: The largest ``h * lambda`` (sub-step times decay rate) for which each solver is stable
#: on a decaying linear ODE ``dv/dt = -lambda v``: the real stability interval of forward
#: Euler is [-2, 0], that of the classical RK4 about [-2.785, 0]; semi-implicit Euler is
#: stable for any step.
STABILITY_LIMITS: dict[str, float] = {
    "semi_implicit": math.inf,
    "explicit_euler": 2.0,
    "rk4": 2.785,
}
#: ``C_m / h`` of the semi-implicit solver is kept below the dtype's largest value by this
#: factor, room for the potentials' magnitude (``C_m / h * v``) and the denominator's
#: other terms.
OVERFLOW_HEADROOM = 2.0
