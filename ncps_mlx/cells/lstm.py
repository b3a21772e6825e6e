"""The LSTM memory cell that ``mixed_memory=True`` runs before the main cell."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .. import ops
from ..kernels import direct
from .base import Consts, kernel_consts, numpy_consts
from .cfc import xavier_uniform


class LSTMCell(nn.Module):
    r"""The `mixed-memory <https://arxiv.org/abs/2006.04418>`_ LSTM of ncps.

    .. math::

        [i, g_i, g_f, g_o] = W_x x + b + W_h h,\quad
        c' = c\, \sigma(g_f + 1) + \tanh(i)\, \sigma(g_i),\quad
        h' = \tanh(c')\, \sigma(g_o)

    Parameter names and initialisation follow ``ncps.torch.lstm.LSTMCell``: Xavier input
    weights, orthogonal recurrent weights, input bias U(-0.1, 0.1), no recurrent bias.

    Args:
        input_size (int): Number of input features.
        hidden_size (int): Size of ``h`` and ``c``.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.input_map = nn.Linear(input_size, 4 * hidden_size)
        self.recurrent_map = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.input_map.weight = xavier_uniform(self.input_map.weight.shape)
        self.input_map.bias = mx.random.uniform(-0.1, 0.1, (4 * hidden_size,))
        self.recurrent_map.weight = nn.init.orthogonal()(self.recurrent_map.weight)

    def derive(self) -> Consts:
        return {"wh_t": self.recurrent_map.weight.T}

    def project(self, consts: Consts, x: mx.array) -> mx.array:
        return self.input_map(x)

    def step(
        self, consts: Consts, inputs: mx.array, h: mx.array, c: mx.array
    ) -> tuple[mx.array, mx.array]:
        z = inputs + h @ consts["wh_t"]
        i, ig, fg, og = mx.split(z, 4, axis=-1)
        c_next = c * ops.sigmoid(fg + 1.0) + ops.tanh(i) * ops.sigmoid(ig)
        return ops.tanh(c_next) * ops.sigmoid(og), c_next

    def direct_consts(self, consts: Consts) -> Consts:
        """What :meth:`direct_step` reads, as NumPy arrays."""
        weights = numpy_consts({"wx_t": self.input_map.weight.T, "b": self.input_map.bias})
        return {**weights, "wh_t": kernel_consts(consts["wh_t"])}

    def direct_step(
        self, consts: Consts, x: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`project` and :meth:`step` on float32 NumPy arrays, run at once by
        :func:`ncps_mlx.kernels.direct.lstm_step`."""
        return direct.lstm_step(x @ consts["wx_t"] + consts["b"], h, c, consts["wh_t"])

    def __call__(self, x: mx.array, state: tuple[mx.array, mx.array]) -> tuple[mx.array, mx.array]:
        """One step: ``(h, c) -> (h', c')`` for inputs ``x`` (B, input_size)."""
        consts = self.derive()
        return self.step(consts, self.project(consts, x), *state)
