"""Baselines to compare the package's models with: a GRU, an LSTM and an MLP over the last
few inputs, as [`RNN`][ncps_mlx.RNN] layers trained, run and saved like any other.

The GRU and LSTM are MLX's own layers, `mlx.nn.GRU` and `mlx.nn.LSTM` (their parameters,
initialisation and equations; the tests check each against the layer), run one step at a
time as cells. The MLP is the "MLP over stacked observations" of control papers: a
feed-forward network given the last ``window`` inputs, whose memory is that window and
nothing else. Each is a [`Cell`][ncps_mlx.cells.Cell], so [`fit`][ncps_mlx.training.fit.fit],
[`Controller`][ncps_mlx.Controller] and [`ncps_mlx.save`][ncps_mlx.save] /
[`ncps_mlx.load`][ncps_mlx.load] work with them; importing `ncps_mlx` registers them, so
a saved baseline loads in any process.

None of them reads the timespans (their ``uses_timespans`` is ``False``, where the
package's own cells have ``True``): where the time between steps matters, give them the
elapsed time as one more input feature with
[`with_timespan_feature`][ncps_mlx.baselines.with_timespan_feature].

They run on MLX's graph operations: the fused CPU kernels of
[`ncps_mlx.kernels`][ncps_mlx.kernels] serve the package's own cells only, so compare
training times with that in mind. No baseline declares a
[`footprint`][ncps_mlx.cells.Cell.footprint], so [`step_costs`][ncps_mlx.costs.step_costs]
gives ``None`` for their FLOPs (its ``graph_ops`` and ``bytes`` are known).

To compare models of the same size,
[`matched_hidden_size`][ncps_mlx.baselines.matched_hidden_size] finds the hidden size whose
baseline has about a given number of parameters, and
[`build_baseline`][ncps_mlx.baselines.build_baseline] builds it with a linear readout.

Example:
    ```python
    import numpy as np
    from ncps_mlx.baselines import build_baseline, matched_hidden_size, with_timespan_feature

    x, gaps = np.zeros((8, 20, 3), np.float32), np.full((8, 20), 0.5, np.float32)
    inputs = with_timespan_feature(x, gaps)  # (8, 20, 4): the gaps as a 4th feature
    hidden = matched_hidden_size("mlp", 4, parameters=1000, window=4)
    model = build_baseline("mlp", 4, hidden, window=4)  # one output per step
    y, state = model(inputs)
    assert y.shape == (8, 20, 1) and state.shape == (8, 3 * 4)  # the last 3 inputs
    ```
"""

import inspect
from typing import Any, NamedTuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ._checks import check_choice, check_int
from .cells.base import Cell, Consts, register_cell
from .costs import parameter_count
from .rnn import RNN


@register_cell
class GRUBaselineCell(Cell):
    """One step of `mlx.nn.GRU`, whose parameters it holds (as ``gru``).

    Timespans are ignored (``uses_timespans`` is ``False``): give the elapsed time as an
    input feature where it matters.

    Args:
        input_size (int): Number of input features.
        hidden_size (int): Size of the state.
    """

    uses_timespans = False

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        check_int("GRUBaselineCell", "input_size", input_size)
        check_int("GRUBaselineCell", "hidden_size", hidden_size)
        self.gru = nn.GRU(input_size, hidden_size)

    @property
    def input_size(self) -> int:
        """Features of the input `x`."""
        return self.gru.Wx.shape[1]

    @property
    def state_size(self) -> int:
        """Size of the state `h`: the GRU's hidden size."""
        return self.gru.hidden_size

    @property
    def output_size(self) -> int:
        """Size of the output: the GRU's hidden size (the output is the new state)."""
        return self.gru.hidden_size

    def derive(self) -> Consts:
        """`wh_t`: the recurrent weight as `h @ W` takes it."""
        return {"wh_t": self.gru.Wh.T}

    def project(self, consts: Consts, x: mx.array) -> mx.array:
        """`nn.GRU`'s input product with its bias, for every step at once as `nn.GRU`
        does it."""
        return mx.addmm(self.gru.b, x, self.gru.Wx.T)

    def step(
        self, consts: Consts, inputs: mx.array, h: mx.array, dt: mx.array | float
    ) -> tuple[mx.array, mx.array]:
        """One step of `nn.GRU` from the projected `inputs`; `dt` is ignored.

        Returns:
            `(h_next, h_next)`: the new state is the output.
        """
        size = self.gru.hidden_size
        recurrent = h @ consts["wh_t"]
        r, z = mx.split(mx.sigmoid(inputs[..., :-size] + recurrent[..., :-size]), 2, axis=-1)
        n = mx.tanh(inputs[..., -size:] + r * (recurrent[..., -size:] + self.gru.bhn))
        h = (1 - z) * n + z * h
        return h, h

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this cell."""
        return {"input_size": self.input_size, "hidden_size": self.state_size}


@register_cell
class LSTMBaselineCell(Cell):
    """One step of `mlx.nn.LSTM`, whose parameters it holds (as ``lstm``).

    The state is ``h`` and the memory ``c`` side by side (``2 * hidden_size``); the output
    is ``h``. Timespans are ignored (``uses_timespans`` is ``False``): give the elapsed
    time as an input feature where it matters.

    Args:
        input_size (int): Number of input features.
        hidden_size (int): Size of ``h`` and of ``c``.
    """

    uses_timespans = False

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        check_int("LSTMBaselineCell", "input_size", input_size)
        check_int("LSTMBaselineCell", "hidden_size", hidden_size)
        self.lstm = nn.LSTM(input_size, hidden_size)

    @property
    def input_size(self) -> int:
        """Features of the input `x`."""
        return self.lstm.Wx.shape[1]

    @property
    def state_size(self) -> int:
        """Size of the state: `h` and `c` side by side, `2 * hidden_size`."""
        return 2 * self.lstm.hidden_size

    @property
    def output_size(self) -> int:
        """Size of the output `h`: the LSTM's hidden size."""
        return self.lstm.hidden_size

    def derive(self) -> Consts:
        """`wh_t`: the recurrent weight as `h @ W` takes it."""
        return {"wh_t": self.lstm.Wh.T}

    def project(self, consts: Consts, x: mx.array) -> mx.array:
        """`nn.LSTM`'s input product with its bias, for every step at once."""
        return mx.addmm(self.lstm.bias, x, self.lstm.Wx.T)

    def step(
        self, consts: Consts, inputs: mx.array, state: mx.array, dt: mx.array | float
    ) -> tuple[mx.array, mx.array]:
        """One step of `nn.LSTM` from the projected `inputs`; `dt` is ignored.

        Returns:
            `(h_next, state_next)`: the new output, and the new `h` and `c` side by side.
        """
        h, c = mx.split(state, 2, axis=-1)
        i, f, g, o = mx.split(inputs + h @ consts["wh_t"], 4, axis=-1)
        c = mx.sigmoid(f) * c + mx.sigmoid(i) * mx.tanh(g)
        h = mx.sigmoid(o) * mx.tanh(c)
        return h, mx.concatenate([h, c], axis=-1)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this cell."""
        return {"input_size": self.input_size, "hidden_size": self.output_size}


@register_cell
class MLPBaselineCell(Cell):
    """An MLP over the last ``window`` inputs: the "MLP over stacked observations" of
    control papers, as a cell.

    Each step puts the new input after the previous ``window - 1`` ones (oldest first;
    zeros before the first step, as zero padding), runs two hidden layers of
    ``hidden_size`` units, ``tanh(Linear(...))`` each (MLX's ``nn.Linear`` and its
    initialisation, held as ``layers``), and outputs the second layer's activations. The
    state is the window without its oldest input: ``(window - 1) * input_size`` values,
    none at all for ``window=1`` (a plain MLP of the current input; every layer, the
    [`Controller`][ncps_mlx.Controller] and ``fit`` accept the empty state). Timespans are
    ignored (``uses_timespans`` is ``False``): give the elapsed time as an input feature
    where it matters.

    Args:
        input_size (int): Number of input features per step.
        hidden_size (int): Units of each of the two hidden layers, and the output size.
        window (int): Steps the MLP sees, the current one included: ``>= 1``.
    """

    uses_timespans = False

    def __init__(self, input_size: int, hidden_size: int, window: int):
        super().__init__()
        self._input_size = check_int("MLPBaselineCell", "input_size", input_size)
        self._hidden_size = check_int("MLPBaselineCell", "hidden_size", hidden_size)
        self._window = check_int("MLPBaselineCell", "window", window)
        self.layers = [
            nn.Linear(window * input_size, hidden_size),
            nn.Linear(hidden_size, hidden_size),
        ]

    @property
    def window(self) -> int:
        """Steps the MLP sees, the current one included."""
        return self._window

    @property
    def input_size(self) -> int:
        """Features of the input `x`."""
        return self._input_size

    @property
    def state_size(self) -> int:
        """Size of the state: the previous `window - 1` inputs, oldest first."""
        return (self._window - 1) * self._input_size

    @property
    def output_size(self) -> int:
        """Size of the output: the hidden size."""
        return self._hidden_size

    def step(
        self, consts: Consts, inputs: mx.array, state: mx.array, dt: mx.array | float
    ) -> tuple[mx.array, mx.array]:
        """The MLP on the window that ends with `inputs`; `dt` is ignored.

        Returns:
            `(y, state_next)`: the second hidden layer's activations, and the window less
            its oldest input.
        """
        window = mx.concatenate([state, inputs], axis=-1)
        y = window
        for layer in self.layers:
            y = mx.tanh(layer(y))
        return y, window[..., self._input_size :]

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this cell."""
        return {
            "input_size": self._input_size,
            "hidden_size": self._hidden_size,
            "window": self._window,
        }


class BaselineKind(NamedTuple):
    """One entry of [`BASELINES`][ncps_mlx.baselines.BASELINES]: a cell class and its
    display name."""

    cell: type[Cell]
    """The cell class, built as ``cell(input_size, hidden_size, **options)``."""
    label: str
    """How reports name the baseline, e.g. ``"GRU"``."""


BASELINES: dict[str, BaselineKind] = {
    "gru": BaselineKind(GRUBaselineCell, "GRU"),
    "lstm": BaselineKind(LSTMBaselineCell, "LSTM"),
    "mlp": BaselineKind(MLPBaselineCell, "MLP"),
}
"""The baselines by name (``"gru"``, ``"lstm"``, ``"mlp"``), with their cells and display
names."""


def _options(owner: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` if they are exactly the further constructor arguments the cell of
    baseline ``name`` takes, else a ValueError naming them."""
    check_choice(owner, "baseline", name, BASELINES)
    takes = list(inspect.signature(BASELINES[name].cell).parameters)[2:]
    if sorted(options) != sorted(takes):
        allowed = f"the options {takes}, all required," if takes else "no options"
        got = sorted(options) if options else "none"
        raise ValueError(f"[{owner}] the {name!r} baseline takes {allowed} but got {got}")
    return options


def build_baseline(
    name: str, input_size: int, hidden_size: int, output_size: int = 1, **options: Any
) -> RNN:
    """The baseline ``name`` of [`BASELINES`][ncps_mlx.baselines.BASELINES] as a layer: its
    cell and a linear readout of the cell's output to ``output_size`` values
    (``proj_size``).

    Args:
        name: ``"gru"``, ``"lstm"`` or ``"mlp"``.
        input_size: Input features per step.
        hidden_size: The cell's hidden size.
        output_size: Outputs per step, read out linearly.
        **options: The cell's further arguments: ``window`` for ``"mlp"``, none for the
            others.

    Raises:
        ValueError: An unknown ``name``, options the cell does not take or lacks, or a
            size that is not a positive int.
    """
    options = _options("build_baseline", name, options)
    check_int("build_baseline", "output_size", output_size)
    cell = BASELINES[name].cell(input_size, hidden_size, **options)
    return RNN(cell, proj_size=output_size)


def matched_hidden_size(
    name: str, input_size: int, parameters: int, output_size: int = 1, **options: Any
) -> int:
    """The hidden size whose [`build_baseline`][ncps_mlx.baselines.build_baseline] has the
    parameter count closest to ``parameters`` (the smaller size on a tie; 1 when even
    that has more).

    It builds the candidates, so it draws from MLX's random key: seed after calling it
    for weights that depend on the seed alone.

    Raises:
        ValueError: As [`build_baseline`][ncps_mlx.baselines.build_baseline] does, or a
            ``parameters`` that is not a positive int.
    """
    _options("matched_hidden_size", name, options)
    check_int("matched_hidden_size", "parameters", parameters)
    counts = {}
    hidden = 1
    while True:  # counts grow with the hidden size
        model = build_baseline(name, input_size, hidden, output_size, **options)
        counts[hidden] = parameter_count(model)
        if counts[hidden] >= parameters:
            break
        hidden += 1
    return min(counts, key=lambda size: (abs(counts[size] - parameters), size))


def with_timespan_feature(x: Any, timespans: Any) -> np.ndarray:
    """``x`` with each step's elapsed time as one more, last, input feature: for a
    baseline, which does not read timespans.

    Args:
        x: Inputs ``(..., F)``: ``(N, T, F)`` sequences, or one step ``(F,)``.
        timespans: The elapsed times, shaped like ``x`` without its feature axis (``(N,
            T)``; ``(N, T, 1)`` too), or one number for every step.

    Returns:
        ``(..., F + 1)``, in ``x``'s dtype (float32 for integer inputs).

    Raises:
        ValueError: ``timespans`` of another shape.
    """
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("[with_timespan_feature] 'x' must have a feature axis but is a scalar")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    gaps = np.asarray(timespans, dtype=dtype)
    steps = x.shape[:-1]
    if gaps.shape == (*steps, 1):
        gaps = gaps[..., 0]
    if gaps.shape not in ((), steps):
        raise ValueError(
            f"[with_timespan_feature] 'timespans' must be a number or have shape {steps} "
            f"(x {x.shape} without its features) but got shape {gaps.shape}"
        )
    gaps = np.broadcast_to(gaps, steps)[..., None]
    return np.concatenate([x.astype(dtype, copy=False), gaps], axis=-1)
