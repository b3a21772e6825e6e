"""Device-independent cost of one time step: FLOPs, transcendentals, bytes, kernels.

Wall-clock times on one machine say little about another; these counts do. FLOPs and
transcendental evaluations follow from the shapes the cells actually compute (dense
matrix products with masks folded in, LTC synapses on their bounding box). ``bytes`` is
an analytic lower bound of memory traffic: every parameter read once, plus the step's
inputs, state and outputs. ``graph_ops`` counts the operations MLX's compiler leaves in
the graph of one step (fused elementwise chains count once): on a GPU each is a kernel
launch, which is what a small recurrent step pays for.
"""

import contextlib
import os
import re
import tempfile
from typing import Literal

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from . import kernels, ops
from .cells import CfCCell, LTCCell, WiredCfCCell
from .rnn import RNN

Mode = Literal["inference", "train"]
# Activations evaluated with one transcendental per element (relu needs none).
_TRANSCENDENTAL_ACTIVATIONS = ("lecun_tanh", "tanh", "silu", "gelu")


def _cfc_costs(cell: CfCCell, batch: int) -> tuple[int, int]:
    h = cell.hidden_size
    heads = len(cell.head_names) * h
    widths = [cell.input_size + h] + [cell.backbone_units] * len(cell.backbone) + [heads]
    flops = sum(2 * batch * a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    transcendental = 0
    if cell.backbone_activation in _TRANSCENDENTAL_ACTIVATIONS:
        transcendental += batch * cell.backbone_units * len(cell.backbone)
    transcendental += batch * h * (1 if cell.mode == "pure" else 3)
    return flops + 8 * batch * h, transcendental


def _ltc_costs(cell: LTCCell, batch: int) -> tuple[int, int]:
    synapses, sensory = cell.synapse_slots, cell.sensory_synapse_slots
    n = cell.state_size
    evaluations = cell.field_evaluations  # per time step (rk4: 4 per unfold)
    # Per recurrent synapse slot: subtract mu, multiply by sigma, then a multiply-add into
    # each of the two sums (one batched product with w * E and w). The sensory synapses
    # (all steps at once) multiply by w and by E and reduce twice.
    field = 6 * batch * synapses + 8 * batch * n
    flops = 7 * batch * sensory + evaluations * field
    return flops, batch * (sensory + evaluations * synapses)


def _cell_costs(model: RNN, batch: int) -> tuple[int, int]:
    cell = model.rnn_cell
    if isinstance(cell, LTCCell):
        flops, transcendental = _ltc_costs(cell, batch)
    elif isinstance(cell, WiredCfCCell):
        per_layer = [_cfc_costs(layer, batch) for layer in cell.layers]
        flops, transcendental = (sum(counts) for counts in zip(*per_layer, strict=True))
    else:
        flops, transcendental = _cfc_costs(cell, batch)
    if model.mixed_memory:
        h = model.state_size
        flops += 2 * batch * (model.input_size + h) * 4 * h + 10 * batch * h
        transcendental += 5 * batch * h
    if model.proj_size is not None:
        flops += 2 * batch * model.rnn_cell.output_size * model.proj_size
    return flops, transcendental


def parameter_bytes(model: RNN) -> int:
    """Bytes of the trainable parameters."""
    return sum(v.nbytes for _, v in tree_flatten(model.trainable_parameters()))


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
    model: RNN, batch: int = 1, mode: Mode = "inference", *, cpu: bool = False
) -> int:
    """Operations per time step in the compiled graph (difference of 3 and 2 steps).

    By default the graph Metal runs: MLX's native sigmoid and tanh, no fused kernels.
    With ``cpu=True``, the graph this CPU runs: the fused LTC step of
    :mod:`ncps_mlx.kernels` and the rational transcendentals of :mod:`ncps_mlx.ops`
    where they apply.
    """
    mx.eval(model.parameters())
    size = model.input_size

    def output(model: RNN, x: mx.array) -> mx.array:
        return model.forward(x, None, None, 1.0)[0].sum()

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


def step_costs(model: RNN, batch: int = 1, mode: Mode = "inference") -> dict[str, int]:
    """Cost of one time step at ``batch``; ``train`` counts forward and backward.

    Returns:
        ``flops``, ``transcendentals`` (sigmoid/tanh/exp evaluations), ``bytes`` (analytic
        lower bound of memory traffic) and ``graph_ops`` (compiled graph operations).
    """
    if mode not in ("inference", "train"):
        raise ValueError(f"[step_costs] unknown mode {mode!r}; choose 'inference' or 'train'")
    flops, transcendentals = _cell_costs(model, batch)
    state = model.state_size * (2 if model.mixed_memory else 1)
    activations = 4 * batch * (model.input_size + 2 * state + model.output_size)
    traffic = parameter_bytes(model) + activations
    if mode == "train":
        # Backward is about twice the forward's arithmetic; it re-reads the parameters
        # and the saved activations and writes a gradient of every parameter.
        flops, traffic = 3 * flops, 3 * traffic
    return {
        "flops": int(flops),
        "transcendentals": int(transcendentals),
        "bytes": int(traffic),
        "graph_ops": graph_ops_per_step(model, batch, mode),
    }
