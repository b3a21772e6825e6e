"""The demo job: train an NCP on irregularly sampled data, check it, export it, report it.

``ncps-mlx demo`` (or :func:`run_demo`) forecasts noisy damped oscillations observed at
irregular times (:func:`~ncps_mlx.datasets.irregular_oscillator`) half a time unit ahead,
with a CfC over an ``AutoNCP(24, 4)`` wiring fed the elapsed time of every step. The
report compares it with predicting the mean and with a linear fit that has no memory.
Everything goes to one folder:

- ``checkpoints/``: what :func:`~ncps_mlx.training.fit` writes while training;
- ``model.safetensors``: the weights of the best validation epoch (:func:`ncps_mlx.load`);
- ``model.mlpackage``: the Core ML export (step kind, float16, ``dt`` input), checked
  against the MLX model (needs coremltools: ``pip install 'ncps-mlx[export]'``);
- ``metrics.json``, ``monitor.jsonl``, ``report.md``;
- ``loss.png``, ``predictions.png``, ``wiring.png``, ``monitor.png`` (needs matplotlib:
  ``pip install 'ncps-mlx[plot]'``).

Every file is written atomically, so a failed run leaves no half-written file behind.
"""

import contextlib
import time
from io import StringIO
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.optimizers as optim

from .. import io
from ..datasets import SequenceData
from ..monitor import Monitor
from ..rnn import CfC
from ..training import History, fit
from ..training.callbacks import Callback
from .report import _introduction, _summary_lines, build_metrics, write_figures, write_report
from .task import BATCH_SIZE as BATCH_SIZE
from .task import CLIP_NORM as CLIP_NORM
from .task import DEFAULT_EPOCHS as DEFAULT_EPOCHS
from .task import EXPORT_HINT as EXPORT_HINT
from .task import FINAL_LEARNING_RATE as FINAL_LEARNING_RATE
from .task import LEARNING_RATE as LEARNING_RATE
from .task import SPLIT as SPLIT
from .task import TASK as TASK
from .task import VERIFIED_SEQUENCES as VERIFIED_SEQUENCES
from .task import Log as Log
from .task import Run as Run
from .task import build_model as build_model
from .task import evaluate as evaluate
from .task import linear_baseline as linear_baseline
from .task import make_task as make_task

# -- training -------------------------------------------------------------------------


class EpochLog(Callback):
    """One log line every few epochs, for runs without the progress bar."""

    def __init__(self, log: Log, epochs: int):
        self.log, self.every = log, max(epochs // 10, 1)

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        if epoch == 1 or epoch % self.every == 0 or epoch == trainer.epochs:
            self.log(
                f"epoch {epoch:3d}/{trainer.epochs}  loss {logs['loss']:.4f}  "
                f"val_loss {logs['val_loss']:.4f}  val_mae {logs['val_mae']:.4f}"
            )


def make_optimizer(epochs: int, batches_per_epoch: int) -> optim.Optimizer:
    """Adam with a cosine decay of the learning rate over the whole run."""
    steps = epochs * batches_per_epoch
    return optim.Adam(optim.cosine_decay(LEARNING_RATE, steps, FINAL_LEARNING_RATE))


def train(
    model: CfC,
    splits: dict[str, SequenceData],
    out: Path,
    epochs: int,
    seed: int,
    *,
    progress: bool = True,
    log: Log = print,
    resume: bool = False,
) -> tuple[History, Monitor, float]:
    """``fit`` with a monitor and checkpoints; the model ends on its best validation epoch.

    Returns the history, the monitor and the seconds ``fit`` took (its resumed part).
    """
    monitor = Monitor(model=model, seq_len=TASK["seq_len"])
    batches = -(-SPLIT["train"] // BATCH_SIZE)
    start = time.perf_counter()
    history = fit(
        model,
        splits["train"],
        splits["val"],
        loss="mse",
        optimizer=make_optimizer(epochs, batches),
        epochs=epochs,
        batch_size=BATCH_SIZE,
        metrics=["mae"],
        callbacks=[] if progress else [EpochLog(log, epochs)],
        monitor=monitor,
        checkpoint_dir=out / "checkpoints",
        resume=resume,
        progress=progress,
        clip_norm=CLIP_NORM,
        seed=seed,
    )
    seconds = time.perf_counter() - start
    io.load_weights(model, out / "checkpoints" / "best.safetensors")
    return history, monitor, seconds


# -- Core ML export -------------------------------------------------------------------


def _coremltools_importable() -> bool:
    # Its import logs compatibility notes (untested torch, no native runtime off macOS).
    with contextlib.redirect_stderr(StringIO()):
        try:
            import coremltools  # noqa: F401
        except ImportError:
            return False
    return True


def _verify(path: Path, model: CfC, test: SequenceData) -> dict[str, Any]:
    """Largest errors of the package against MLX over the first test sequences."""
    from ..export import verify

    reports = [
        verify(path, model, {"x": test.x[i : i + 1], "dt": test.timespans[i : i + 1]})
        for i in range(min(VERIFIED_SEQUENCES, len(test)))
    ]
    result = {
        "verified_sequences": len(reports),
        "steps_per_sequence": reports[0].steps,
        "max_abs_error": max(r.outputs["y"].max_abs_error for r in reports),
        "max_rel_error": max(r.outputs["y"].max_rel_error for r in reports),
    }
    for units in reports[0].coreml:  # macOS: Core ML's own prediction too
        errors = [r.coreml[units]["y"].max_abs_error for r in reports]
        result[f"coreml_{units}_max_abs_error"] = max(errors)
    return result


def export_coreml(model: CfC, test: SequenceData, out: Path, log: Log) -> dict[str, Any]:
    """Export the step package and verify it; a missing coremltools is skipped, not fatal."""
    if not _coremltools_importable():
        log(f"Core ML export skipped: coremltools is not installed ({EXPORT_HINT})")
        return {"status": "skipped", "reason": "coremltools is not installed", "hint": EXPORT_HINT}
    from ..export import to_coreml

    log("Exporting to Core ML (step kind, float16, with a dt input) ...")
    try:
        path = to_coreml(
            model, out / "model.mlpackage", kind="step", precision="float16", timespans=True
        )
        checked = _verify(path, model, test)
    except Exception as error:  # report it with the rest; the run itself succeeded
        log(f"Core ML export failed: {type(error).__name__}: {error}")
        return {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    return {
        "status": "ok",
        "path": path.name,
        "kind": "step",
        "precision": "float16",
        "inputs": ["x", "h", "dt"],
        **checked,
    }


# -- the job --------------------------------------------------------------------------


def run_demo(
    out: str | Path = "ncps_demo",
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    log: Log = print,
    *,
    export: bool = True,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Train, evaluate, save, export and report under ``out``; returns ``metrics.json``.

    Args:
        out: Output folder (created if needed).
        epochs: Training epochs.
        seed: Seeds the data, the initial weights and the data order.
        log: Where progress lines and the summary go.
        export: Export and verify a Core ML package (when coremltools is installed).
        progress: Show ``fit``'s progress bar; otherwise log a line every few epochs.
        resume: Continue the training saved in ``out/checkpoints`` (by a run stopped with
            Ctrl-C or killed) with the same ``epochs`` and ``seed``.

    Raises:
        TrainingInterrupted: Ctrl-C stopped the training; it is saved to resume.
    """
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = make_task(seed)
    mx.random.seed(seed)
    model = build_model()
    for line in _introduction(model, epochs):
        log(line)
    trained = train(model, splits, out, epochs, seed, progress=progress, log=log, resume=resume)
    run = Run(seed, epochs, start, splits, model, *trained)
    run.scores, run.prediction = evaluate(model, splits)
    io.save(
        model, out / "model.safetensors", metadata={"demo": {"seed": seed, **run.scores["test"]}}
    )
    run.monitor.save(out / "monitor.jsonl")
    run.export = (
        export_coreml(model, splits["test"], out, log)
        if export
        else {"status": "skipped", "reason": "--no-export"}
    )
    run.plots = write_figures(out, run, log)
    metrics = build_metrics(run)
    files = write_report(out, metrics)
    for line in _summary_lines(metrics):
        log(line)
    log(f"Wrote to {out}/: {', '.join(files)}")
    return metrics
