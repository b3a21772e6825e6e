"""The objects a config describes: data, model, optimizer and callbacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import mlx.optimizers as optim
import numpy as np

from .. import datasets
from ..rnn import MODELS, RNN
from ..wirings import NCP, AutoNCP, FullyConnected, Random, Wiring

if TYPE_CHECKING:  # resolved imports this module: its registries are the schema's choices
    from .resolved import Config, DataInfo, ModelConfig, ScheduleConfig, TrainingConfig

GENERATORS: dict[str, Callable[..., datasets.SequenceData]] = {
    "sine_waves": datasets.sine_waves,
    "irregular_oscillator": datasets.irregular_oscillator,
    "spring_mass_control": datasets.spring_mass_control,
    "bit_stream_xor": datasets.bit_stream_xor,
}
"""The generated tasks a config's `data.name` may name, with their generators."""
WIRINGS: dict[str, type[Wiring]] = {
    "AutoNCP": AutoNCP,
    "NCP": NCP,
    "FullyConnected": FullyConnected,
    "Random": Random,
}
"""The wiring classes a config's `model.wiring.type` may name."""
OPTIMIZER_CLASSES: dict[str, type[optim.Optimizer]] = {
    "adam": optim.Adam,
    "adamw": optim.AdamW,
    "rmsprop": optim.RMSprop,
    "sgd": optim.SGD,
}


def build_data(config: Config) -> tuple[datasets.SequenceData, datasets.SequenceData | None]:
    """The training and validation data of ``config`` (validation None when off)."""
    data = config.data
    if data.source == "uea":
        train, test = datasets.load_uea(data.name, **data.options)
        return train, (test if data.validation == "test" else None)
    if data.source == "generated":
        full = GENERATORS[data.name](**data.options)
    else:
        with np.load(data.path) as archive:
            arrays = {key: archive[key] for key in archive.files}
        if data.validation == "file":
            return _npz_split(arrays, ""), _npz_split(arrays, "val_")
        full = _npz_split(arrays, "")
    return _random_split(full, data.info.val_size, config.seed)


def _npz_split(arrays: dict[str, np.ndarray], prefix: str) -> datasets.SequenceData:
    classes = arrays.get("classes")
    return datasets.SequenceData(
        arrays[prefix + "x"],
        arrays[prefix + "y"],
        timespans=arrays.get(prefix + "timespans"),
        mask=arrays.get(prefix + "mask"),
        classes=tuple(classes.tolist()) if classes is not None else None,
    )


def _random_split(
    data: datasets.SequenceData, val_size: int, seed: int
) -> tuple[datasets.SequenceData, datasets.SequenceData | None]:
    if val_size == 0:
        return data, None
    order = np.random.default_rng(seed).permutation(len(data))
    # Sorted so each part keeps the data's own order.
    return data.subset(np.sort(order[val_size:])), data.subset(np.sort(order[:val_size]))


def build_model(config: ModelConfig, info: DataInfo) -> RNN:
    """A fresh, untrained model as ``config`` describes, for data like ``info``."""
    units: int | Wiring = config.units
    if config.wiring is not None:
        args = dict(config.wiring)
        units = WIRINGS[args.pop("type")](**args)
    return MODELS[config.type](info.input_size, units, batch_first=True, **config.kwargs)


def build_optimizer(training: TrainingConfig) -> optim.Optimizer:
    """The optimizer of ``training``, its learning rate following the schedule.

    ``weight_decay`` and ``momentum`` are passed only when set: the optimizer's own
    defaults apply otherwise. ``optimizer_options`` go in as they are.
    """
    rate = _learning_rate(training.learning_rate, training.schedule)
    given = {"weight_decay": training.weight_decay, "momentum": training.momentum}
    extra = {key: value for key, value in given.items() if value is not None}
    extra.update(training.optimizer_options)
    return OPTIMIZER_CLASSES[training.optimizer](learning_rate=rate, **extra)


def _learning_rate(initial: float, schedule: ScheduleConfig) -> float | Callable:
    if schedule.type == "cosine":
        return optim.cosine_decay(initial, schedule.decay_steps, schedule.end_learning_rate)
    if schedule.type == "exponential":
        ratio = schedule.end_learning_rate / initial
        return optim.exponential_decay(initial, ratio ** (1 / schedule.decay_steps))
    if schedule.type == "step":
        return optim.step_decay(initial, schedule.decay_rate, schedule.step_size)
    return initial


def build_callbacks(training: TrainingConfig) -> list:
    """``EarlyStopping`` when configured."""
    from ..training import EarlyStopping

    early = training.early_stopping
    if early is None:
        return []
    return [EarlyStopping(early.monitor, early.patience, early.min_delta, early.mode)]


def budget_bytes(megabytes: float | None) -> int | None:
    """``training.memory_budget_mb`` in bytes, as ``fit`` takes it."""
    return int(megabytes * 2**20) if megabytes is not None else None
