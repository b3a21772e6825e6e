"""The baselines of ncps_mlx.baselines: each cell against a direct computation (MLX's own
GRU and LSTM, the MLP's window by hand), their sizes and parameter counts against hand
counts, and each as a layer that `fit`, the `Controller` and save/load take."""

import subprocess
import sys

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest

import ncps_mlx
from ncps_mlx import RNN, CfCCell, Controller, LTCCell, kernels
from ncps_mlx.baselines import (
    BASELINES,
    GRUBaselineCell,
    LSTMBaselineCell,
    MLPBaselineCell,
    build_baseline,
    matched_hidden_size,
    with_timespan_feature,
)
from ncps_mlx.costs import parameter_count, step_costs
from ncps_mlx.training import fit
from ncps_mlx.wirings import FullyConnected

# Every baseline, and the MLP without memory (its state has no values at all).
KINDS = {
    "gru": ("gru", {}),
    "lstm": ("lstm", {}),
    "mlp": ("mlp", {"window": 3}),
    "mlp-window-1": ("mlp", {"window": 1}),
}


def hand_count(name: str, inputs: int, hidden: int, outputs: int, window: int = 1) -> int:
    """Parameters of a baseline with its readout, counted from the equations: MLX's GRU
    has three gates on input and state plus a bias of each and a second one of the
    candidate; the LSTM four gates and one bias each; the MLP two affine layers."""
    readout = (hidden + 1) * outputs
    cell = {
        "gru": 3 * hidden * (inputs + hidden + 1) + hidden,
        "lstm": 4 * hidden * (inputs + hidden + 1),
        "mlp": (window * inputs + 1) * hidden + (hidden + 1) * hidden,
    }[name]
    return cell + readout


# -- the cells compute what they say ---------------------------------------------------


def test_gru_and_lstm_cells_compute_the_mlx_layers_they_hold():
    x = mx.random.normal((3, 7, 2))
    gru = RNN(GRUBaselineCell(2, 5))
    y, h = gru(x)
    np.testing.assert_allclose(np.array(y), np.array(gru.rnn_cell.gru(x)), atol=1e-6)
    lstm = RNN(LSTMBaselineCell(2, 5))
    y, state = lstm(x)
    hidden, memory = lstm.rnn_cell.lstm(x)
    np.testing.assert_allclose(np.array(y), np.array(hidden), atol=1e-6)
    np.testing.assert_allclose(np.array(state[:, 5:]), np.array(memory[:, -1]), atol=1e-6)


def mlp_by_hand(cell: MLPBaselineCell, x: np.ndarray) -> np.ndarray:
    """The MLP at every step of ``x`` (B, T, F) on the inputs t-window+1..t, zeros before
    the first step."""
    (w0, b0), (w1, b1) = ((np.array(la.weight), np.array(la.bias)) for la in cell.layers)
    batch, steps, features = x.shape
    padded = np.concatenate([np.zeros((batch, cell.window - 1, features)), x], axis=1)
    outputs = []
    for t in range(steps):
        window = padded[:, t : t + cell.window].reshape(batch, -1)  # oldest first
        outputs.append(np.tanh(np.tanh(window @ w0.T + b0) @ w1.T + b1))
    return np.stack(outputs, axis=1)


@pytest.mark.parametrize("window", [1, 2, 4])
@pytest.mark.parametrize("steps", [1, 6])
def test_mlp_cell_sees_the_last_window_inputs_zero_padded(window, steps):
    cell = MLPBaselineCell(2, 5, window)
    x = np.random.randn(3, steps, 2).astype(np.float32)
    y, state = RNN(cell)(mx.array(x))
    np.testing.assert_allclose(np.array(y), mlp_by_hand(cell, x), atol=1e-5)
    # The state is the window less its oldest input: the last window-1 inputs, padded.
    padded = np.concatenate([np.zeros((3, window - 1, 2)), x], axis=1)
    expected = padded[:, padded.shape[1] - (window - 1) :].reshape(3, -1)
    assert state.shape == (3, (window - 1) * 2) == (3, cell.state_size)
    np.testing.assert_array_equal(np.array(state), expected.astype(np.float32))
    assert cell.output_size == 5 and cell.input_size == 2


def test_the_mlp_carries_its_window_across_calls():
    cell = MLPBaselineCell(2, 4, 3)
    layer, x = RNN(cell), np.random.randn(2, 6, 2).astype(np.float32)
    whole, _ = layer(mx.array(x))
    _, state = layer(mx.array(x[:, :4]))
    second, _ = layer(mx.array(x[:, 4:]), state)
    np.testing.assert_allclose(np.array(second), np.array(whole[:, 4:]), atol=1e-6)


def test_baseline_cells_ignore_timespans_and_say_so():
    assert not any(kind.cell.uses_timespans for kind in BASELINES.values())
    assert CfCCell(2, 4).uses_timespans and LTCCell(FullyConnected(3), 2).uses_timespans
    x = mx.random.normal((2, 5, 3))
    for name, options in KINDS.values():
        model = build_baseline(name, 3, 4, **options)
        ones, _ = model(x)
        varied, _ = model(x, timespans=mx.random.uniform(0.1, 3.0, (2, 5)))
        np.testing.assert_array_equal(np.array(ones), np.array(varied))


# -- sizes and parameter counts -------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_build_baseline_is_the_cell_with_a_linear_readout(kind):
    name, options = KINDS[kind]
    model = build_baseline(name, 3, 6, 2, **options)
    assert isinstance(model.rnn_cell, BASELINES[name].cell) and model.proj_size == 2
    assert (model.input_size, model.output_size) == (3, 2)
    assert parameter_count(model) == hand_count(name, 3, 6, 2, **options)
    assert model(mx.zeros((4, 5, 3)))[0].shape == (4, 5, 2)
    assert build_baseline(name, 3, 6, **options).output_size == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("parameters", [1, 200, 1557, 5000])
def test_matched_hidden_size_has_the_closest_parameter_count(kind, parameters):
    name, options = KINDS[kind]
    hidden = matched_hidden_size(name, 3, parameters, 2, **options)
    counts = {size: hand_count(name, 3, size, 2, **options) for size in range(1, 200)}
    closest = min(abs(count - parameters) for count in counts.values())
    assert abs(counts[hidden] - parameters) == closest
    assert hidden == min(
        size for size, count in counts.items() if abs(count - parameters) == closest
    )


def test_matched_hidden_size_takes_the_smaller_size_on_a_tie():
    # The MLP over one step of 2 inputs, with one output: 7 parameters at size 1, 15 at 2.
    assert [hand_count("mlp", 2, size, 1) for size in (1, 2)] == [7, 15]
    assert matched_hidden_size("mlp", 2, 11, window=1) == 1
    assert matched_hidden_size("mlp", 2, 12, window=1) == 2


# -- with fit, the Controller, save and load ------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_each_baseline_trains_with_fit(kind):
    name, options = KINDS[kind]
    x = np.random.randn(32, 6, 2).astype(np.float32)
    y = np.cumsum(x[..., :1], axis=1) * 0.3  # needs memory, which the window gives partly
    model = build_baseline(name, 2, 8, **options)
    history = fit(model, (x, y), epochs=2, batch_size=8, progress=False,
                  optimizer=optim.Adam(learning_rate=1e-2), seed=1)  # fmt: skip
    losses = [row["loss"] for row in history.rows]
    assert len(losses) == 2 and all(np.isfinite(losses)) and losses[1] < losses[0]


@pytest.mark.parametrize("kind", KINDS)
def test_the_controller_steps_each_baseline_as_the_sequence_call(kind):
    name, options = KINDS[kind]
    model = build_baseline(name, 3, 5, 2, **options)
    x = np.random.randn(4, 7, 3).astype(np.float32)
    expected, final = model(mx.array(x))
    controller = Controller(model)
    stepped = np.stack([controller(x[:, t], timespan=0.5) for t in range(7)], axis=1)
    np.testing.assert_allclose(stepped, np.array(expected), atol=1e-5)
    np.testing.assert_allclose(controller.state, np.array(final), atol=1e-5)
    # Graph operations, not the fused kernels: those serve the package's own cells.
    assert not controller.direct and kernels.graph_stepper(model.rnn_cell) is None


@pytest.mark.parametrize("kind", KINDS)
def test_each_baseline_saves_and_loads(kind, tmp_path):
    name, options = KINDS[kind]
    model = build_baseline(name, 3, 5, 2, **options)
    ncps_mlx.save(model, tmp_path / "baseline.safetensors")
    loaded = ncps_mlx.load(tmp_path / "baseline.safetensors")
    assert type(loaded.rnn_cell) is BASELINES[name].cell
    assert loaded.get_config() == model.get_config()
    x = mx.random.normal((2, 4, 3))
    np.testing.assert_array_equal(np.array(loaded(x)[0]), np.array(model(x)[0]))


def test_a_saved_baseline_loads_in_a_process_that_imports_only_ncps_mlx(tmp_path):
    path = tmp_path / "mlp.safetensors"
    ncps_mlx.save(build_baseline("mlp", 3, 4, window=2), path)
    code = f"import ncps_mlx; print(type(ncps_mlx.load({str(path)!r}).rnn_cell).__name__)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "MLPBaselineCell"


def test_no_baseline_declares_a_footprint():
    for name, options in KINDS.values():
        costs = step_costs(build_baseline(name, 3, 4, **options))
        assert costs["flops"] is None and costs["graph_ops"] > 0 and costs["bytes"] > 0


# -- the timespans as a feature -------------------------------------------------------


def test_with_timespan_feature_appends_the_gaps_as_the_last_feature():
    x = np.random.randn(2, 5, 3).astype(np.float32)
    gaps = np.random.uniform(0.1, 2, (2, 5)).astype(np.float32)
    joined = with_timespan_feature(x, gaps)
    assert joined.shape == (2, 5, 4) and joined.dtype == np.float32
    np.testing.assert_array_equal(joined[..., :3], x)
    np.testing.assert_array_equal(joined[..., 3], gaps)
    np.testing.assert_array_equal(with_timespan_feature(x, gaps[..., None]), joined)
    np.testing.assert_array_equal(with_timespan_feature(x, 0.5)[..., 3], np.full((2, 5), 0.5))
    # One step of a closed loop: an observation and the time since the previous one.
    np.testing.assert_array_equal(with_timespan_feature([1.0, 2.0], 0.1), [1.0, 2.0, 0.1])
    assert with_timespan_feature(np.ones((2, 3), np.int64), 1).dtype == np.float32
    assert with_timespan_feature(x.astype(np.float16), gaps).dtype == np.float16


def test_with_timespan_feature_refuses_timespans_of_another_shape():
    x = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(ValueError, match=r"\[with_timespan_feature\] 'timespans' must be a "
                       r"number or have shape \(2, 5\) .* but got shape \(5, 2\)"):  # fmt: skip
        with_timespan_feature(x, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="must have a feature axis"):
        with_timespan_feature(1.0, 1.0)


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: build_baseline("rnn", 3, 4),
         r"\[build_baseline\] unknown baseline 'rnn'; choose one of \['gru', 'lstm', 'mlp'\]"),
        (lambda: build_baseline("mlp", 3, 4),
         r"\[build_baseline\] the 'mlp' baseline takes the options \['window'\], all required, "
         r"but got none"),
        (lambda: build_baseline("gru", 3, 4, window=2),
         r"\[build_baseline\] the 'gru' baseline takes no options but got \['window'\]"),
        (lambda: build_baseline("lstm", 3, 4, output_size=0),
         r"\[build_baseline\] 'output_size' must be an int >= 1 but got 0"),
        (lambda: build_baseline("gru", 3, 0),
         r"\[GRUBaselineCell\] 'hidden_size' must be an int >= 1 but got 0"),
        (lambda: build_baseline("lstm", 2.5, 4),
         r"\[LSTMBaselineCell\] 'input_size' must be an int >= 1 but got 2.5"),
        (lambda: MLPBaselineCell(3, 4, 0),
         r"\[MLPBaselineCell\] 'window' must be an int >= 1 but got 0"),
        (lambda: matched_hidden_size("gru", 3, 0),
         r"\[matched_hidden_size\] 'parameters' must be an int >= 1 but got 0"),
        (lambda: matched_hidden_size("mlp", 3, 100, windows=2),
         r"\[matched_hidden_size\] the 'mlp' baseline takes the options \['window'\], all "
         r"required, but got \['windows'\]"),
    ],
)  # fmt: skip
def test_bad_arguments_say_what_is_allowed(call, message):
    with pytest.raises(ValueError, match=message):
        call()
