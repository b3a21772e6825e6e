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
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

from . import datasets, io
from .datasets import SequenceData
from .monitor import Monitor
from .monitor.traffic import parameter_count
from .rnn import CfC
from .training import History, fit
from .training.callbacks import Callback
from .wirings import AutoNCP

DEFAULT_EPOCHS = 60
#: Arguments of :func:`~ncps_mlx.datasets.irregular_oscillator` (the seed comes apart).
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
    scores: dict[str, Any] = field(default_factory=dict)
    prediction: np.ndarray | None = None
    export: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)


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


def predict(model: CfC, data: SequenceData) -> np.ndarray:
    """The model's per-step outputs (N, T, 1) on ``data``, in evaluation mode."""
    model.eval()
    y, _ = model(mx.array(data.x), timespans=mx.array(data.timespans))
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


def evaluate(model: CfC, splits: dict[str, SequenceData]) -> tuple[dict, np.ndarray]:
    """MSE/MAE on every split, baselines and R² on the test split; the test predictions."""
    predictions = {name: predict(model, data) for name, data in splits.items()}
    scores = {name: _errors(predictions[name], data.y) for name, data in splits.items()}
    train, test = splits["train"], splits["test"]
    mean = np.full_like(test.y, train.y.mean())
    scores["test"]["r2"] = 1.0 - scores["test"]["mse"] / float(np.var(test.y))
    scores["test"]["baselines"] = {
        "train_mean": _errors(mean, test.y),
        "linear_no_memory": _errors(linear_baseline(train, test), test.y),
    }
    return scores, predictions["test"]


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
) -> tuple[History, Monitor, float]:
    """``fit`` with a monitor and checkpoints; the model ends on its best validation epoch.

    Returns the history, the monitor and the seconds ``fit`` took.
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
    from .export import verify

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
    from .export import to_coreml

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


# -- figures --------------------------------------------------------------------------


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save_figure(plt: Any, figure: Any, path: Path) -> None:
    figure.tight_layout()
    io.atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"), suffix=".png")
    plt.close(figure)


def plot_losses(plt: Any, history: History, scores: dict, path: Path) -> None:
    epochs = history["epoch"]
    figure, axis = plt.subplots(figsize=(7, 4.2))
    axis.semilogy(epochs, history["loss"], label="train MSE (running, per epoch)")
    axis.semilogy(epochs, history["val_loss"], label="validation MSE")
    baselines = scores["test"]["baselines"]
    for (name, label), style in zip(
        [
            ("train_mean", "predict the mean (test)"),
            ("linear_no_memory", "linear, no memory (test)"),
        ],
        ["--", ":"],
        strict=True,
    ):
        axis.axhline(baselines[name]["mse"], color="gray", linestyle=style, label=label)
    best = int(np.argmin(history["val_loss"]))
    axis.plot(
        epochs[best],
        history["val_loss"][best],
        "o",
        color="tab:orange",
        label="kept (best validation)",
    )
    axis.set(xlabel="epoch", ylabel="MSE", title="Training: CfC + AutoNCP(24, 4)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize="small")
    _save_figure(plt, figure, path)


def plot_predictions(plt: Any, test: SequenceData, prediction: np.ndarray, path: Path) -> None:
    count = min(PLOTTED_SEQUENCES, len(test))
    figure, axes = plt.subplots(count, 1, figsize=(9, 2.6 * count), sharex=True, squeeze=False)
    horizon = TASK["horizon"]
    for i, axis in enumerate(axes[:, 0]):
        t = np.cumsum(test.timespans[i].astype(np.float64))
        axis.plot(t, test.x[i, :, 0], ".", color="gray", label="observation s(t) + noise")
        axis.plot(t, test.y[i, :, 0], "-", color="black", label=f"target s(t + {horizon:g})")
        axis.plot(t, prediction[i, :, 0], "-", color="tab:orange", label="NCP prediction")
        mse = float(np.mean((prediction[i] - test.y[i]) ** 2))
        axis.set_title(f"test sequence {i}: MSE {mse:.4f}", loc="right", fontsize=10)
        axis.grid(True, alpha=0.3)
    axes[0, 0].legend(
        fontsize="small", loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, frameon=False
    )
    axes[-1, 0].set_xlabel("time (irregular samples)")
    _save_figure(plt, figure, path)


def plot_wiring(plt: Any, model: CfC, path: Path) -> None:
    wiring = model.wiring
    figure, axis = plt.subplots(figsize=(8, 5.5))
    wiring.draw(axis, draw_labels=True)
    axis.set_title(
        f"AutoNCP({UNITS}, {MOTOR_NEURONS}): {wiring.sensory_synapse_count} sensory and "
        f"{wiring.synapse_count} neuron synapses"
    )
    _save_figure(plt, figure, path)


def write_figures(out: Path, run: "Run", log: Log) -> list[str]:
    """The four PNGs, or none (with a message) without matplotlib."""
    plt = _pyplot()
    if plt is None:
        log(f"Plots skipped: matplotlib is not installed ({PLOT_HINT})")
        return []
    plot_losses(plt, run.history, run.scores, out / "loss.png")
    plot_predictions(plt, run.splits["test"], run.prediction, out / "predictions.png")
    plot_wiring(plt, run.model, out / "wiring.png")
    run.monitor.plot(out / "monitor.png")
    return list(FIGURES)


# -- report ---------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> Path:
    return io.atomic_write(path, lambda tmp: Path(tmp).write_text(text), suffix=path.suffix)


def _describe_model(model: CfC) -> dict[str, Any]:
    wiring = model.wiring
    return {
        "description": f"CfC(1, AutoNCP({UNITS}, {MOTOR_NEURONS}), proj_size=1)",
        "parameters": parameter_count(model),
        "neurons": {k: v for k, v in wiring.neuron_counts.items() if k != "sensory"},
        "synapses": wiring.synapse_count,
        "sensory_synapses": wiring.sensory_synapse_count,
        "config": model.get_config(),
    }


def _training_record(history: History, epochs: int, seconds: float) -> dict[str, Any]:
    rows = history.rows
    best = min(rows, key=lambda row: row["val_loss"])
    train_seconds = sum(row["seconds"] for row in rows)
    return {
        "epochs": epochs,
        "epochs_run": len(rows),
        "best_epoch": best["epoch"],
        "batch_size": BATCH_SIZE,
        "optimizer": f"Adam, cosine decay {LEARNING_RATE:g} -> {FINAL_LEARNING_RATE:g}",
        "clip_norm": CLIP_NORM,
        "device": str(mx.default_device()),
        "seconds": seconds,
        "epoch_seconds": train_seconds,
        "samples_per_s": SPLIT["train"] * len(rows) / train_seconds,
        "history": rows,
    }


def build_metrics(run: "Run") -> dict[str, Any]:
    """The record saved as ``metrics.json``."""
    return {
        "task": {"name": "irregular_oscillator", "seed": run.seed, **TASK, "split": SPLIT},
        "model": _describe_model(run.model),
        "training": _training_record(run.history, run.epochs, run.train_seconds),
        "train": run.scores["train"],
        "val": run.scores["val"],
        "test": run.scores["test"],
        "export": run.export,
        "monitor": dict(run.monitor.summary()),
        "plots": run.plots,
        "seconds": time.perf_counter() - run.start,
    }


def _report_markdown(metrics: dict[str, Any]) -> str:
    test, base = metrics["test"], metrics["test"]["baselines"]
    export = metrics["export"]
    exported = (
        f"`model.mlpackage` (step kind, float16, dt input): max |error| against MLX "
        f"{export['max_abs_error']:.2e} over {export['verified_sequences']} test sequences"
        if export["status"] == "ok"
        else f"not exported ({export.get('reason') or export.get('error')})"
    )
    lines = [
        "# ncps_mlx demo",
        "",
        f"Forecast a noisy, irregularly sampled damped oscillation {TASK['horizon']:g} time "
        f"units ahead with {metrics['model']['description']} "
        f"({metrics['model']['parameters']} parameters).",
        "",
        "| test figure | NCP | predict the mean | linear, no memory |",
        "|---|---|---|---|",
        f"| MSE | {test['mse']:.4f} | {base['train_mean']['mse']:.4f} | "
        f"{base['linear_no_memory']['mse']:.4f} |",
        f"| MAE | {test['mae']:.4f} | {base['train_mean']['mae']:.4f} | "
        f"{base['linear_no_memory']['mae']:.4f} |",
        "",
        f"R² {test['r2']:.3f}; {metrics['training']['epochs_run']} epochs in "
        f"{metrics['training']['seconds']:.1f} s on {metrics['training']['device']}.",
        "",
        f"Core ML: {exported}.",
        "",
    ]
    lines += [f"![{name[:-4]}]({name})" for name in metrics["plots"]]
    return "\n".join(lines) + "\n"


def _summary_lines(metrics: dict[str, Any]) -> list[str]:
    test, base = metrics["test"], metrics["test"]["baselines"]
    training = metrics["training"]
    export = metrics["export"]
    lines = [
        "Results (weights of the best validation epoch, "
        f"{training['best_epoch']}/{training['epochs_run']}):",
        f"  MSE   train {metrics['train']['mse']:.4f}  val {metrics['val']['mse']:.4f}  "
        f"test {test['mse']:.4f}  (R² {test['r2']:.3f})",
        f"  MAE   train {metrics['train']['mae']:.4f}  val {metrics['val']['mae']:.4f}  "
        f"test {test['mae']:.4f}",
        f"  test baselines: predict the mean MSE {base['train_mean']['mse']:.4f}, "
        f"linear without memory MSE {base['linear_no_memory']['mse']:.4f}",
        f"  training {training['seconds']:.1f} s, {training['samples_per_s']:.0f} sequences/s",
    ]
    if export["status"] == "ok":
        lines.append(
            f"  Core ML package verified: max |error| {export['max_abs_error']:.2e} "
            f"over {export['verified_sequences']} test sequences (numpy evaluator)"
        )
    return lines


def write_report(out: Path, metrics: dict[str, Any]) -> list[str]:
    """``metrics.json`` and ``report.md``; returns the files of the whole run."""
    _write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    _write_text(out / "report.md", _report_markdown(metrics))
    files = ["model.safetensors", "metrics.json", "report.md", "monitor.jsonl", "checkpoints/"]
    if metrics["export"]["status"] == "ok":
        files.insert(1, "model.mlpackage")
    return files + metrics["plots"]


# -- the job --------------------------------------------------------------------------


def _introduction(model: CfC, epochs: int) -> list[str]:
    counts = model.wiring.neuron_counts
    return [
        f"Task: forecast noisy, irregularly sampled damped oscillations {TASK['horizon']:g} "
        "time units ahead (datasets.irregular_oscillator)",
        f"  {SPLIT['train']} train / {SPLIT['val']} validation / {SPLIT['test']} test "
        f"sequences of {TASK['seq_len']} samples, with their timespans",
        f"Model: CfC with an AutoNCP({UNITS}, {MOTOR_NEURONS}) wiring ({counts['inter']} inter, "
        f"{counts['command']} command, {counts['motor']} motor neurons) and a linear readout, "
        f"{parameter_count(model)} parameters",
        f"Training: {epochs} epochs of {-(-SPLIT['train'] // BATCH_SIZE)} batches of "
        f"{BATCH_SIZE}, Adam {LEARNING_RATE:g} with cosine decay, on {mx.default_device()}",
    ]


def run_demo(
    out: str | Path = "ncps_demo",
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    log: Log = print,
    *,
    export: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, evaluate, save, export and report under ``out``; returns ``metrics.json``.

    Args:
        out: Output folder (created if needed).
        epochs: Training epochs.
        seed: Seeds the data, the initial weights and the data order.
        log: Where progress lines and the summary go.
        export: Export and verify a Core ML package (when coremltools is installed).
        progress: Show ``fit``'s progress bar; otherwise log a line every few epochs.
    """
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = make_task(seed)
    mx.random.seed(seed)
    model = build_model()
    for line in _introduction(model, epochs):
        log(line)
    trained = train(model, splits, out, epochs, seed, progress=progress, log=log)
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
