"""Memory a training step needs, predicted before any compute, and a batch size that fits.

:func:`estimate_memory` predicts the peak memory of one step of
:func:`~ncps_mlx.training.make_train_step` (or one compiled inference call) from the
model's structure alone. At a given ``seq_len`` the peak is
``fixed + batch_size * per_sample``, and neither part grows faster than ``seq_len``:

* fixed: the parameters, their gradients and the optimizer's state; the arrays the update
  writes before the old ones are freed; and one gradient contribution per time step for
  every weight matrix multiplied inside the time loop (the compiled backward pass keeps
  most of them alive until it sums them), so it grows with ``seq_len``.
* per sample: the inputs and targets; the values each time step keeps for the backward
  pass (a multiple of :func:`~ncps_mlx.monitor.traffic.activation_elements`; for an
  LTC, four arrays per slot of the synapse grid it evaluates instead of one value per
  synapse, or, with the fused CPU step of :mod:`ncps_mlx.kernels`, which keeps no
  recurrent grid, 5.5 per slot of the sensory grid alone); and the input projections
  hoisted out of the loop, whose per-step cotangents the backward pass of
  :func:`~ncps_mlx.ops.split_steps` stacks into one array.

The multipliers were calibrated against ``mx.get_peak_memory()`` (MLX 0.32.4, CPU) for
``CfC(16, 64)``, ``CfC(16, AutoNCP(64, 8))`` and ``LTC(16, AutoNCP(32, 8))``, each with
and without mixed memory, and ``CfC(16, 64, return_sequences=False)``, at batch sizes 1
to 256 and 16 to 128 steps: the estimate is 0.72x-1.41x of the measured peak there
(0.66x-1.38x on variants it was not fitted to: ``CfC(16, AutoNCP(32, 4))``,
``CfC(32, 128)``, ``CfC(16, 64, backbone_layers=0)``, ``CfC(16, 64, mode="pure")``,
``LTC(16, AutoNCP(64, 8))``, ``LTC(16, 32)`` and ``CfC(16, AutoNCP(64, 8),
return_sequences=False)``; the pure-mode CfC and the small wired CfC are the low ones).
The LTCs are within 0.88x-1.25x on MLX operations, and with the fused step within
0.71x-1.29x for ``LTC(16, AutoNCP(32, 8))`` with and without mixed memory,
``LTC(16, AutoNCP(64, 8))`` and ``LTC(16, 32)`` at batch sizes 1 to 256 and 16 to 128
steps (the dense ``LTC(16, 32)`` is the low one). For a CfC the sum is rougher: the step
values are freed while the weight gradients pile up, so where the two are of a size the
peak is below their sum (up to 1.41x); and on the CPU, gates of 8192 values or more
take the rational ``sigmoid``/``tanh`` of :mod:`ncps_mlx.ops`, which changes what a step
keeps, so the measured cost per sample bends at the batch sizes where that happens. For
inference the estimate is 0.72x-1.38x of the measured peak of the fitted models at batch sizes 8 to
256 (at batch 1, where the peak is below 1 MiB, 0.71x-2.8x). The multipliers describe
how MLX schedules the compiled graph, so another MLX version or device may need them
checked again.
"""

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten

from .._checks import check_int as check_positive_int
from ..cells import CfCCell, LTCCell, WiredCfCCell
from ..costs import layer_footprint, parameter_count
from ..errors import MemoryBudgetError, see
from ..rnn import RNN, model_from_config
from .losses import LossFn
from .steps import make_train_step

# Calibration (MLX 0.32 on CPU; see the module docstring). Values alive at the peak per
# value the backward pass needs (activation_elements; below 1, as the backward pass frees
# some before the peak) and per value of the hoisted input projections (their stacked
# cotangents).
_STEP_VALUES_PER_ELEMENT = 0.85
# Arrays alive at the peak per evaluated LTC synapse slot (the grid's intermediates and
# their cotangents); they take the place of the per-synapse values activation_elements
# counts.
_GRID_VALUES_PER_SLOT = 4.0
# With the fused LTC step (ncps_mlx.kernels) the recurrent grid keeps nothing, and what
# remains, the sensory grid of all steps at once, keeps more per slot than the two
# grids did on average.
_FUSED_SENSORY_VALUES_PER_SLOT = 5.5
# Share of the per-step gradient contributions of the loop's weights alive at the peak.
_LOOP_GRADIENT_SHARE = 0.66
# The update writes new parameters and optimizer state before the old ones are freed, and
# needs about two more parameter-sized temporaries.
_UPDATE_TEMPORARIES = 3
# Inference: arrays per sensory synapse slot (all steps at once); per recurrent slot and
# per projection or state value of the step being computed; parameter-sized constants
# the cell derives (concatenated, transposed and masked weights).
_INFERENCE_SENSORY_VALUES = 5.0
_INFERENCE_GRID_VALUES = 2.0
_INFERENCE_STEP_VALUES = 6.0
_INFERENCE_DERIVED_COPIES = 2

HOST_MEMORY_FRACTION = 0.8
DEFAULT_CANDIDATES = (8, 16, 32, 64, 128, 256, 512, 1024)
_MIB = 2**20


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak bytes of one step, by kind; :attr:`total` is their sum.

    Attributes:
        batch_size: Sequences per step the estimate is for.
        seq_len: Time steps per sequence.
        train: A training step (else an inference call).
        parameters: Every array the model holds (trainable or not).
        gradients: One gradient per trainable parameter (0 for inference).
        optimizer_state: The optimizer's per-parameter arrays (0 for inference).
        inputs: The input batch and the targets (inference: the input).
        activations: Values the time steps keep for the backward pass, and the stacked
            cotangents of the input projections hoisted out of the loop (inference: the
            input projections and outputs of all steps).
        workspace: Training: per-step gradients of the weights used inside the time
            loop, summed only at the end (so it grows with ``seq_len``), and the
            optimizer update's new arrays and temporaries (independent of the batch).
            Inference: the arrays of one time step and the constants the cell derives
            from its parameters.
        per_sample: Bytes each sequence of the batch adds to :attr:`total` (the
            estimate is exactly linear in the batch size at a given ``seq_len``).
    """

    batch_size: int
    seq_len: int
    train: bool
    parameters: int
    gradients: int
    optimizer_state: int
    inputs: int
    activations: int
    workspace: int
    per_sample: float

    @property
    def total(self) -> int:
        """Predicted peak bytes."""
        return (
            self.parameters
            + self.gradients
            + self.optimizer_state
            + self.inputs
            + self.activations
            + self.workspace
        )

    @property
    def fixed(self) -> float:
        """Bytes that do not depend on the batch size."""
        return self.total - self.per_sample * self.batch_size

    def largest_batch_size(self, budget: int) -> int:
        """The largest batch (same ``seq_len``) whose estimate fits ``budget``; 0 if none."""
        # Each of the six terms of total is rounded to a byte: allow for that.
        return max(0, math.floor((budget - self.fixed - 4) / self.per_sample))

    def __str__(self) -> str:
        kind = "training step" if self.train else "inference call"
        rows = [
            ("parameters", self.parameters),
            ("gradients", self.gradients),
            ("optimizer state", self.optimizer_state),
            ("inputs/targets", self.inputs),
            ("activations", self.activations),
            ("workspace", self.workspace),
        ]
        lines = [f"Peak memory of one {kind}, batch {self.batch_size} x {self.seq_len} steps:"]
        lines += [f"  {name:<16}{_mib(value):>12}" for name, value in rows]
        lines.append(f"  {'total':<16}{_mib(self.total):>12}")
        return "\n".join(lines)


def _mib(nbytes: float) -> str:
    return f"{nbytes / _MIB:.2f} MiB"


# --- structure of the model -------------------------------------------------------------


def _synapse_grid(model: RNN) -> tuple[int, int]:
    """LTC synapse slots evaluated per sample and time step: (sensory, recurrent).

    An LTC evaluates every slot of the bounding box of its synapses (see
    :func:`~ncps_mlx.cells.ltc.synapse_box`), not just the existing synapses that the
    traffic model counts, and keeps several arrays of that size per evaluation.
    """
    cell = model.rnn_cell
    if not isinstance(cell, LTCCell):
        return 0, 0
    # A fused step keeps no grid: its backward pass recomputes the unfolds.
    recurrent = 0 if _runs_fused(cell) else cell.field_evaluations * cell.synapse_slots
    return cell.sensory_synapse_slots, recurrent


def _synapse_values(model: RNN) -> int:
    """The per-synapse values among :func:`activation_elements` (an LTC's conductances)."""
    cell = model.rnn_cell
    if not isinstance(cell, LTCCell):
        return 0
    return cell.sensory_synapse_count + cell.field_evaluations * cell.synapse_count


def _cfc_first_width(cell: CfCCell) -> int:
    """Outputs of a CfC cell's first layer (the one its ``project`` computes)."""
    return cell.backbone_units if cell.backbone else len(cell.head_names) * cell.hidden_size


def _cfc_loop_weights(cell: CfCCell, projected_outside: bool) -> int:
    """Weight elements a CfC cell multiplies inside the time loop."""
    first = _cfc_first_width(cell)
    inputs = cell.hidden_size if projected_outside else cell.input_size + cell.hidden_size
    weights = inputs * first
    if cell.backbone:
        weights += sum(layer.weight.size for layer in cell.backbone[1:])
        weights += cell.backbone_units * len(cell.head_names) * cell.hidden_size
    return weights


def _hoisted_width(model: RNN) -> int:
    """Values per sample and step of the input projections computed before the loop."""
    cell = model.rnn_cell
    if isinstance(cell, WiredCfCCell):
        width = _cfc_first_width(cell.layers[0])
    elif isinstance(cell, CfCCell):
        width = _cfc_first_width(cell)
    elif isinstance(cell, LTCCell):
        width = 2 * cell.state_size  # sensory numerator and denominator
    else:
        raise TypeError(f"no memory model for {type(cell).__name__}")
    return width + (4 * model.state_size if model.mixed_memory else 0)


def _loop_weights(model: RNN) -> int:
    """Weight elements multiplied inside the time loop (each step adds a gradient).

    The LTC uses its synapse parameters elementwise; their per-step gradients are reduced
    as they come and do not pile up, so it has none here (its mixed-memory LSTM has).
    """
    cell = model.rnn_cell
    if isinstance(cell, WiredCfCCell):
        weights = sum(_cfc_loop_weights(layer, i == 0) for i, layer in enumerate(cell.layers))
    elif isinstance(cell, CfCCell):
        weights = _cfc_loop_weights(cell, projected_outside=True)
    else:
        weights = 0
    if model.mixed_memory:
        weights += 4 * model.state_size**2  # the LSTM's recurrent map
    return weights


# --- the estimate -----------------------------------------------------------------------


def estimate_memory(
    model: RNN, batch_size: int, seq_len: int, *, train: bool = True, optimizer_slots: int = 2
) -> MemoryEstimate:
    """Predict the peak memory of one compiled step, without computing anything.

    Args:
        model: A :class:`~ncps_mlx.CfC` or :class:`~ncps_mlx.LTC`.
        batch_size: Sequences per step.
        seq_len: Time steps per sequence.
        train: A training step of :func:`~ncps_mlx.training.make_train_step`; else a
            call of :func:`~ncps_mlx.training.make_predict`.
        optimizer_slots: Arrays the optimizer keeps per parameter (Adam 2, SGD 1, Lion 1).

    Returns:
        The :class:`MemoryEstimate`; ``str()`` of it is a table in MiB.

    Raises:
        ValueError: A size that is not a positive integer.
    """
    check_positive_int("estimate_memory", "batch_size", batch_size)
    check_positive_int("estimate_memory", "seq_len", seq_len)
    check_positive_int("estimate_memory", "optimizer_slots", optimizer_slots, low=0)
    terms = _terms(model, batch_size, seq_len, train, optimizer_slots)
    fixed = sum(_terms(model, 0, seq_len, train, optimizer_slots).values())
    return MemoryEstimate(
        batch_size=batch_size,
        seq_len=seq_len,
        train=train,
        **{name: round(value) for name, value in terms.items()},
        per_sample=(sum(terms.values()) - fixed) / batch_size,
    )


def _terms(model: RNN, batch: int, seq_len: int, train: bool, slots: int) -> dict[str, float]:
    """The estimate's bytes by kind; every term is constant or proportional to ``batch``."""
    itemsize = model.dtype.size
    tokens = batch * seq_len
    terms = {
        "parameters": sum(value.nbytes for _, value in tree_flatten(model.parameters())),
        "inputs": tokens * model.input_size * itemsize,
    }
    if not train:
        return terms | _inference_terms(model, batch, seq_len)
    trainable = parameter_count(model) * itemsize
    targets = (tokens if model.return_sequences else batch) * model.output_size * itemsize
    return terms | {
        "gradients": trainable,
        "optimizer_state": slots * trainable,
        "inputs": terms["inputs"] + targets,
        "activations": tokens * _step_values(model) * itemsize,
        "workspace": _LOOP_GRADIENT_SHARE * seq_len * _loop_weights(model) * itemsize
        + (slots + _UPDATE_TEMPORARIES) * trainable,
    }


def activation_elements(model: RNN) -> int:  # temporary: replaced by a measurement
    return layer_footprint(model).saved_values + model.output_size


def _runs_fused(cell) -> bool:  # temporary: replaced by a measurement
    from .. import kernels

    return kernels.graph_stepper(cell) is not None


def _step_values(model: RNN) -> float:
    """Values per sample and time step a compiled training step holds at its peak."""
    sensory, recurrent = _synapse_grid(model)
    values = activation_elements(model) - _synapse_values(model) + _hoisted_width(model)
    cell = model.rnn_cell
    if isinstance(cell, LTCCell) and _runs_fused(cell):
        grids = _FUSED_SENSORY_VALUES_PER_SLOT * sensory
    else:
        grids = _GRID_VALUES_PER_SLOT * (sensory + recurrent)
    return _STEP_VALUES_PER_ELEMENT * values + grids


def _inference_terms(model: RNN, batch: int, seq_len: int) -> dict[str, float]:
    itemsize = model.dtype.size
    sensory, recurrent = _synapse_grid(model)
    hoisted = _hoisted_width(model)
    # The projections of all steps, and the outputs (a list of steps, then stacked).
    per_step = hoisted + _INFERENCE_SENSORY_VALUES * sensory
    outputs = 2 * model.output_size * seq_len if model.return_sequences else model.output_size
    one_step = _INFERENCE_GRID_VALUES * recurrent + _INFERENCE_STEP_VALUES * (
        hoisted + 4 * model.state_size
    )
    derived = _INFERENCE_DERIVED_COPIES * parameter_count(model) * itemsize
    return {
        "gradients": 0,
        "optimizer_state": 0,
        "activations": batch * (seq_len * per_step + outputs) * itemsize,
        "workspace": batch * one_step * itemsize + derived,
    }


# --- the budget -------------------------------------------------------------------------


def default_memory_budget(fraction: float = HOST_MEMORY_FRACTION) -> int:
    """Bytes the device can give a training run.

    On an Apple GPU, Metal's recommended working set; elsewhere the memory the machine has
    available now times ``fraction``, leaving room for the rest of the process and system.

    Raises:
        ValueError: ``fraction`` outside (0, 1].
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ValueError(
            f"[default_memory_budget] 'fraction' must be a number but got {fraction!r}"
        )
    if not 0 < fraction <= 1:
        raise ValueError(f"[default_memory_budget] 'fraction' must be in (0, 1] but got {fraction}")
    if mx.metal.is_available():
        return int(_metal_device_info()["max_recommended_working_set_size"])
    return int(_available_host_memory() * fraction)


def _metal_device_info() -> dict:
    # mx.device_info() is the newer spelling (MLX >= 0.29 or so); mx.metal.device_info()
    # the older one, deprecated since.
    if hasattr(mx, "device_info"):
        info = mx.device_info()
        if "max_recommended_working_set_size" in info:
            return info
    return mx.metal.device_info()


def _available_host_memory() -> int:
    try:
        import psutil
    except ImportError:
        # macOS has no count of available pages; its total is the best left there.
        name = "SC_AVPHYS_PAGES" if "SC_AVPHYS_PAGES" in os.sysconf_names else "SC_PHYS_PAGES"
        return os.sysconf(name) * os.sysconf("SC_PAGE_SIZE")
    return psutil.virtual_memory().available


def check_memory(
    model: RNN,
    batch_size: int,
    seq_len: int,
    *,
    budget: int | None = None,
    train: bool = True,
    optimizer_slots: int = 2,
) -> MemoryEstimate:
    """Raise before training when a step would not fit in the memory budget.

    Args:
        model: The layer to train.
        batch_size: Sequences per step.
        seq_len: Time steps per sequence.
        budget: Bytes a step may use. Default: :func:`default_memory_budget`.
        train: A training step; else an inference call.
        optimizer_slots: Arrays the optimizer keeps per parameter (Adam 2).

    Returns:
        The estimate, when it fits.

    Raises:
        MemoryBudgetError: The estimate exceeds the budget; the message names the largest
            batch size that fits and what else to change.
        ValueError: A size that is not a positive integer, or a budget below one byte.
    """
    budget = _resolve_budget("check_memory", budget)
    estimate = estimate_memory(
        model, batch_size, seq_len, train=train, optimizer_slots=optimizer_slots
    )
    if estimate.total > budget:
        raise MemoryBudgetError(_over_budget_message(estimate, budget))
    return estimate


def _resolve_budget(owner: str, budget: float | None) -> int:
    if budget is None:
        return default_memory_budget()
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 1:
        raise ValueError(f"[{owner}] 'budget' must be a number of bytes >= 1 but got {budget!r}")
    return int(budget)


def _over_budget_message(estimate: MemoryEstimate, budget: int) -> str:
    kind = "training step" if estimate.train else "inference call"
    head = (
        f"a {kind} of batch_size={estimate.batch_size}, seq_len={estimate.seq_len} needs "
        f"about {_mib(estimate.total)} but the memory budget is {_mib(budget)}"
    )
    largest = estimate.largest_batch_size(budget)
    if largest >= 1:
        fix = f"the largest batch_size that fits is {largest}; use it or smaller"
    else:
        fix = "no batch_size fits at this sequence length"
    return (
        f"{head}; {fix}. Or shorten the sequences (truncate or split them: the memory of "
        "a step grows with its length), or train in bfloat16 "
        f"(model.set_dtype(mx.bfloat16)), which halves it.\n{see('memory-budget')}"
    )


# --- choosing a batch size ----------------------------------------------------------------


@dataclass(frozen=True)
class BatchTrial:
    """One candidate of :func:`find_batch_size`.

    ``samples_per_second`` and ``peak_bytes`` are ``None`` when the candidate was not run
    (its estimate did not fit). ``peak_bytes`` is MLX's peak active memory during the
    trial above what was live before it, plus the model's parameters, so it compares
    with ``estimated_bytes``.
    """

    batch_size: int
    estimated_bytes: int
    fits: bool
    samples_per_second: float | None = None
    peak_bytes: int | None = None


@dataclass(frozen=True)
class BatchSizeSearch:
    """The outcome of :func:`find_batch_size`: the chosen ``batch_size`` and every trial."""

    batch_size: int
    budget: int
    trials: tuple[BatchTrial, ...]

    def __str__(self) -> str:
        lines = [
            f"batch size search (budget {_mib(self.budget)}), chosen: {self.batch_size}",
            f"{'batch':>7} {'estimate':>14} {'fits':>5} {'samples/s':>11} {'peak':>14}",
        ]
        for trial in self.trials:
            speed = "-" if trial.samples_per_second is None else f"{trial.samples_per_second:.1f}"
            peak = "-" if trial.peak_bytes is None else _mib(trial.peak_bytes)
            mark = " <" if trial.batch_size == self.batch_size else ""
            lines.append(
                f"{trial.batch_size:>7} {_mib(trial.estimated_bytes):>14} "
                f"{'yes' if trial.fits else 'no':>5} {speed:>11} {peak:>14}{mark}"
            )
        return "\n".join(lines)


def find_batch_size(
    model: RNN,
    seq_len: int,
    *,
    loss_fn: LossFn,
    make_optimizer: Callable[[], optim.Optimizer] | None = None,
    budget: int | None = None,
    candidates: Sequence[int] = DEFAULT_CANDIDATES,
    steps: int = 3,
    timespans: bool = False,
) -> BatchSizeSearch:
    """Pick the batch size that trains fastest among those that fit the memory budget.

    Candidates whose estimate exceeds the budget are not run. Each other one trains a
    copy of the model (the caller's parameters stay as they are) with a fresh optimizer
    on random data: one step that compiles, then ``steps`` timed steps. The choice is
    the highest samples per second. This resets MLX's peak memory counter.

    Args:
        model: The layer to be trained.
        seq_len: Time steps per sequence.
        loss_fn: ``loss_fn(prediction, target)`` as for
            :func:`~ncps_mlx.training.make_train_step`; targets are random floats of
            the output's shape.
        make_optimizer: Builds a fresh optimizer per candidate.
            Default: ``Adam(learning_rate=1e-3)``.
        budget: Bytes a step may use. Default: :func:`default_memory_budget`.
        candidates: Batch sizes to consider.
        steps: Timed steps per candidate.
        timespans: Pass random positive timespans, as a run with irregular sampling would.

    Returns:
        A :class:`BatchSizeSearch`; ``str()`` of it is a table of the trials.

    Raises:
        MemoryBudgetError: No candidate fits the budget.
        ValueError: ``seq_len``, ``steps``, ``budget`` or a candidate that is not a
            positive integer, or no candidates.
    """
    check_positive_int("find_batch_size", "seq_len", seq_len)
    check_positive_int("find_batch_size", "steps", steps)
    candidates = _check_candidates(candidates)
    budget = _resolve_budget("find_batch_size", budget)
    make_optimizer = make_optimizer or (lambda: optim.Adam(learning_rate=1e-3))
    slots = _optimizer_slots(model, make_optimizer())
    estimates = {b: estimate_memory(model, b, seq_len, optimizer_slots=slots) for b in candidates}
    fitting = [b for b in candidates if estimates[b].total <= budget]
    if not fitting:
        smallest = estimates[min(candidates)]
        raise MemoryBudgetError(
            f"none of the batch sizes {list(candidates)} fits: "
            + _over_budget_message(smallest, budget)
        )
    trials = []
    for b in candidates:
        if b in fitting:
            speed, peak = _time_candidate(
                model, b, seq_len, loss_fn, make_optimizer, steps, timespans
            )
            trials.append(BatchTrial(b, estimates[b].total, True, speed, peak))
        else:
            trials.append(BatchTrial(b, estimates[b].total, False))
    best = max((t for t in trials if t.fits), key=lambda t: t.samples_per_second)
    return BatchSizeSearch(best.batch_size, budget, tuple(trials))


def _check_candidates(candidates: Sequence[int]) -> tuple[int, ...]:
    candidates = tuple(candidates)
    if not candidates:
        raise ValueError("[find_batch_size] 'candidates' must hold at least one batch size")
    for candidate in candidates:
        check_positive_int("find_batch_size", "candidates item", candidate)
    return tuple(sorted(set(candidates)))


def _optimizer_slots(model: RNN, optimizer: optim.Optimizer) -> int:
    """Arrays the optimizer keeps per parameter, read from its initialised state."""
    optimizer.init(model.trainable_parameters())
    # Scalars (the step count, the learning rate) are not per parameter.
    state = sum(v.size for _, v in tree_flatten(optimizer.state) if v.ndim > 0)
    return math.ceil(state / max(1, parameter_count(model)))


def _copy_model(model: RNN) -> RNN:
    # Arrays are immutable: the copy starts from the same ones, and its updates replace
    # them in the copy only.
    copy = model_from_config(model.get_config())
    copy.update(model.parameters())
    copy.train(model.training)
    return copy


def _random_batch(model: RNN, batch_size: int, seq_len: int, timespans: bool) -> tuple:
    """Random inputs, float targets and optionally timespans, laid out as the model takes them."""
    lead = (batch_size, seq_len) if model.batch_first else (seq_len, batch_size)
    x = mx.random.normal(lead + (model.input_size,), dtype=model.dtype)
    y_lead = lead if model.return_sequences else (batch_size,)
    y = mx.random.normal(y_lead + (model.output_size,), dtype=model.dtype)
    dt = mx.random.uniform(0.5, 1.5, lead, dtype=model.dtype) if timespans else None
    return x, y, dt


def _time_candidate(
    model: RNN,
    batch_size: int,
    seq_len: int,
    loss_fn: LossFn,
    make_optimizer: Callable[[], optim.Optimizer],
    steps: int,
    timespans: bool,
) -> tuple[float, int]:
    """Samples per second of ``steps`` compiled train steps, and the peak bytes."""
    live = mx.get_active_memory()  # the copy shares the model's arrays until updated
    mx.reset_peak_memory()
    copy = _copy_model(model)
    optimizer = make_optimizer()
    optimizer.init(copy.trainable_parameters())
    x, y, dt = _random_batch(copy, batch_size, seq_len, timespans)
    mx.eval(x, y, dt, optimizer.state)
    step = make_train_step(copy, optimizer, loss_fn)
    step(x, y, dt)  # compiles
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y, dt)
    seconds = time.perf_counter() - start
    held = sum(value.nbytes for _, value in tree_flatten(model.parameters()))
    return batch_size * steps / seconds, mx.get_peak_memory() - live + held
