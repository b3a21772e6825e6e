"""Device-independent cost of a step: FLOPs, transcendentals, bytes, graph operations.

Wall-clock times on one machine say little about another; these counts do. They are read
from what the cells declare ([`footprint`][ncps_mlx.cells.Cell.footprint]: their matrix
products, element-wise work, transcendentals and the values they keep for the backward
pass) and from the model's parameters, for any cell. A cell that declares nothing gets
``None`` where its footprint is needed, never an error.

``graph_ops`` counts the operations MLX's compiler leaves in the graph of one time step
(fused elementwise chains count once): on a GPU each is a kernel launch, which is what a
small recurrent step pays for. It is measured on the model itself, so it is known for
every cell.
"""

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any, Literal

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from . import kernels, ops, scan
from .cells.base import Footprint

Mode = Literal["inference", "train"]
"""What a step is costed for: a forward pass, or a training step (forward, backward and
update)."""


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters of the model."""
    return sum(value.size for _, value in tree_flatten(model.trainable_parameters()))


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the trainable parameters."""
    return sum(value.nbytes for _, value in tree_flatten(model.trainable_parameters()))


def layer_footprint(model: Any) -> Footprint | None:
    """The work of one time step of a sequence layer, per sample: its cell's
    [`footprint`][ncps_mlx.cells.Cell.footprint], the mixed-memory LSTM's and the output
    projection; ``None`` when the cell declares none."""
    footprint = model.rnn_cell.footprint()
    if footprint is None:
        return None
    if model.mixed_memory:
        footprint = footprint + model.lstm.footprint()
    if model.proj_size is not None:
        footprint = footprint + Footprint(
            loop_products=((model.rnn_cell.output_size, model.proj_size),)
        )
    return footprint


# -- compute per time step -----------------------------------------------------------------


def _graph_size(outputs: object) -> int:
    fd, path = tempfile.mkstemp(suffix=".dot")
    os.close(fd)
    try:
        mx.export_to_dot(path, outputs)
        with open(path) as handle:
            return len(re.findall(r'label ="', handle.read()))
    finally:
        os.unlink(path)


def graph_ops_per_step(
    model: Any, batch: int = 1, mode: Mode = "inference", *, cpu: bool = False
) -> int:
    """Operations per time step in the compiled graph (difference of 3 and 2 steps).

    By default the graph Metal runs: MLX's native sigmoid and tanh, no fused kernels.
    With ``cpu=True``, the graph this CPU runs: the fused steps of
    [`ncps_mlx.kernels`][ncps_mlx.kernels] and the rational transcendentals of
    [`ncps_mlx.ops`][ncps_mlx.ops] where they apply.
    """
    mx.eval(model.parameters())
    size = model.input_size

    def output(model: Any, x: mx.array) -> mx.array:
        return scan.scan(model, x)[0].sum()

    if mode == "inference":
        traced = mx.compile(lambda x: output(model, x), inputs=[model.state])
    else:
        loss_and_grad = nn.value_and_grad(model, output)
        # value_and_grad swaps traced parameters into the model: hand them back as outputs.
        traced = mx.compile(
            lambda x: loss_and_grad(model, x), inputs=[model.state], outputs=[model.state]
        )
    counts = []
    with contextlib.ExitStack() as as_on_metal:
        if not cpu:
            as_on_metal.enter_context(ops.native_transcendentals())
            as_on_metal.enter_context(kernels.disabled())
        for steps in (2, 3):
            x = mx.zeros((batch, steps, size))
            mx.eval(x)
            counts.append(_graph_size(traced(x)))
    return counts[1] - counts[0]


def step_costs(model: Any, batch: int = 1, mode: Mode = "inference") -> dict[str, int | None]:
    """Cost of one time step at ``batch``; ``train`` counts forward and backward.

    Returns:
        ``flops``, ``transcendentals`` (sigmoid/tanh/exp evaluations), ``bytes`` (an
        analytic lower bound of memory traffic: every parameter read once, plus the step's
        inputs, state and outputs) and ``graph_ops`` (compiled graph operations).
        ``flops`` and ``transcendentals`` are ``None`` for a cell that declares no
        [`footprint`][ncps_mlx.cells.Cell.footprint].

    Raises:
        ValueError: An unknown ``mode``.
    """
    if mode not in ("inference", "train"):
        raise ValueError(f"[step_costs] unknown mode {mode!r}; choose 'inference' or 'train'")
    footprint = layer_footprint(model)
    flops = None if footprint is None else batch * footprint.flops
    transcendentals = None if footprint is None else batch * footprint.transcendentals
    state = model.state_size * (2 if model.mixed_memory else 1)
    activations = 4 * batch * (model.input_size + 2 * state + model.output_size)
    traffic = parameter_bytes(model) + activations
    if mode == "train":
        # Backward is about twice the forward's arithmetic; it re-reads the parameters
        # and the saved activations and writes a gradient of every parameter.
        flops = None if flops is None else 3 * flops
        traffic = 3 * traffic
    return {
        "flops": flops,
        "transcendentals": transcendentals,
        "bytes": int(traffic),
        "graph_ops": graph_ops_per_step(model, batch, mode),
    }


# -- memory traffic of a whole step ----------------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    """Bytes one step moves, by kind; `total` is their sum."""

    parameters: int
    gradients: int
    optimizer_state: int
    activations: int
    inputs: int

    @property
    def total(self) -> int:
        """All bytes of the step: the sum of the five kinds."""
        return (
            self.parameters + self.gradients + self.optimizer_state + self.activations + self.inputs
        )


def step_traffic(
    model: Any,
    batch_size: int,
    seq_len: int,
    *,
    train: bool = True,
    optimizer_slots: int = 2,
) -> Traffic | None:
    """Bytes a step over ``batch_size`` sequences of ``seq_len`` steps must move.

    Counts what any implementation has to read or write at least once per step: the
    parameters (read in the forward and backward passes, written by the update), their
    gradients (written, then read by the optimizer), the optimizer's state (read and
    written), the values kept for the backward pass (the footprint's ``saved_values``,
    written then read) and the inputs and targets. Caches and recomputation change what a
    real device moves, so the figure is an estimate (the monitor's ``est_`` keys), best
    read as a floor.

    Args:
        model: The layer.
        batch_size: Sequences per step.
        seq_len: Time steps per sequence.
        train: A training step (forward, backward, update); else inference.
        optimizer_slots: Arrays the optimizer keeps per parameter (Adam 2, SGD with
            momentum 1, plain SGD 0).

    Returns:
        The [`Traffic`][ncps_mlx.costs.Traffic], or ``None`` for a training step of a cell that
        declares no [`footprint`][ncps_mlx.cells.Cell.footprint].
    """
    itemsize = model.dtype.size
    parameters = parameter_count(model) * itemsize
    tokens = batch_size * seq_len
    x = tokens * model.input_size * itemsize
    if not train:
        outputs = (tokens * model.output_size + batch_size * model.state_size) * itemsize
        return Traffic(parameters, 0, 0, outputs, x)
    footprint = layer_footprint(model)
    if footprint is None:
        return None
    saved = footprint.saved_values + model.output_size
    targets = (tokens if model.return_sequences else batch_size) * model.output_size * itemsize
    return Traffic(
        parameters=3 * parameters,
        gradients=2 * parameters,
        optimizer_state=2 * optimizer_slots * parameters,
        activations=2 * tokens * saved * itemsize,
        inputs=x + targets,
    )
