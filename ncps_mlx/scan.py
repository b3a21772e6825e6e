"""The time scan every sequence layer shares, and the checks of a layer's call.

[`check_call`][ncps_mlx.scan.check_call] validates what a layer is called with (outside any compiled
function, where values can be read); [`run`][ncps_mlx.scan.run] computes the call on the checked
arguments and is safe to compile. In between, [`plan`][ncps_mlx.scan.plan] chooses once per call how
the cell's steps run: a fused stepper from [`ncps_mlx.kernels`][ncps_mlx.kernels] where one applies
here and now, else the cell's own step.
"""

from typing import Any, NamedTuple

import mlx.core as mx

from . import _inputs, kernels, ops

State = mx.array | tuple[mx.array, mx.array]


class Call(NamedTuple):
    """Checked, batch-first arguments of a sequence layer call."""

    x: mx.array
    h: mx.array | None
    c: mx.array | None
    dt: mx.array | float
    batched: bool
    mask: mx.array | None = None
    # The mask is True for a prefix of each sequence: real steps, then padding. Padding
    # then changes nothing before it, and the fused kernels can run the whole sequence.
    padded: bool = False


class Plan(NamedTuple):
    """How a call runs: the stepper (the cell, or a fused stepper with its protocol) with
    what it derives from the weights, the mixed-memory LSTM's, and the output projection
    (the layer's, or a fused one with its call)."""

    stepper: Any
    consts: Any
    lstm: Any = None
    lstm_consts: Any = None
    projection: Any = None


def check_call(layer: Any, x: Any, hx: Any = None, timespans: Any = None, mask: Any = None) -> Call:
    """Validate the arguments of a call of ``layer`` and bring them to batch-first arrays.

    Checks that need values (finite, positive timespans) are skipped inside a function
    transformation (``mx.compile``, ``mx.vmap``), where values cannot be read.

    Raises:
        ValueError: Naming the argument, its value and what is accepted.
    """
    owner = type(layer).__name__
    x, batched = _inputs.check_sequence(owner, x, layer.input_size, layer.batch_first)
    batch, steps = x.shape[0], x.shape[1]
    h, c = _inputs.check_state(owner, hx, layer.mixed_memory, layer.state_size, batch, batched)
    mask = _inputs.check_mask(owner, mask, batch, steps, batched, layer.batch_first)
    positive = layer.rnn_cell.requires_positive_timespans
    dt = _inputs.check_timespans(
        owner, timespans, batch, steps, batched, layer.batch_first, positive, mask
    )
    return Call(x, h, c, dt, batched, mask, _is_padding(mask))


def _is_padding(mask: mx.array | None) -> bool:
    """Whether a (B, T, 1) mask is True for a prefix of each sequence (read where values
    can be, else ``False``: the step-by-step path serves any mask)."""
    if mask is None or not _inputs.readable(mask):
        return False
    return bool(mx.all(mask[:, 1:] <= mask[:, :-1]).item())


def plan(layer: Any) -> Plan:
    """Choose the stepper of ``layer``'s cell here and now and derive its arrays."""
    stepper = kernels.graph_stepper(layer.rnn_cell) or layer.rnn_cell
    projection = None
    if layer.proj_size is not None:
        projection = kernels.graph_stepper(layer.fc) or layer.fc
    if not layer.mixed_memory:
        return Plan(stepper, stepper.derive(), projection=projection)
    lstm = kernels.graph_stepper(layer.lstm) or layer.lstm
    return Plan(stepper, stepper.derive(), lstm, lstm.derive(), projection)


def run(layer: Any, call: Call, planned: Plan | None = None) -> tuple[mx.array, State]:
    """A call of ``layer`` on checked arguments: ``(y, hx)`` in the input's layout."""
    y, h, c = scan(layer, call.x, call.h, call.c, call.dt, call.mask, planned, call.padded)
    if not call.batched:
        y, h = y[0], h[0]
        c = c[0] if c is not None else None
    elif layer.return_sequences and not layer.batch_first:
        y = y.swapaxes(0, 1)
    return y, ((h, c) if layer.mixed_memory else h)


def scan(
    layer: Any,
    x: mx.array,
    h: mx.array | None = None,
    c: mx.array | None = None,
    dt: mx.array | float = 1.0,
    mask: mx.array | None = None,
    planned: Plan | None = None,
    padded: bool = False,
) -> tuple[mx.array, mx.array, mx.array | None]:
    """The computation without checks: batch-first ``x`` (B, T, F), states (B, H) or
    ``None``, ``dt`` a float or (B, T, 1), ``mask`` ``None`` or boolean (B, T, 1),
    ``planned`` from [`plan`][ncps_mlx.scan.plan] (made here when ``None``), ``padded``
    when the mask is True for a prefix of each sequence (`Call.padded`).
    Returns ``(y, h, c)``, ``y`` batch-first."""
    dtype = layer.dtype
    x = x.astype(dtype)
    zeros = mx.zeros((x.shape[0], layer.state_size), dtype=dtype)
    h = zeros if h is None else h.astype(dtype)
    if layer.mixed_memory:
        c = zeros if c is None else c.astype(dtype)
    if isinstance(dt, mx.array):
        dt = dt.astype(dtype)
    stepper, consts, lstm, lstm_consts, projection = plan(layer) if planned is None else planned
    fused = (mask is None or padded) and hasattr(stepper, "sequence")
    if fused and mask is not None:
        # The fused run goes through the padding too: zeros there keep it finite whatever
        # the padded steps hold.
        x = mx.where(mask, x, mx.zeros((), dtype=dtype))
    projected = stepper.project(consts, x)
    if fused:
        # A fused stepper runs every step in one call, the mixed-memory LSTM's too (from
        # its projected input and recurrent weight): no graph operations per step. After
        # padding nothing real follows, so its steps are run too and then ignored: the
        # outputs and states are taken at each sequence's last real step.
        memory = None
        if layer.mixed_memory:
            memory = (lstm.project(lstm_consts, x), c, lstm_consts["wh_t"])
        ys, states, cells = stepper.sequence(consts, projected, h, dt, memory)
        last = _at_last_real_step(mask)
        h, c = last(states), (last(cells) if cells is not None else c)
        y = ys if layer.return_sequences else last(ys)
    else:
        steppers = (stepper, consts, lstm, lstm_consts)
        y, h, c = _step_by_step(layer, steppers, projected, x, h, c, dt, mask)
    if projection is not None:
        y = projection(y)
    if mask is not None and layer.return_sequences:
        y = mx.where(mask, y, mx.zeros((), dtype=y.dtype))
    return y, h, c


def _at_last_real_step(mask: mx.array | None):
    """A function taking each sequence's entry at its last real step from (B, T, ...)
    arrays: the last step without a mask."""
    if mask is None:
        return lambda values: values[:, -1]
    index = (mx.sum(mask, axis=1, keepdims=True) - 1).astype(mx.int32)  # (B, 1, 1)
    return lambda values: mx.take_along_axis(values, index, axis=1)[:, 0]


def _step_by_step(
    layer: Any,
    steppers: tuple,
    projected: Any,
    x: mx.array,
    h: mx.array,
    c: mx.array | None,
    dt: mx.array | float,
    mask: mx.array | None,
) -> tuple[mx.array, mx.array, mx.array | None]:
    """The time loop, one step (and the mixed-memory LSTM's) at a time: ``(y, h, c)``
    with ``y`` before the output projection."""
    stepper, consts, lstm, lstm_consts = steppers
    inputs = _steps(projected)
    if layer.mixed_memory:
        lstm_inputs = ops.split_steps(lstm.project(lstm_consts, x))
    timed = isinstance(dt, mx.array)
    outputs = []
    last = None
    for t in range(x.shape[1]):
        h_before, c_before = h, c
        if layer.mixed_memory:
            h, c = lstm.step(lstm_consts, lstm_inputs[t], h, c)
        y, h = stepper.step(consts, inputs[t], h, dt[:, t] if timed else dt)
        if mask is not None:
            # A masked step leaves the state as it was; only real steps move it.
            real = mask[:, t]
            h = mx.where(real, h, h_before)
            c = mx.where(real, c, c_before) if layer.mixed_memory else c
            last = y if last is None else mx.where(real, y, last)
        if layer.return_sequences:
            outputs.append(y)
    if layer.return_sequences:
        y = mx.stack(outputs, axis=1)
    elif last is not None:
        y = last  # the output of each sample's last real step
    return y, h, c


def _steps(projected: Any) -> list:
    """A cell's projected inputs (time along axis 1) as one entry per time step."""
    if isinstance(projected, mx.array):
        return ops.split_steps(projected)
    return list(zip(*(ops.split_steps(part) for part in projected), strict=True))
