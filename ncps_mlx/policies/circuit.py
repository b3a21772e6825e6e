"""Inside the circuit: what each neuron of a trained wired model did over a sequence, and
which neurons each action depended on.

These are the figures of the neural circuit policy papers, for your own model: the wiring
with its neurons coloured by their activity at a few moments, the traces of the neurons
over time grouped by kind, and how sensitive each action was to each command neuron.

* [`record_activity`][ncps_mlx.policies.record_activity] runs a wired model (a
  [`CfC`][ncps_mlx.CfC] or [`LTC`][ncps_mlx.LTC] over any
  [`Wiring`][ncps_mlx.wirings.Wiring]) over one input sequence and keeps every neuron's state
  after every step, in neuron-id order;
* [`command_attributions`][ncps_mlx.policies.command_attributions] differentiates
  each output of each step with respect to the command neurons' states entering it;
* [`plot_circuit_activity`][ncps_mlx.policies.plot_circuit_activity],
  [`plot_traces`][ncps_mlx.policies.plot_traces] and
  [`plot_attributions`][ncps_mlx.policies.plot_attributions] draw them (they need
  matplotlib: ``pip install 'ncps-mlx[plot]'``).

Nothing here knows of environments: give it the observations the model saw (as it saw
them, encoded) and their timespans, from a closed-loop run or a data set.
"""

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mlx.core as mx
import numpy as np

from .. import scan
from .._checks import check_choice, check_int
from .._files import atomic_write
from ..errors import see
from ..rnn import RNN
from ..wirings import KINDS, Wiring

#: Kinds of neuron that hold a state (sensory "neurons" are the input features).
_STATE_KINDS = ("inter", "command", "motor")
#: Rows of one batched gradient call of `command_attributions`: bounds its memory.
_GRADIENT_ROWS = 8192
#: The diverging colormap of states and attributions: white at zero.
_COLORMAP = "RdBu_r"


def _times(timespans: np.ndarray) -> np.ndarray:
    """The time at the end of each step: the timespans summed (float64, (T,))."""
    return np.cumsum(timespans.astype(np.float64))


@dataclass(frozen=True, eq=False)
class Activity:
    """What every neuron of a wired model did over one input sequence.

    Row `t` of each array is step `t` of the sequence. States are those after the step,
    and in neuron-id order whatever the cell's own layout (see
    [`WiredCfCCell.state_neurons`][ncps_mlx.cells.WiredCfCCell.state_neurons]): column `i`
    of `states` is neuron `i` of the wiring, of kind `kinds[i]`.

    Attributes:
        inputs: `(T, input_size)` float32: the input features (the sensory neurons).
        states: `(T, units)` float32: each neuron's state after each step (an LTC's
            membrane potential; a CfC's hidden state). With mixed memory, the cell's
            state `h`, not the LSTM's memory.
        outputs: `(T, output_size)` float32: the model's output at each step.
        timespans: `(T,)` float32: the time each step lasted (1 when none were given).
        kinds: The kind of each neuron (`"inter"`, `"command"` or `"motor"`), by id.
    """

    inputs: np.ndarray
    states: np.ndarray
    outputs: np.ndarray
    timespans: np.ndarray
    kinds: tuple[str, ...]

    @property
    def steps(self) -> int:
        """Number of steps `T`."""
        return int(self.states.shape[0])

    @property
    def times(self) -> np.ndarray:
        """`(T,)`: the time at the end of each step, the timespans summed from 0."""
        return _times(self.timespans)

    def neuron_ids(self, kind: str) -> np.ndarray:
        """The ids of the neurons of `kind`, ascending; for `"sensory"`, the input features
        `0..input_size-1`.

        Raises:
            ValueError: `kind` is not one of `"sensory"`, `"inter"`, `"command"`, `"motor"`.
        """
        check_choice("Activity", "kind", kind, KINDS)
        if kind == "sensory":
            return np.arange(self.inputs.shape[1])
        return np.array([i for i, k in enumerate(self.kinds) if k == kind], dtype=np.int64)

    def of_kind(self, kind: str) -> np.ndarray:
        """`(T, n)`: the activity of the `n` neurons of `kind`, in id order (the inputs for
        `"sensory"`); `n` is 0 when the wiring has none of that kind."""
        ids = self.neuron_ids(kind)
        return self.inputs if kind == "sensory" else self.states[:, ids]


@dataclass(frozen=True, eq=False)
class Attributions:
    """How sensitive each output of each step was to some neurons' states entering it.

    See [`command_attributions`][ncps_mlx.policies.command_attributions] for the
    definition.

    Attributes:
        gradients: `(T, output_size, n)` float32: `∂y_t[j] / ∂h_{t-1}[neurons[i]]`.
        attributions: `(T, output_size, n)` float32: the gradients times the states they
            are taken at, `h_{t-1}[neurons[i]]` (gradient x activation).
        neurons: `(n,)`: the ids of the neurons attributed to, ascending.
        kind: Their kind (`"command"` unless asked otherwise).
        outputs: `(T, output_size)` float32: the outputs `y_t` differentiated.
        timespans: `(T,)` float32: the time each step lasted.
    """

    gradients: np.ndarray
    attributions: np.ndarray
    neurons: np.ndarray
    kind: str
    outputs: np.ndarray
    timespans: np.ndarray

    @property
    def times(self) -> np.ndarray:
        """`(T,)`: the time at the end of each step, the timespans summed from 0."""
        return _times(self.timespans)


# -- checks ---------------------------------------------------------------------------


def _check_model(owner: str, model: Any) -> np.ndarray:
    """The order that puts the model's state in neuron-id order (`argsort` of its
    `state_neurons`), after checking that the model is a wired sequence model."""
    if not isinstance(model, RNN):
        raise ValueError(
            f"[{owner}] 'model' must be an ncps_mlx sequence model with a wiring (a CfC or "
            f"LTC built on a Wiring such as AutoNCP) but got {type(model).__name__}"
        )
    cell = model.rnn_cell
    if model.wiring is None:
        raise ValueError(
            f"[{owner}] the model has no wiring: its {type(cell).__name__} has "
            f"{model.state_size} plain units, which are not neurons of a circuit; build it "
            f"on a wiring, e.g. CfC(input_size, AutoNCP({max(model.state_size, 8)}, 2)), "
            "LTC(input_size, NCP(...)) or any Wiring"
        )
    units = model.wiring.units
    holds = getattr(cell, "state_neurons", None)
    neurons = np.asarray(holds() if holds is not None else np.arange(units))
    if neurons.shape != (model.state_size,) or not np.array_equal(
        np.sort(neurons), np.arange(units)
    ):
        raise ValueError(
            f"[{owner}] the {type(cell).__name__}'s state_neurons() must name each of the "
            f"{units} neurons of its wiring once (one per state entry, state_size "
            f"{model.state_size}) but got {neurons.tolist()}"
        )
    return np.argsort(neurons)


def _check_sequence(owner: str, model: RNN, x: Any) -> np.ndarray:
    """``x`` as a float32 (T, input_size) array."""
    values = _as_numpy(owner, "x", x)
    features = model.input_size
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] != features:
        hint = "; pass one sequence of the batch, e.g. x[0]" if values.ndim == 3 else ""
        raise ValueError(
            f"[{owner}] 'x' must be one sequence of shape (time, {features}) with time >= 1, "
            f"but got shape {values.shape}{hint}\n{see('input-shape')}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"[{owner}] 'x' must be finite but holds nan or inf")
    return values


def _check_timespans(owner: str, model: RNN, timespans: Any, steps: int) -> np.ndarray:
    """``timespans`` as a float32 (T,) array; ones when ``None``."""
    if timespans is None:
        return np.ones(steps, dtype=np.float32)
    values = _as_numpy(owner, "timespans", timespans)
    if values.shape != (steps,):
        raise ValueError(
            f"[{owner}] 'timespans' must have shape ({steps},), one per step of 'x', or be "
            f"None (1 per step), but got shape {values.shape}\n{see('timespans')}"
        )
    positive = model.rnn_cell.requires_positive_timespans
    allowed = values > 0 if positive else values >= 0
    if not np.all(np.isfinite(values) & allowed):
        raise ValueError(
            f"[{owner}] 'timespans' must be finite and {'> 0' if positive else '>= 0'} for "
            f"a {type(model.rnn_cell).__name__}, but got values in "
            f"[{np.min(values)}, {np.max(values)}]\n{see('timespans')}"
        )
    return values


def _as_numpy(owner: str, name: str, value: Any) -> np.ndarray:
    if isinstance(value, mx.array):
        value = np.array(value.astype(mx.float32))
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"[{owner}] {name!r} must be an array of numbers (mlx or numpy) but got "
            f"{type(value).__name__}"
        ) from error


# -- running the model ----------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """The states around every step, in the cell's own layout: ``h_before[t]`` enters
    step ``t`` (zeros for the first), ``h_after[t]`` leaves it; ``c_before`` likewise
    for the mixed-memory LSTM (``None`` without)."""

    h_before: mx.array
    h_after: mx.array
    c_before: mx.array | None
    outputs: mx.array


def _run(model: RNN, x: np.ndarray, timespans: np.ndarray) -> _Run:
    """Run ``model`` over ``x`` one step at a time with the layer's own scan (the fused
    kernels where they apply), keeping every state."""
    planned = scan.plan(model)  # the weights' derived arrays, once for every step
    xs = mx.array(x)[None]
    dts = mx.array(timespans)[None, :, None]
    h = mx.zeros((1, model.state_size), dtype=model.dtype)
    c = mx.zeros_like(h) if model.mixed_memory else None
    h_before, h_after, c_before, outputs = [], [], [], []
    for t in range(x.shape[0]):
        h_before.append(h)
        c_before.append(c)
        y, h, c = scan.scan(model, xs[:, t : t + 1], h, c, dts[:, t : t + 1], planned=planned)
        mx.eval([part for part in (y, h, c) if part is not None])  # keeps the graph one step
        h_after.append(h)
        outputs.append(y.reshape(1, -1))
    return _Run(
        mx.concatenate(h_before),
        mx.concatenate(h_after),
        mx.concatenate(c_before) if model.mixed_memory else None,
        mx.concatenate(outputs),
    )


def _float32(values: mx.array) -> np.ndarray:
    return np.array(values.astype(mx.float32))


def record_activity(model: RNN, x: Any, timespans: Any = None) -> Activity:
    """Run a wired model over one input sequence and record every neuron at every step.

    The model runs from the zero state, one step at a time through its own scan, so the
    outputs are those of `model(x[None], timespans=timespans[None])`.

    Example:
        ```python
        import numpy as np
        from ncps_mlx import CfC
        from ncps_mlx.wirings import AutoNCP
        from ncps_mlx.policies.circuit import record_activity

        model = CfC(3, AutoNCP(12, 2))
        activity = record_activity(model, np.zeros((50, 3)), np.full(50, 0.1))
        assert activity.states.shape == (50, 12)
        assert activity.of_kind("motor").shape == (50, 2)
        ```

    Args:
        model: A [`CfC`][ncps_mlx.CfC], [`LTC`][ncps_mlx.LTC] or
            [`RNN`][ncps_mlx.RNN] whose cell has a wiring (any
            [`Wiring`][ncps_mlx.wirings.Wiring]: `NCP`, `AutoNCP`, `FullyConnected`, ...).
        x: One input sequence `(T, input_size)`, mlx or numpy.
        timespans: The time each step lasts, `(T,)`; `None` for 1 each.

    Returns:
        The [`Activity`][ncps_mlx.policies.Activity]: inputs, states in neuron-id
        order, outputs, timespans and each neuron's kind.

    Raises:
        ValueError: The model has no wiring (a CfC with plain int units), `x` is not one
            sequence of the model's input size, or a timespan is not finite or not
            allowed for the cell (an LTC needs them `> 0`, a CfC `>= 0`).
    """
    owner = "record_activity"
    order = _check_model(owner, model)
    x = _check_sequence(owner, model, x)
    timespans = _check_timespans(owner, model, timespans, x.shape[0])
    run = _run(model, x, timespans)
    wiring = model.wiring
    return Activity(
        inputs=x,
        states=_float32(run.h_after)[:, order],
        outputs=_float32(run.outputs),
        timespans=timespans,
        kinds=tuple(wiring.get_type_of_neuron(i) for i in range(wiring.units)),
    )


def command_attributions(
    model: RNN, x: Any, timespans: Any = None, *, kind: str = "command"
) -> Attributions:
    r"""The sensitivity of each action to each command neuron's state at the start of the
    step.

    For step `t`, output `j` and neuron `n` of `kind`:

    * `gradients[t, j, i]` is $\partial y_t[j] / \partial h_{t-1}[n_i]$: how much the
      output of step `t` moves per unit change of neuron `n_i`'s state entering the step,
      everything else of the step (the other neurons' states, the input `x_t`, the
      timespan, with mixed memory the LSTM's memory `c_{t-1}`) held fixed;
    * `attributions[t, j, i]` is that gradient times the state it is taken at,
      $h_{t-1}[n_i]$ (gradient x activation): the first-order share of the neuron's
      current state in the output.

    `h_{t-1}` is the state the model reached over the steps before `t` from the zero
    state (so at `t = 0` the attributions are 0), `y_t` the model's output after its
    projection if it has one. The gradients are those of the model's own step, computed
    with MLX's automatic differentiation (all steps in one batched call).

    Args:
        model: A wired model, as for
            [`record_activity`][ncps_mlx.policies.record_activity].
        x: One input sequence `(T, input_size)`.
        timespans: `(T,)`, or `None` for 1 each.
        kind: The neurons to attribute to: `"command"` (an NCP's decision layer),
            `"inter"` or `"motor"`. Wirings without layers (`FullyConnected`, `Random`)
            have only `"inter"` and `"motor"` neurons.

    Returns:
        The [`Attributions`][ncps_mlx.policies.Attributions].

    Raises:
        ValueError: As [`record_activity`][ncps_mlx.policies.record_activity]
            does, or the wiring has no neuron of `kind`.
    """
    owner = "command_attributions"
    order = _check_model(owner, model)
    check_choice(owner, "kind", kind, _STATE_KINDS)
    wiring = model.wiring
    neurons = np.array(
        [i for i in range(wiring.units) if wiring.get_type_of_neuron(i) == kind], dtype=np.int64
    )
    if neurons.size == 0:
        present = sorted({wiring.get_type_of_neuron(i) for i in range(wiring.units)})
        raise ValueError(
            f"[{owner}] the {type(wiring).__name__} wiring has no {kind} neurons; pass "
            f"'kind' as one it has: {', '.join(repr(k) for k in present)}"
        )
    x = _check_sequence(owner, model, x)
    timespans = _check_timespans(owner, model, timespans, x.shape[0])
    run = _run(model, x, timespans)
    # Gradients over the state in neuron-id order, then of the chosen neurons only.
    gradients = _state_gradients(model, x, timespans, run)[..., order][..., neurons]
    before = _float32(run.h_before)[:, order][:, neurons]
    return Attributions(
        gradients=gradients,
        attributions=gradients * before[:, None, :],
        neurons=neurons,
        kind=kind,
        outputs=_float32(run.outputs),
        timespans=timespans,
    )


def _state_gradients(model: RNN, x: np.ndarray, timespans: np.ndarray, run: _Run) -> np.ndarray:
    """`(T, outputs, state_size)`: the gradient of each output of each step with respect
    to the state entering it, in the cell's layout.

    One row of a batch per (step, output): the step from its recorded state, with the
    output selected by a one-hot weight, so that one reverse pass gives every row's
    gradient (rows do not interact). Chunked by steps to bound the memory.
    """
    outputs = model.output_size
    planned = scan.plan(model)
    chunk = max(1, _GRADIENT_ROWS // outputs)
    arrays = {"x": mx.array(x), "dt": mx.array(timespans), "h": run.h_before, "c": run.c_before}
    parts = []
    for start in range(0, x.shape[0], chunk):
        # Each step's arrays repeated once per output: row t * outputs + j.
        rows = {
            name: mx.repeat(values[start : start + chunk], outputs, axis=0)
            for name, values in arrays.items()
            if values is not None
        }
        gradient = _selected_output_gradient(model, planned, rows, outputs)
        parts.append(_float32(gradient).reshape(-1, outputs, model.state_size))
    return np.concatenate(parts)


def _selected_output_gradient(
    model: RNN, planned: scan.Plan, rows: dict[str, mx.array], outputs: int
) -> mx.array:
    """The gradient, with respect to each row's state, of output ``row % outputs`` of one
    step from that state."""
    x, dt, c = rows["x"][:, None, :], rows["dt"][:, None, None], rows.get("c")
    weight = mx.tile(mx.eye(outputs, dtype=mx.float32), (x.shape[0] // outputs, 1))

    def selected_outputs(h: mx.array) -> mx.array:
        y, _, _ = scan.scan(model, x, h, c, dt, planned=planned)
        return mx.sum(y.reshape(weight.shape).astype(mx.float32) * weight)

    return mx.grad(selected_outputs)(rows["h"])


# -- figures --------------------------------------------------------------------------


def _figure_class(owner: str) -> Any:
    """matplotlib's bare ``Figure``: no pyplot, so the caller's backend is left alone."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            f"[{owner}] needs the optional dependency matplotlib: pip install "
            f"'ncps-mlx[plot]'\n{see('missing-extra')}"
        ) from error
    return Figure


def _save(figure: Any, path: str | os.PathLike | None) -> None:
    """Write ``figure`` to ``path`` when given (atomically; format from the suffix, PNG
    when it has none)."""
    if path is None:
        return
    path = Path(path)
    form = path.suffix[1:] or "png"
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=120, format=form), suffix=path.suffix)


def _symmetric_norm(values: np.ndarray) -> Any:
    """A colour scale centred on 0 (white) reaching the largest magnitude."""
    from matplotlib.colors import Normalize

    largest = float(np.max(np.abs(values))) if values.size else 0.0
    largest = largest if largest > 0 else 1.0
    return Normalize(-largest, largest)


def _wiring_of(owner: str, model_or_wiring: Any) -> Wiring:
    if isinstance(model_or_wiring, Wiring):
        wiring = model_or_wiring
    else:
        wiring = getattr(model_or_wiring, "wiring", None)
    if not isinstance(wiring, Wiring):
        raise ValueError(
            f"[{owner}] 'model_or_wiring' must be a wired model (CfC or LTC on a Wiring), its "
            f"cell, or a Wiring, but got {type(model_or_wiring).__name__} without a wiring"
        )
    return wiring


def _chosen_steps(owner: str, steps: Sequence[int] | None, count: int, total: int) -> list[int]:
    """The steps to draw: ``steps`` checked, or ``count`` spread evenly from the first to
    the last."""
    if steps is None:
        count = check_int(owner, "count", count, 1)
        return sorted({round(s) for s in np.linspace(0, total - 1, min(count, total))})
    chosen = [check_int(owner, "steps", step, 0, total - 1) for step in steps]
    if not chosen:
        raise ValueError(f"[{owner}] 'steps' must name at least one step in 0..{total - 1}")
    return chosen


def plot_circuit_activity(
    model_or_wiring: Any,
    activity: Activity,
    steps: Sequence[int] | None = None,
    *,
    count: int = 6,
    path: str | os.PathLike | None = None,
) -> Any:
    """The wiring drawn at several steps, each neuron coloured by its state at that step.

    Small multiples, one panel per step, in the wiring's column layout (sensory, inter,
    command, motor; see [`Wiring.draw`][ncps_mlx.wirings.Wiring.draw]), synapses in grey.
    Neurons share one diverging scale over the whole sequence (white at 0, red positive,
    blue negative), so panels compare; the sensory nodes are coloured by the input
    features on a scale of their own. The first panel names the neurons.

    Args:
        model_or_wiring: The model the activity was recorded from (or its cell, or its
            wiring).
        activity: What [`record_activity`][ncps_mlx.policies.record_activity]
            returned.
        steps: The steps to draw (indices into the sequence). Default: `count` steps
            spread evenly from the first to the last.
        count: How many steps to draw when `steps` is not given. Default: 6.
        path: Write the figure there too (PNG, or the format its suffix names).

    Returns:
        The matplotlib `Figure`: one axes per step, then the two colour bars.

    Raises:
        ValueError: The wiring is not the one the activity was recorded from, or a step
            is outside the sequence.
        ImportError: matplotlib is not installed.
    """
    owner = "plot_circuit_activity"
    wiring = _wiring_of(owner, model_or_wiring)
    kinds = tuple(wiring.get_type_of_neuron(i) for i in range(wiring.units))
    if (kinds, wiring.input_dim) != (activity.kinds, activity.inputs.shape[1]):
        raise ValueError(
            f"[{owner}] the wiring has {wiring.units} neurons and {wiring.input_dim} inputs "
            f"but the activity {activity.states.shape[1]} and {activity.inputs.shape[1]}, or "
            "other kinds of neuron: pass the model the activity was recorded from"
        )
    chosen = _chosen_steps(owner, steps, count, activity.steps)
    Figure = _figure_class(owner)
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable

    from .._draw import column_layout

    columns = len(chosen) if len(chosen) <= 3 else 3 if len(chosen) in (5, 6, 9) else 4
    rows = math.ceil(len(chosen) / columns)
    figure = Figure(figsize=(3.3 * columns + 1.0, 3.2 * rows + 0.4), layout="constrained")
    # Two grid rows per row of panels, so that the two colour bars in the narrow last
    # column can split its height (a nested grid would defeat the constrained layout).
    heights = [3.0, 2.0] if rows == 1 else [1.0] * (2 * rows)
    grid = figure.add_gridspec(2 * rows, columns + 1, width_ratios=[1.0] * columns + [0.05],
                               height_ratios=heights)  # fmt: skip
    cmap = colormaps[_COLORMAP]
    norms = _symmetric_norm(activity.states), _symmetric_norm(activity.inputs)
    layout = column_layout(wiring)
    tallest = max(np.unique([x for _, x, _ in layout.values()], return_counts=True)[1])
    node_size = float(np.clip(2000 / tallest, 20, 140))
    for index, step in enumerate(chosen):
        row = 2 * (index // columns)
        axis = figure.add_subplot(grid[row : row + 2, index % columns])
        _draw_step(axis, wiring, activity, step, cmap, norms, node_size)
        if index == 0 and wiring.units <= 40:
            _name_nodes(axis, layout, node_size)
    split = 1 if rows == 1 else math.ceil(1.2 * rows)
    for place, norm, label in ((slice(0, split), norms[0], "neuron state"),
                               (slice(split, None), norms[1], "input")):  # fmt: skip
        figure.colorbar(ScalarMappable(norm, cmap), cax=figure.add_subplot(grid[place, -1]),
                        label=label)  # fmt: skip
    figure.suptitle("Neuron activity in the circuit")
    _save(figure, path)
    return figure


def _draw_step(
    axis: Any,
    wiring: Wiring,
    activity: Activity,
    step: int,
    cmap: Any,
    norms: tuple[Any, Any],
    node_size: float,
) -> None:
    """One panel: the wiring with each neuron in the colour of its state after ``step``
    and each sensory node in that of its input, synapses in grey."""
    from .._draw import draw_wiring

    state_norm, input_norm = norms
    colors = {("neuron", i): cmap(state_norm(v)) for i, v in enumerate(activity.states[step])}
    colors.update(
        {("sensory", i): cmap(input_norm(v)) for i, v in enumerate(activity.inputs[step])}
    )
    draw_wiring(wiring, axis, synapse_colors="0.8", legend=False, node_size=node_size,
                node_colors=colors)  # fmt: skip
    # Padded clear of the kind names above the columns.
    axis.set_title(f"step {step}, t = {activity.times[step]:.3g}", fontsize=10, pad=14)


def _name_nodes(axis: Any, layout: dict, node_size: float) -> None:
    """The neuron ids (``s<i>`` for the inputs) just right of their nodes."""
    offset = math.sqrt(node_size) / 2 + 2  # points: the marker's radius and a gap
    for (group, i), (_, x, y) in layout.items():
        name = f"s{i}" if group == "sensory" else str(i)
        axis.annotate(name, (x, y), xytext=(offset, 0), textcoords="offset points",
                      fontsize="x-small", va="center", zorder=4)  # fmt: skip


def plot_traces(activity: Activity, path: str | os.PathLike | None = None) -> Any:
    """Every neuron's state over time, one panel per kind: sensory inputs, inter, command
    and motor neurons (the kinds the wiring has).

    Args:
        activity: What [`record_activity`][ncps_mlx.policies.record_activity]
            returned.
        path: Write the figure there too (PNG, or the format its suffix names).

    Returns:
        The matplotlib `Figure`: one axes per kind drawn, sharing the time axis.

    Raises:
        ImportError: matplotlib is not installed.
    """
    Figure = _figure_class("plot_traces")
    kinds = [kind for kind in KINDS if activity.neuron_ids(kind).size]
    figure = Figure(figsize=(9, 1.9 * len(kinds) + 0.6), layout="constrained")
    axes = figure.subplots(len(kinds), 1, sharex=True, squeeze=False)[:, 0]
    times = activity.times
    for axis, kind in zip(axes, kinds, strict=True):
        _draw_traces(axis, kind, activity.neuron_ids(kind), times, activity.of_kind(kind))
    axes[-1].set_xlabel("time")
    figure.suptitle("Neuron traces by kind")
    _save(figure, path)
    return figure


def _draw_traces(axis: Any, kind: str, ids: np.ndarray, times: np.ndarray, values: Any) -> None:
    """One line per neuron; named in a legend when few, else coloured along a sequential
    map by id."""
    from matplotlib import colormaps

    few = len(ids) <= 8
    name = "input" if kind == "sensory" else "neuron"
    shades = colormaps["viridis"](np.linspace(0, 0.9, len(ids)))
    for column, neuron in enumerate(ids):
        style = {} if few else {"color": shades[column], "lw": 0.9, "alpha": 0.85}
        axis.plot(times, values[:, column], label=f"{name} {neuron}", **style)
    title = "sensory inputs" if kind == "sensory" else f"{kind} neurons"
    axis.set_title(f"{title} ({len(ids)})", loc="left", fontsize=10)
    axis.set_ylabel("input" if kind == "sensory" else "state")
    axis.axhline(0.0, color="0.6", lw=0.6, zorder=0)
    axis.grid(True, alpha=0.3)
    if few:
        axis.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        axis.text(1.01, 0.5, f"ids {ids[0]}..{ids[-1]}\ncoloured by id", fontsize="x-small",
                  transform=axis.transAxes, va="center")  # fmt: skip


def plot_attributions(
    attributions: Attributions,
    path: str | os.PathLike | None = None,
    *,
    values: Literal["attributions", "gradients"] = "attributions",
) -> Any:
    """For each output, its trace over time above a heatmap of how much it depended on
    each attributed (command) neuron at each step.

    Column `t` of a heatmap spans step `t` in time: the state entering the step (its left
    edge) against the output leaving it (its right edge), as in
    [`command_attributions`][ncps_mlx.policies.command_attributions]. Each output
    has its own diverging scale, white at 0.

    Args:
        attributions: What
            [`command_attributions`][ncps_mlx.policies.command_attributions]
            returned.
        path: Write the figure there too (PNG, or the format its suffix names).
        values: Draw the `"attributions"` (gradient x state, default) or the raw
            `"gradients"`.

    Returns:
        The matplotlib `Figure`: per output a trace axes, a heatmap axes and its colour
        bar, sharing the time axis.

    Raises:
        ImportError: matplotlib is not installed.
    """
    owner = "plot_attributions"
    check_choice(owner, "values", values, ("attributions", "gradients"))
    Figure = _figure_class(owner)
    data = getattr(attributions, values)
    outputs, neurons = data.shape[1], attributions.neurons
    edges = np.concatenate([[0.0], attributions.times])
    height = 1.2 + 0.13 * len(neurons)
    figure = Figure(figsize=(9, outputs * (height + 1.2) + 0.6), layout="constrained")
    grid = figure.add_gridspec(2 * outputs, 2, width_ratios=[40, 1],
                               height_ratios=[1.0, height] * outputs)  # fmt: skip
    label = "∂y/∂h × h" if values == "attributions" else "∂y/∂h"
    first = None
    for j in range(outputs):
        trace = figure.add_subplot(grid[2 * j, 0], sharex=first)
        first = first or trace
        heat = figure.add_subplot(grid[2 * j + 1, 0], sharex=first)
        trace.plot(attributions.times, attributions.outputs[:, j], color="black", lw=1.2)
        trace.set_ylabel(f"y[{j}]")
        trace.set_title(f"output {j}", loc="left", fontsize=10)
        trace.grid(True, alpha=0.3)
        trace.tick_params(labelbottom=False)
        rows = np.arange(len(neurons) + 1) - 0.5
        mesh = heat.pcolormesh(edges, rows, data[:, j, :].T, cmap=_COLORMAP,
                               norm=_symmetric_norm(data[:, j, :]))  # fmt: skip
        ticks = np.arange(0, len(neurons), max(1, math.ceil(len(neurons) / 16)))
        heat.set_yticks(ticks, [str(neurons[i]) for i in ticks])
        heat.invert_yaxis()
        heat.set_ylabel(f"{attributions.kind} neuron")
        heat.tick_params(labelbottom=j == outputs - 1)
        figure.colorbar(mesh, cax=figure.add_subplot(grid[2 * j + 1, 1]), label=label)
    heat.set_xlabel("time")
    figure.suptitle(f"Sensitivity of each output to the {attributions.kind} neurons")
    _save(figure, path)
    return figure
