"""Inside the circuit: the state layout cells declare, the activity recorded in neuron-id
order, the attributions against finite differences, and the figures."""

import contextlib
import sys

import mlx.core as mx
import numpy as np
import pytest

from ncps_mlx import LTC, CfC, kernels
from ncps_mlx.policies import circuit
from ncps_mlx.policies.circuit import (
    command_attributions,
    plot_attributions,
    plot_circuit_activity,
    plot_traces,
    record_activity,
)
from ncps_mlx.wirings import NCP, AutoNCP, FullyConnected

STEPS = 12


def ncp() -> NCP:
    return NCP(3, 4, 2, sensory_fanout=2, inter_fanout=2, recurrent_command_synapses=2,
               motor_fanin=3, seed=3)  # fmt: skip


def sequence(features: int = 3, steps: int = STEPS, seed: int = 0):
    """Inputs that move the state, and irregular timespans."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps, features)).astype(np.float32)
    return x, rng.uniform(0.2, 1.0, steps).astype(np.float32)


def run_model(model, x, dt, hx=None):
    """The model's own call on one sequence: (outputs, final state)."""
    y, state = model(mx.array(x)[None], hx=hx, timespans=mx.array(dt)[None])
    return np.array(y[0]), state


# -- which neuron each state entry holds ------------------------------------------------


def test_wired_cfc_state_is_inter_command_motor_while_ids_number_motor_first():
    cell = CfC(3, ncp()).rnn_cell
    # NCP ids: motor 0-1, command 2-5, inter 6-8; the state runs inter, command, motor.
    assert cell.state_neurons().tolist() == [6, 7, 8, 2, 3, 4, 5, 0, 1]
    assert cell.state_size == cell.wiring.units == sum(cell.layer_sizes) == 9


def test_ltc_and_one_layer_wirings_keep_the_state_in_neuron_id_order():
    assert LTC(3, ncp()).rnn_cell.state_neurons().tolist() == list(range(9))
    assert CfC(3, FullyConnected(5, 2)).rnn_cell.state_neurons().tolist() == list(range(5))


# -- record_activity --------------------------------------------------------------------


@pytest.mark.parametrize("build", [lambda: CfC(3, AutoNCP(8, 2)), lambda: LTC(3, ncp())])
def test_recorded_outputs_and_last_state_are_the_models_own(build):
    model = build()
    x, dt = sequence()
    activity = record_activity(model, x, dt)
    outputs, final = run_model(model, x, dt)
    np.testing.assert_allclose(activity.outputs, outputs, rtol=1e-5, atol=1e-6)
    holds = model.rnn_cell.state_neurons()
    np.testing.assert_allclose(activity.states[-1, holds], np.array(final[0]), atol=1e-6)
    np.testing.assert_array_equal(activity.timespans, dt)
    assert activity.states.dtype == np.float32 and activity.steps == STEPS


def test_the_motor_neurons_of_a_wired_cfc_are_its_outputs():
    model = CfC(3, ncp())
    activity = record_activity(model, *sequence())
    assert activity.neuron_ids("motor").tolist() == [0, 1]
    np.testing.assert_array_equal(activity.of_kind("motor"), activity.outputs)
    # and the command neurons are the wired cfc's middle layer (state entries 3..6)
    _, final = run_model(model, *sequence())
    np.testing.assert_allclose(activity.of_kind("command")[-1], np.array(final[0, 3:7]), atol=1e-6)


def test_activity_by_kind_follows_the_wiring():
    activity = record_activity(LTC(3, ncp()), *sequence())
    assert activity.kinds == ("motor",) * 2 + ("command",) * 4 + ("inter",) * 3
    assert activity.neuron_ids("inter").tolist() == [6, 7, 8]
    assert activity.of_kind("sensory") is activity.inputs
    np.testing.assert_allclose(activity.times, np.cumsum(activity.timespans), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown kind"):
        activity.of_kind("hidden")


def test_mixed_memory_records_the_cells_state():
    model = CfC(3, AutoNCP(8, 2), mixed_memory=True, proj_size=1)
    x, dt = sequence()
    activity = record_activity(model, x, dt)
    outputs, (h, _) = run_model(model, x, dt)
    np.testing.assert_allclose(activity.outputs, outputs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        activity.states[-1, model.rnn_cell.state_neurons()], np.array(h[0]), atol=1e-6
    )


def test_timespans_default_to_one_per_step():
    model = CfC(3, AutoNCP(8, 2))
    x, _ = sequence()
    activity = record_activity(model, mx.array(x))
    np.testing.assert_allclose(
        activity.outputs, np.array(model(mx.array(x)[None])[0][0]), atol=1e-6
    )
    assert activity.timespans.tolist() == [1.0] * STEPS


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"model": CfC(3, 8)}, r"no wiring: its CfCCell has 8 plain units.*AutoNCP"),
        ({"model": "policy"}, "must be an ncps_mlx sequence model with a wiring"),
        ({"x": np.zeros((1, STEPS, 3))}, r"shape \(time, 3\).*\(1, 12, 3\).*x\[0\]"),
        ({"x": np.zeros((STEPS, 4))}, r"shape \(time, 3\)"),
        ({"x": np.zeros((0, 3))}, "time >= 1"),
        ({"x": np.full((STEPS, 3), np.nan)}, "finite"),
        ({"timespans": np.ones((1, STEPS))}, r"shape \(12,\), one per step"),
        ({"timespans": np.zeros(STEPS)}, r"finite and > 0 for a LTCCell"),
        ({"timespans": "fast"}, "array of numbers"),
    ],
)
def test_record_activity_rejects_what_it_cannot_record(arguments, message):
    call = {"model": LTC(3, ncp()), "x": sequence()[0], "timespans": None, **arguments}
    with pytest.raises(ValueError, match=message):
        record_activity(call["model"], call["x"], call["timespans"])


def test_a_cfc_may_have_zero_timespans():
    x, dt = sequence()
    dt[3] = 0.0
    assert record_activity(CfC(3, AutoNCP(8, 2)), x, dt).steps == STEPS


# -- command_attributions ---------------------------------------------------------------


def finite_difference(model, x, dt, t, neuron, eps=1e-2):
    """d y_t / d h_{t-1}[neuron], by central differences of the model's own call."""
    hx = None
    if t > 0:
        _, hx = run_model(model, x[:t], dt[:t])
    h, c = (hx if model.mixed_memory else (hx, None)) if hx is not None else (None, None)
    h = mx.zeros((1, model.state_size)) if h is None else h
    c = mx.zeros((1, model.state_size)) if c is None and model.mixed_memory else c
    entry = int(np.flatnonzero(model.rnn_cell.state_neurons() == neuron)[0])
    nudge = mx.array(np.eye(model.state_size, dtype=np.float32)[entry] * eps)[None]
    ends = []
    for sign in (1, -1):
        state = h + sign * nudge
        y, _ = run_model(model, x[t : t + 1], dt[t : t + 1], (state, c) if c is not None else state)
        ends.append(y[0])
    return (ends[0] - ends[1]) / (2 * eps)


MODELS = {
    "cfc-autoncp": lambda: CfC(3, AutoNCP(8, 2)),
    "ltc-ncp": lambda: LTC(3, ncp()),
    "cfc-mixed-proj": lambda: CfC(3, AutoNCP(8, 2), mixed_memory=True, proj_size=2),
}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "mlx-ops"])
@pytest.mark.parametrize("name", MODELS)
def test_gradients_match_finite_differences(name, fused):
    model = MODELS[name]()
    x, dt = sequence()
    with contextlib.nullcontext() if fused else kernels.disabled():
        found = command_attributions(model, x, dt)
        wiring = model.wiring
        assert found.neurons.tolist() == [
            i for i in range(wiring.units) if wiring.get_type_of_neuron(i) == "command"
        ]
        assert found.gradients.shape == (STEPS, model.output_size, len(found.neurons))
        for t in (0, 5, STEPS - 1):
            numeric = np.stack([finite_difference(model, x, dt, t, n) for n in found.neurons], 1)
            np.testing.assert_allclose(found.gradients[t], numeric, rtol=1e-2, atol=3e-4)
    assert np.abs(found.gradients).max() > 0.02  # 100x the tolerance: not a comparison of zeros


def test_attributions_are_gradients_times_the_state_entering_the_step():
    model = CfC(3, AutoNCP(8, 2))
    x, dt = sequence()
    found = command_attributions(model, x, dt)
    states = record_activity(model, x, dt).of_kind("command")
    entering = np.concatenate([np.zeros_like(states[:1]), states[:-1]])
    np.testing.assert_allclose(found.attributions, found.gradients * entering[:, None, :])
    assert not found.attributions[0].any()  # from the zero state
    np.testing.assert_allclose(found.outputs, record_activity(model, x, dt).outputs)
    assert found.kind == "command"


def test_long_sequences_are_differentiated_in_chunks_with_the_same_result(monkeypatch):
    model = LTC(3, ncp())
    x, dt = sequence()
    whole = command_attributions(model, x, dt).gradients
    monkeypatch.setattr(circuit, "_GRADIENT_ROWS", 5)  # 2 steps of 2 outputs per chunk
    np.testing.assert_allclose(command_attributions(model, x, dt).gradients, whole, atol=1e-7)


def test_wirings_without_command_neurons_take_another_kind():
    model = LTC(3, FullyConnected(5, 2))
    x, dt = sequence()
    with pytest.raises(ValueError, match="FullyConnected wiring has no command neurons; pass "
                                         "'kind' as one it has: 'inter', 'motor'"):  # fmt: skip
        command_attributions(model, x, dt)
    found = command_attributions(model, x, dt, kind="inter")
    assert found.neurons.tolist() == [2, 3, 4] and found.gradients.shape == (STEPS, 2, 3)
    with pytest.raises(ValueError, match="unknown kind"):
        command_attributions(model, x, dt, kind="sensory")


def test_command_attributions_rejects_unwired_models():
    with pytest.raises(ValueError, match="no wiring"):
        command_attributions(CfC(3, 8), sequence()[0])


# -- figures ----------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def recorded():
    model = CfC(3, AutoNCP(8, 2))
    x, dt = sequence(steps=20)
    return model, record_activity(model, x, dt), command_attributions(model, x, dt)


def test_circuit_activity_draws_one_panel_per_step_and_two_colour_bars(recorded, tmp_path):
    model, activity, _ = recorded
    figure = plot_circuit_activity(model, activity, count=4, path=tmp_path / "circuit.png")
    titles = [axis.get_title() for axis in figure.axes]
    assert titles[:4] == [f"step {s}, t = {activity.times[s]:.3g}" for s in (0, 6, 13, 19)]
    assert [axis.get_ylabel() for axis in figure.axes[4:]] == ["neuron state", "input"]
    assert (tmp_path / "circuit.png").read_bytes().startswith(PNG)
    assert len(plot_circuit_activity(model.wiring, activity, steps=[3]).axes) == 3


def test_circuit_activity_colours_each_neuron_by_its_state(recorded):
    model, activity, _ = recorded
    figure = plot_circuit_activity(model, activity, steps=[0, 19])
    # The scatter of each kind, per panel: sensory, inter, command, motor.
    first, last = ([c.get_facecolors() for c in axis.collections[-4:]] for axis in figure.axes[:2])
    assert len(first[1]) == len(activity.neuron_ids("inter"))
    assert any(not np.allclose(a, b) for a, b in zip(first, last, strict=True))


def test_circuit_activity_rejects_another_wiring_and_steps_outside(recorded):
    model, activity, _ = recorded
    with pytest.raises(ValueError, match="pass the model the activity was recorded from"):
        plot_circuit_activity(CfC(3, AutoNCP(10, 2)), activity)
    with pytest.raises(ValueError, match=r"'steps' must be an int in 0..19"):
        plot_circuit_activity(model, activity, steps=[20])
    with pytest.raises(ValueError, match="must be a wired model"):
        plot_circuit_activity(CfC(3, 8), activity)


def test_traces_have_a_panel_per_kind_present(recorded, tmp_path):
    _, activity, _ = recorded
    figure = plot_traces(activity, path=tmp_path / "traces.png")
    titles = [axis.get_title(loc="left") for axis in figure.axes]
    assert titles == ["sensory inputs (3)", "inter neurons (4)", "command neurons (2)",
                      "motor neurons (2)"]  # fmt: skip
    assert (tmp_path / "traces.png").read_bytes().startswith(PNG)
    one_layer = record_activity(LTC(3, FullyConnected(5, 2)), *sequence())
    assert len(plot_traces(one_layer).axes) == 3  # sensory, inter, motor


def test_attributions_figure_has_trace_heatmap_and_colour_bar_per_output(recorded, tmp_path):
    _, _, found = recorded
    figure = plot_attributions(found, path=tmp_path / "attributions.png")
    assert len(figure.axes) == 3 * 2
    assert [axis.get_ylabel() for axis in figure.axes[:2]] == ["y[0]", "command neuron"]
    assert (tmp_path / "attributions.png").read_bytes().startswith(PNG)
    gradients = plot_attributions(found, values="gradients")
    assert gradients.axes[2].get_ylabel() == "∂y/∂h"


def test_figures_name_the_extra_without_matplotlib(recorded, monkeypatch):
    _, activity, _ = recorded
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'ncps-mlx\[plot\]'"):
        plot_traces(activity)
