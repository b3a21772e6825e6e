"""The loop's part of a training checkpoint: where a run is, saved and checked on resume.

Beside the model, the optimizer and MLX's random key (`checkpoint`), a training
checkpoint holds as JSON the epochs done, the history, the best epoch, the data order's
generator, the callbacks' states and, when Ctrl-C stopped the run midway, the epoch in
progress. A resumed run trusts none of it before `check_loop_state` has checked
every field.
"""

import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, see
from .callbacks import Callback
from .trainer import Trainer


@dataclass
class EpochProgress:
    """How far an epoch got. Ctrl-C saves it in the checkpoint, and the resumed run draws
    the epoch's data order again from ``data_order`` (the generator's state before the
    epoch's permutation) and goes on from ``next_batch`` with the running sums."""

    epoch: int
    data_order: dict[str, Any]
    next_batch: int = 0
    loss_sum: float = 0.0
    samples: int = 0
    seconds: float = 0.0

    def add(self, loss: float, samples: int, seconds: float) -> None:
        """Count a step, the elapsed seconds of the epoch after it."""
        self.loss_sum += loss * samples
        self.samples += samples
        self.next_batch += 1
        self.seconds = seconds

    def row(self, learning_rate: float) -> dict[str, float]:
        """The epoch's history row (before validation)."""
        return {
            "epoch": self.epoch,
            "loss": self.loss_sum / self.samples,
            "learning_rate": learning_rate,
            "seconds": self.seconds,
            "samples_per_s": self.samples / self.seconds,
        }

    def to_json(self) -> dict[str, Any]:
        """The loop state's ``epoch_in_progress`` (``data_order`` is saved beside it)."""
        return {key: value for key, value in asdict(self).items() if key != "data_order"}


def best_epoch(rows: list[dict[str, float]]) -> int:
    """The epoch of the lowest ``val_loss`` (the latest of equals; a nan never counts), 0
    without validation: the epoch ``best.safetensors`` holds."""
    best, lowest = 0, math.inf
    for row in rows:
        if "val_loss" in row and row["val_loss"] <= lowest:
            best, lowest = row["epoch"], row["val_loss"]
    return best


def loop_state(
    trainer: Trainer,
    rng: np.random.Generator,
    callbacks: list[Callback],
    progress: EpochProgress | None = None,
) -> dict[str, Any]:
    """The loop's part of a training checkpoint (JSON); ``progress`` when saved midway."""
    return {
        "epoch": trainer.epoch if progress is None else progress.epoch - 1,  # epochs done
        "history": trainer.history.rows,
        "best_epoch": trainer.best_epoch,
        "stop_training": trainer.stop_training,
        "stop_reason": trainer.stop_reason,
        # The state the next epoch's permutation is drawn from, also when that epoch is
        # the one in progress: the resumed run draws the same order again.
        "data_order": rng.bit_generator.state if progress is None else progress.data_order,
        "epoch_in_progress": progress.to_json() if progress is not None else None,
        "callbacks": [callback.state_dict() for callback in callbacks],
    }


def load_loop_state(
    state: Any, trainer: Trainer, rng: np.random.Generator, callbacks: list[Callback], path: Path
) -> EpochProgress | None:
    """Restore what `_loop_state` saved; the epoch in progress, if saved midway."""
    check_loop_state(state, trainer, len(callbacks), path)
    trainer.epoch = state["epoch"]
    trainer.history.rows[:] = state["history"]
    trainer.best_epoch = state.get("best_epoch", best_epoch(state["history"]))
    trainer.stop_training = state["stop_training"]
    trainer.stop_reason = trainer.history.stop_reason = state["stop_reason"]
    rng.bit_generator.state = state["data_order"]
    for index, (callback, saved) in enumerate(zip(callbacks, state["callbacks"], strict=True)):
        try:
            callback.load_state_dict(saved)
        except (KeyError, TypeError, ValueError) as error:
            raise _state_error(
                path, f"'callbacks'[{index}] does not fit {type(callback).__name__}: {error!r}"
            ) from None
    progress = state.get("epoch_in_progress")
    return EpochProgress(data_order=state["data_order"], **progress) if progress else None


def check_loop_state(state: Any, trainer: Trainer, callbacks: int, path: Path) -> None:
    """Refuse a loop state that fit did not write (a damaged or crafted file), naming the
    field: resuming from it would fail later with an obscure error or train on nonsense.
    ``best_epoch`` and ``epoch_in_progress`` may be missing (checkpoints of earlier
    versions)."""
    if not isinstance(state, dict):
        raise _state_error(path, f"the training state must be a JSON object, got {state!r:.80}")
    require = functools.partial(_require, state, path)
    epoch, epochs = state.get("epoch"), trainer.epochs
    done = "resume with epochs >= the epochs done"
    require(
        "epoch", _is_int(epoch) and 0 <= epoch <= epochs, f"an int from 0 to {epochs=} ({done})"
    )
    _check_history(state, path)
    best = best_epoch(state["history"])
    saved_best = state.get("best_epoch", best)
    require("best_epoch", _is_int(saved_best) and saved_best == best, f"{best} (the history's)")
    require("stop_training", isinstance(state.get("stop_training"), bool), "true or false")
    require("stop_reason", isinstance(state.get("stop_reason"), str), "a string")
    require("data_order", _is_numpy_state(state.get("data_order")), "a numpy PCG64 state")
    progress = state.get("epoch_in_progress")
    require(
        "epoch_in_progress",
        progress is None or _is_progress(progress, epoch, trainer),
        f"null or {{'epoch': {epoch + 1} (<= {epochs=}), 'next_batch': 1 to "
        f"{trainer.batches_per_epoch}, 'loss_sum': number, 'samples': int, 'seconds': number}}",
    )
    saved = state.get("callbacks")
    valid = isinstance(saved, list) and all(isinstance(item, dict) for item in saved)
    require("callbacks", valid, "a list of objects, one per callback")
    if len(saved) != callbacks:
        raise _state_error(
            path,
            f"it was written with {len(saved)} callbacks, this run has {callbacks}: resume "
            "with the same callbacks",
        )


def _check_history(state: dict, path: Path) -> None:
    """One row per epoch done (``state["epoch"]``, checked), numbers by name."""
    history, epoch = state.get("history"), state["epoch"]
    rows = isinstance(history, list) and len(history) == epoch
    _require(state, path, "history", rows, f"a list of {epoch} rows, one per epoch done")
    for number, row in enumerate(history, 1):
        if not _is_row(row, number):
            expected = f"{{'epoch': {number}, 'loss': number, ...}}"
            raise _state_error(path, f"'history'[{number - 1}] must be {expected}, got {row!r:.80}")


def _require(state: dict, path: Path, key: str, valid: bool, expected: str) -> None:
    if not valid:
        got = repr(state[key])[:80] if key in state else "nothing"
        raise _state_error(path, f"{key!r} must be {expected}, got {got}")


def _state_error(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{str(path)!r}: training state: {problem}\n{see('resume')}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A float (nan and inf too: a history row keeps what validation gave), or an int that a
    float holds exactly."""
    return isinstance(value, float) or (_is_int(value) and abs(value) <= 2**53)


def _is_row(row: Any, epoch: int) -> bool:
    return (
        isinstance(row, dict)
        and _is_int(row.get("epoch"))
        and row["epoch"] == epoch
        and all(isinstance(key, str) and _is_number(value) for key, value in row.items())
    )


def _is_numpy_state(value: Any) -> bool:
    try:
        np.random.default_rng().bit_generator.state = value
    except (TypeError, ValueError, KeyError, OverflowError):
        return False
    return True


def _is_progress(value: Any, epoch: int, trainer: Trainer) -> bool:
    keys = {"epoch", "next_batch", "loss_sum", "samples", "seconds"}
    if not (isinstance(value, dict) and set(value) == keys):
        return False
    counts = all(_is_int(value[key]) for key in ("epoch", "next_batch", "samples"))
    sums = all(_is_number(value[key]) and math.isfinite(value[key]) for key in keys)
    return (
        counts
        and sums
        and value["epoch"] == epoch + 1 <= trainer.epochs
        and 1 <= value["next_batch"] <= trainer.batches_per_epoch
        and value["samples"] >= value["next_batch"]  # every batch has a sample at least
        and value["seconds"] >= 0
    )
