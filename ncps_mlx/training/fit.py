"""``fit``: the training loop around the compiled train step.

Everything is checked before the first step (data against the model, the loss against
the targets, the memory a batch needs, measured on a copy of the model), so a mistake
costs no training. The loop itself is deterministic given ``seed``: the data order comes
from a numpy generator and dropout from MLX's key, and both are saved in every checkpoint
with the optimizer's state, so a resumed run continues the trajectory of an
uninterrupted one exactly.
"""

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map

from .. import kernels, scan
from .._checks import check_int
from ..datasets import SequenceData
from ..errors import TrainingDivergedError, see
from ..monitor.monitor import StepHandle
from ..rnn import RNN
from .callbacks import Callback, MetricsLog, ProgressBar
from .checkpoint import (
    assign_in_place,
    load_training_state,
    save_training_state,
    set_random_key,
)
from .losses import LossFn, resolve_loss, resolve_metrics, takes_labels
from .memory import check_memory
from .steps import check_target, make_eval_step, make_train_step

LAST_CHECKPOINT = "last.safetensors"
BEST_CHECKPOINT = "best.safetensors"
METRICS_LOG = "metrics.jsonl"


@dataclass
class History:
    """One row per epoch: ``epoch``, ``loss``, ``val_*``, ``learning_rate``, ``seconds``,
    ``samples_per_s``. ``history["loss"]`` gives a column."""

    rows: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str = ""

    def __getitem__(self, key: str) -> list[float]:
        return [row[key] for row in self.rows if key in row]

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class Trainer:
    """What callbacks see of a running ``fit``."""

    model: RNN
    optimizer: optim.Optimizer
    epochs: int
    batches_per_epoch: int
    history: History
    rank: int = 0
    world_size: int = 1
    epoch: int = 0
    stop_training: bool = False
    stop_reason: str = ""

    @property
    def is_main(self) -> bool:
        """Rank 0, the process that writes checkpoints, logs and progress."""
        return self.rank == 0


def as_sequence_data(data: Any, role: str) -> SequenceData:
    """Accept a :class:`SequenceData` or an ``(x, y)`` pair of arrays."""
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
    if isinstance(loss, str) and takes_labels(loss) != labels:
        need = "integer class labels" if takes_labels(loss) else "float targets"
        raise ValueError(
            f"[fit] loss {loss!r} needs {need}, but {role} y has dtype {data.y.dtype}\n"
            + see("target-mismatch")
        )
    if labels and (data.y.min() < 0 or data.y.max() >= model.output_size):
        raise ValueError(
            f"[fit] {role} class labels must lie in [0, {model.output_size}) (the model's "
            f"output_size), but range over [{data.y.min()}, {data.y.max()}]\n"
            + see("target-mismatch")
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
    progress: bool = True,
    clip_norm: float | None = None,
    shuffle: bool = True,
    seed: int = 0,
    memory_budget: int | None = None,
    group: mx.distributed.Group | None = None,
) -> History:
    """Train ``model`` on ``train`` with the compiled train step.

    Args:
        model: The layer to train, in place.
        train: A :class:`~ncps_mlx.datasets.SequenceData` (with timespans and masks as
            needed) or an ``(x, y)`` pair.
        val: Data to evaluate after each epoch (``val_loss`` and ``val_<metric>``).
        loss: A name in :data:`~ncps_mlx.training.losses.LOSSES` or ``f(prediction,
            target)``; the mean is taken over real (unpadded) steps.
        optimizer: Any ``mlx.optimizers`` optimizer; a schedule as its learning rate is
            followed per step. Default: ``Adam(learning_rate=1e-3)``.
        epochs: Epochs to reach; on resume, counted from the start of the run.
        batch_size: Sequences per step (over all processes when distributed).
        metrics: Names in :data:`~ncps_mlx.training.losses.METRICS` or a dict of
            per-element functions, evaluated on ``val``.
        callbacks: :class:`~ncps_mlx.training.callbacks.Callback` objects, e.g.
            ``EarlyStopping``.
        monitor: A :class:`~ncps_mlx.monitor.Monitor`; each step is timed by it, started
            and stopped here unless already running.
        checkpoint_dir: Writes ``last.safetensors`` after every epoch,
            ``best.safetensors`` when ``val_loss`` improves, and ``metrics.jsonl``.
        resume: Continue from ``checkpoint_dir/last.safetensors`` if it exists.
        progress: Show a progress bar (on the main process).
        clip_norm: Clip the gradients' global norm to this value.
        shuffle: Reshuffle the training data every epoch.
        seed: Seeds the data order and MLX's random key (dropout).
        memory_budget: Bytes a step may use; by default what the device offers.
        group: An ``mx.distributed`` group; by default the one ``mlx.launch`` set up.
            Each process takes its share of every batch; rank 0 writes files.

    Returns:
        The :class:`History`. ``history.stop_reason`` says why training ended early.

    Raises:
        ValueError: Data, loss or arguments that cannot work, before any compute.
        MemoryBudgetError: A batch would not fit in ``memory_budget``.
        TrainingDivergedError: The loss became nan or inf; the model and optimizer are
            restored to the end of the last good epoch.
    """
    _check_arguments(epochs, batch_size, resume, checkpoint_dir)
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
    step = make_train_step(model, optimizer, loss_fn, clip_norm=clip_norm, group=group)

    rng = np.random.default_rng(seed)
    mx.random.seed(seed)
    history = History()
    batches_per_epoch = len(_batches(np.arange(len(train)), batch_size, world_size))
    trainer = Trainer(model, optimizer, epochs, batches_per_epoch, history, rank, world_size)
    main = trainer.is_main
    user_callbacks = list(callbacks)
    callbacks = ([ProgressBar()] if progress and main else []) + user_callbacks
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    log = MetricsLog(checkpoint_dir / METRICS_LOG) if checkpoint_dir and main else None
    if resume and (checkpoint_dir / LAST_CHECKPOINT).exists():
        state = load_training_state(checkpoint_dir / LAST_CHECKPOINT, model, optimizer)
        _load_loop_state(state, trainer, rng, user_callbacks)
        if trainer.stop_training:
            return history

    if log is not None:
        log.rewrite(history.rows)
    with _monitoring(monitor):
        for callback in callbacks:
            callback.on_train_begin(trainer)
        for epoch in range(trainer.epoch + 1, epochs + 1):
            trainer.epoch = epoch
            model.train()
            logs = _train_epoch(trainer, step, train, batch_size, shuffle, rng, callbacks, monitor)
            if evaluate is not None:
                model.eval()  # no dropout, and no draw from the random key
                logs.update(_validate(evaluate, val, batch_size))
                if monitor is not None:
                    monitor.log_validation(logs["val_loss"], logs["loss"])
            history.rows.append(logs)
            for callback in callbacks:
                callback.on_epoch_end(trainer, epoch, logs)
            if log is not None:
                _save(checkpoint_dir, trainer, rng, user_callbacks)
                log.append(logs)  # after the checkpoint, which holds the whole history
            if trainer.stop_training:
                break
        history.stop_reason = trainer.stop_reason
        for callback in callbacks:
            callback.on_train_end(trainer)
    model.train(was_training)
    return history


def _check_arguments(epochs: Any, batch_size: Any, resume: bool, checkpoint_dir: Any) -> None:
    check_int("fit", "epochs", epochs)
    check_int("fit", "batch_size", batch_size)
    if resume and checkpoint_dir is None:
        raise ValueError("[fit] resume=True needs the checkpoint_dir to resume from")


@contextlib.contextmanager
def _monitoring(monitor: Any) -> Iterator[None]:
    if monitor is None or monitor.running:
        yield
        return
    with monitor:
        yield


def _train_epoch(
    trainer: Trainer,
    step: Any,
    data: SequenceData,
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator,
    callbacks: list[Callback],
    monitor: Any,
) -> dict[str, float]:
    for callback in callbacks:
        callback.on_epoch_begin(trainer, trainer.epoch)
    order = rng.permutation(len(data)) if shuffle else np.arange(len(data))
    snapshot = _snapshot(trainer.model, trainer.optimizer)
    start, total, seen = time.perf_counter(), 0.0, 0
    for index, batch in enumerate(_batches(order, batch_size, trainer.world_size)):
        shard = data.subset(np.array_split(batch, trainer.world_size)[trainer.rank])
        timing = (
            monitor.step(samples=len(batch))
            if monitor is not None
            else contextlib.nullcontext(StepHandle())
        )
        with timing as handle:
            loss = step(shard.x, shard.y, shard.timespans, shard.mask).item()
            handle.loss = loss
        if not math.isfinite(loss):
            _restore(trainer.model, trainer.optimizer, snapshot)
            raise TrainingDivergedError(_divergence_message(trainer, index, loss))
        total += loss * len(batch)
        seen += len(batch)
        for callback in callbacks:
            callback.on_batch_end(trainer, index, {"loss": loss, "samples": len(batch)})
    seconds = time.perf_counter() - start
    return {
        "epoch": trainer.epoch,
        "loss": total / seen,
        "learning_rate": trainer.optimizer.learning_rate.item(),
        "seconds": seconds,
        "samples_per_s": seen / seconds,
    }


def _divergence_message(trainer: Trainer, batch: int, loss: float) -> str:
    good = trainer.epoch - 1
    where = f"the end of epoch {good}" if good else "their initial values"
    # Adam's default eps (1e-8) is 0 in float16: a zero gradient then gives 0 / 0.
    half = " In float16, give the optimizer eps >= 1e-4, or train in bfloat16."
    return (
        f"the training loss became {loss} at epoch {trainer.epoch}, batch {batch + 1}. "
        f"The model and optimizer were restored to {where}, as was saved in the last "
        "checkpoint if any. Lower the learning rate, set clip_norm (e.g. 1.0), or check the "
        "data for extreme values."
        f"{half if trainer.model.dtype == mx.float16 else ''}\n{see('training-diverged')}"
    )


def _validate(evaluate: Any, data: SequenceData, batch_size: int) -> dict[str, float]:
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for start in range(0, len(data), batch_size):
        batch = data.subset(slice(start, start + batch_size))
        for name, (total, count) in evaluate(batch.x, batch.y, batch.timespans, batch.mask).items():
            sums[name] = sums.get(name, 0.0) + total.item()
            counts[name] = counts.get(name, 0.0) + count.item()
    return {f"val_{name}": sums[name] / counts[name] for name in sums}


def _loop_state(trainer: Trainer, rng: np.random.Generator, callbacks: list[Callback]) -> dict:
    return {
        "epoch": trainer.epoch,
        "history": trainer.history.rows,
        "stop_training": trainer.stop_training,
        "stop_reason": trainer.stop_reason,
        "data_order": rng.bit_generator.state,
        "callbacks": [callback.state_dict() for callback in callbacks],
    }


def _load_loop_state(
    state: dict, trainer: Trainer, rng: np.random.Generator, callbacks: list[Callback]
) -> None:
    if len(state["callbacks"]) != len(callbacks):
        raise ValueError(
            f"[fit] the checkpoint was written with {len(state['callbacks'])} callbacks, "
            f"this run has {len(callbacks)}: resume with the same callbacks\n{see('resume')}"
        )
    trainer.epoch = state["epoch"]
    trainer.history.rows[:] = state["history"]
    trainer.stop_training = state["stop_training"]
    trainer.stop_reason = trainer.history.stop_reason = state["stop_reason"]
    rng.bit_generator.state = state["data_order"]
    for callback, saved in zip(callbacks, state["callbacks"], strict=True):
        callback.load_state_dict(saved)


def _save(
    directory: Path, trainer: Trainer, rng: np.random.Generator, callbacks: list[Callback]
) -> None:
    from .. import io

    rows = trainer.history.rows
    state = _loop_state(trainer, rng, callbacks)
    save_training_state(directory / LAST_CHECKPOINT, trainer.model, trainer.optimizer, state)
    if "val_loss" in rows[-1] and rows[-1]["val_loss"] <= min(r["val_loss"] for r in rows):
        io.save(trainer.model, directory / BEST_CHECKPOINT, metadata={"epoch": trainer.epoch})
