"""What a config's summary says: one line per section."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .resolved import DataConfig, ModelConfig, OutputConfig, TrainingConfig


def describe_data(data: DataConfig) -> str:
    """One line on the data: its source, sizes, validation split, shapes and task."""
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


def describe_model(model: ModelConfig) -> str:
    """One line on the model: its class, units or wiring, arguments and parameter count."""
    if model.wiring is not None:
        args = dict(model.wiring)
        units = f"{args.pop('type')}({', '.join(f'{k}={v}' for k, v in args.items())})"
    else:
        units = str(model.units)
    kwargs = "".join(f", {k}={v}" for k, v in model.kwargs.items())
    return f"{model.type}(units={units}{kwargs}): {counted(model.parameters, 'parameter')}"


def describe_training(training: TrainingConfig) -> str:
    """One line on training: epochs, batches and steps, the optimizer and its schedule,
    the loss and metrics, and the options that are set (clipping, l2, early stopping)."""
    steps = training.epochs * training.steps_per_epoch
    schedule = training.schedule
    rate = f"{training.optimizer} lr={training.learning_rate:g}"
    rate += "".join(f" {key}={value}" for key, value in training.optimizer_options.items())
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
    for key in ("clip_norm", "clip_tensor_norm", "clip_value", "l2", "lr_decay_per_epoch"):
        value = getattr(training, key)
        if value is not None:
            chosen = training.l2_params if key == "l2" else None
            parts.append(f"{key} {value:g}" + (f" on {', '.join(chosen)}" if chosen else ""))
    if training.early_stopping is not None:
        early = training.early_stopping
        parts.append(f"early stopping on {early.monitor} (patience {early.patience})")
    return ", ".join(parts)


def describe_output(output: OutputConfig) -> str:
    """One line on the output: the folder, whether the run resumes, and the files written."""
    files = ["checkpoints/", "model.safetensors", "metrics.json"]
    files += ["monitor.jsonl"] if output.monitor else []
    files += ["model.mlpackage"] if output.export_coreml else []
    resume = ", resuming" if output.resume else ""
    return f"{output.dir}{resume}: {', '.join(files)}"


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` with its noun, e.g. ``1,024 steps``."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"
