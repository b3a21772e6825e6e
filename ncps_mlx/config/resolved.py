"""The resolved config: what validation returns and :func:`run_config` uses."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DataInfo:
    """What validation learned about the data: enough to build and check the model."""

    input_size: int
    output_size: int  # classes for integer labels, the last axis of y otherwise
    classification: bool
    per_step: bool
    seq_len: int
    train_size: int
    val_size: int
    timespans: bool
    mask: bool


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: ``source`` is ``"generated"``, ``"uea"`` or ``"npz"``; ``validation``
    is ``"test"`` (UEA), ``"fraction"``, ``"file"`` (``val_*`` arrays) or ``"none"``."""

    source: str
    name: str | None
    path: Path | None
    options: dict[str, Any]
    validation: str
    validation_fraction: float
    info: DataInfo


@dataclass(frozen=True)
class ModelConfig:
    """``[model]`` with the defaults drawn from the data filled in."""

    type: str
    units: int | None
    wiring: dict[str, Any] | None  # {"type": ..., constructor arguments}
    kwargs: dict[str, Any]
    parameters: int


@dataclass(frozen=True)
class ScheduleConfig:
    """``training.schedule`` with every number resolved."""

    type: str = "none"
    decay_steps: int | None = None
    end_learning_rate: float | None = None
    decay_rate: float | None = None
    step_size: int | None = None


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """``training.early_stopping``: the arguments of ``EarlyStopping``."""

    monitor: str
    patience: int
    min_delta: float
    mode: str


@dataclass(frozen=True)
class TrainingConfig:
    """``[training]``; ``steps_per_epoch`` is derived from the data and batch size."""

    epochs: int
    batch_size: int
    loss: str
    metrics: tuple[str, ...]
    optimizer: str
    learning_rate: float
    weight_decay: float | None
    momentum: float | None
    schedule: ScheduleConfig
    clip_norm: float | None
    shuffle: bool
    early_stopping: EarlyStoppingConfig | None
    memory_budget_mb: float | None
    steps_per_epoch: int


@dataclass(frozen=True)
class OutputConfig:
    """``[output]``."""

    dir: Path
    resume: bool
    progress: bool
    monitor: bool
    export_coreml: bool


@dataclass(frozen=True)
class Config:
    """A validated run config: what :func:`run_config` needs, checked."""

    seed: int
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig
    output: OutputConfig
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as JSON-compatible values."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def summary(self) -> str:
        """A few lines saying what :func:`run_config` would do."""
        return "\n".join(
            [
                f"data:     {_describe_data(self.data)}",
                f"model:    {_describe_model(self.model)}",
                f"training: {_describe_training(self.training)}",
                f"output:   {_describe_output(self.output)}",
            ]
        )


# -- summaries ------------------------------------------------------------------------


def _describe_data(data: DataConfig) -> str:
    info = data.info
    origin = {"generated": "generated", "uea": "UEA set", "npz": "file"}[data.source]
    label = data.name if data.path is None else str(data.path)
    options = ", ".join(f"{k}={v}" for k, v in data.options.items())
    head = f"{label} ({origin}{'; ' + options if options else ''})"
    validation = {
        "test": "the test split",
        "file": "the file's val_* arrays",
        "fraction": f"a {data.validation_fraction:g} share held out",
        "none": "no validation",
    }[data.validation]
    task = (
        counted(info.output_size, "class", "classes")
        if info.classification
        else counted(info.output_size, "target")
    )
    extras = [name for name, on in (("timespans", info.timespans), ("mask", info.mask)) if on]
    return (
        f"{head}: {info.train_size} train / {info.val_size} validation sequences "
        f"({validation}) of {counted(info.seq_len, 'step')} x "
        f"{counted(info.input_size, 'feature')} -> {task} "
        f"{'per step' if info.per_step else 'per sequence'}"
        + (f", with {' and '.join(extras)}" if extras else "")
    )


def _describe_model(model: ModelConfig) -> str:
    if model.wiring is not None:
        args = dict(model.wiring)
        units = f"{args.pop('type')}({', '.join(f'{k}={v}' for k, v in args.items())})"
    else:
        units = str(model.units)
    kwargs = "".join(f", {k}={v}" for k, v in model.kwargs.items())
    return f"{model.type}(units={units}{kwargs}): {counted(model.parameters, 'parameter')}"


def _describe_training(training: TrainingConfig) -> str:
    steps = training.epochs * training.steps_per_epoch
    schedule = training.schedule
    rate = f"{training.optimizer} lr={training.learning_rate:g}"
    if schedule.type != "none":
        rate += f" ({schedule.type} schedule)"
    batches = counted(training.steps_per_epoch, "batch", "batches")
    parts = [
        f"{counted(training.epochs, 'epoch')} x {batches} of {training.batch_size} "
        f"({counted(steps, 'step')})",
        rate,
        f"loss {training.loss}",
    ]
    if training.metrics:
        parts.append(f"metrics {', '.join(training.metrics)}")
    if training.clip_norm is not None:
        parts.append(f"clip_norm {training.clip_norm:g}")
    if training.early_stopping is not None:
        early = training.early_stopping
        parts.append(f"early stopping on {early.monitor} (patience {early.patience})")
    return ", ".join(parts)


def _describe_output(output: OutputConfig) -> str:
    files = ["checkpoints/", "model.safetensors", "metrics.json"]
    files += ["monitor.jsonl"] if output.monitor else []
    files += ["model.mlpackage"] if output.export_coreml else []
    resume = ", resuming" if output.resume else ""
    return f"{output.dir}{resume}: {', '.join(files)}"


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` with its noun, e.g. ``1,024 steps``."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"
