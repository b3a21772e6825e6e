"""``[training]``: the keys as `TrainingConfig` declares them, then the defaults
and checks that depend on the data, the schedule's numbers and the callback."""

from __future__ import annotations

import dataclasses
import math

from ..rnn import RNN
from ..training.callbacks import EarlyStopping
from ..training.losses import LOSSES, METRICS, suited_to, takes_labels
from ..training.recipes import l2_selected
from ._fields import Problems, Table, choose, read_fields, signature_args
from .build import OPTIMIZER_CLASSES
from .resolved import DataInfo, EarlyStoppingConfig, ScheduleConfig, TrainingConfig


def validate_training(table: Table, info: DataInfo | None) -> TrainingConfig:
    """Check the `[training]` table and resolve the defaults that depend on the data.

    The loss and metrics default to cross-entropy and accuracy for class labels, to MSE
    otherwise, and must suit the targets; the schedule's numbers, early stopping and the
    optimizer's options are checked too.

    Args:
        table: The `[training]` table; its problems are added to `table.problems`.
        info: What the data looks like; None when `[data]` could not be resolved.

    Returns:
        The resolved section, with `steps_per_epoch` (the section as read even when
        problems were found: they are reported with the rest).
    """
    keys = read_fields(table, TrainingConfig)
    problems = table.problems
    labels = info is not None and info.classification
    loss = keys["loss"] or ("cross_entropy" if labels else "mse")
    metrics = keys["metrics"]
    if metrics is None:
        metrics = ("accuracy",) if labels else ()
    metrics = tuple(dict.fromkeys(metrics))  # each figure once
    if info is not None:
        _check_targets(loss, metrics, info, problems)
    train_size = info.train_size if info is not None else keys["batch_size"]
    steps_per_epoch = math.ceil(train_size / keys["batch_size"])
    total_steps = keys["epochs"] * steps_per_epoch
    schedule = _resolve_schedule(keys["schedule"], keys["learning_rate"], total_steps, problems)
    has_val = info is not None and info.val_size > 0
    early = _resolve_early_stopping(keys["early_stopping"], metrics, has_val, problems)
    options = _optimizer_options(table, keys, problems)
    if keys["l2_params"] is not None and keys["l2"] is None:
        problems.add("training.l2_params", "chooses where l2 applies, but l2 is not set", "set l2")
    resolved = {"loss": loss, "metrics": metrics, "schedule": schedule, "early_stopping": early}
    resolved["optimizer_options"] = options
    return TrainingConfig(**{**keys, **resolved}, steps_per_epoch=steps_per_epoch)


def _check_targets(loss: str, metrics: tuple[str, ...], info: DataInfo, problems: Problems) -> None:
    """Losses and metrics must suit the targets (as ``fit`` checks the loss)."""
    labels = info.classification
    targets = "integer class labels" if labels else "float targets"
    if takes_labels(loss) != labels:
        problems.add(
            "training.loss",
            f"{loss!r} does not suit the data's {targets}",
            f"use one of {', '.join(suited_to(LOSSES, labels))}",
        )
    for metric in metrics:
        if takes_labels(metric) != labels:
            problems.add(
                "training.metrics",
                f"{metric!r} does not suit the data's {targets}",
                f"use {' or '.join(suited_to(METRICS, labels))}",
            )


def _optimizer_options(table: Table, keys: dict, problems: Problems) -> dict:
    """``optimizer_options`` checked against the optimizer's signature; the optimizer is
    built with them, so its own checks run too."""
    raw = keys["optimizer_options"]
    cls = OPTIMIZER_CLASSES.get(keys["optimizer"])
    if not raw or cls is None:
        return raw
    before = len(problems)
    options_table = Table("training.optimizer_options", raw, problems)
    options = signature_args(options_table, cls, skip=("learning_rate",))
    options_table.finish()
    for key in ("weight_decay", "momentum"):
        if key in options and table.present(key):
            problems.add(f"training.optimizer_options.{key}", f"{key} is set twice", "keep one")
    if len(problems) == before:
        try:
            cls(learning_rate=keys["learning_rate"], **options)
        except (TypeError, ValueError) as error:
            problems.add("training.optimizer_options", str(error))
    return options


def check_l2_params(model: RNN, training: TrainingConfig, problems: Problems) -> None:
    """Each glob of ``l2_params`` must name a parameter of the model (as ``fit`` checks)."""
    if training.l2 is None or training.l2_params is None:
        return
    try:
        l2_selected("fit", model, training.l2_params)
    except ValueError as error:
        problems.add("training.l2_params", str(error).removeprefix("[fit] l2_params "))


def _resolve_schedule(
    schedule: ScheduleConfig, learning_rate: float, total_steps: int, problems: Problems
) -> ScheduleConfig:
    """Fill in the schedule's defaults, which depend on the run's length and rate."""
    if schedule.type == "none":
        return ScheduleConfig()
    if schedule.type == "step":
        rate = schedule.decay_rate if schedule.decay_rate is not None else 0.5
        size = schedule.step_size or max(1, total_steps // 3)
        return ScheduleConfig("step", decay_rate=rate, step_size=size)
    steps = schedule.decay_steps or total_steps
    default_end = 0.0 if schedule.type == "cosine" else learning_rate / 100
    end = schedule.end_learning_rate
    end = end if end is not None else default_end
    if end >= learning_rate:
        problems.add(
            "training.schedule.end_learning_rate",
            f"{end} is not below the learning_rate {learning_rate}",
            "lower it, or the learning_rate",
        )
    if schedule.type == "exponential" and end <= 0:
        problems.add(
            "training.schedule.end_learning_rate",
            "an exponential decay never reaches 0",
            "use a number > 0",
        )
    return ScheduleConfig(schedule.type, decay_steps=steps, end_learning_rate=end)


def _resolve_early_stopping(
    early: EarlyStoppingConfig | None,
    metrics: tuple[str, ...],
    has_val: bool,
    problems: Problems,
) -> EarlyStoppingConfig | None:
    """Default the monitor to a figure ``fit`` logs; ``EarlyStopping`` checks the rest."""
    if early is None:
        return None
    logged = ["loss"] + (["val_loss"] + [f"val_{m}" for m in metrics] if has_val else [])
    monitor = early.monitor or ("val_loss" if has_val else "loss")
    if monitor not in logged:
        why = "" if has_val else " (val_ figures need validation data)"
        problems.add(
            "training.early_stopping.monitor",
            f"{monitor!r} is not logged{why}",
            choose(monitor, logged),
        )
    early = dataclasses.replace(early, monitor=monitor, min_delta=float(early.min_delta))
    checks = EarlyStopping.argument_problems(early.patience, early.min_delta, early.mode)
    for key, message in checks.items():
        problems.add(f"training.early_stopping.{key}", message)
    return early
