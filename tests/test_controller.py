"""The direct steps (ncps_mlx.kernels.direct) against the graph primitives; the
Controller, stepping one call at a time, against the model's call over the sequence (in
float32, float16 and bfloat16); and its refusal of non-finite inputs and results."""

import contextlib
import math
import warnings

import mlx.core as mx
import numpy as np
import pytest

from ncps_mlx import LTC, CfC, Controller, LSTMCell, kernels
from ncps_mlx.errors import NCPSError, NumericsError, see
from ncps_mlx.kernels import direct
from ncps_mlx.numerics import UnstableSolverWarning, timespan_bounds
from ncps_mlx.wirings import NCP, AutoNCP, Random
from tests.kernel_checks import close, needs_kernels
from tests.test_kernels import random_step
from tests.test_kernels_cfc import CHAINS, random_chain

# --- the direct forms against the graph primitives ----------------------------------


def numpy(*arrays):
    return [np.array(a) for a in arrays]


@needs_kernels
@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("chain", CHAINS)
def test_direct_cfc_step_is_the_primitive(chain, batch):
    layout, mode, activation = CHAINS[chain]
    projected, h, dt, weights = random_chain(layout, mode, batch)
    expected = kernels.cfc_step(projected, h, dt, weights, layout, mode, activation)
    mx.eval(weights)
    got = direct.cfc_step(*numpy(projected, h, dt), weights, layout, mode, activation)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    close(got, expected, tol=1e-6)


@needs_kernels
@pytest.mark.parametrize(("batch", "unfolds"), [(1, 6), (5, 3)])
def test_direct_ltc_step_is_the_primitive(batch, unfolds):
    per_neuron, synapses = random_step(batch=batch)
    expected = kernels.ltc_step(*per_neuron, synapses, unfolds)
    mx.eval(synapses)
    close(direct.ltc_step(*numpy(*per_neuron), synapses, unfolds), expected, tol=1e-6)


@needs_kernels
def test_direct_synapse_sums_are_the_formula():
    (x, *_), synapses = random_step(batch=3, neurons=7)
    mx.eval(synapses)
    numerator, denominator = direct.synapse_sums(np.array(x), synapses, neurons=9)
    s = {name: np.array(value) for name, value in synapses.items()}
    a = 1 / (1 + np.exp(-s["sigma"] * (np.array(x)[:, s["pre"]] - s["mu"])))
    expected_num, expected_den = np.zeros((3, 9)), np.zeros((3, 9))
    np.add.at(expected_num.T, s["post"], (s["w_erev"] * a).T)
    np.add.at(expected_den.T, s["post"], (s["w"] * a).T)
    close(numerator, expected_num)
    close(denominator, expected_den)


@needs_kernels
def test_direct_lstm_step_is_the_cell():
    cell = LSTMCell(5, 4)
    x, h, c = (mx.random.normal((3, n)) for n in (5, 4, 4))
    consts = cell.derive()
    expected = cell.step(consts, cell.project(consts, x), h, c)
    got = kernels.direct_stepper(cell)(*numpy(x, h, c))
    for a, b in zip(got, expected, strict=True):
        close(a, b)


@needs_kernels
def test_direct_forms_reject_what_they_cannot_take():
    projected, h, dt, weights = random_chain([(3, 0)], "default", batch=2)
    mx.eval(weights)
    args = numpy(projected, h, dt)
    with pytest.raises(ValueError, match="'h' must be float32 of shape \\(2, 3\\)"):
        direct.cfc_step(args[0], args[1][:, :2], args[2], weights, [(3, 0)])
    with pytest.raises(ValueError, match="unknown mode 'bad'; choose one of"):
        direct.cfc_step(*args, weights, [(3, 0)], mode="bad")
    with pytest.raises(ValueError, match="need evaluated weights"):
        direct.cfc_step(*args, [weights[0] * 2], [(3, 0)])
    per_neuron, synapses = random_step(batch=2, neurons=7)
    mx.eval(synapses)
    bad = dict(synapses, post=synapses["post"] + 7)
    mx.eval(bad)
    with pytest.raises(ValueError, match=r"'post' holds index 1\d outside \[0, 7\)"):
        direct.ltc_step(*numpy(*per_neuron), bad, 2)
    with pytest.raises(ValueError, match=r"synapse 'mu' must be float32 of the indices' shape"):
        short = dict(synapses, mu=synapses["mu"][:3])
        mx.eval(short)
        direct.ltc_step(*numpy(*per_neuron), short, 2)
    with pytest.raises(ValueError, match="'cm' must be float32 of shape \\(2, 7\\)"):
        v, cm, n, d = numpy(*per_neuron)
        direct.ltc_step(v, cm[:, :3], n, d, synapses, 2)
    with pytest.raises(ValueError, match=r"\[synapse_sums\] 'pre' holds index \d outside \[0, 3\)"):
        direct.synapse_sums(np.ones((2, 3), np.float32), synapses, neurons=7)
    with pytest.raises(ValueError, match="'c' must be float32 of shape \\(2, 4\\)"):
        zeros = np.zeros((2, 4), np.float32)
        wh_t = mx.zeros((4, 16))
        mx.eval(wh_t)
        direct.lstm_step(np.zeros((2, 16), np.float32), zeros, zeros[:, :3].copy(), wh_t)


# --- the controller against the model's call -----------------------------------------

MODELS = {
    "cfc": lambda: CfC(4, 6),
    "cfc-backbone-2-relu-pure": lambda: CfC(
        4, 5, mode="pure", activation="relu", backbone_units=8, backbone_layers=2
    ),
    "cfc-no-backbone-no-gate": lambda: CfC(4, 5, mode="no_gate", backbone_layers=0),
    "cfc-ncp": lambda: CfC(4, AutoNCP(10, 2, seed=1)),
    "cfc-ncp-strict-proj": lambda: CfC(
        4, NCP(3, 3, 2, 2, 2, 2, 1, seed=2), proj_size=3, strict_wiring=True
    ),
    "cfc-mixed": lambda: CfC(4, 6, mixed_memory=True),
    "ltc-ncp": lambda: LTC(4, AutoNCP(10, 2, seed=3)),
    "ltc-random-unmapped": lambda: LTC(
        4,
        Random(6, 2, sparsity_level=0.5, random_seed=4),
        input_mapping=None,
        output_mapping="linear",
    ),
    "ltc-mixed-proj": lambda: LTC(4, AutoNCP(8, 2, seed=5), mixed_memory=True, proj_size=2),
}


def stepped(controller, x, dt):
    return np.stack([controller(x[:, t], dt[:, t]) for t in range(x.shape[1])], axis=1)


@pytest.mark.parametrize("path", ["direct", "graph"])
@pytest.mark.parametrize("name", MODELS)
def test_controller_steps_are_the_model_call(name, path):
    if path == "direct" and kernels.unavailable_reason() is not None:
        pytest.skip(kernels.unavailable_reason())
    mx.random.seed(0)
    model = MODELS[name]()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    dt = rng.uniform(0.3, 1.5, (3, 5)).astype(np.float32)
    model.eval()
    mx.eval(model.parameters())
    y, state = model(mx.array(x), timespans=mx.array(dt))
    if path == "graph":
        with kernels.disabled():
            controller = Controller(model)
    else:
        controller = Controller(model)
    assert controller.direct == (path == "direct")
    close(stepped(controller, x, dt), y)
    for ours, theirs in zip(np.atleast_1d(controller.state), np.atleast_1d(state), strict=True):
        close(ours, theirs)


def test_controller_carries_a_given_state_and_takes_unbatched_steps():
    model = CfC(4, 6, mixed_memory=True, proj_size=2)
    controller = Controller(model)
    x = np.random.default_rng(1).standard_normal((7, 4)).astype(np.float32)
    hx = (mx.random.normal((6,)), mx.random.normal((6,)))
    y, (h, c) = model(mx.array(x), hx=hx, timespans=mx.full((7,), 0.5))
    controller.reset(hx)
    outputs = np.stack([controller(step, timespan=0.5) for step in x])
    assert outputs.shape == (7, 2)
    close(outputs, y)
    ours = controller.state
    assert ours[0].shape == (6,)
    close(ours[0], h)
    close(ours[1], c)
    controller.reset()
    assert controller.state is None
    close(controller(x[0], 0.5), model(mx.array(x[:1]), timespans=0.5)[0][0])


def test_controller_runs_a_copy_taken_when_built():
    model = CfC(4, 6)
    model.train()
    controller = Controller(model)
    assert model.training  # the caller's model keeps its mode
    x = np.ones((2, 4), np.float32)
    before = controller(x)
    controller.reset()
    model.rnn_cell.ff1.bias = model.rnn_cell.ff1.bias + 5.0
    np.testing.assert_array_equal(controller(x), before)
    controller.reset()
    assert not np.allclose(Controller(model)(x), before)


def test_controller_runs_through_the_graph_where_the_kernels_do_not():
    assert not Controller(LTC(4, 6, solver="rk4")).direct
    half = CfC(4, 6)
    half.set_dtype(mx.float16)
    controller = Controller(half)
    assert not controller.direct
    assert controller(np.ones(4)).shape == (6,)


def test_controller_rejects_what_it_cannot_take():
    with pytest.raises(ValueError, match="'model' must be an ncps_mlx RNN"):
        Controller(object())
    controller = Controller(LTC(4, 6))
    with pytest.raises(ValueError, match="'x' must have shape \\(4,\\) or \\(batch, 4\\)"):
        controller(np.ones((2, 5)))
    with pytest.raises(ValueError, match="'x' must be a numeric"):
        controller(np.array(["a"] * 4))
    with pytest.raises(ValueError, match="'x' must be a numeric"):
        controller("abcd")
    with pytest.raises(ValueError, match="'timespan' must be finite and > 0"):
        controller(np.ones(4), timespan=0.0)
    with pytest.raises(ValueError, match="'timespan' must be a number or have shape \\(2,\\)"):
        controller(np.ones((2, 4)), timespan=np.ones(3))
    controller(np.ones((2, 4)))
    with pytest.raises(ValueError, match="the state holds 2 samples but the input has 3"):
        controller(np.ones((3, 4)))
    with pytest.raises(ValueError, match="must have shape \\(batch, 6\\) or \\(6,\\)"):
        controller.reset(np.ones((2, 5)))
    with pytest.raises(ValueError, match="must be one array \\(not a pair\\)"):
        controller.reset((np.ones(6), np.ones(6)))
    with pytest.raises(ValueError, match="must be a pair \\(h, c\\)"):
        Controller(CfC(4, 6, mixed_memory=True)).reset(np.ones(6))
    # A CfC takes a zero timespan (an LTC divides by it).
    assert Controller(CfC(4, 6))(np.ones(4), timespan=0.0).shape == (6,)


# --- dtypes -------------------------------------------------------------------------

LOW_PRECISION = {"float16": (mx.float16, 2e-3), "bfloat16": (mx.bfloat16, 2e-2)}
LOW_PRECISION_MODELS = {
    "cfc": lambda: CfC(4, 6),
    "cfc-ncp-mixed-proj": lambda: CfC(4, AutoNCP(10, 2, seed=1), mixed_memory=True, proj_size=3),
    "ltc-ncp": lambda: LTC(4, AutoNCP(10, 2, seed=3)),
    "ltc-rk4-mixed": lambda: LTC(4, 6, solver="rk4", mixed_memory=True),
}


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("name", LOW_PRECISION_MODELS)
def test_low_precision_controllers_step_like_the_model(name, dtype):
    dtype, tol = LOW_PRECISION[dtype]
    mx.random.seed(0)
    model = LOW_PRECISION_MODELS[name]()
    model.set_dtype(dtype)
    model.eval()
    controller = Controller(model)
    assert not controller.direct
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    dt = rng.uniform(0.3, 1.0, 8).astype(np.float32)
    hx = None
    for t in range(8):  # the model's own call, one step at a time, in its dtype
        y, hx = model(mx.array(x[t][None, None]), hx=hx, timespans=mx.array(dt[t : t + 1][None]))
        ours = controller(x[t], timespan=float(dt[t]))
        assert ours.dtype == np.float32 and ours.shape == (y.shape[-1],)
        np.testing.assert_allclose(ours, np.array(y[0, 0].astype(mx.float32)), atol=tol)
    state = controller.state
    ours = state if isinstance(state, tuple) else (state,)
    theirs = hx if isinstance(hx, tuple) else (hx,)
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, np.array(b[0].astype(mx.float32)), atol=tol)


def test_inputs_and_states_of_any_float_dtype_are_taken():
    controller = Controller(CfC(4, 6))
    expected = controller(np.ones(4, np.float32))
    for dtype in (mx.bfloat16, mx.float16):
        controller.reset(mx.zeros((6,), dtype=dtype))
        np.testing.assert_array_equal(controller(mx.ones((4,), dtype=dtype)), expected)
    controller.reset()
    np.testing.assert_array_equal(controller(np.ones(4, np.float16), np.float32(1.0)), expected)


# --- non-finite inputs and results ----------------------------------------------------


def assert_state_equal(ours, theirs):
    if theirs is None:
        assert ours is None
        return
    for a, b in zip(np.atleast_1d(ours), np.atleast_1d(theirs), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("path", ["direct", "graph"])
@pytest.mark.parametrize("name", ["cfc", "cfc-mixed", "ltc-ncp"])
def test_a_nonfinite_input_is_refused_and_leaves_the_state(name, path):
    model = MODELS[name]()

    def build():
        with kernels.disabled() if path == "graph" else contextlib.nullcontext():
            return Controller(model)

    controller = build()
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    controller(x)
    before = controller.state
    for bad, what in ((np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")):
        poisoned = x.copy()
        poisoned[1, 2] = bad
        with pytest.raises(ValueError, match=rf"'x' must be finite but holds {what} at \[1, 2\]"):
            controller(poisoned)
        with pytest.raises(ValueError, match=rf"holds {what} at \[2\]"):
            Controller(MODELS[name]())(poisoned[1])  # unbatched
        with pytest.raises(ValueError, match="must be finite"):
            controller(mx.array(poisoned))
        assert_state_equal(controller.state, before)
    with pytest.raises(ValueError, match="'timespan' must be finite"):
        controller(x, timespan=np.array([1.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="'timespan' must be finite"):
        controller(x, timespan=math.inf)
    assert_state_equal(controller.state, before)
    # Nothing was poisoned: the next step is the one the refused calls did not take.
    same = build()
    same.reset(before)
    np.testing.assert_array_equal(controller(x), same(x))


def test_huge_finite_inputs_are_not_mistaken_for_nonfinite():
    controller = Controller(CfC(4, 6))
    y = controller(np.full(4, 3e38, np.float32))  # their squares overflow; they do not
    assert np.isfinite(y).all()


def test_allow_nonfinite_lets_nan_through():
    controller = Controller(CfC(4, 6), allow_nonfinite=True)
    assert np.isnan(controller(np.array([1.0, np.nan, 0.0, 0.0]))).all()
    assert np.isnan(controller(np.ones(4))).all()  # poisoned until reset
    controller.reset(np.full(6, np.nan))
    assert np.isnan(controller.state).all()
    controller.reset()
    assert np.isfinite(controller(np.ones(4))).all()
    with pytest.raises(ValueError, match=r"the state 'h' must be finite but holds nan at \[3\]"):
        Controller(CfC(4, 6)).reset(np.array([0, 0, 0, np.nan, 0, 0]))
    with pytest.raises(ValueError, match="the state 'c' must be finite but holds inf"):
        Controller(CfC(4, 6, mixed_memory=True)).reset((np.zeros(6), np.full(6, np.inf)))


@pytest.mark.parametrize("solver", ["explicit_euler", "rk4"])
def test_a_huge_timespan_of_an_explicit_solver_warns_once_then_raises(solver):
    mx.random.seed(0)
    model = LTC(4, AutoNCP(10, 2, seed=3), solver=solver)
    controller = Controller(model)
    x = np.ones(4, np.float32)
    controller(x, timespan=0.1)
    warning = pytest.warns(UnstableSolverWarning, match=rf"exceeds .* '{solver}' solver")
    with warning as caught, pytest.raises(NumericsError) as error:
        for _ in range(3):  # at once or, Euler, a step later
            before = controller.state
            controller(x, timespan=1e6)
    assert len(caught) == 1 and caught[0].filename == __file__  # once, at the call
    assert isinstance(error.value, FloatingPointError) and isinstance(error.value, NCPSError)
    message = str(error.value)
    assert message.startswith("[Controller(LTC)] finite inputs gave nan or inf in the ")
    assert "state h" in message and "the state is kept as it was" in message
    assert "The likely cause: a timespan of 1e+06 exceeds" in message
    assert message.splitlines()[-1] == see("non-finite")
    assert_state_equal(controller.state, before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: not again
        with pytest.raises(NumericsError):
            controller(x, timespan=np.array([1e6]))


def test_a_float16_semi_implicit_ltc_warns_of_a_tiny_timespan_and_raises():
    model = LTC(4, AutoNCP(10, 2, seed=3))
    model.set_dtype(mx.float16)
    controller = Controller(model)
    warning = pytest.warns(UnstableSolverWarning, match=r"1e-09 is below .* float16\)")
    with warning, pytest.raises(NumericsError, match=r"float32 parameters") as error:
        controller(np.ones((2, 4)), timespan=1e-9)
    assert "is below" in str(error.value)
    assert controller.state is None  # the first call: still zeros
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(controller(np.ones((2, 4)), timespan=0.5)).all()


def test_a_float16_overflow_names_the_dtype():
    model = CfC(4, 6)
    model.set_dtype(mx.float16)
    controller = Controller(model)
    with pytest.raises(NumericsError, match=r"exceed float16's largest value \(65504\)"):
        controller(np.full(4, 1e6, np.float32))
    assert controller.state is None


def test_timespans_within_the_bounds_do_not_warn():
    mx.random.seed(0)
    for solver in ("semi_implicit", "explicit_euler", "rk4"):
        model = LTC(4, AutoNCP(10, 2, seed=3), solver=solver)
        controller = Controller(model)
        low, high = controller._bounds
        assert (low, high) == timespan_bounds(model)  # once, from the frozen copy
        inside = min(0.5 * high, 1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for timespan in (inside, np.full(3, inside, np.float32), 0.5 * inside):
                assert np.isfinite(controller(np.ones((3, 4)), timespan=timespan)).all()
