"""Callbacks: code that ``fit`` calls at the edges of batches and epochs.

Progress display and the metrics log are callbacks too, so a user's callback sees
exactly what they see. A callback with state that matters for resuming (such as early
stopping's patience) returns it from :meth:`Callback.state_dict`; ``fit`` stores it in
the checkpoint and hands it back on resume.
"""

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import atomic_write

if TYPE_CHECKING:
    from .trainer import Trainer


class Callback:
    """Base class: override the hooks you need. ``trainer.stop_training = True`` stops
    the run after the current epoch."""

    def on_train_begin(self, trainer: "Trainer") -> None:
        """Before the first epoch (also when resuming)."""

    def on_epoch_begin(self, trainer: "Trainer", epoch: int) -> None:
        """Before each epoch; ``epoch`` counts from 1."""

    def on_batch_end(self, trainer: "Trainer", batch: int, logs: dict[str, float]) -> None:
        """After each train step; ``logs`` has ``loss`` and ``samples``. A run resumed from
        a checkpoint saved midway (on Ctrl-C) starts its epoch at a later ``batch``."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        """After each epoch and its validation; ``logs`` is the epoch's history row."""

    def on_train_end(self, trainer: "Trainer") -> None:
        """After the last epoch, also when stopped early (not on an exception)."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state to restore on resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class EarlyStopping(Callback):
    """Stop when a logged metric has not improved for ``patience`` epochs.

    Args:
        monitor: A key of the epoch logs, e.g. ``"val_loss"`` or ``"val_accuracy"``.
        patience: Epochs without improvement before stopping.
        min_delta: The smallest change that counts as an improvement.
        mode: ``"min"``, ``"max"``, or ``"auto"`` (``max`` for accuracy-like names).
    """

    #: The values ``mode`` takes.
    MODES = ("auto", "min", "max")

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "auto",
    ):
        problems = self.argument_problems(patience, min_delta, mode)
        if problems:
            raise ValueError("\n".join(problems.values()))
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.monitor, self.patience, self.min_delta, self.mode = monitor, patience, min_delta, mode
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = 0
        self.wait = 0

    @classmethod
    def argument_problems(cls, patience: Any, min_delta: Any, mode: Any) -> dict[str, str]:
        """What is wrong with each argument, by name; empty when all are fine.

        The constructor raises them; a run config reports them with its other problems.
        """
        problems = {}
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            problems["patience"] = f"[EarlyStopping] patience must be an int >= 1, got {patience!r}"
        number = isinstance(min_delta, (int, float)) and not isinstance(min_delta, bool)
        if not (number and min_delta >= 0):  # a negative one counts a worse value as better
            problems["min_delta"] = (
                f"[EarlyStopping] min_delta must be a number >= 0, got {min_delta!r}"
            )
        if mode not in cls.MODES:
            choices = ", ".join(repr(choice) for choice in cls.MODES)
            problems["mode"] = f"[EarlyStopping] mode must be one of {choices}, got {mode!r}"
        return problems

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise ValueError(
                f"[EarlyStopping] {self.monitor!r} is not logged; the epoch logs have "
                f"{sorted(logs)} (val_ keys need validation data)"
            )
        value = logs[self.monitor]
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.stop_training = True
            trainer.stop_reason = (
                f"early stopping: {self.monitor} has not improved on {self.best:.6g} "
                f"(epoch {self.best_epoch}) for {self.patience} epochs"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best, best_epoch, wait = state["best"], state["best_epoch"], state["wait"]
        if not (_is_number(best) and _is_count(best_epoch) and _is_count(wait)):
            raise ValueError(
                "[EarlyStopping] a saved state has a number 'best' and ints >= 0 'best_epoch' "
                f"and 'wait', got {state!r:.200}"
            )
        self.best, self.best_epoch, self.wait = best, best_epoch, wait


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class ProgressBar(Callback):
    """A tqdm bar per epoch with the running loss and throughput."""

    def on_epoch_begin(self, trainer: "Trainer", epoch: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=trainer.batches_per_epoch,
            initial=trainer.batches_done,  # a run resumed midway through the epoch
            desc=f"epoch {epoch}/{trainer.epochs}",
            unit="batch",
            leave=True,
            dynamic_ncols=True,
        )
        self.loss_sum, self.count = 0.0, 0

    def on_batch_end(self, trainer: "Trainer", batch: int, logs: dict[str, float]) -> None:
        self.loss_sum += logs["loss"]
        self.count += 1
        rate = self.bar.format_dict["rate"] or 0.0
        self.bar.set_postfix(
            loss=f"{self.loss_sum / self.count:.4g}",
            samples_s=f"{rate * logs['samples']:.0f}",
            refresh=False,
        )
        self.bar.update(1)

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        shown = {k: f"{v:.4g}" for k, v in logs.items() if k == "loss" or k.startswith("val_")}
        self.bar.set_postfix(shown)
        self.bar.close()

    def close(self) -> None:
        """Close the epoch's bar early (Ctrl-C), so that what follows starts a line."""
        bar = getattr(self, "bar", None)
        if bar is not None:
            bar.close()


class MetricsLog:
    """The history as a JSON Lines file, one row per epoch.

    On resume the file is rewritten from the checkpoint's history, so it holds exactly
    the epochs the model went through, even if the run died between two writes.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def rewrite(self, rows: list[dict[str, float]]) -> None:
        lines = "".join(json.dumps(row) + "\n" for row in rows)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(lines))

    def append(self, row: dict[str, float]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
