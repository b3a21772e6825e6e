"""How the demo trains a model: one `fit` call with the demo's settings, for the NCP and
for the baselines alike, so the comparison differs in the model only."""

import time
from pathlib import Path
from typing import Any

import mlx.optimizers as optim

from .. import io
from ..datasets import SequenceData
from ..monitor import Monitor
from ..rnn import RNN
from ..training import History, fit
from ..training.callbacks import Callback
from .task import BATCH_SIZE, CLIP_NORM, FINAL_LEARNING_RATE, LEARNING_RATE, SPLIT, TASK, Log


class EpochLog(Callback):
    """One log line every few epochs, for runs without the progress bar."""

    def __init__(self, log: Log, epochs: int, name: str = ""):
        self.log, self.every = log, max(epochs // 10, 1)
        self.prefix = f"{name}: " if name else ""

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        """Log the epoch's losses on the first and last epoch and every tenth of the run."""
        if epoch == 1 or epoch % self.every == 0 or epoch == trainer.epochs:
            self.log(
                f"{self.prefix}epoch {epoch:3d}/{trainer.epochs}  loss {logs['loss']:.4f}  "
                f"val_loss {logs['val_loss']:.4f}  val_mae {logs['val_mae']:.4f}"
            )


def batches_per_epoch() -> int:
    """Batches in one epoch of the demo's training split (the last one may be smaller)."""
    return -(-SPLIT["train"] // BATCH_SIZE)


def make_optimizer(epochs: int, batches: int) -> optim.Optimizer:
    """Adam with a cosine decay of the learning rate over the whole run."""
    return optim.Adam(optim.cosine_decay(LEARNING_RATE, epochs * batches, FINAL_LEARNING_RATE))


def fit_best(
    model: RNN,
    splits: dict[str, SequenceData],
    checkpoint_dir: Path,
    epochs: int,
    seed: int,
    *,
    progress: bool,
    log: Log,
    resume: bool,
    monitor: Monitor | None = None,
    name: str = "",
) -> tuple[History, float]:
    """`fit` with the demo's settings; the model ends on its best validation epoch.

    Returns the history and the seconds `fit` took (its resumed part, after a resume).
    """
    start = time.perf_counter()
    history = fit(
        model,
        splits["train"],
        splits["val"],
        loss="mse",
        optimizer=make_optimizer(epochs, batches_per_epoch()),
        epochs=epochs,
        batch_size=BATCH_SIZE,
        metrics=["mae"],
        callbacks=[] if progress else [EpochLog(log, epochs, name)],
        monitor=monitor,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        progress=progress,
        clip_norm=CLIP_NORM,
        seed=seed,
    )
    seconds = time.perf_counter() - start
    io.load_weights(model, checkpoint_dir / "best.safetensors")
    return history, seconds


def train(
    model: RNN,
    splits: dict[str, SequenceData],
    out: Path,
    epochs: int,
    seed: int,
    *,
    progress: bool = True,
    log: Log = print,
    resume: bool = False,
) -> tuple[History, Monitor, float]:
    """The NCP's training, with the resource monitor, into ``out/checkpoints``.

    Returns the history, the monitor and the seconds `fit` took.
    """
    monitor = Monitor(model=model, seq_len=TASK["seq_len"])
    history, seconds = fit_best(
        model,
        splits,
        out / "checkpoints",
        epochs,
        seed,
        progress=progress,
        log=log,
        resume=resume,
        monitor=monitor,
    )
    return history, monitor, seconds
