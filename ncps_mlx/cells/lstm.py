"""The LSTM memory cell that ``mixed_memory=True`` runs before the main cell."""

from types import ModuleType
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .. import ops
from .base import Consts, Footprint
from .cfc import xavier_uniform


def lstm_update(o: ModuleType, z: Any, c: Any) -> tuple[Any, Any]:
    """``(h', c')`` from the gate pre-activations ``z = [i, g_i, g_f, g_o]`` and the
    memory ``c``, over an op set ``o`` (see [`ncps_mlx.ops`][ncps_mlx.ops])."""
    i, input_gate, forget_gate, output_gate = o.chunks(z, 4)
    c_next = c * o.sigmoid(forget_gate + 1.0) + o.tanh(i) * o.sigmoid(input_gate)
    return o.tanh(c_next) * o.sigmoid(output_gate), c_next


class LSTMCell(nn.Module):
    r"""The [mixed-memory](https://arxiv.org/abs/2006.04418) LSTM of ncps.

    $$
    [i, g_i, g_f, g_o] = W_x x + b + W_h h,\quad
    c' = c\, \sigma(g_f + 1) + \tanh(i)\, \sigma(g_i),\quad
    h' = \tanh(c')\, \sigma(g_o)
    $$

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
        """``wh_t``: the recurrent weight as ``h @ W`` takes it."""
        return {"wh_t": self.recurrent_map.weight.T}

    def project(self, consts: Consts, x: mx.array) -> mx.array:
        """The input's share of the gate pre-activations, `W_x x + b`, for `x` of shape
        `(..., input_size)`."""
        return self.input_map(x)

    def step(
        self, consts: Consts, inputs: mx.array, h: mx.array, c: mx.array
    ) -> tuple[mx.array, mx.array]:
        """One LSTM step from the projected `inputs`, the output `h` and the memory `c`.

        Returns:
            `(h_next, c_next)`, each `(B, hidden_size)`.
        """
        return lstm_update(ops, inputs + h @ consts["wh_t"], c)

    def footprint(self) -> Footprint:
        """The work of a step (see [`Footprint`][ncps_mlx.cells.Footprint])."""
        h = self.hidden_size
        return Footprint(
            hoisted_products=((self.input_size, 4 * h),),
            loop_products=((h, 4 * h),),
            elementwise=10 * h,
            transcendentals=5 * h,
            saved_values=7 * h,  # 4 gates, c', tanh(c'), h'
        )

    def __call__(self, x: mx.array, state: tuple[mx.array, mx.array]) -> tuple[mx.array, mx.array]:
        """One step: ``(h, c) -> (h', c')`` for inputs ``x`` (B, input_size)."""
        consts = self.derive()
        return self.step(consts, self.project(consts, x), *state)
