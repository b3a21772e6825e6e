"""The config's schema: one dataclass per section, one field per key.

A field made with `option` is a key a user writes: its annotation is the
key's type, the option holds its default, choices, bounds and description. The reader
(`read_fields`) checks a TOML table against it, and the documentation's
key tables are generated from it. Fields made with `derived` are
computed by validation (mostly from the data) and are not keys. Validation returns
instances with every default resolved; `run_config` uses them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import datasets
from ..rnn import MODELS
from ..training.callbacks import EarlyStopping
from ..training.losses import LOSSES, METRICS
from ._fields import derived, option, section
from .build import GENERATORS, OPTIMIZER_CLASSES
from .summary import describe_data, describe_model, describe_output, describe_training

OPTIMIZERS = tuple(OPTIMIZER_CLASSES)
"""The optimizers `training.optimizer` may name (`mlx.optimizers` classes)."""
SCHEDULES = ("none", "cosine", "exponential", "step")
"""The learning-rate schedules `training.schedule.type` may name."""
# The generated tasks, then the UEA sets shipped with aeon.
DATA_NAMES = (*sorted(GENERATORS), *datasets.SHIPPED)
DEFAULT_VALIDATION_FRACTION = 0.2
"""The share of generated or `.npz` data held out for validation when the config does not
say."""


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
    """``[data]``: ``source`` is ``"generated"``, ``"uea"`` or ``"npz"``; once resolved,
    ``validation`` is ``"test"`` (UEA), ``"fraction"``, ``"file"`` (``val_*`` arrays) or
    ``"none"``."""

    source: str = derived()
    name: str | None = option(
        None,
        choices=DATA_NAMES,
        doc="a generated task or a UEA set shipped with aeon (or else `path`)",
    )
    path: Path | None = option(
        None,
        doc="an `.npz` file, relative to the config file's folder (or else `name`)",
    )
    options: dict[str, Any] = option(
        {},
        doc="keyword arguments of the generator or of `load_uea`",
    )
    validation: str = option(
        None,
        choices=("test", "none"),
        default_doc='`"test"` (UEA sets)',
        doc="UEA sets: validate on their test split, or not at all",
    )
    validation_fraction: float = option(
        None,
        min=0,
        lt=1,
        default_doc=f"`{DEFAULT_VALIDATION_FRACTION}` (generated and `.npz` data)",
        doc="the share of the sequences held out for validation (0: none)",
    )
    info: DataInfo = derived()


@dataclass(frozen=True)
class ModelConfig:
    """``[model]`` with the defaults drawn from the data filled in; ``kwargs`` holds the
    class's other constructor arguments."""

    type: str = option(None, required=True, choices=tuple(MODELS), doc="the layer class")
    units: int | None = option(None, min=1, doc="the number of neurons (or else `wiring`)")
    wiring: dict[str, Any] | None = option(
        None,
        doc="a `[model.wiring]` table: the wiring's `type` and arguments (or else `units`)",
    )
    kwargs: dict[str, Any] = derived()
    parameters: int = derived()


@dataclass(frozen=True)
class ScheduleConfig:
    """``training.schedule``: how the learning rate changes per step (one batch)."""

    type: str = option(
        "none",
        required=True,
        choices=SCHEDULES,
        doc="how the rate changes per step (one batch)",
    )
    decay_steps: int | None = option(
        None,
        min=1,
        used_with=("type", ("cosine", "exponential")),
        default_doc="every step of the run",
        doc="the steps the decay takes",
    )
    end_learning_rate: float | None = option(
        None,
        min=0,
        used_with=("type", ("cosine", "exponential")),
        default_doc="`0` (cosine), `learning_rate / 100` (exponential)",
        doc="the rate at the end of the decay, below `learning_rate`",
    )
    decay_rate: float | None = option(
        None,
        gt=0,
        lt=1,
        used_with=("type", ("step",)),
        default_doc="`0.5`",
        doc="the factor applied every `step_size` steps",
    )
    step_size: int | None = option(
        None,
        min=1,
        used_with=("type", ("step",)),
        default_doc="a third of the run",
        doc="steps between two decays",
    )


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """``training.early_stopping``: the arguments of ``EarlyStopping``."""

    monitor: str = option(
        None,
        default_doc='`"val_loss"` with validation data, else `"loss"`',
        doc='the figure to watch: `"loss"`, `"val_loss"` or `"val_<metric>"`',
    )
    patience: int = option(
        5, checked_by="EarlyStopping", doc="epochs without improvement before stopping (>= 1)"
    )
    min_delta: float = option(
        0.0,
        checked_by="EarlyStopping",
        doc="the smallest change that counts as an improvement (>= 0)",
    )
    mode: str = option(
        "auto",
        choices=EarlyStopping.MODES,
        doc="whether lower or higher is better; `auto`: higher for accuracy figures",
    )


@dataclass(frozen=True)
class TrainingConfig:
    """``[training]``; ``steps_per_epoch`` is derived from the data and batch size."""

    epochs: int = option(10, min=1, doc="passes over the training data")
    batch_size: int = option(32, min=1, doc="sequences per step")
    loss: str = option(
        None,
        choices=sorted(LOSSES),
        default_doc='`"cross_entropy"` for class labels, else `"mse"`',
        doc="the loss to minimise; it must suit the targets",
    )
    metrics: tuple[str, ...] = option(
        None,
        choices=sorted(METRICS),
        default_doc='`["accuracy"]` for class labels, else `[]`',
        doc="figures evaluated on the validation data; each must suit the targets",
    )
    optimizer: str = option("adam", choices=OPTIMIZERS, doc="the `mlx.optimizers` optimizer")
    learning_rate: float = option(1e-3, gt=0, doc="the (initial) learning rate")
    weight_decay: float | None = option(
        None,
        min=0,
        used_with=("optimizer", ("adamw", "sgd")),
        default_doc="the optimizer's: `0.01` (adamw), `0` (sgd)",
        doc="weight decay",
    )
    momentum: float | None = option(
        None,
        min=0,
        lt=1,
        used_with=("optimizer", ("sgd",)),
        default_doc="`0`",
        doc="SGD's momentum",
    )
    optimizer_options: dict[str, Any] = option(
        {},
        doc="more keyword arguments of the optimizer, e.g. `{ alpha = 0.9, eps = 1e-7 }` "
        "for rmsprop (Keras' defaults); checked against its signature",
    )
    schedule: ScheduleConfig = option(
        ScheduleConfig(),
        shorthand="type",
        default_doc='`"none"`',
        doc='a `[training.schedule]` table, or its type alone: `schedule = "cosine"`',
    )
    clip_norm: float | None = option(
        None, gt=0, default_doc="off", doc="clip the gradients' global norm to this value"
    )
    clip_tensor_norm: float | None = option(
        None,
        gt=0,
        default_doc="off",
        doc="clip each gradient tensor's norm to this value (Keras' `clipnorm`)",
    )
    clip_value: float | None = option(
        None,
        gt=0,
        default_doc="off",
        doc="clip each gradient element to [-clip_value, clip_value]",
    )
    l2: float | None = option(
        None,
        gt=0,
        default_doc="off",
        doc="add `l2 * sum(w ** 2)` over the `l2_params` to the training loss",
    )
    l2_params: tuple[str, ...] | None = option(
        None,
        default_doc="every trainable parameter",
        doc='globs over the parameters\' names, e.g. `["rnn_cell.*.weight"]`; each must match',
    )
    lr_decay_per_epoch: float | None = option(
        None,
        gt=0,
        max=1,
        default_doc="off",
        doc="multiply the learning rate by this factor per epoch, smoothly per step",
    )
    shuffle: bool = option(True, doc="reshuffle the training data every epoch")
    early_stopping: EarlyStoppingConfig | None = option(
        None, default_doc="off", doc="a `[training.early_stopping]` table turns it on"
    )
    memory_budget_mb: float | None = option(
        None,
        gt=0,
        default_doc="what the device offers",
        doc="MiB a training step may use; a batch that needs more is refused",
    )
    steps_per_epoch: int = derived()


@dataclass(frozen=True)
class OutputConfig:
    """``[output]``: where a run writes, and what else it writes."""

    dir: Path = option(
        None,
        required=True,
        doc="the run's folder, relative to the current one (as `--out` is)",
    )
    resume: bool = option(
        False,
        doc="continue the run in `dir`; without it, a folder that holds a run is refused",
    )
    overwrite: bool = option(
        False,
        doc="start afresh in `dir` even if it holds a run (its files are replaced)",
    )
    progress: bool = option(True, doc="a progress bar per epoch (needs `tqdm`)")
    monitor: bool = option(False, doc="record hardware figures to `monitor.jsonl`")
    export_coreml: bool = option(False, doc="also write `model.mlpackage` (needs `coremltools`)")


@dataclass(frozen=True)
class Config:
    """A validated run config: what `run_config` needs, checked."""

    seed: int = option(
        0, min=0, doc="seeds the data split and generation, the weights and the data order"
    )
    data: DataConfig = section(doc="the data: a generated task, a UEA set or an `.npz` file")
    model: ModelConfig = section(doc="the model: its class, its units or wiring, its arguments")
    training: TrainingConfig = section(
        required=False, default_doc="every key's default", doc="how to train"
    )
    output: OutputConfig = section(doc="where the run writes")
    source: str | None = derived(default=None)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as JSON-compatible values."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def summary(self) -> str:
        """A few lines saying what `run_config` would do."""
        return "\n".join(
            [
                f"data:     {describe_data(self.data)}",
                f"model:    {describe_model(self.model)}",
                f"training: {describe_training(self.training)}",
                f"output:   {describe_output(self.output)}",
            ]
        )
