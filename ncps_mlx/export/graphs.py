"""The package's cells and sequence layers rewritten as MIL graphs for Core ML.

Each ``*Graph`` mirrors one cell's :meth:`derive` / :meth:`project` / :meth:`step` split:
the constants are read once from the MLX cell (its ``derive()``, so wiring masks,
positivity constraints and fused heads come folded into the weights), ``project`` runs
over the whole sequence axis at once and ``step`` advances one time step. Everything is
in the ``(B, C, 1, S)`` layout of :mod:`.mil`; a step uses only 1x1 convolutions,
element-wise ops, ``split`` and ``concat``. LTC synapses are evaluated for the synapses
that exist only: a one-hot convolution brings each synapse its presynaptic potential and
a second convolution sums the conductances into the postsynaptic neurons, with ``w`` and
``E`` folded into its weights, so no gather is needed.
"""

from typing import Any

import mlx.core as mx
import numpy as np

from ..cells import CfCCell, LSTMCell, LTCCell, WiredCfCCell
from ..cells.solvers import SOLVERS
from ..rnn import RNN
from . import mil
from .mil import Tensor

Inputs = Any  # a Tensor, or a tuple of Tensors for LTC


def _numpy(array: mx.array) -> np.ndarray:
    return np.array(array.astype(mx.float32), dtype=np.float32)


ACTIVATIONS = {
    "lecun_tanh": lambda x: 1.7159 * mil.tanh(0.666 * x),
    "tanh": mil.tanh,
    "relu": mil.relu,
    "silu": mil.silu,
    "gelu": mil.gelu,
}


class CfCGraph:
    """:class:`~ncps_mlx.cells.CfCCell` (any mode, backbone, activation and head masks)."""

    def __init__(self, cell: CfCCell):
        consts = cell.derive()
        self.mode = cell.mode
        self.input_weight = _numpy(consts["wx_t"]).T
        self.recurrent_weight = _numpy(consts["wh_t"]).T
        self.bias = _numpy(consts["b"])
        self.activation = ACTIVATIONS[cell.backbone_activation]
        self.backbone = [(_numpy(layer.weight), _numpy(layer.bias)) for layer in cell.backbone[1:]]
        self.heads = None
        if cell.backbone:
            self.heads = (_numpy(consts["heads_w_t"]).T, _numpy(consts["heads_b"]))
        if cell.mode == "pure":
            self.w_tau = mil.channels(np.abs(_numpy(cell.w_tau)))
            self.A = mil.channels(_numpy(cell.A))
        self.hidden_size = cell.hidden_size

    def project(self, x: Tensor) -> Tensor:
        return mil.dense(x, self.input_weight, self.bias)

    def step(self, inputs: Tensor, h: Tensor, dt: Tensor | float) -> tuple[Tensor, Tensor]:
        z = inputs + mil.dense(h, self.recurrent_weight)
        if self.heads is not None:
            z = self.activation(z)
            for weight, bias in self.backbone:
                z = self.activation(mil.dense(z, weight, bias))
            z = mil.dense(z, *self.heads)
        h_next = self._solution(z, dt)
        return h_next, h_next

    def _solution(self, heads: Tensor, dt: Tensor | float) -> Tensor:
        if self.mode == "pure":
            decay = mil.exp(-dt * (self.w_tau + abs(heads)))
            return -self.A * decay * heads + self.A
        ff1, ff2, t_a, t_b = mil.split(heads, [self.hidden_size] * 4)
        ff1, ff2 = mil.tanh(ff1), mil.tanh(ff2)
        gate = mil.sigmoid(t_a * dt + t_b)
        if self.mode == "no_gate":
            return ff1 + gate * ff2
        return ff1 * (1.0 - gate) + gate * ff2


class WiredCfCGraph:
    """:class:`~ncps_mlx.cells.WiredCfCCell`: one CfC graph per wiring layer."""

    def __init__(self, cell: WiredCfCCell):
        self.layers = [CfCGraph(layer) for layer in cell.layers]
        self.sizes = cell.layer_sizes

    def project(self, x: Tensor) -> Tensor:
        return self.layers[0].project(x)

    def step(self, inputs: Tensor, h: Tensor, dt: Tensor | float) -> tuple[Tensor, Tensor]:
        states = mil.split(h, self.sizes)
        new_states: list[Tensor] = []
        for index, layer in enumerate(self.layers):
            if index > 0:
                inputs = layer.project(new_states[-1])
            out, _ = layer.step(inputs, states[index], dt)
            new_states.append(out)
        return new_states[-1], mil.concat(new_states)


class Synapses:
    """One synapse population as two 1x1 convolutions (see the module docstring)."""

    def __init__(
        self, consts: dict[str, mx.array], adjacency: np.ndarray, box: tuple[slice, slice]
    ):
        pre, post = box
        sources, targets = adjacency.shape
        w, sigma, mu, erev = (_numpy(consts[key]) for key in ("w", "sigma", "mu", "erev"))
        rows, cols = np.nonzero(adjacency[box])
        self.count = rows.size
        # sigma * (v_pre - mu) as one convolution: the one-hot gather scaled by sigma, with
        # bias -sigma * mu. (Left to coremltools' conv/sub/mul fusion, a mu shared by
        # several unfolds came out with the wrong sign in coremltools 9.0.)
        sigma, mu = sigma[rows, cols], mu[rows, cols]
        self.gather = np.zeros((self.count, sources), np.float32)
        self.gather[np.arange(self.count), rows + pre.start] = sigma
        self.gather_bias = -sigma * mu
        scatter = np.zeros((2 * targets, self.count), np.float32)
        scatter[cols + post.start, np.arange(self.count)] = (w * erev)[rows, cols]
        scatter[targets + cols + post.start, np.arange(self.count)] = w[rows, cols]
        self.scatter = scatter
        self.targets = targets

    def __call__(self, v: Tensor) -> tuple[Tensor | float, Tensor | float]:
        """``(sum_i A_ij E_ij, sum_i A_ij)`` for presynaptic potentials ``v``."""
        if self.count == 0:
            return 0.0, 0.0
        activation = mil.sigmoid(mil.dense(v, self.gather, self.gather_bias))
        numerator, denominator = mil.split(mil.dense(activation, self.scatter), [self.targets] * 2)
        return numerator, denominator


class LTCGraph:
    """:class:`~ncps_mlx.cells.LTCCell` with any wiring, solver, unfold count and mapping."""

    def __init__(self, cell: LTCCell):
        consts = cell.derive()
        n, m = cell.state_size, cell.output_size
        wiring = cell.wiring
        self.synapses = Synapses(consts["synapses"], wiring.adjacency_matrix, cell._box)
        self.sensory = Synapses(
            consts["sensory"], wiring.sensory_adjacency_matrix, cell._sensory_box
        )
        self.cm = mil.channels(_numpy(consts["cm"]))
        self.gleak = mil.channels(_numpy(consts["gleak"]))
        self.leak_current = mil.channels(_numpy(consts["leak_current"]))
        self.input_w = self.input_b = self.output_b = None
        if cell.input_mapping is not None:
            self.input_w = mil.channels(_numpy(cell.input_w))
        if cell.input_mapping == "affine":
            self.input_b = mil.channels(_numpy(cell.input_b))
        # The output mapping picks the motor neurons and scales them: one convolution.
        scale = _numpy(cell.output_w) if cell.output_mapping is not None else np.ones(m)
        self.output_weight = np.zeros((m, n), np.float32)
        self.output_weight[np.arange(m), np.arange(m)] = scale
        if cell.output_mapping == "affine":
            self.output_b = _numpy(cell.output_b)
        self.solve = SOLVERS[cell.solver]
        self.unfolds, self.epsilon = cell.ode_unfolds, cell.epsilon

    def project(self, x: Tensor) -> tuple[Tensor | float, Tensor | float]:
        if self.input_w is not None:
            x = x * self.input_w
        if self.input_b is not None:
            x = x + self.input_b
        return self.sensory(x)

    def step(self, inputs: tuple, h: Tensor, dt: Tensor | float) -> tuple[Tensor, Tensor]:
        sensory_numerator, sensory_denominator = inputs

        def field(v: Tensor) -> tuple[Tensor, Tensor]:
            numerator, denominator = self.synapses(v)
            return (
                self.leak_current + (numerator + sensory_numerator),
                self.gleak + (denominator + sensory_denominator),
            )

        v = self.solve(field, h, self.cm, dt, self.unfolds, self.epsilon)
        return mil.dense(v, self.output_weight, self.output_b), v


class LSTMGraph:
    """The mixed-memory :class:`~ncps_mlx.cells.LSTMCell`."""

    def __init__(self, cell: LSTMCell):
        self.input_weight = _numpy(cell.input_map.weight)
        self.input_bias = _numpy(cell.input_map.bias)
        self.recurrent_weight = _numpy(cell.recurrent_map.weight)
        self.hidden_size = cell.hidden_size

    def project(self, x: Tensor) -> Tensor:
        return mil.dense(x, self.input_weight, self.input_bias)

    def step(self, inputs: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        z = inputs + mil.dense(h, self.recurrent_weight)
        i, input_gate, forget_gate, output_gate = mil.split(z, [self.hidden_size] * 4)
        c_next = c * mil.sigmoid(forget_gate + 1.0) + mil.tanh(i) * mil.sigmoid(input_gate)
        return mil.tanh(c_next) * mil.sigmoid(output_gate), c_next


CELL_GRAPHS = {CfCCell: CfCGraph, WiredCfCCell: WiredCfCGraph, LTCCell: LTCGraph}


def _at_step(inputs: Inputs, t: int) -> Inputs:
    if isinstance(inputs, tuple):
        return tuple(_at_step(part, t) for part in inputs)
    return mil.at_step(inputs, t) if isinstance(inputs, Tensor) else inputs


class ModelGraph:
    """A :class:`~ncps_mlx.rnn.RNN` (CfC or LTC layer) as a MIL graph; mirrors ``RNN.scan``."""

    def __init__(self, model: RNN):
        self.cell = CELL_GRAPHS[type(model.rnn_cell)](model.rnn_cell)
        self.lstm = LSTMGraph(model.lstm) if model.mixed_memory else None
        self.projection = None
        if model.proj_size is not None:
            self.projection = (_numpy(model.fc.weight), _numpy(model.fc.bias))
        self.return_sequences = model.return_sequences

    def run(
        self, x: Tensor, h: Tensor, c: Tensor | None, dt: Tensor | float
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``x`` (B, F, 1, T), ``dt`` a float or (B, 1, 1, T): ``(y, h, c)``, ``y`` with
        every step along S (``return_sequences``) or the last step only."""
        inputs = self.cell.project(x)
        lstm_inputs = self.lstm.project(x) if self.lstm is not None else None
        outputs = []
        for t in range(x.shape[-1]):
            if self.lstm is not None:
                h, c = self.lstm.step(_at_step(lstm_inputs, t), h, c)
            y, h = self.cell.step(_at_step(inputs, t), h, _at_step(dt, t))
            outputs.append(y)
        y = mil.concat(outputs, axis=3) if self.return_sequences else outputs[-1]
        if self.projection is not None:
            y = mil.dense(y, *self.projection)
        return y, h, c
