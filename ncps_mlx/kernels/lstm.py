"""The mixed-memory LSTM's step on NumPy arrays (:func:`ncps_mlx.kernels.direct.lstm_step`)."""

import numpy as np

from ..cells.lstm import LSTMCell
from . import direct
from .library import usable
from .registry import register


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


register(
    LSTMCell,
    direct=lambda cell: DirectLSTM(cell) if usable(cell.input_map.weight.dtype) else None,
)
