"""The direct steps (ncps_mlx.kernels.direct) against the graph primitives, and the
Controller, stepping one call at a time, against the model's call over the sequence."""

import mlx.core as mx
import numpy as np
import pytest

from ncps_mlx import LTC, CfC, Controller, LSTMCell, kernels
from ncps_mlx.kernels import direct
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
