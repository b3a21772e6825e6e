"""The demo's recurrent baselines: a GRU and an LSTM of the NCP's size, trained the same way.

They are MLX's own layers, `mlx.nn.GRU` and `mlx.nn.LSTM` (their parameters, initialisation
and equations; the tests check each against the layer), run one step at a time as cells of
an [`RNN`][ncps_mlx.RNN] with the NCP's linear readout, so that the demo's single `fit`
call trains all three: same data, epochs, batches, optimizer, schedule, clipping, seed,
and the weights of the best validation epoch kept. Neither has a timespan input, so each
gets the elapsed time of every step as a second input feature. Their hidden size is the
one whose parameter count is closest to the NCP's.

They run on MLX's graph operations: the fused CPU kernels of `ncps_mlx.kernels` serve the
package's own cells only, so on the CPU a baseline trains several times slower than the
NCP, whatever the architectures' merits; the report says so beside the times.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .._checks import check_int
from ..cells.base import Cell, Consts, register_cell
from ..costs import parameter_count
from ..datasets import SequenceData
from ..rnn import RNN
from ..training import History
from ..training.fit import LAST_CHECKPOINT
from .task import BASELINES_DIR, Log, score
from .training import fit_best


@register_cell
class GRUBaselineCell(Cell):
    """One step of `mlx.nn.GRU`, whose parameters it holds (as ``gru``).

    Timespans are ignored: the baseline is given them as an input feature instead.

    Args:
        input_size (int): Number of input features.
        hidden_size (int): Size of the state.
    """

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
    is ``h``. Timespans are ignored: the baseline is given them as an input feature instead.

    Args:
        input_size (int): Number of input features.
        hidden_size (int): Size of ``h`` and of ``c``.
    """

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


#: The baselines, by name: the cell and how the report names the layer.
CELLS = {"gru": (GRUBaselineCell, "GRU"), "lstm": (LSTMBaselineCell, "LSTM")}


def with_gaps(data: SequenceData) -> SequenceData:
    """``data`` with each step's elapsed time as one more input feature, and no timespans."""
    gaps = data.timespans[..., None].astype(data.x.dtype)
    return SequenceData(np.concatenate([data.x, gaps], axis=-1), data.y, mask=data.mask)


def build_baseline(name: str, input_size: int, hidden_size: int) -> RNN:
    """The baseline layer: its cell and a linear readout of its output to one value."""
    cell_class, _ = CELLS[name]
    return RNN(cell_class(input_size, hidden_size), proj_size=1)


def matched_hidden_size(name: str, input_size: int, parameters: int) -> int:
    """The hidden size whose baseline has the parameter count closest to ``parameters``
    (the smaller one on a tie). Builds candidates, so it draws from MLX's random key."""
    counts = {}
    hidden = 1
    while True:
        counts[hidden] = parameter_count(build_baseline(name, input_size, hidden))
        if counts[hidden] >= parameters:
            break
        hidden += 1
    return min(counts, key=lambda size: (abs(counts[size] - parameters), size))


@dataclass
class Baseline:
    """One trained baseline, for the report."""

    name: str
    model: RNN
    hidden_size: int
    history: History
    seconds: float
    resumed: bool = False
    scores: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """How the report names the model, e.g. `GRU(24) + linear readout`."""
        return f"{CELLS[self.name][1]}({self.hidden_size}) + linear readout"


def train_baseline(
    name: str,
    splits: dict[str, SequenceData],
    directory: Path,
    epochs: int,
    seed: int,
    parameters: int,
    *,
    progress: bool = True,
    log: Log = print,
    resume: bool = False,
) -> Baseline:
    """Train baseline ``name`` of about ``parameters`` parameters on the demo's ``splits``
    (with their timespans), as the NCP is trained, checkpointing into ``directory``, and
    score it."""
    data = {split: with_gaps(part) for split, part in splits.items()}
    input_size = data["train"].x.shape[-1]
    hidden_size = matched_hidden_size(name, input_size, parameters)
    mx.random.seed(seed)  # after the search, so the weights depend on the seed alone
    model = build_baseline(name, input_size, hidden_size)
    label = CELLS[name][1]
    log(
        f"Baseline: {label}({hidden_size}), {parameter_count(model)} parameters, the time "
        "gaps as a second input, trained the same way ..."
    )
    resumed = resume and (directory / LAST_CHECKPOINT).exists()
    history, seconds = fit_best(
        model,
        data,
        directory,
        epochs,
        seed,
        progress=progress,
        log=log,
        resume=resume,
        name=label,
    )
    scores, _ = score(model, data)
    return Baseline(name, model, hidden_size, history, seconds, resumed, scores)


def train_baselines(
    splits: dict[str, SequenceData],
    out: Path,
    epochs: int,
    seed: int,
    parameters: int,
    *,
    progress: bool = True,
    log: Log = print,
    resume: bool = False,
) -> list[Baseline]:
    """Every baseline of `CELLS`, trained into ``out/baselines/<name>``."""
    return [
        train_baseline(
            name,
            splits,
            out / BASELINES_DIR / name,
            epochs,
            seed,
            parameters,
            progress=progress,
            log=log,
            resume=resume,
        )
        for name in CELLS
    ]
