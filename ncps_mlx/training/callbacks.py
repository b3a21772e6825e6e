"""Callbacks: code that ``fit`` calls at the edges of batches and epochs.

Progress display and the metrics log are callbacks too, so a user's callback sees
exactly what they see. A callback with state that matters for resuming (such as early
stopping's patience) returns it from [`Callback.state_dict`][ncps_mlx.training.Callback.state_dict];
``fit`` stores it in the checkpoint and hands it back on resume.
"""

import csv
import functools
import io
import itertools
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .._files import atomic_write, write_error
from ..errors import see

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
        """Restore what [`state_dict`][ncps_mlx.training.Callback.state_dict] returned."""


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
        """Whether `value` beats the best so far by more than `min_delta`, in `mode`'s
        direction."""
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        """Record an improvement, or count one more epoch without and stop the run (with
        `trainer.stop_reason`) once `patience` have passed.

        Raises:
            ValueError: The monitored key is not in the epoch's logs.
        """
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
        """The best value, its epoch and the epochs waited since, to resume with."""
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what [`state_dict`][ncps_mlx.training.Callback.state_dict] returned.

        Raises:
            ValueError: `state` lacks a number `best` or ints >= 0 `best_epoch` and `wait`.
        """
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


#: What the bar says while the first step of a run compiles the train step.
COMPILING_TRAIN_STEP = "compiling the train step..."
#: What it says while the first validation of a run compiles the evaluation step.
COMPILING_VALIDATION = "compiling the validation step..."
#: What it says while a later validation runs.
VALIDATING = "validating..."
#: What it says after the last step when it does not know whether a validation follows.
FINISHING_EPOCH = "finishing the epoch..."
#: The narrowest bar drawn; a line with less room goes without one.
MIN_BAR = 8
#: History keys the epoch line shows apart from the figures, or not at all.
_NOT_FIGURES = ("epoch", "learning_rate", "seconds", "samples_per_s")


def terminal_width(stream: Any = None) -> int:
    """Columns of the terminal a line on ``stream`` goes to: ``COLUMNS`` when set (as
    `shutil.get_terminal_size` reads it), else the width of the terminal ``stream``
    is, else that of standard output, else 80."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        width = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # not a terminal, or not a file at all
        width = 0
    return width if width > 0 else shutil.get_terminal_size().columns


def progress_line(
    width: int,
    head: str,
    fraction: float,
    count: str,
    timing: str,
    status: Sequence[str],
    ascii: bool = False,
) -> str:
    """A progress line of at most ``width`` characters: ``head``, the percentage, a bar,
    ``count``, ``timing`` and the ``status`` items, most important first.

    What does not fit goes: first ``timing``, then the status items after the first (from
    the last), then ``count``, then the bar. Only a terminal narrower than ``head``, the
    percentage and the first status item together cuts the line.
    """
    Bar = _tqdm().Bar
    percent = f"{100 * fraction:3.0f}%"
    line = ""
    for with_bar, shown_count, shown_timing, items in _layouts(count, timing, status):
        right = " ".join(part for part in (shown_count, shown_timing, ", ".join(items)) if part)
        if with_bar:
            fixed = f"{head} {percent}||" + (f" {right}" if right else "")
            room = width - len(fixed)
            if room >= MIN_BAR:
                bar = format(Bar(fraction, room, charset=Bar.ASCII if ascii else Bar.UTF), "")
                return f"{head} {percent}|{bar}|" + (f" {right}" if right else "")
        else:
            line = " ".join(part for part in (head, percent, right) if part)
            if len(line) <= width:
                return line
    return line[:width]


def _layouts(count: str, timing: str, status: Sequence[str]) -> Iterator[tuple]:
    """``(bar, count, timing, status items)`` from the fullest line to the barest."""
    yield True, count, timing, status
    for kept in range(len(status), 0, -1):
        yield True, count, "", status[:kept]
    yield True, "", "", status[:1]
    yield False, "", "", status[:1]


def epoch_lines(width: int, head: str, figures: Sequence[str], extras: Sequence[str]) -> list[str]:
    """``head`` and every one of ``figures`` on lines of at most ``width`` characters,
    wrapped between figures onto lines indented past ``head`` (cut only where a single
    figure is wider than a line), then those of ``extras`` that fit on the last line."""
    indent = " " * (len(head) + 2)
    if any(len(indent) + len(figure) > width for figure in figures):
        indent = "  "
    lines = [head]
    for figure in figures:
        if len(lines[-1]) + 2 + len(figure) <= width:
            lines[-1] += "  " + figure
        else:
            lines.append(indent + figure)
    for extra in extras:
        if len(lines[-1]) + 2 + len(extra) <= width:
            lines[-1] += "  " + extra
    return [line[:width] for line in lines]


def _figure(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _epoch_figures(logs: dict[str, float]) -> tuple[list[str], list[str]]:
    """What the line at an epoch's end shows: every figure of its history row, the
    learning rate last; and, where room is left, its seconds and throughput."""
    figures = [f"{key} {_figure(value)}" for key, value in logs.items() if key not in _NOT_FIGURES]
    if "learning_rate" in logs:
        figures.append(f"lr {logs['learning_rate']:.3g}")
    extras = []
    if "seconds" in logs:
        extras.append(_duration(logs["seconds"]))
    if logs.get("samples_per_s"):
        extras.append(f"{_per_second(logs['samples_per_s'])} samples/s")
    return figures, extras


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return _tqdm().tqdm.format_interval(seconds)


def _per_second(rate: float) -> str:
    return _tqdm().tqdm.format_sizeof(rate)


@functools.cache
def _tqdm() -> Any:
    """tqdm's module, imported once, on first use: a bar drawn while the interpreter shuts
    down (closed by the garbage collector) could not import it then."""
    import tqdm.std

    return tqdm.std


def _validates(rows: list[dict[str, float]]) -> bool | None:
    """Whether the run validates, as its history tells; None before its first epoch."""
    if not rows:
        return None
    return any(key.startswith("val_") for key in rows[-1])


@functools.cache
def _drawn_bar_class() -> type:
    """A tqdm bar whose line its `ProgressBar` draws, at the width of the moment."""

    class DrawnBar(_tqdm().tqdm):
        def __init__(self, progress: "ProgressBar", **kwargs: Any):
            self.progress = progress  # before tqdm's first draw, inside its __init__
            super().__init__(**kwargs)

        def __str__(self) -> str:
            return self.progress.draw(self)

    return DrawnBar


class ProgressBar(Callback):
    """The progress of ``fit``: while an epoch trains, a bar with the running loss and the
    throughput; when it ends, a line with every figure of its history row (``loss``, each
    ``val_*``, the learning rate) and, where room is left, its seconds and throughput.

    Both fit the terminal's width, read again at every draw: the bar drops its least useful
    parts when room lacks and the epoch's line wraps between figures, so no figure is cut.
    The first step of a run compiles the train step and the first validation the
    evaluation step, which can take a while: the bar says so meanwhile. The throughput
    appears once it is measured, leaving out the step that compiled.

    Args:
        validation: Whether each epoch ends with a validation, which the bar then announces;
            None (the default) learns it from the history, after the first epoch.
        stream: Where to draw; standard error (at each epoch's start) by default.
    """

    def __init__(self, validation: bool | None = None, stream: TextIO | None = None):
        self.validation, self.stream = validation, stream
        self.bar: Any = None
        self.steps = 0  # train steps of this run: the first compiles the train step
        self.validated = False  # a validation of this run compiled the evaluation step

    def on_train_begin(self, trainer: "Trainer") -> None:
        """Start counting afresh: the run's first step and validation compile again."""
        self.steps, self.validated = 0, False

    def on_epoch_begin(self, trainer: "Trainer", epoch: int) -> None:
        """Open the epoch's bar, at the batch a resumed run starts from."""
        self.out = self.stream if self.stream is not None else sys.stderr
        self.head = f"epoch {epoch}/{trainer.epochs}"
        self.validates = self.validation
        if self.validates is None:
            self.validates = _validates(trainer.history.rows)
        self.loss_sum, self.losses = 0.0, 0
        self.timed_steps, self.timed_samples, self.timed_seconds = 0, 0, 0.0
        # The step that compiles is not timed: the clock starts when it returns.
        self.clock = time.perf_counter() if self.steps else None
        self.status = [] if self.steps else [COMPILING_TRAIN_STEP]
        self.bar = _drawn_bar_class()(
            self,
            total=trainer.batches_per_epoch,
            initial=trainer.batches_done,  # a run resumed midway through the epoch
            file=self.out,
            leave=True,
        )

    def on_batch_end(self, trainer: "Trainer", batch: int, logs: dict[str, float]) -> None:
        """Advance the bar and update its running loss, throughput and what it waits for."""
        now = time.perf_counter()
        self.steps += 1
        self.loss_sum += logs["loss"]
        self.losses += 1
        if self.clock is None:
            self.clock = now
        else:
            self.timed_steps += 1
            self.timed_samples += logs["samples"]
            self.timed_seconds = now - self.clock
        waiting = self.awaited(trainer)
        self.status = [f"loss {self.loss_sum / self.losses:.4g}", *waiting]
        if self.timed_seconds > 0:
            self.status.append(f"{_per_second(self.timed_samples / self.timed_seconds)} samples/s")
        self.bar.update(1)  # draws at most every 0.1 s
        if waiting:
            self.bar.refresh()  # what follows may take long: say it now

    def awaited(self, trainer: "Trainer") -> list[str]:
        """What the bar waits for after this step: after the epoch's last, its validation."""
        if trainer.batches_done < trainer.batches_per_epoch or self.validates is False:
            return []
        if self.validates is None:
            return [FINISHING_EPOCH]
        return [VALIDATING if self.validated else COMPILING_VALIDATION]

    def draw(self, bar: Any) -> str:
        """The line of ``bar`` (the epoch's tqdm bar) at the terminal's present width."""
        tqdm = _tqdm().tqdm
        done, total = bar.n, bar.total
        remaining = "?"
        if self.timed_steps and self.timed_seconds > 0:
            steps_per_s = self.timed_steps / self.timed_seconds
            remaining = tqdm.format_interval((total - done) / steps_per_s)
        elapsed = tqdm.format_interval(bar.format_dict["elapsed"])
        return progress_line(
            terminal_width(self.out) - 1,  # the last column would wrap on some terminals
            self.head,
            done / total if total else 1.0,
            f"{done}/{total}",
            f"[{elapsed}<{remaining}]",
            self.status,
            ascii=bar.ascii is True,
        )

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        """Replace the bar with the epoch's line of figures."""
        self.validated = self.validated or any(key.startswith("val_") for key in logs)
        figures, extras = _epoch_figures(logs)
        lines = epoch_lines(terminal_width(self.out) - 1, self.head, figures, extras)
        self.bar.leave = False  # the epoch's line takes the bar's place
        self.close()
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()

    def close(self) -> None:
        """Close the epoch's bar early (Ctrl-C), so that what follows starts a line."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricsLog:
    """The history as a JSON Lines file, one row per epoch.

    On resume the file is rewritten from the checkpoint's history, so it holds exactly
    the epochs the model went through, even if the run died between two writes.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def rewrite(self, rows: list[dict[str, float]]) -> None:
        """Replace the file with `rows`, whole or not at all."""
        lines = "".join(json.dumps(row) + "\n" for row in rows)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(lines))

    def append(self, row: dict[str, float]) -> None:
        """Add `row` as one line at the end of the file."""
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


class CSVLogger(Callback):
    """The history as a CSV file: a header, then a row per epoch, written as each ends.

    The columns are the history's keys (``epoch``, ``loss``, ``learning_rate``, ``seconds``,
    ``samples_per_s``, then each ``val_*``) in the order they first appear; a key that appears
    later (a callback's own figure) adds a column, the earlier rows leaving it empty. Rows
    are appended; a new column rewrites the file whole. At the start of a run the file is
    rewritten from the history ``fit`` starts from: empty for a new run, the checkpoint's
    epochs on resume, so it holds exactly the epochs the model went through, even after a
    kill between a row and the checkpoint. Only the main process writes.

    Args:
        path: The CSV file; its folder is created if missing.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.columns: list[str] = []
        self.rows: list[dict[str, float]] = []
        self.writes = False

    def on_train_begin(self, trainer: "Trainer") -> None:
        """Rewrite the file from the history the run starts from (on the main process)."""
        self.writes = trainer.is_main
        if self.writes:
            self.rows = [dict(row) for row in trainer.history.rows]
            self.columns = list(dict.fromkeys(key for row in self.rows for key in row))
            self.rewrite()

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        """Append the epoch's row, or rewrite the file when the row adds a column."""
        if not self.writes:
            return
        row = dict(logs)
        self.rows.append(row)
        new = [key for key in row if key not in self.columns]
        if new:
            self.columns += new
            self.rewrite()
        else:
            self.append(row)

    def rewrite(self) -> None:
        """Write the header and every row, whole or not at all."""
        text = _csv_text(self.columns, self.rows, header=True) if self.columns else ""
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))

    def append(self, row: dict[str, float]) -> None:
        """Add ``row`` at the end of the file, flushed when this returns."""
        try:
            with self.path.open("a") as handle:
                handle.write(_csv_text(self.columns, [row], header=False))
        except OSError as error:
            raise write_error(self.path, error, None) from error


def _csv_text(columns: list[str], rows: list[dict[str, float]], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class TensorBoardLogger(Callback):
    """Scalars for TensorBoard in ``log_dir``: each epoch's figures (``loss``, each
    ``val_*``, ``learning_rate``, ``seconds``, ``samples_per_s``) under their history
    names at step = the epoch, and with ``step_loss=True`` each train step's loss as
    ``step_loss`` at step = the steps done since the run began.

    A resumed run adds an event file to the same ``log_dir`` and goes on from the epoch
    and step it resumes at; after a kill, the steps it does again repeat the values of the
    first try (a resumed run follows the same trajectory). Only the main process writes.
    Needs tensorboardX (``pip install 'ncps-mlx[tensorboard]'``); viewing the files needs
    TensorBoard itself: ``tensorboard --logdir <log_dir>``.

    Args:
        log_dir: The folder of the event files; created if missing.
        step_loss: Also log the loss of every train step.

    Raises:
        ImportError: tensorboardX is not installed, before any training.
    """

    def __init__(self, log_dir: str | os.PathLike, *, step_loss: bool = False):
        if not isinstance(step_loss, bool):
            raise ValueError(
                f"[TensorBoardLogger] step_loss must be True or False, got {step_loss!r}"
            )
        self.summary_writer = _summary_writer_class()
        self.log_dir = Path(log_dir)
        self.step_loss = step_loss
        self.writer: Any = None

    def on_train_begin(self, trainer: "Trainer") -> None:
        """Open a new event file in `log_dir` (on the main process)."""
        if trainer.is_main and self.writer is None:
            # An event file is named after the second it was opened in, and opening one
            # empties it: a run resumed within the same second would erase the first's.
            suffix = f".{os.getpid()}.{next(_EVENT_FILES)}"
            self.writer = self.summary_writer(str(self.log_dir), filename_suffix=suffix)

    def on_batch_end(self, trainer: "Trainer", batch: int, logs: dict[str, float]) -> None:
        """Log the step's loss as `step_loss`, with `step_loss=True`."""
        if self.writer is not None and self.step_loss:
            step = (trainer.epoch - 1) * trainer.batches_per_epoch + batch + 1
            self.writer.add_scalar("step_loss", logs["loss"], step)

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict[str, float]) -> None:
        """Log each figure of the epoch's row at step = the epoch, and flush."""
        if self.writer is None:
            return
        for key, value in logs.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def on_train_end(self, trainer: "Trainer") -> None:
        """Close the event file."""
        self.close()

    def close(self) -> None:
        """Write what is pending and close the event file (``fit`` does it at its end)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


#: Numbers the event files this process opens (see TensorBoardLogger.on_train_begin).
_EVENT_FILES = itertools.count(1)


def _summary_writer_class() -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError as error:
        raise ImportError(
            "[TensorBoardLogger] needs the optional dependency tensorboardX: "
            f"pip install 'ncps-mlx[tensorboard]'\n{see('missing-extra')}"
        ) from error
    return SummaryWriter
