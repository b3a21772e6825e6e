"""``[training]``: epochs, batches, loss, metrics, optimizer, schedule, early stopping."""

from __future__ import annotations

import math

from ..training.losses import LOSSES, METRICS, suited_to, takes_labels
from ._fields import Problems, Table, choose
from .resolved import DataInfo, EarlyStoppingConfig, ScheduleConfig, TrainingConfig

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("none", "cosine", "exponential", "step")
# The keys of training.schedule each schedule type takes.
_SCHEDULE_KEYS = {
    "none": (),
    "cosine": ("decay_steps", "end_learning_rate"),
    "exponential": ("decay_steps", "end_learning_rate"),
    "step": ("decay_rate", "step_size"),
}


def validate_training(table: Table, info: DataInfo | None) -> TrainingConfig:
    problems = table.problems
    labels = info is not None and info.classification
    epochs = table.get("epochs", "int", 10, min=1)
    batch_size = table.get("batch_size", "int", 32, min=1)
    loss = table.get("loss", "str", "cross_entropy" if labels else "mse", choices=sorted(LOSSES))
    metrics = table.get("metrics", "list[str]", ["accuracy"] if labels else [])
    optimizer = table.get("optimizer", "str", "adam", choices=OPTIMIZERS)
    learning_rate = table.get("learning_rate", "number", 1e-3, gt=0)
    weight_decay = table.get("weight_decay", "number", min=0)
    momentum = table.get("momentum", "number", min=0, lt=1)
    schedule = table.get("schedule", ("str", "table"), "none")
    clip_norm = table.get("clip_norm", "number", gt=0)
    shuffle = table.get("shuffle", "bool", True)
    early = table.get("early_stopping", "table")
    memory_budget_mb = table.get("memory_budget_mb", "number", gt=0)
    table.finish()
    metrics = _check_metrics(metrics, problems)
    _check_optimizer_keys(table, optimizer, problems)
    if info is not None:
        _check_targets(loss, metrics, info, problems)
    train_size = info.train_size if info is not None else batch_size
    steps_per_epoch = math.ceil(train_size / batch_size)
    total_steps = epochs * steps_per_epoch
    schedule = _validate_schedule(schedule, learning_rate, total_steps, problems)
    has_val = info is not None and info.val_size > 0
    early = _validate_early_stopping(early, metrics, has_val, problems)
    return TrainingConfig(
        epochs,
        batch_size,
        loss,
        tuple(metrics),
        optimizer,
        learning_rate,
        weight_decay,
        momentum,
        schedule,
        clip_norm,
        shuffle,
        early,
        memory_budget_mb,
        steps_per_epoch,
    )


def _check_metrics(metrics: list[str], problems: Problems) -> list[str]:
    for metric in metrics:
        if metric not in METRICS:
            problems.add(
                "training.metrics", f"unknown metric {metric!r}", choose(metric, sorted(METRICS))
            )
    return [metric for metric in dict.fromkeys(metrics) if metric in METRICS]


def _check_optimizer_keys(table: Table, optimizer: str, problems: Problems) -> None:
    takes = {"weight_decay": ("adamw", "sgd"), "momentum": ("sgd",)}
    for key, optimizers in takes.items():
        if table.present(key) and optimizer not in optimizers:
            names = " or ".join(repr(name) for name in optimizers)
            problems.add(
                f"training.{key}",
                f"the {optimizer!r} optimizer does not take it",
                f"remove it, or use optimizer {names}",
            )


def _check_targets(loss: str, metrics: list[str], info: DataInfo, problems: Problems) -> None:
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


def _validate_schedule(
    value: str | dict, learning_rate: float, total_steps: int, problems: Problems
) -> ScheduleConfig:
    if isinstance(value, str):
        if value not in SCHEDULES:
            problems.add("training.schedule", f"got {value!r}", choose(value, SCHEDULES))
            return ScheduleConfig()
        value = {"type": value}
    table = Table("training.schedule", value, problems)
    kind = table.get("type", "str", "none", required=True, choices=SCHEDULES)
    read = {
        "decay_steps": table.get("decay_steps", "int", min=1),
        "end_learning_rate": table.get("end_learning_rate", "number", min=0),
        "decay_rate": table.get("decay_rate", "number", gt=0, lt=1),
        "step_size": table.get("step_size", "int", min=1),
    }
    table.finish()
    takes = _SCHEDULE_KEYS[kind]
    for key in read:
        if table.present(key) and key not in takes:
            users = [name for name, keys in _SCHEDULE_KEYS.items() if key in keys]
            problems.add(
                f"training.schedule.{key}",
                f"a {kind!r} schedule does not take it",
                f"remove it, or use type {' or '.join(map(repr, users))}",
            )
    return _resolve_schedule(kind, read, learning_rate, total_steps, problems)


def _resolve_schedule(
    kind: str, read: dict, learning_rate: float, total_steps: int, problems: Problems
) -> ScheduleConfig:
    if kind == "step":
        rate = read["decay_rate"] if read["decay_rate"] is not None else 0.5
        size = read["step_size"] or max(1, total_steps // 3)
        return ScheduleConfig(kind, decay_rate=rate, step_size=size)
    if kind == "none":
        return ScheduleConfig()
    steps = read["decay_steps"] or total_steps
    default_end = 0.0 if kind == "cosine" else learning_rate / 100
    end = read["end_learning_rate"] if read["end_learning_rate"] is not None else default_end
    if end >= learning_rate:
        problems.add(
            "training.schedule.end_learning_rate",
            f"{end} is not below the learning_rate {learning_rate}",
            "lower it, or the learning_rate",
        )
    if kind == "exponential" and end <= 0:
        problems.add(
            "training.schedule.end_learning_rate",
            "an exponential decay never reaches 0",
            "use a number > 0",
        )
    return ScheduleConfig(kind, decay_steps=steps, end_learning_rate=end)


def _validate_early_stopping(
    raw: dict | None, metrics: list[str], has_val: bool, problems: Problems
) -> EarlyStoppingConfig | None:
    if raw is None:
        return None
    logged = ["loss"] + (["val_loss"] + [f"val_{m}" for m in metrics] if has_val else [])
    table = Table("training.early_stopping", raw, problems)
    monitor = table.get("monitor", "str", "val_loss" if has_val else "loss")
    patience = table.get("patience", "int", 5, min=1)
    min_delta = table.get("min_delta", "number", 0.0, min=0)
    mode = table.get("mode", "str", "auto", choices=("auto", "min", "max"))
    table.finish()
    if monitor not in logged:
        why = "" if has_val else " (val_ figures need validation data)"
        problems.add(
            "training.early_stopping.monitor",
            f"{monitor!r} is not logged{why}",
            choose(monitor, logged),
        )
    return EarlyStoppingConfig(monitor, patience, float(min_delta), mode)
