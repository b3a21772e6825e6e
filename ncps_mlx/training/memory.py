"""Memory a compiled training step needs, measured on the model, and a batch size that fits.

At a given ``seq_len`` the peak memory of one step of
[`make_train_step`][ncps_mlx.training.make_train_step] (or one call of
[`make_predict`][ncps_mlx.training.make_predict]) is ``fixed + batch_size * per_sample``, but only
piecewise: on the CPU the sigmoid and tanh of [`ncps_mlx.ops`][ncps_mlx.ops] switch to a rational
form for arrays of 8192 values or more, which changes the compiled graph, and both parts
with it, at batch sizes that depend on the model. A line through two small batch sizes
can extrapolate badly: through 4 and 16 it gives about 0.55x to 1.2x of the benchmark
models' training peaks at 256 (``CfC(16, 64, mixed_memory=True)`` and the LTCs at the
ends).

So [`estimate_memory`][ncps_mlx.training.estimate_memory] measures the batch size asked about itself
where that is safe. On copies of the model and optimizer, with inputs shaped as the real ones, it
climbs a ladder that ends at that batch size, each rung four times the one below: it
measures the two lowest rungs (at most 16; 4 and 16 below 256), then skips to the top if
the line through them says it needs at most a tenth of the memory budget, else climbs
while the line through the last two rungs says the next one needs at most half of it.
The estimate is the line through the last two batch sizes measured: the measured peak
when the ladder reached the top, an extrapolation otherwise. Nothing here knows about
cell types or depends on the MLX version; each batch size measured costs a trace and a
compilation of the step (``mx.compile`` runs a C++ compiler for kernels not in its disk
cache) and a few calls.
"""

import contextlib
import copy
import gc
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten

from .._checks import check_int, check_number
from ..errors import MemoryBudgetError, see
from ..rnn import RNN
from .checkpoint import set_random_key
from .losses import LOSSES, LossFn
from .steps import make_predict, make_train_step

HOST_MEMORY_FRACTION = 0.8
DEFAULT_CANDIDATES = (8, 16, 32, 64, 128, 256, 512, 1024)
# Each rung of the ladder is this many times the one below it; the two lowest rungs are
# at most FIRST_RUNGS_MAX sequences, which any machine that can train the model can run.
RUNG_RATIO = 4
FIRST_RUNGS_MAX = 16
# A rung is climbed only if the line through the two below predicts at most this share
# of the budget, so that it fits even if the line is well below its peak.
HEADROOM = 0.5
# Each rung traces and compiles the step anew, so the ladder skips to its top when the
# line predicts at most this share of the budget there: lines through the two lowest
# rungs predicted down to about 0.55x of the benchmark models' peaks at 32 to 256.
JUMP_HEADROOM = 0.1
# The peak of a call varies from call to call with the timing of MLX's worker thread, the
# most where calls are cheapest (an LTC's train step at batch 8 and 128 steps: 6.6 to 8.5
# MiB). A rung keeps the largest peak of the first call (which also compiles) and of the
# calls after it: at least one more, and more until they take RUNG_SECONDS, at most
# MAX_CALLS in all.
RUNG_SECONDS = 0.25
MAX_CALLS = 8
_MIB = 2**20


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of one step, measured at a few batch sizes and read off a line.

    Attributes:
        batch_size: Sequences per step the estimate is for.
        seq_len: Time steps per sequence.
        train: A training step (else an inference call).
        parameters: Every array the model holds (exact).
        gradients: One gradient per trainable parameter (exact; 0 for inference).
        optimizer_state: The optimizer's arrays (exact; 0 for inference).
        fixed: Bytes that do not grow with the batch, the three above included.
        per_sample: Bytes each sequence of the batch adds.
        measured: ``(batch_size, peak_bytes)`` of every rung measured, smallest first;
            ``fixed`` and ``per_sample`` are the line through the last two.
    """

    batch_size: int
    seq_len: int
    train: bool
    parameters: int
    gradients: int
    optimizer_state: int
    fixed: float
    per_sample: float
    measured: tuple[tuple[int, int], ...]

    @property
    def total(self) -> int:
        """Estimated peak bytes at `batch_size`."""
        return self.bytes_at(self.batch_size)

    @property
    def extrapolated(self) -> bool:
        """Whether `batch_size` lies beyond the batch sizes measured."""
        return self.batch_size > self.measured[-1][0]

    def bytes_at(self, batch_size: int) -> int:
        """Estimated peak bytes at another batch size (same ``seq_len``)."""
        return round(self.fixed + self.per_sample * batch_size)

    def largest_batch_size(self, budget: int) -> int:
        """The largest batch (same ``seq_len``) whose estimate fits ``budget``; 0 if none.

        Far beyond the batch sizes measured this is an extrapolation (for a small CfC from
        batch 16 to 2900, 16% under its measured peak):
        [`check_memory`][ncps_mlx.training.check_memory] at that batch size, with ``budget``,
        measures up to half of it.
        """
        largest = max(0, math.floor((budget - self.fixed) / self.per_sample))
        while largest > 0 and self.bytes_at(largest) > budget:  # float rounding
            largest -= 1
        return largest

    def __str__(self) -> str:
        kind = "training step" if self.train else "inference call"
        sizes = ", ".join(str(b) for b, _ in self.measured)
        other = self.fixed - self.parameters - self.gradients - self.optimizer_state
        rows = [("parameters", self.parameters)]
        if self.train:
            rows += [("gradients", self.gradients), ("optimizer state", self.optimizer_state)]
        rows += [
            ("other fixed", other),
            (f"{self.batch_size} x per sample", self.batch_size * self.per_sample),
            ("total", self.total),
        ]
        lines = [
            f"Peak memory of one {kind}, batch {self.batch_size} x {self.seq_len} steps "
            f"(measured at batch sizes {sizes}):"
        ]
        lines += [f"  {name:<20}{_mib(value):>12}" for name, value in rows]
        return "\n".join(lines)


def _mib(nbytes: float) -> str:
    mib = nbytes / _MIB
    # Two decimals, and below a hundredth the leading digits, not "0.00".
    return f"{mib:.2f} MiB" if mib >= 0.01 or mib == 0 else f"{mib:.2g} MiB"


def _nbytes(tree: Any) -> int:
    return sum(leaf.nbytes for _, leaf in tree_flatten(tree) if isinstance(leaf, mx.array))


# --- measuring ---------------------------------------------------------------------------


class _Probe:
    """Compiled steps (or inference calls) on copies of a model and an optimizer, and the
    peak memory of calls on random batches shaped as the real ones.

    The copies start from the caller's arrays (MLX arrays are immutable) and replace them
    in the copies only, so the caller's model and optimizer stay as they were.
    """

    def __init__(
        self,
        model: RNN,
        optimizer: optim.Optimizer,
        seq_len: int,
        *,
        train: bool,
        timespans: bool,
        mask: bool,
        loss_fn: LossFn = LOSSES["mse"],
    ):
        self.model = copy.deepcopy(model)
        self.layout = (seq_len, train, timespans, mask)
        state = None
        if train:
            self.model.train()  # as fit trains: with dropout, if any
            optimizer = copy.deepcopy(optimizer)
            optimizer.init(self.model.trainable_parameters())
            self.step = make_train_step(self.model, optimizer, loss_fn)
            state = optimizer.state
        else:
            self.step = make_predict(self.model)
        mx.eval(self.model.parameters(), state)
        # Updates replace these arrays by ones of the same sizes.
        self.parameter_bytes = _nbytes(self.model.parameters())
        self.optimizer_bytes = _nbytes(state)

    def batch(self, batch_size: int, *, evaluate: bool = True) -> tuple:
        """``(x, y, timespans, mask)`` laid out as the model takes them; ``y`` (float
        targets of the output's shape) ``None`` for inference."""
        model, (seq_len, train, timespans, mask) = self.model, self.layout
        # A key of its own: the caller's random state is not drawn from.
        x_key, y_key, dt_key = mx.random.split(mx.random.key(0), 3)
        lead = (batch_size, seq_len) if model.batch_first else (seq_len, batch_size)
        x = mx.random.normal(lead + (model.input_size,), dtype=model.dtype, key=x_key)
        y_lead = lead if model.return_sequences else (batch_size,)
        y = mx.random.normal(y_lead + (model.output_size,), dtype=model.dtype, key=y_key)
        dt = mx.random.uniform(0.5, 1.5, lead, dtype=model.dtype, key=dt_key)
        batch = (x, y if train else None, dt if timespans else None)
        batch += (mx.ones(lead, dtype=mx.bool_) if mask else None,)
        if evaluate:
            mx.eval(batch)
        return batch

    def run(self, batch: tuple) -> None:
        """One step (or inference call) on ``batch``, evaluated."""
        x, y, dt, mask = batch
        if y is not None:
            self.step(x, y, dt, mask)
        else:
            mx.eval(self.step(x, None, dt, mask))

    def peak(self, batch: tuple) -> int:
        """Peak bytes of calls on ``batch`` (see `RUNG_SECONDS`): what a call
        allocates beyond what was live, plus what it holds throughout (the parameters,
        the optimizer's state and the batch)."""
        # Cached buffers are handed out for smaller requests and counted whole: without
        # this the peak would depend on what ran before.
        mx.clear_cache()
        with _no_garbage_collection():
            peak = self._call_peak(batch)  # compiles
            start = time.perf_counter()
            for _ in range(MAX_CALLS - 1):
                peak = max(peak, self._call_peak(batch))
                if time.perf_counter() - start >= RUNG_SECONDS:
                    break
        return peak + self.parameter_bytes + self.optimizer_bytes + _nbytes(batch)

    def _call_peak(self, batch: tuple) -> int:
        live = mx.get_active_memory()
        mx.reset_peak_memory()
        self.run(batch)
        return mx.get_peak_memory() - live

    def measure(self, batch_size: int) -> int:
        """Peak bytes of a call at ``batch_size``."""
        return self.peak(self.batch(batch_size))

    def batch_bytes_per_sample(self) -> int:
        """Bytes of one sequence of a batch (nothing is computed)."""
        return _nbytes(self.batch(1, evaluate=False))


@contextlib.contextmanager
def _no_garbage_collection() -> Iterator[None]:
    """Keep Python's cycle collector from freeing arrays (say, of an earlier model) during
    a measured call, which would lower its peak below what was live before it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _ladder(batch_size: int) -> list[int]:
    """Batch sizes to measure, smallest first: ``batch_size`` and the rungs below it, each
    `RUNG_RATIO` times smaller, down to two of at most `FIRST_RUNGS_MAX`."""
    if batch_size == 1:
        return [1, 2]
    rungs = [batch_size]
    while len(rungs) < 2 or rungs[-2] > FIRST_RUNGS_MAX:
        rungs.append(-(-rungs[-1] // RUNG_RATIO))
    return rungs[::-1]


def _line(
    low: tuple[int, int], high: tuple[int, int], min_per_sample: float
) -> tuple[float, float]:
    """``(fixed, per_sample)`` of the line through two measurements.

    The slope is at least the batch's own bytes per sample: at small batches the noise of
    the peaks can exceed what a sequence adds.
    """
    per_sample = max((high[1] - low[1]) / (high[0] - low[0]), min_per_sample)
    return high[1] - per_sample * high[0], per_sample


def _climb(probe: _Probe, rungs: list[int], budget: int) -> list[tuple[int, int]]:
    """Measure the two lowest rungs, then climb while the line through the last two says
    the next rung fits in `HEADROOM` of ``budget``, jumping to the top rung when
    the line says it fits in `JUMP_HEADROOM`. Where a rung does not fit, measure
    the largest batch size that does, if at least twice the last one, and stop."""
    floor = probe.batch_bytes_per_sample()
    measured = [(b, probe.measure(b)) for b in rungs[:2]]
    rest = rungs[2:]
    while rest:
        fixed, per_sample = _line(measured[-2], measured[-1], floor)
        if fixed + per_sample * rest[-1] <= JUMP_HEADROOM * budget:
            rest = rest[-1:]
        rung = rest.pop(0)
        affordable = math.floor((HEADROOM * budget - fixed) / per_sample)
        if affordable < rung:
            if affordable >= 2 * measured[-1][0]:
                measured.append((affordable, probe.measure(affordable)))
            break
        measured.append((rung, probe.measure(rung)))
    return measured


def estimate_memory(
    model: RNN,
    batch_size: int,
    seq_len: int,
    *,
    train: bool = True,
    optimizer: optim.Optimizer | None = None,
    timespans: bool = False,
    mask: bool = False,
    budget: int | None = None,
) -> MemoryEstimate:
    """Measure the peak memory of one compiled step at ``batch_size``, or extrapolate it.

    Runs compiled steps on copies of the model and optimizer at two or three batch sizes
    up to ``batch_size`` (more when it does not fit in a tenth of ``budget``; see the
    module docstring); the caller's model, optimizer and MLX's random state are left as
    they were. This empties MLX's buffer cache and resets its peak memory counter.

    Args:
        model: The layer (any cell type).
        batch_size: Sequences per step.
        seq_len: Time steps per sequence.
        train: A training step of [`make_train_step`][ncps_mlx.training.make_train_step] (mean
            squared error on float targets of the output's shape); else a call of
            [`make_predict`][ncps_mlx.training.make_predict].
        optimizer: The optimizer that will train (copied; its state counts).
            Default: ``Adam``.
        timespans: The batches come with timespans.
        mask: The batches come with a mask.
        budget: Bytes a step may use; no batch size measured is predicted to need more
            than half of it. Default:
            [`default_memory_budget`][ncps_mlx.training.default_memory_budget].

    Returns:
        The [`MemoryEstimate`][ncps_mlx.training.MemoryEstimate]; ``str()`` of it is a table in MiB.

    Raises:
        ValueError: A size that is not a positive integer, or a budget below one byte.
    """
    check_int("estimate_memory", "batch_size", batch_size)
    check_int("estimate_memory", "seq_len", seq_len)
    budget = _resolve_budget("estimate_memory", budget)
    optimizer = optimizer if optimizer is not None else optim.Adam(learning_rate=1e-3)
    key = mx.random.state[0]
    try:
        probe = _Probe(model, optimizer, seq_len, train=train, timespans=timespans, mask=mask)
        measured = _climb(probe, _ladder(batch_size), budget)
    finally:
        set_random_key(key)  # a compiled step carries the key through
    fixed, per_sample = _line(measured[-2], measured[-1], probe.batch_bytes_per_sample())
    trainable = _nbytes(model.trainable_parameters()) if train else 0
    return MemoryEstimate(
        batch_size=batch_size,
        seq_len=seq_len,
        train=train,
        parameters=_nbytes(model.parameters()),
        gradients=trainable,
        optimizer_state=probe.optimizer_bytes,
        fixed=fixed,
        per_sample=per_sample,
        measured=tuple(measured),
    )


# --- the budget -------------------------------------------------------------------------


def default_memory_budget(fraction: float = HOST_MEMORY_FRACTION) -> int:
    """Bytes the device can give a training run.

    On an Apple GPU, Metal's recommended working set; elsewhere the memory the machine has
    available now times ``fraction``, leaving room for the rest of the process and system.

    Raises:
        ValueError: ``fraction`` outside (0, 1].
    """
    check_number("default_memory_budget", "fraction", fraction, above=0, high=1)
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
    optimizer: optim.Optimizer | None = None,
    timespans: bool = False,
    mask: bool = False,
) -> MemoryEstimate:
    """Raise before training when a step would not fit in the memory budget.

    Args:
        model: The layer to train.
        batch_size: Sequences per step.
        seq_len: Time steps per sequence.
        budget: Bytes a step may use. Default:
            [`default_memory_budget`][ncps_mlx.training.default_memory_budget].
        train: A training step; else an inference call.
        optimizer: The optimizer that will train (copied). Default: ``Adam``.
        timespans: The batches come with timespans.
        mask: The batches come with a mask.

    Returns:
        The [`estimate_memory`][ncps_mlx.training.estimate_memory], when it fits.

    Raises:
        MemoryBudgetError: The estimate exceeds the budget; the message names the largest
            batch size that fits and what else to change.
        ValueError: A size that is not a positive integer, or a budget below one byte.
    """
    budget = _resolve_budget("check_memory", budget)
    estimate = estimate_memory(
        model,
        batch_size,
        seq_len,
        train=train,
        optimizer=optimizer,
        timespans=timespans,
        mask=mask,
        budget=budget,
    )
    if estimate.total > budget:
        raise MemoryBudgetError(_over_budget_message(estimate, budget))
    return estimate


def _resolve_budget(owner: str, budget: float | None) -> int:
    if budget is None:
        return default_memory_budget()
    return int(check_number(owner, "budget", budget, low=1))  # bytes


def _over_budget_message(estimate: MemoryEstimate, budget: int) -> str:
    kind = "training step" if estimate.train else "inference call"
    sizes = " and ".join(str(b) for b, _ in estimate.measured[-2:])
    how = f"extrapolated from batch sizes {sizes}" if estimate.extrapolated else "measured"
    head = (
        f"a {kind} of batch_size={estimate.batch_size}, seq_len={estimate.seq_len} needs "
        f"about {_mib(estimate.total)} ({how}) but the memory budget is {_mib(budget)}"
    )
    largest = estimate.largest_batch_size(budget)
    if largest >= 1:
        fix = f"the largest batch_size that fits is about {largest}; use it or smaller"
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
    """One candidate of [`find_batch_size`][ncps_mlx.training.find_batch_size].

    ``samples_per_second`` and ``peak_bytes`` are ``None`` when the candidate was not run
    (its estimate did not fit). ``peak_bytes`` is the peak measured as
    [`estimate_memory`][ncps_mlx.training.estimate_memory] measures it, so it compares with
    ``estimated_bytes``.
    """

    batch_size: int
    estimated_bytes: int
    fits: bool
    samples_per_second: float | None = None
    peak_bytes: int | None = None


@dataclass(frozen=True)
class BatchSizeSearch:
    """The outcome of [`find_batch_size`][ncps_mlx.training.find_batch_size]: the chosen
    ``batch_size`` and every trial."""

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

    One [`estimate_memory`][ncps_mlx.training.estimate_memory] at the largest candidate gives every
    candidate's estimate; candidates whose estimate exceeds the budget are not run. Each other one
    trains a copy of the model (the caller's model and MLX's random state stay as they
    are) with a fresh optimizer on random data: one step that compiles, then ``steps``
    timed steps. The choice is the highest samples per second. This empties MLX's buffer
    cache and resets its peak memory counter.

    Args:
        model: The layer to be trained.
        seq_len: Time steps per sequence.
        loss_fn: ``loss_fn(prediction, target)`` as for
            [`make_train_step`][ncps_mlx.training.make_train_step]; targets are random floats of
            the output's shape.
        make_optimizer: Builds a fresh optimizer per candidate.
            Default: ``Adam(learning_rate=1e-3)``.
        budget: Bytes a step may use. Default:
            [`default_memory_budget`][ncps_mlx.training.default_memory_budget].
        candidates: Batch sizes to consider.
        steps: Timed steps per candidate.
        timespans: Pass random positive timespans, as a run with irregular sampling would.

    Returns:
        A `BatchSizeSearch`; ``str()`` of it is a table of the trials.

    Raises:
        MemoryBudgetError: No candidate fits the budget.
        ValueError: ``seq_len``, ``steps``, ``budget`` or a candidate that is not a
            positive integer, or no candidates.
    """
    check_int("find_batch_size", "seq_len", seq_len)
    check_int("find_batch_size", "steps", steps)
    candidates = _check_candidates(candidates)
    budget = _resolve_budget("find_batch_size", budget)
    make_optimizer = make_optimizer or (lambda: optim.Adam(learning_rate=1e-3))
    estimate = estimate_memory(
        model,
        candidates[-1],
        seq_len,
        optimizer=make_optimizer(),
        timespans=timespans,
        budget=budget,
    )
    fitting = [b for b in candidates if estimate.bytes_at(b) <= budget]
    if not fitting:
        smallest = replace(estimate, batch_size=candidates[0])
        raise MemoryBudgetError(
            f"none of the batch sizes {list(candidates)} fits: "
            + _over_budget_message(smallest, budget)
        )
    trials = []
    key = mx.random.state[0]
    try:
        for b in candidates:
            trial = BatchTrial(b, estimate.bytes_at(b), b in fitting)
            if trial.fits:
                speed, peak = _time_candidate(
                    model, b, seq_len, loss_fn, make_optimizer(), steps, timespans
                )
                trial = replace(trial, samples_per_second=speed, peak_bytes=peak)
            trials.append(trial)
    finally:
        set_random_key(key)
    best = max((t for t in trials if t.fits), key=lambda t: t.samples_per_second)
    return BatchSizeSearch(best.batch_size, budget, tuple(trials))


def _check_candidates(candidates: Sequence[int]) -> tuple[int, ...]:
    candidates = tuple(candidates)
    if not candidates:
        raise ValueError("[find_batch_size] 'candidates' must hold at least one batch size")
    for candidate in candidates:
        check_int("find_batch_size", "candidates item", candidate)
    return tuple(sorted(set(candidates)))


def _time_candidate(
    model: RNN,
    batch_size: int,
    seq_len: int,
    loss_fn: LossFn,
    optimizer: optim.Optimizer,
    steps: int,
    timespans: bool,
) -> tuple[float, int]:
    """Samples per second of ``steps`` compiled train steps, and the peak bytes."""
    probe = _Probe(
        model, optimizer, seq_len, train=True, timespans=timespans, mask=False, loss_fn=loss_fn
    )
    batch = probe.batch(batch_size)
    peak = probe.peak(batch)  # the first call compiles
    start = time.perf_counter()
    for _ in range(steps):
        probe.run(batch)
    return batch_size * steps / (time.perf_counter() - start), peak
