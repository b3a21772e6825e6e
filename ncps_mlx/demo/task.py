"""The demo's task, model, settings and evaluation."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np

from .. import datasets
from ..datasets import SequenceData
from ..monitor import Monitor
from ..rnn import RNN, CfC
from ..training import History
from ..wirings import AutoNCP

DEFAULT_EPOCHS = 60
#: Arguments of `datasets.irregular_oscillator` (the seed comes apart).
TASK = {"num_sequences": 576, "seq_len": 64, "horizon": 0.5, "noise": 0.1, "mean_gap": 0.3}
#: Consecutive shares of the generated sequences, in this order.
SPLIT = {"train": 448, "val": 64, "test": 64}
UNITS, MOTOR_NEURONS = 24, 4
LEARNING_RATE, FINAL_LEARNING_RATE, BATCH_SIZE, CLIP_NORM = 0.01, 5e-4, 32, 1.0
PLOTTED_SEQUENCES = 3
VERIFIED_SEQUENCES = 4
EXPORT_HINT = "pip install 'ncps-mlx[export]'"
PLOT_HINT = "pip install 'ncps-mlx[plot]'"
FIGURES = ("loss.png", "predictions.png", "wiring.png", "monitor.png")
#: The folder of the baselines' checkpoints, one subfolder each.
BASELINES_DIR = "baselines"

Log = Callable[[str], Any]


@dataclass
class Run:
    """What one demo run produced, for the report."""

    seed: int
    epochs: int
    start: float
    splits: dict[str, SequenceData]
    model: CfC
    history: History
    monitor: Monitor
    train_seconds: float
    resumed: bool = False
    scores: dict[str, Any] = field(default_factory=dict)
    prediction: np.ndarray | None = None
    export: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    #: The trained recurrent baselines (``baselines.Baseline``), in the report's order.
    baselines: list[Any] = field(default_factory=list)


# -- task and model -------------------------------------------------------------------


def make_task(seed: int = 0) -> dict[str, SequenceData]:
    """The demo's train, validation and test splits of one generated set."""
    data = datasets.irregular_oscillator(seed=seed, **TASK)
    splits, start = {}, 0
    for name, size in SPLIT.items():
        splits[name] = data.subset(slice(start, start + size))
        start += size
    return splits


def build_model() -> CfC:
    """CfC over ``AutoNCP(24, 4)``; a linear readout maps the 4 motor neurons to 1 value."""
    return CfC(1, AutoNCP(UNITS, MOTOR_NEURONS), proj_size=1)


def predict(model: RNN, data: SequenceData) -> np.ndarray:
    """The model's per-step outputs (N, T, 1) on ``data``, in evaluation mode."""
    model.eval()
    timespans = None if data.timespans is None else mx.array(data.timespans)
    y, _ = model(mx.array(data.x), timespans=timespans)
    return np.array(y)


def _errors(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    error = np.asarray(prediction, np.float64) - np.asarray(target, np.float64)
    return {"mse": float(np.mean(error**2)), "mae": float(np.mean(np.abs(error)))}


def linear_baseline(train: SequenceData, test: SequenceData) -> np.ndarray:
    """Least squares on the current sample and its timespan alone: a model with no memory."""

    def features(data: SequenceData) -> np.ndarray:
        columns = [data.x.reshape(-1, data.x.shape[-1]), data.timespans.reshape(-1, 1)]
        return np.concatenate([*columns, np.ones((columns[1].shape[0], 1))], axis=1)

    weights, *_ = np.linalg.lstsq(features(train), train.y.reshape(-1), rcond=None)
    return (features(test) @ weights).reshape(test.y.shape)


def score(model: RNN, splits: dict[str, SequenceData]) -> tuple[dict, np.ndarray]:
    """MSE/MAE on every split and R² on the test split; the test predictions."""
    predictions = {name: predict(model, data) for name, data in splits.items()}
    scores = {name: _errors(predictions[name], data.y) for name, data in splits.items()}
    test = splits["test"]
    scores["test"]["r2"] = 1.0 - scores["test"]["mse"] / float(np.var(test.y))
    return scores, predictions["test"]


def evaluate(model: CfC, splits: dict[str, SequenceData]) -> tuple[dict, np.ndarray]:
    """MSE/MAE on every split, R² and the trivial baselines on the test split; the test
    predictions."""
    scores, prediction = score(model, splits)
    train, test = splits["train"], splits["test"]
    mean = np.full_like(test.y, train.y.mean())
    linear = linear_baseline(train, test)
    scores["test"]["baselines"] = {
        "train_mean": {**_errors(mean, test.y), "parameters": 1},
        # A weight for each feature and for the timespan, and a bias.
        "linear_no_memory": {**_errors(linear, test.y), "parameters": train.x.shape[-1] + 2},
    }
    return scores, prediction
