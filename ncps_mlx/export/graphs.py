"""The package's cells and sequence layers rewritten as MIL graphs for Core ML.

Each ``*Graph`` mirrors one cell's `derive` / `project` / `step` split:
the constants are read once from the MLX cell (its ``derive()``, so wiring masks,
positivity constraints and fused heads come folded into the weights), ``project`` runs
over the whole sequence axis at once and ``step`` advances one time step. Everything is
in the ``(B, C, 1, S)`` layout of `mil`; a step uses only 1x1 convolutions,
element-wise ops, ``split`` and ``concat``. LTC synapses are evaluated for the synapses
that exist only: a one-hot convolution brings each synapse its presynaptic potential and
a second convolution sums the conductances into the postsynaptic neurons, with ``w`` and
``E`` folded into its weights, so no gather is needed.
"""

from typing import Any

import mlx.core as mx
import numpy as np

from ..cells import CfCCell, LSTMCell, LTCCell, WiredCfCCell
from ..cells.activations import ACTIVATIONS
from ..cells.cfc import cfc_solution
from ..cells.lstm import lstm_update
from ..cells.ltc import SynapseList, synaptic_sums
from ..cells.solvers import SOLVERS
from ..errors import see
from ..rnn import RNN
from . import mil
from .mil import Tensor
from .registry import CELL_GRAPHS, register_graph

Inputs = Any  # a Tensor, or a tuple of Tensors for LTC


def _numpy(array: mx.array) -> np.ndarray:
    return np.array(array.astype(mx.float32), dtype=np.float32)


class CfCGraph:
    """[`CfCCell`][ncps_mlx.cells.CfCCell] (any mode, backbone, activation and head masks)."""

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
        self.tau = self.A = None
        if cell.mode == "pure":
            self.tau = mil.channels(_numpy(consts["tau"]))
            self.A = mil.channels(_numpy(cell.A))

    def project(self, x: Tensor) -> Tensor:
        """The input's share of the first layer, for the whole sequence at once."""
        return mil.dense(x, self.input_weight, self.bias)

    def step(self, inputs: Tensor, h: Tensor, dt: Tensor | float) -> tuple[Tensor, Tensor]:
        """One CfC step, as [`CfCCell.step`][ncps_mlx.cells.CfCCell.step] computes it.

        Returns:
            `(y, h_next)`, both the new state.
        """
        z = inputs + mil.dense(h, self.recurrent_weight)
        if self.heads is not None:
            z = self.activation(mil, z)
            for weight, bias in self.backbone:
                z = self.activation(mil, mil.dense(z, weight, bias))
            z = mil.dense(z, *self.heads)
        h_next = cfc_solution(mil, self.mode, z, dt, self.tau, self.A)
        return h_next, h_next


class WiredCfCGraph:
    """[`WiredCfCCell`][ncps_mlx.cells.WiredCfCCell]: one CfC graph per wiring layer."""

    def __init__(self, cell: WiredCfCCell):
        self.layers = [CfCGraph(layer) for layer in cell.layers]
        self.sizes = cell.layer_sizes

    def project(self, x: Tensor) -> Tensor:
        """The first layer's projection: only it reads the input."""
        return self.layers[0].project(x)

    def step(self, inputs: Tensor, h: Tensor, dt: Tensor | float) -> tuple[Tensor, Tensor]:
        """One step of every layer in order, as
        [`WiredCfCCell.step`][ncps_mlx.cells.WiredCfCCell.step] computes it.

        Returns:
            `(y, h_next)`: the last layer's new state, and all layers' new states
            concatenated along the channels.
        """
        states = mil.split(h, self.sizes)
        new_states: list[Tensor] = []
        for index, layer in enumerate(self.layers):
            if index > 0:
                inputs = layer.project(new_states[-1])
            out, _ = layer.step(inputs, states[index], dt)
            new_states.append(out)
        return new_states[-1], mil.concat(new_states)


class Synapses:
    """One synapse population, as `synaptic_sums` takes it:
    two 1x1 convolutions (see the module docstring)."""

    def __init__(self, synapses: SynapseList, sources: int, targets: int):
        pre, post = np.array(synapses.pre), np.array(synapses.post)
        sigma, mu, w, erev = (_numpy(v) for v in synapses[2:])
        self.count = pre.size
        # sigma * (v_pre - mu) as one convolution: the one-hot gather scaled by sigma, with
        # bias -sigma * mu. (Left to coremltools' conv/sub/mul fusion, a mu shared by
        # several unfolds came out with the wrong sign in coremltools 9.0.)
        self.gather = np.zeros((self.count, sources), np.float32)
        self.gather[np.arange(self.count), pre] = sigma
        self.gather_bias = -sigma * mu
        self.scatter = np.zeros((2 * targets, self.count), np.float32)
        self.scatter[post, np.arange(self.count)] = w * erev
        self.scatter[targets + post, np.arange(self.count)] = w
        self.targets = targets

    def gates(self, v: Tensor) -> Tensor:
        """Every synapse's `sigma (v_pre - mu)`, one channel per synapse: a convolution
        that gathers each synapse's presynaptic potential from `v`."""
        return mil.dense(v, self.gather, self.gather_bias)

    def sums(self, activation: Tensor) -> tuple[Tensor, Tensor]:
        """The two weighted sums of the synapses' `activation` into each postsynaptic
        neuron, `(sum w E a, sum w a)`: one convolution, split in two."""
        numerator, denominator = mil.split(mil.dense(activation, self.scatter), [self.targets] * 2)
        return numerator, denominator

    def __call__(self, v: Tensor) -> tuple[Tensor | float, Tensor | float]:
        """``(sum_i A_ij E_ij, sum_i A_ij)`` for presynaptic potentials ``v``."""
        if self.count == 0:
            return 0.0, 0.0
        return synaptic_sums(mil, self, v)


class LTCGraph:
    """[`LTCCell`][ncps_mlx.cells.LTCCell] with any wiring, solver, unfold count and mapping."""

    def __init__(self, cell: LTCCell):
        consts = cell.derive()
        n, m = cell.state_size, cell.output_size
        self.synapses = Synapses(cell.synapses(), n, n)
        self.sensory = Synapses(cell.synapses(sensory=True), cell.input_size, n)
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
        """The input mapping, then the sensory synapses' two sums (zero without sensory
        synapses), for the whole sequence at once."""
        if self.input_w is not None:
            x = x * self.input_w
        if self.input_b is not None:
            x = x + self.input_b
        return self.sensory(x)

    def step(self, inputs: tuple, h: Tensor, dt: Tensor | float) -> tuple[Tensor, Tensor]:
        """One LTC step with the cell's solver and unfold count, as
        [`LTCCell.step`][ncps_mlx.cells.LTCCell.step] computes it.

        Returns:
            `(y, h_next)`: the mapped motor neurons, and every neuron's new potential.
        """
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
    """The mixed-memory [`LSTMCell`][ncps_mlx.cells.LSTMCell]."""

    def __init__(self, cell: LSTMCell):
        self.input_weight = _numpy(cell.input_map.weight)
        self.input_bias = _numpy(cell.input_map.bias)
        self.recurrent_weight = _numpy(cell.recurrent_map.weight)

    def project(self, x: Tensor) -> Tensor:
        """The input's share of the gate pre-activations, for the whole sequence at once."""
        return mil.dense(x, self.input_weight, self.input_bias)

    def step(self, inputs: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One LSTM step from the output `h` and the memory `c`.

        Returns:
            `(h_next, c_next)`.
        """
        return lstm_update(mil, inputs + mil.dense(h, self.recurrent_weight), c)


for _cell_type, _graph in ((CfCCell, CfCGraph), (WiredCfCCell, WiredCfCGraph), (LTCCell, LTCGraph)):
    register_graph(_cell_type, _graph)


def cell_graph(cell: Any) -> Any:
    """The registered graph of ``cell``, or a ValueError saying what an export needs."""
    graph = CELL_GRAPHS.get(type(cell))
    if graph is None:
        known = ", ".join(t.__name__ for t in CELL_GRAPHS)
        raise ValueError(
            f"[to_coreml] no Core ML graph for a {type(cell).__name__}: the export knows "
            f"{known}. A cell type is exported by a graph class registered with "
            "ncps_mlx.export.register_graph(cell_type, graph), whose project(x) and "
            "step(inputs, h, dt) write the cell's math with the MIL ops of "
            f"ncps_mlx.export.mil\n{see('export-arguments')}"
        )
    return graph(cell)


def _at_step(inputs: Inputs, t: int) -> Inputs:
    if isinstance(inputs, tuple):
        return tuple(_at_step(part, t) for part in inputs)
    return mil.at_step(inputs, t) if isinstance(inputs, Tensor) else inputs


class ModelGraph:
    """A [`RNN`][ncps_mlx.RNN] (CfC or LTC layer) as a MIL graph; mirrors ``RNN.scan``."""

    def __init__(self, model: RNN):
        self.cell = cell_graph(model.rnn_cell)
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
