"""The mixed-memory LSTM on the fused step ([`lstm_step`][ncps_mlx.kernels.lstm_step]): in the
graph (sequences, training) and directly on NumPy arrays (a controller)."""

from typing import Any

import mlx.core as mx
import numpy as np

from ..cells.lstm import LSTMCell
from . import direct, primitives
from .library import usable
from .registry import register


class FusedLSTM:
    """An LSTM cell whose step is one [`lstm_step`][ncps_mlx.kernels.lstm_step]."""

    def __init__(self, cell: LSTMCell):
        self.cell = cell

    def derive(self) -> dict[str, Any]:
        """The cell's own derived arrays (`wh_t`)."""
        return self.cell.derive()

    def project(self, consts: dict, x: mx.array) -> mx.array:
        """The cell's input map, `x @ W^T + b`, on the kernels' product."""
        layer = self.cell.input_map
        return primitives.addmm(layer.bias, x, layer.weight.T)

    def step(
        self, consts: dict, inputs: mx.array, h: mx.array, c: mx.array
    ) -> tuple[mx.array, mx.array]:
        """One LSTM step in one kernel call.

        Returns:
            `(h_next, c_next)`, as the cell's `step` returns them.
        """
        # Reshaped, as the CfC's step does, so MLX lets go of each step's gates as soon
        # as the next step has read the state.
        batch = h.shape[0]
        inputs, h, c = (a.reshape(batch, -1) for a in (inputs, h, c))
        return primitives.lstm_step(inputs, h, c, consts["wh_t"])


class DirectLSTM:
    """The LSTM's ``(x, h, c) -> (h', c')`` on NumPy arrays, its weights read once."""

    def __init__(self, cell: LSTMCell):
        self._wx_t = np.ascontiguousarray(np.array(cell.input_map.weight.T))
        self._b = np.array(cell.input_map.bias)
        self._wh_t = direct.evaluated(cell.derive()["wh_t"])

    def __call__(
        self, x: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return direct.lstm_step(x @ self._wx_t + self._b, h, c, self._wh_t)


def _runs_fused(cell: LSTMCell) -> bool:
    return usable(cell.input_map.weight.dtype)


register(
    LSTMCell,
    graph=lambda cell: FusedLSTM(cell) if _runs_fused(cell) else None,
    direct=lambda cell: DirectLSTM(cell) if _runs_fused(cell) else None,
)
