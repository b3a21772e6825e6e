"""``fit``: the training loop around the compiled train step.

Everything is checked before the first step (data against the model, the loss against
the targets, the memory a batch needs, measured on a copy of the model), so a mistake
costs no training. The loop itself is deterministic given ``seed``: the data order comes
from a numpy generator and dropout from MLX's key, and both are saved in every checkpoint
with the optimizer's state, so a resumed run continues the trajectory of an
uninterrupted one exactly: after a kill between two epochs or inside a save, and after
Ctrl-C, which stops the loop between two steps and saves the epoch in progress.
"""

import contextlib
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map

from .. import io, kernels, scan
from .._checks import check_int
from .._files import remove_temporaries
from ..datasets import SequenceData
from ..errors import CheckpointError, TrainingDivergedError, TrainingInterrupted, see
from ..monitor.monitor import StepHandle
from ..numerics import check_timespans
from ..rnn import RNN
from .callbacks import Callback, MetricsLog, ProgressBar
from .checkpoint import (
    assign_in_place,
    load_training_state,
    save_training_state,
    set_random_key,
    trained_with,
)
from .interrupt import CtrlC, interrupted_message, reports_itself
from .interrupt import resume_command as resume_command
from .loop_state import EpochProgress, best_epoch, load_loop_state, loop_state
from .losses import (
    LossFn,
    label_classes,
    resolve_loss,
    resolve_metrics,
    suits_targets,
    targets_needed,
)
from .memory import check_memory
from .recipes import ParamSelection, check_step_options
from .steps import check_target, make_eval_step, make_train_step
from .trainer import History, Trainer

LAST_CHECKPOINT = "last.safetensors"
BEST_CHECKPOINT = "best.safetensors"
METRICS_LOG = "metrics.jsonl"
#: What fit writes in ``checkpoint_dir``.
CHECKPOINT_FILES = (LAST_CHECKPOINT, BEST_CHECKPOINT, METRICS_LOG)


def as_sequence_data(data: Any, role: str) -> SequenceData:
    """Accept a [`SequenceData`][ncps_mlx.datasets.SequenceData] or an ``(x, y)`` pair of arrays."""
    if isinstance(data, SequenceData):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (np.asarray(part) for part in data)
        try:
            return SequenceData(x, y)
        except ValueError as error:
            raise ValueError(f"[fit] {role} data: {error}") from error
    raise ValueError(
        f"[fit] {role} data must be a SequenceData or an (x, y) pair, got {type(data).__name__}"
    )


def check_data(model: RNN, data: SequenceData, loss: str | LossFn, role: str) -> None:
    """Refuse data the model cannot train on, before any compute."""
    if not np.isfinite(data.x).all():
        raise ValueError(
            f"[fit] {role} x holds nan or inf values; clean or impute them first\n{see('fit-data')}"
        )
    labels = np.issubdtype(data.y.dtype, np.integer)
    if isinstance(loss, str) and not suits_targets(loss, labels, model.output_size):
        raise ValueError(
            f"[fit] loss {loss!r} needs {targets_needed(loss)}, but {role} y has dtype "
            f"{data.y.dtype}\n" + see("target-mismatch")
        )
    classes, why = label_classes(loss, model.output_size)
    if labels and (data.y.min() < 0 or data.y.max() >= classes):
        raise ValueError(
            f"[fit] {role} class labels must lie in [0, {classes}) ({why}), but range over "
            f"[{data.y.min()}, {data.y.max()}]\n" + see("target-mismatch")
        )
    if not model.batch_first:
        raise ValueError(
            "[fit] data is batch-first: build the model with batch_first=True\n" + see("fit-data")
        )
    try:  # all of it: a bad value in a late batch would otherwise stop the run midway
        call = scan.check_call(model, data.x, None, data.timespans, data.mask)
        check_target(model, call, data.y)
    except ValueError as error:
        raise ValueError(f"[fit] {role} data does not fit the model: {error}") from error
    # Warned, not refused: the bounds are safe ones, and training may move the weights.
    real = data.timespans
    if real is not None and data.mask is not None:  # padding's timespans are never used
        real = real[data.mask]
    check_timespans(model, real, owner=f"fit ({role} data)", stacklevel=3)


def _batches(order: np.ndarray, batch_size: int, world_size: int) -> list[np.ndarray]:
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    # Every process needs at least one sample of each batch.
    return [batch for batch in batches if len(batch) >= world_size]


def _snapshot(model: RNN, optimizer: optim.Optimizer) -> tuple[Any, Any, mx.array]:
    # MLX arrays are immutable, so copying the containers freezes the values.
    copy = lambda tree: tree_map(lambda a: a, tree)  # noqa: E731
    return copy(model.parameters()), copy(optimizer.state), mx.random.state[0]


def _restore(model: RNN, optimizer: optim.Optimizer, snapshot: tuple[Any, Any, mx.array]):
    params, state, key = snapshot
    model.update(params)
    assign_in_place(optimizer.state, dict(tree_flatten(state)), "snapshot")
    set_random_key(key)


def _world(group: mx.distributed.Group | None) -> mx.distributed.Group | None:
    if group is None and mx.distributed.is_available():
        group = mx.distributed.init()
    return group if group is not None and group.size() > 1 else None


def fit(
    model: RNN,
    train: SequenceData | tuple,
    val: SequenceData | tuple | None = None,
    *,
    loss: str | LossFn = "mse",
    optimizer: optim.Optimizer | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    metrics: Sequence[str] | dict[str, LossFn] = (),
    callbacks: Sequence[Callback] = (),
    monitor: Any = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    clip_norm: float | None = None,
    clip_tensor_norm: float | None = None,
    clip_value: float | None = None,
    l2: float | None = None,
    l2_params: ParamSelection | None = None,
    lr_decay_per_epoch: float | None = None,
    shuffle: bool = True,
    seed: int = 0,
    memory_budget: int | None = None,
    group: mx.distributed.Group | None = None,
) -> History:
    """Train ``model`` on ``train`` with the compiled train step.

    Ctrl-C stops the loop after the step in progress (a second Ctrl-C stops at once, as
    usual): with a ``checkpoint_dir``, ``fit`` saves the state of that step in
    ``last.safetensors``, says on stderr how to resume, and raises
    [`TrainingInterrupted`][ncps_mlx.errors.TrainingInterrupted]. In a distributed run Ctrl-C raises
    KeyboardInterrupt at once, as usual (the processes could not agree on a step).

    Args:
        model: The layer to train, in place.
        train: A [`SequenceData`][ncps_mlx.datasets.SequenceData] (with timespans and masks as
            needed) or an ``(x, y)`` pair.
        val: Data to evaluate after each epoch (``val_loss`` and ``val_<metric>``).
        loss: A name in [`LOSSES`][ncps_mlx.training.losses.LOSSES] or ``f(prediction,
            target)``; the mean is taken over real (unpadded) steps.
        optimizer: Any ``mlx.optimizers`` optimizer; a schedule as its learning rate is
            followed per step. Default: ``Adam(learning_rate=1e-3)``.
        epochs: Epochs to reach; on resume, counted from the start of the run.
        batch_size: Sequences per step (over all processes when distributed).
        metrics: Names in [`METRICS`][ncps_mlx.training.losses.METRICS] or a dict of
            per-element functions, evaluated on ``val``.
        callbacks: [`Callback`][ncps_mlx.training.Callback] objects, e.g.
            ``EarlyStopping``.
        monitor: A [`Monitor`][ncps_mlx.monitor.Monitor]; each step is timed by it, started
            and stopped here unless already running.
        checkpoint_dir: Writes ``last.safetensors`` after every epoch (and on Ctrl-C),
            then ``best.safetensors`` when ``val_loss`` improves, and ``metrics.jsonl``.
            Temporary files that a killed run left there are removed at the start. A
            folder that already holds a run is refused unless ``resume`` or ``overwrite``.
        resume: Continue from ``checkpoint_dir/last.safetensors`` if it exists, with the
            arguments of the interrupted run, from the end of an epoch or the step where
            Ctrl-C stopped it: the model, optimizer, random key, data order and history
            follow the uninterrupted run exactly. ``best.safetensors`` is rewritten if a
            kill left it behind ``last``. A finished run (all ``epochs`` done, or stopped
            by a callback) trains nothing: ``history.finished_before`` says so.
        overwrite: Start afresh in a ``checkpoint_dir`` that holds another run, removing
            its ``last.safetensors``, ``best.safetensors`` and ``metrics.jsonl`` first.
        progress: Show a progress bar (on the main process).
        clip_norm: Clip the gradients' global norm to this value.
        clip_tensor_norm: Clip each gradient tensor's norm to this value (Keras'
            ``clipnorm``, which the CfC paper's code uses).
        clip_value: Clip each gradient element to ``[-clip_value, clip_value]``.
        l2: Add ``l2 * sum(w ** 2)`` over the ``l2_params`` to the training loss (Keras'
            ``kernel_regularizer=L2(l2)``); the logged ``loss`` is the data's alone.
        l2_params: Which trainable parameters the penalty takes, by their
            ``tree_flatten`` names: a glob such as ``"rnn_cell.*.weight"`` (the cell's
            weight matrices, no biases), a list of globs, or a predicate of the name.
            Default: all of them. A glob that matches nothing is refused.
        lr_decay_per_epoch: Multiply the learning rate (the optimizer's number or
            schedule) by this factor per epoch, smoothly per step as Keras'
            ``ExponentialDecay(rate, steps_per_epoch, factor)``: epoch ``e`` (from 0)
            starts at ``rate * factor ** e``. The optimizer keeps the decay until it
            trains again without one.
        shuffle: Reshuffle the training data every epoch.
        seed: Seeds the data order and MLX's random key (dropout).
        memory_budget: Bytes a step may use; by default what the device offers.
        group: An ``mx.distributed`` group; by default the one ``mlx.launch`` set up.
            Each process takes its share of every batch; rank 0 writes files.

    Returns:
        The [`History`][ncps_mlx.training.History]. ``history.stop_reason`` says why training ended
        early.

    Raises:
        ValueError: Data, loss or arguments that cannot work, before any compute.
        MemoryBudgetError: A batch would not fit in ``memory_budget``.
        CheckpointError: On resume, ``last.safetensors`` is unreadable or does not fit
            this model, optimizer, callbacks or ``epochs``.
        TrainingDivergedError: The loss became nan or inf; the model and optimizer are
            restored to the end of the last good epoch.
        TrainingInterrupted: Ctrl-C stopped the run; the model holds the weights of the
            last step, saved when there is a ``checkpoint_dir``.
    """
    _check_arguments(epochs, batch_size, resume, overwrite, checkpoint_dir)
    recipe = {
        "clip_norm": clip_norm, "clip_tensor_norm": clip_tensor_norm, "clip_value": clip_value,
        "l2": l2, "l2_params": l2_params, "lr_decay_per_epoch": lr_decay_per_epoch,
    }  # fmt: skip
    check_step_options("fit", model, **recipe)
    train = as_sequence_data(train, "train")
    check_data(model, train, loss, "train")
    if val is not None:
        val = as_sequence_data(val, "validation")
        check_data(model, val, loss, "validation")
    group = _world(group)
    rank, world_size = (group.rank(), group.size()) if group is not None else (0, 1)
    if batch_size < world_size:
        raise ValueError(
            f"[fit] batch_size {batch_size} is smaller than the {world_size} processes\n"
            + see("distributed")
        )
    optimizer = optimizer if optimizer is not None else optim.Adam(learning_rate=1e-3)
    # The fused kernels are built (once per machine, said on stderr) and proven here, not
    # inside the first timed step.
    kernels.usable(model.dtype)
    check_memory(
        model,
        math.ceil(batch_size / world_size),
        train.x.shape[1],
        budget=memory_budget,
        optimizer=optimizer,
        timespans=train.timespans is not None,
        mask=train.mask is not None,
    )

    was_training = model.training
    optimizer.init(model.trainable_parameters())
    loss_fn = resolve_loss(loss)
    metric_fns = resolve_metrics(metrics)
    evaluate = make_eval_step(model, loss_fn, metric_fns) if val is not None else None
    steps_per_epoch = len(_batches(np.arange(len(train)), batch_size, world_size))
    step = make_train_step(
        model, optimizer, loss_fn, **recipe, steps_per_epoch=steps_per_epoch, group=group
    )

    rng = np.random.default_rng(seed)
    mx.random.seed(seed)
    history = History()
    batches_per_epoch = len(_batches(np.arange(len(train)), batch_size, world_size))
    trainer = Trainer(model, optimizer, epochs, batches_per_epoch, history, rank, world_size)
    bar = ProgressBar(validation=val is not None) if progress and trainer.is_main else None
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    writes = checkpoint_dir is not None and trainer.is_main
    loop = _Loop(
        trainer, step, train, batch_size, shuffle, rng, monitor, bar, list(callbacks),
        _validation(evaluate, val, batch_size), checkpoint_dir if writes else None,
    )  # fmt: skip
    if writes:  # the temporary files of saves that a killed run left behind
        remove_temporaries(checkpoint_dir, CHECKPOINT_FILES)
        if overwrite and not resume:
            for name in CHECKPOINT_FILES:
                (checkpoint_dir / name).unlink(missing_ok=True)
    if resume and (checkpoint_dir / LAST_CHECKPOINT).exists():
        loop.resume(checkpoint_dir / LAST_CHECKPOINT)
        if trainer.stop_training or (trainer.epoch == epochs and loop.resumed is None):
            history.finished_before = True
            return history
    try:
        loop.run()
    finally:
        model.train(was_training)
    return history


def _check_arguments(
    epochs: Any, batch_size: Any, resume: bool, overwrite: bool, checkpoint_dir: Any
) -> None:
    check_int("fit", "epochs", epochs)
    check_int("fit", "batch_size", batch_size)
    if resume and checkpoint_dir is None:
        raise ValueError("[fit] resume=True needs the checkpoint_dir to resume from")
    if resume and overwrite:
        raise ValueError("[fit] resume=True continues a run, overwrite=True replaces it: pick one")
    held = holds_run(checkpoint_dir) if checkpoint_dir is not None else []
    if held and not (resume or overwrite):
        raise ValueError(
            f"[fit] checkpoint_dir {str(checkpoint_dir)!r} already holds a run "
            f"({', '.join(held)}): pass resume=True to continue it, overwrite=True to start "
            f"afresh (its files are removed), or another folder\n{see('resume')}"
        )


def holds_run(directory: str | Path) -> list[str]:
    """The files of a run that ``directory`` holds (what ``fit`` writes there)."""
    return [name for name in CHECKPOINT_FILES if (Path(directory) / name).exists()]


@contextlib.contextmanager
def _monitoring(monitor: Any) -> Iterator[None]:
    if monitor is None or monitor.running:
        yield
        return
    with monitor:
        yield


def _validation(evaluate: Any, data: SequenceData | None, batch_size: int) -> Any:
    """The epoch's ``val_*`` figures as a function of nothing, or None without data."""
    if evaluate is None:
        return None
    return lambda: _validate(evaluate, data, batch_size)


def _validate(evaluate: Any, data: SequenceData, batch_size: int) -> dict[str, float]:
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for start in range(0, len(data), batch_size):
        batch = data.subset(slice(start, start + batch_size))
        for name, (total, count) in evaluate(batch.x, batch.y, batch.timespans, batch.mask).items():
            sums[name] = sums.get(name, 0.0) + total.item()
            counts[name] = counts.get(name, 0.0) + count.item()
    return {f"val_{name}": sums[name] / counts[name] for name in sums}


@dataclass
class _Loop:
    """The epochs of a ``fit``, and the files it writes (``directory`` is None on other
    processes than the main one, and without a checkpoint_dir)."""

    trainer: Trainer
    step: Any
    train: SequenceData
    batch_size: int
    shuffle: bool
    rng: np.random.Generator
    monitor: Any
    bar: ProgressBar | None
    saved_callbacks: list[Callback]  # the caller's: their states are in the checkpoint
    validate: Any
    directory: Path | None
    #: The epoch a checkpoint saved midway (on Ctrl-C), to finish first.
    resumed: EpochProgress | None = None
    ctrl_c: CtrlC = field(default_factory=CtrlC)

    @property
    def callbacks(self) -> list[Callback]:
        return ([self.bar] if self.bar is not None else []) + self.saved_callbacks

    @property
    def inputs(self) -> dict[str, Any]:
        """The metadata every checkpoint carries of the inputs the model learns from."""
        return trained_with(
            timespans=self.train.timespans is not None, mask=self.train.mask is not None
        )

    def resume(self, path: Path) -> None:
        trainer = self.trainer
        state = load_training_state(path, trainer.model, trainer.optimizer)
        self.resumed = load_loop_state(state, trainer, self.rng, self.saved_callbacks, path)
        if self.directory is not None and self.resumed is None:
            _repair_best(self.directory, trainer, self.inputs)

    def run(self) -> None:
        trainer = self.trainer
        log = MetricsLog(self.directory / METRICS_LOG) if self.directory is not None else None
        if log is not None:
            log.rewrite(trainer.history.rows)
        # Under mx.distributed each process would stop at another step, and the others would
        # wait for it forever: there Ctrl-C stops at once, as usual.
        with _monitoring(self.monitor), self.ctrl_c.catching(trainer.world_size == 1):
            for callback in self.callbacks:
                callback.on_train_begin(trainer)
            for epoch in range(trainer.epoch + 1, trainer.epochs + 1):
                logs = self.run_epoch(epoch)
                if log is not None:
                    self.save()
                    log.append(logs)  # after the checkpoint, which holds the whole history
                if self.ctrl_c.pressed:  # during the validation or the saves
                    raise self.interrupted(None)
                if trainer.stop_training:
                    break
            trainer.history.stop_reason = trainer.stop_reason
            for callback in self.callbacks:
                callback.on_train_end(trainer)

    def run_epoch(self, epoch: int) -> dict[str, float]:
        trainer = self.trainer
        trainer.epoch = epoch
        trainer.model.train()
        progress = self.resumed or EpochProgress(epoch, self.rng.bit_generator.state)
        self.resumed = None
        logs = self.train_epoch(progress)
        if logs is None:
            raise self.interrupted(progress)
        if self.validate is not None:
            trainer.model.eval()  # no dropout, and no draw from the random key
            logs.update(self.validate())
            if self.monitor is not None:
                self.monitor.log_validation(logs["val_loss"], logs["loss"])
        trainer.history.rows.append(logs)
        trainer.best_epoch = best_epoch(trainer.history.rows)
        for callback in self.callbacks:
            callback.on_epoch_end(trainer, epoch, logs)
        return logs

    def train_epoch(self, progress: EpochProgress) -> dict[str, float] | None:
        """The epoch's steps from ``progress.next_batch`` on and its history row, or None
        when Ctrl-C stopped it (``progress`` then says how far it got)."""
        trainer, first = self.trainer, progress.next_batch
        trainer.batches_done = first
        for callback in self.callbacks:
            callback.on_epoch_begin(trainer, trainer.epoch)
        size = len(self.train)
        order = self.rng.permutation(size) if self.shuffle else np.arange(size)
        batches = _batches(order, self.batch_size, trainer.world_size)
        snapshot = _snapshot(trainer.model, trainer.optimizer)
        start = time.perf_counter() - progress.seconds
        for index in range(first, len(batches)):
            loss = self.train_step(batches[index])
            if not math.isfinite(loss):
                _restore(trainer.model, trainer.optimizer, snapshot)
                raise TrainingDivergedError(_divergence_message(trainer, index, loss, first))
            progress.add(loss, len(batches[index]), time.perf_counter() - start)
            trainer.batches_done = progress.next_batch
            logs = {"loss": loss, "samples": len(batches[index])}
            for callback in self.callbacks:
                callback.on_batch_end(trainer, index, logs)
            if self.ctrl_c.pressed:
                return None
        return progress.row(trainer.optimizer.learning_rate.item())

    def train_step(self, batch: np.ndarray) -> float:
        trainer, monitor = self.trainer, self.monitor
        shard = self.train.subset(np.array_split(batch, trainer.world_size)[trainer.rank])
        timing = (
            monitor.step(samples=len(batch))
            if monitor is not None
            else contextlib.nullcontext(StepHandle())
        )
        with timing as handle:
            loss = self.step(shard.x, shard.y, shard.timespans, shard.mask).item()
            handle.loss = loss
        return loss

    def save(self, progress: EpochProgress | None = None) -> None:
        """Write last, then best when this epoch is the best. A kill between the two leaves
        a last that names the epoch best must hold, and resuming rewrites best from it."""
        trainer = self.trainer
        state = loop_state(trainer, self.rng, self.saved_callbacks, progress)
        path = self.directory / LAST_CHECKPOINT
        save_training_state(path, trainer.model, trainer.optimizer, state, self.inputs)
        if progress is None and trainer.best_epoch == trainer.epoch:
            _save_best(self.directory, trainer, self.inputs)

    def interrupted(self, progress: EpochProgress | None) -> TrainingInterrupted:
        """Save the step where Ctrl-C stopped the run and say how to go on."""
        if self.bar is not None:
            self.bar.close()  # the message goes below the bar, not into it
        trainer = self.trainer
        where = f"after epoch {trainer.epoch}"
        if progress is not None:
            where = f"in epoch {progress.epoch} after batch {progress.next_batch} of "
            where += str(trainer.batches_per_epoch)
        checkpoint = None
        if self.directory is not None:
            if progress is not None:  # the end of an epoch is saved already
                self.save(progress)
            checkpoint = str(self.directory / LAST_CHECKPOINT)
        message = interrupted_message(where, checkpoint, self.directory)
        if not reports_itself():
            print(message, file=sys.stderr)
        return TrainingInterrupted(message, checkpoint)


def _divergence_message(trainer: Trainer, batch: int, loss: float, first: int) -> str:
    good = trainer.epoch - 1
    where = f"the end of epoch {good}" if good else "their initial values"
    if first:  # resumed midway through the epoch: the state it resumed from
        where = f"epoch {trainer.epoch} after batch {first}, where this run resumed"
    # Adam's default eps (1e-8) is 0 in float16: a zero gradient then gives 0 / 0.
    half = " In float16, give the optimizer eps >= 1e-4, or train in bfloat16."
    return (
        f"the training loss became {loss} at epoch {trainer.epoch}, batch {batch + 1}. "
        f"The model and optimizer were restored to {where}, as was saved in the last "
        "checkpoint if any. Lower the learning rate, set clip_norm (e.g. 1.0), or check the "
        "data for extreme values."
        f"{half if trainer.model.dtype == mx.float16 else ''}\n{see('training-diverged')}"
    )


def _save_best(directory: Path, trainer: Trainer, inputs: dict[str, Any]) -> None:
    metadata = {"epoch": trainer.epoch, **inputs}
    io.save(trainer.model, directory / BEST_CHECKPOINT, metadata=metadata)


def _repair_best(directory: Path, trainer: Trainer, inputs: dict[str, Any]) -> None:
    """Rewrite best from the resumed model when a kill between the saves of last and best
    left an older epoch in it: last says that its own epoch is the best."""
    own = trainer.best_epoch and trainer.best_epoch == trainer.epoch
    if own and _saved_epoch(directory / BEST_CHECKPOINT) != trainer.epoch:
        _save_best(directory, trainer, inputs)


def _saved_epoch(path: Path) -> Any:
    """The epoch ``best.safetensors`` says it holds; None if missing or unreadable."""
    try:
        header, _ = io.read_checkpoint(path)
    except CheckpointError:
        return None
    metadata = header.get("metadata")
    return metadata.get("epoch") if isinstance(metadata, dict) else None
