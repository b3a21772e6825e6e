"""An analytic model of the bytes a training or inference step must move through memory.

Counts what any implementation has to read or write at least once per step: the
parameters (read in the forward and backward passes, written by the update), their
gradients (written, then read by the optimizer), the optimizer's state (read and
written), the activations kept for the backward pass (written, then read), and the
inputs and targets. Caches and recomputation change what a real device moves, so the
figure is an estimate (the monitor's ``est_`` keys), best read as a floor.

Activations are counted per sample and time step from the cell's structure: for each
layer, the values its backward pass needs (pre- and post-activation of backbone layers,
head outputs, gates, states; for an LTC, one conductance per existing synapse and the
numerator, denominator and potential of every neuron at every ODE unfold).
"""

from dataclasses import dataclass

from mlx.utils import tree_flatten

from ..cells import CfCCell, LTCCell, WiredCfCCell
from ..cells.solvers import FIELD_EVALUATIONS
from ..rnn import RNN


@dataclass(frozen=True)
class Traffic:
    """Bytes one step moves, by kind; :attr:`total` is their sum."""

    parameters: int
    gradients: int
    optimizer_state: int
    activations: int
    inputs: int

    @property
    def total(self) -> int:
        return (
            self.parameters + self.gradients + self.optimizer_state + self.activations + self.inputs
        )


def parameter_count(model: RNN) -> int:
    """Trainable parameters of the model."""
    return sum(value.size for _, value in tree_flatten(model.trainable_parameters()))


def _cfc_elements(cell: CfCCell) -> int:
    h = cell.hidden_size
    backbone = 2 * cell.backbone_units * len(cell.backbone)
    heads = len(cell.head_names) * h
    solution = 2 * h if cell.mode == "pure" else 4 * h  # (decay, h') or (2 tanh, gate, h')
    return backbone + heads + solution


def _ltc_elements(cell: LTCCell) -> int:
    n = cell.state_size
    sensory = cell.sensory_synapse_count + 2 * n
    field = cell.synapse_count + 2 * n  # conductances, numerator, denominator
    unfold = FIELD_EVALUATIONS[cell.solver] * field + n
    return sensory + cell.ode_unfolds * unfold


def activation_elements(model: RNN) -> int:
    """Values kept for the backward pass per sample and time step."""
    cell = model.rnn_cell
    if isinstance(cell, WiredCfCCell):
        elements = sum(_cfc_elements(layer) for layer in cell.layers)
    elif isinstance(cell, CfCCell):
        elements = _cfc_elements(cell)
    elif isinstance(cell, LTCCell):
        elements = _ltc_elements(cell)
    else:
        raise TypeError(f"no traffic model for {type(cell).__name__}")
    if model.mixed_memory:
        elements += 7 * model.state_size  # 4 gates, c', tanh(c'), h'
    return elements + model.output_size


def step_traffic(
    model: RNN,
    batch_size: int,
    seq_len: int,
    *,
    train: bool = True,
    optimizer_slots: int = 2,
) -> Traffic:
    """Bytes a step over ``batch_size`` sequences of ``seq_len`` steps must move.

    Args:
        model: The layer.
        batch_size: Sequences per step.
        seq_len: Time steps per sequence.
        train: A training step (forward, backward, update); else inference.
        optimizer_slots: Arrays the optimizer keeps per parameter (Adam 2, SGD with
            momentum 1, plain SGD 0).
    """
    itemsize = model.dtype.size
    parameters = parameter_count(model) * itemsize
    tokens = batch_size * seq_len
    x = tokens * model.input_size * itemsize
    if not train:
        outputs = (tokens * model.output_size + batch_size * model.state_size) * itemsize
        return Traffic(parameters, 0, 0, outputs, x)
    targets = (tokens if model.return_sequences else batch_size) * model.output_size * itemsize
    return Traffic(
        parameters=3 * parameters,
        gradients=2 * parameters,
        optimizer_state=2 * optimizer_slots * parameters,
        activations=2 * tokens * activation_elements(model) * itemsize,
        inputs=x + targets,
    )
