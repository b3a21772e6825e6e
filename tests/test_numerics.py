"""The timespan bounds an LTC declares for its solvers hold in the model, and
ncps_mlx.numerics warns outside them (and only there)."""

import math
import warnings

import mlx.core as mx
import numpy as np
import pytest

from ncps_mlx import LTC, Cell, CfC
from ncps_mlx.cells.solvers import OVERFLOW_HEADROOM, STABILITY_LIMITS
from ncps_mlx.errors import see
from ncps_mlx.numerics import UnstableSolverWarning, check_timespans, timespan_bounds
from ncps_mlx.rnn import RNN
from ncps_mlx.wirings import AutoNCP, FullyConnected

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
EXPLICIT = ("explicit_euler", "rk4")


def ltc(solver, dtype=mx.float32, seed=0, wiring=None, **kwargs):
    mx.random.seed(seed)
    model = LTC(3, wiring or FullyConnected(5), solver=solver, **kwargs)
    model.set_dtype(dtype)
    model.eval()
    return model


def saturated(solver, dtype=mx.float32):
    """An LTC whose synapses are all fully open (mu far below any potential): its decay
    rates are exactly the bound's, so the explicit solvers' bound is tight."""
    model = ltc(solver)
    for name in ("mu", "sensory_mu"):
        setattr(model.rnn_cell, name, mx.full(getattr(model.rnn_cell, name).shape, -1e4))
    model.set_dtype(dtype)
    return model


def largest_output(model, timespan, steps=60, seed=0):
    """The largest |output| over a sequence at a constant timespan (nan if any is)."""
    x = np.random.default_rng(seed).standard_normal((2, steps, 3)).astype(np.float32)
    y, _ = model(mx.array(x), timespans=timespan)
    y = np.array(y.astype(mx.float32))
    return float(np.abs(y).max()) if np.isfinite(y).all() else math.nan


def diverged(value):
    return not math.isfinite(value) or value > 1e3


def warns(model, timespans):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        returned = check_timespans(model, timespans, owner="test")
    categories = [w.category for w in caught]
    assert returned == (UnstableSolverWarning in categories)
    return returned


# --- the bounds against the model -----------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", EXPLICIT)
def test_the_explicit_bound_is_tight_with_every_synapse_open(solver, dtype):
    model = saturated(solver, DTYPES[dtype])
    low, high = model.rnn_cell.timespan_bounds()
    assert low == 0.0
    inside, beyond = high * 0.95, high * 1.1
    assert largest_output(model, inside) < 2 and not warns(model, inside)
    assert diverged(largest_output(model, beyond)) and warns(model, beyond)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", EXPLICIT)
@pytest.mark.parametrize("seed", [0, 1])
def test_the_explicit_bound_is_safe_on_random_models(solver, dtype, seed):
    model = ltc(solver, DTYPES[dtype], seed, wiring=AutoNCP(12, 3, seed=seed), ode_unfolds=4)
    _, high = timespan_bounds(model)
    # Well within the bound: finite and bounded outputs over many steps, no warning.
    assert largest_output(model, 0.5 * high, steps=100) < 2
    assert not warns(model, 0.5 * high)
    # Well beyond it (the synapses are only partly open, so the true limit is higher):
    # the potentials blow up, and the check says so.
    assert diverged(largest_output(model, 10 * high)) and warns(model, 10 * high)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("solver", EXPLICIT)
def test_a_huge_timespan_is_nan_and_warns_in_every_dtype(solver, dtype):
    model = ltc(solver, DTYPES[dtype])
    steps = [largest_output(model, 1e6, steps=n) for n in (1, 2)]
    assert any(diverged(value) for value in steps)
    assert warns(model, 1e6)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_semi_implicit_lower_bound_holds_in_float16(seed):
    model = ltc("semi_implicit", mx.float16, seed, wiring=AutoNCP(10, 2, seed=seed))
    low, high = model.rnn_cell.timespan_bounds()
    assert high == math.inf
    assert math.isnan(largest_output(model, 1e-9)) and warns(model, 1e-9)
    # The bound keeps cm / sub-step below half float16's largest value: a quarter of
    # it overflows, a bit above it is finite.
    assert math.isnan(largest_output(model, low / (2 * OVERFLOW_HEADROOM)))
    assert warns(model, low / (2 * OVERFLOW_HEADROOM))
    assert math.isfinite(largest_output(model, 1.1 * low)) and not warns(model, 1.1 * low)
    assert math.isfinite(largest_output(model, 1e6)) and not warns(model, 1e6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_semi_implicit_solver_takes_tiny_and_huge_steps_in_float32_range(dtype):
    model = ltc("semi_implicit", DTYPES[dtype])
    assert timespan_bounds(model)[0] < 1e-30
    for timespan in (1e-9, 1e6):
        assert math.isfinite(largest_output(model, timespan))
        assert not warns(model, timespan)


# --- how the bounds are derived -------------------------------------------------------


@pytest.mark.parametrize("implicit", [True, False])
def test_decay_rates_are_the_open_synapse_conductances_over_cm(implicit):
    mx.random.seed(3)
    cell = LTC(3, AutoNCP(8, 2, seed=3), implicit_param_constraints=implicit).rnn_cell
    positive = (lambda a: np.log1p(np.exp(a))) if implicit else (lambda a: a)
    p = {name: np.array(value, np.float64) for name, value in cell.parameters().items()}
    mask = np.abs(cell._wiring.adjacency_matrix)
    sensory_mask = np.abs(cell._wiring.sensory_adjacency_matrix)
    expected = positive(p["gleak"])
    expected = expected + (positive(p["w"]) * mask).sum(0)
    expected = expected + (positive(p["sensory_w"]) * sensory_mask).sum(0)
    expected = expected / positive(p["cm"])
    np.testing.assert_allclose(cell.decay_rates(), expected, rtol=1e-6)
    for solver in EXPLICIT:
        cell.solver = solver
        _, high = cell.timespan_bounds()
        limit = STABILITY_LIMITS[solver]
        assert high == pytest.approx(limit * cell.ode_unfolds / expected.max(), rel=1e-6)


def test_the_bounds_scale_with_ode_unfolds_and_follow_the_weights():
    model = ltc("explicit_euler", ode_unfolds=6)
    high = timespan_bounds(model)[1]
    assert timespan_bounds(ltc("explicit_euler", ode_unfolds=12))[1] == pytest.approx(2 * high)
    model.rnn_cell.cm = model.rnn_cell.cm + 3.0  # a slower membrane: longer stable steps
    assert timespan_bounds(model)[1] > 2 * high


# --- check_timespans ------------------------------------------------------------------


def test_check_timespans_reads_every_form_of_timespans():
    model = ltc("explicit_euler")
    _, high = timespan_bounds(model)
    assert warns(model, None) == (high < 1.0)  # the layers' default, 1
    for inside in (0.5 * high, [0.1 * high, 0.5 * high], np.full((2, 7), 0.5 * high)):
        assert not warns(model, inside)
    assert not warns(model, mx.full((2, 7, 1), 0.5 * high, dtype=mx.bfloat16))
    assert warns(model, mx.array([[0.5 * high, 2 * high]]))
    assert warns(model, np.array([0.5 * high, np.nan, 2 * high]))
    assert not warns(model, np.array([0.5 * high, np.nan, np.inf]))  # not finite: not ours
    assert not warns(model, np.array([]))


def test_the_warning_names_the_cell_the_solver_the_bound_and_what_to_do():
    model = ltc("rk4", mx.float16, ode_unfolds=3)
    _, high = timespan_bounds(model)

    def fit(timespans):  # a caller checking its caller's arguments
        check_timespans(model, timespans, owner="fit")

    with pytest.warns(UnstableSolverWarning) as caught:
        fit(np.array([1.0, 50.0]))
    message = str(caught[0].message)
    assert message.startswith("[fit] a timespan of 50 exceeds ")
    assert f"{high:.3g}" in message
    assert "LTCCell's 'rk4' solver (ode_unfolds=3, float16)" in message
    for advice in ("shorter timespans", "more ode_unfolds", "'semi_implicit'"):
        assert advice in message
    assert message.splitlines()[-1] == see("unstable-solver")
    assert caught[0].filename == __file__  # the line calling `fit`, by default
    assert caught[0].lineno == fit.__code__.co_firstlineno + 4

    low, _ = timespan_bounds(ltc("semi_implicit", mx.float16))
    with pytest.warns(UnstableSolverWarning, match=r"is below .* float16\)") as caught:
        check_timespans(ltc("semi_implicit", mx.float16), 1e-9, owner="fit")
    message = str(caught[0].message)
    assert f"{low:.3g}" in message and "float32 parameters" in message


def test_cells_without_bounds_are_not_checked():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert timespan_bounds(CfC(3, 4)) is None
        assert not check_timespans(CfC(3, 4), 1e30, owner="test")
        # The semi-implicit solver in float32 bounds (almost) nothing; its bound is
        # still declared, and met by any float32 timespan of a normal size.
        assert not check_timespans(ltc("semi_implicit"), [1e-30, 1e30], owner="test")


class Bounded(Cell):
    """A cell of one's own declaring bounds: the check reads them, whatever the cell."""

    @property
    def input_size(self):
        return 2

    @property
    def state_size(self):
        return 2

    @property
    def output_size(self):
        return 2

    def step(self, consts, inputs, h, dt):
        return h, h + dt * inputs

    def timespan_bounds(self):
        return 0.1, 2.0


def test_a_cell_of_ones_own_declares_its_bounds():
    model = RNN(Bounded())
    assert timespan_bounds(model) == (0.1, 2.0)
    assert timespan_bounds(model.rnn_cell) == (0.1, 2.0)
    assert not warns(model, [0.1, 2.0])
    assert warns(model, 0.05) and warns(model, 3.0)
    with pytest.warns(
        UnstableSolverWarning, match=r"^\[test\] a timespan of 3 exceeds 2, .* Bounded"
    ):
        check_timespans(model, 3.0, owner="test")
