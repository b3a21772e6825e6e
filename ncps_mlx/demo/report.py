"""The demo's figures, metrics.json and report.md."""

import json
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from .. import io, kernels
from ..costs import parameter_count
from ..datasets import SequenceData
from ..rnn import CfC
from ..training import History
from .baselines import Baseline
from .comparison import compare
from .task import (
    BASELINES_DIR,
    BATCH_SIZE,
    CLIP_NORM,
    FIGURES,
    FINAL_LEARNING_RATE,
    LEARNING_RATE,
    MOTOR_NEURONS,
    PLOT_HINT,
    PLOTTED_SEQUENCES,
    SPLIT,
    TASK,
    UNITS,
    Log,
    Run,
)

# -- figures --------------------------------------------------------------------------


def _figure_class() -> Any:
    """matplotlib's bare ``Figure`` (no pyplot, so the caller's backend is left alone)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def _save_figure(figure: Any, path: Path) -> None:
    figure.tight_layout()
    io.atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"), suffix=".png")


def plot_losses(
    Figure: Any, history: History, scores: dict, path: Path, baselines: list[Baseline] = ()
) -> None:
    """Plot the NCP's training and validation loss per epoch, the baselines' validation
    loss, the test losses of the two trivial predictors and the epoch kept; write a PNG.

    Args:
        Figure: matplotlib's `Figure` class (matplotlib is imported only when plotting).
        history: The NCP's history from `fit`.
        scores: The run's scores; `scores["test"]["baselines"]` holds the trivial ones.
        path: The PNG to write (atomically).
        baselines: The trained recurrent baselines to draw beside the NCP.
    """
    epochs = history["epoch"]
    figure = Figure(figsize=(7, 4.2))
    axis = figure.subplots()
    axis.semilogy(epochs, history["loss"], label="NCP train MSE (running, per epoch)")
    axis.semilogy(epochs, history["val_loss"], label="NCP validation MSE")
    for baseline, color in zip(baselines, ["tab:green", "tab:purple"], strict=False):
        axis.semilogy(
            baseline.history["epoch"],
            baseline.history["val_loss"],
            color=color,
            lw=1,
            label=f"{baseline.description.split(' ')[0]} validation MSE",
        )
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
        label="NCP kept (best validation)",
    )
    title = "Training: CfC + AutoNCP(24, 4)" + (" and baselines" if baselines else "")
    axis.set(xlabel="epoch", ylabel="MSE", title=title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize="small")
    _save_figure(figure, path)


def plot_predictions(Figure: Any, test: SequenceData, prediction: np.ndarray, path: Path) -> None:
    """Plot the first test sequences: observations, targets and the NCP's predictions over
    time, with each sequence's MSE; write a PNG.

    Args:
        Figure: matplotlib's `Figure` class.
        test: The test split.
        prediction: The NCP's predictions for `test`, shaped like `test.y`.
        path: The PNG to write (atomically).
    """
    count = min(PLOTTED_SEQUENCES, len(test))
    figure = Figure(figsize=(9, 2.6 * count))
    axes = figure.subplots(count, 1, sharex=True, squeeze=False)
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
    _save_figure(figure, path)


def plot_wiring(Figure: Any, model: CfC, path: Path) -> None:
    """Draw the model's wiring with its synapse counts in the title; write a PNG.

    Args:
        Figure: matplotlib's `Figure` class.
        model: The demo's NCP, a wired `CfC`.
        path: The PNG to write (atomically).
    """
    wiring = model.wiring
    figure = Figure(figsize=(8, 5.5))
    axis = figure.subplots()
    wiring.draw(axis, draw_labels=True)
    axis.set_title(  # padded clear of the column names above the neurons
        f"AutoNCP({UNITS}, {MOTOR_NEURONS}): {wiring.sensory_synapse_count} sensory and "
        f"{wiring.synapse_count} neuron synapses",
        pad=16,
    )
    _save_figure(figure, path)


def write_figures(out: Path, run: "Run", log: Log) -> list[str]:
    """The four PNGs, or none (with a message) without matplotlib."""
    Figure = _figure_class()
    if Figure is None:
        log(f"Plots skipped: matplotlib is not installed ({PLOT_HINT})")
        return []
    plot_losses(Figure, run.history, run.scores, out / "loss.png", run.baselines)
    plot_predictions(Figure, run.splits["test"], run.prediction, out / "predictions.png")
    plot_wiring(Figure, run.model, out / "wiring.png")
    run.monitor.plot(out / "monitor.png")
    return list(FIGURES)


# -- report ---------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> Path:
    return io.atomic_write(path, lambda tmp: Path(tmp).write_text(text), suffix=path.suffix)


def _masked_weights(model: CfC) -> int:
    """Weights the wiring multiplies by zero: parameters that cannot act."""
    masks = [mask for layer in model.rnn_cell.layers for mask in layer.head_masks.values()]
    return sum(int(np.sum(np.asarray(mask) == 0)) for mask in masks)


def _describe_model(model: CfC) -> dict[str, Any]:
    wiring = model.wiring
    return {
        "description": f"CfC(1, AutoNCP({UNITS}, {MOTOR_NEURONS}), proj_size=1)",
        "parameters": parameter_count(model),
        "unmasked_parameters": parameter_count(model) - _masked_weights(model),
        "neurons": {k: v for k, v in wiring.neuron_counts.items() if k != "sensory"},
        "synapses": wiring.synapse_count,
        "sensory_synapses": wiring.sensory_synapse_count,
        "config": model.get_config(),
    }


def _training_record(
    history: History, epochs: int, seconds: float, resumed: bool
) -> dict[str, Any]:
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
        "seconds": seconds,  # of this process: after a resume, the resumed part only
        "resumed": resumed,
        "epoch_seconds": train_seconds,
        "samples_per_s": SPLIT["train"] * len(rows) / train_seconds,
        "history": rows,
    }


def _baseline_record(baseline: Baseline, epochs: int) -> dict[str, Any]:
    return {
        "description": baseline.description,
        "inputs": "x and the time gap of each step, as 2 features (no timespans)",
        "hidden_size": baseline.hidden_size,
        "parameters": parameter_count(baseline.model),
        **{split: baseline.scores[split] for split in ("train", "val", "test")},
        "training": _training_record(baseline.history, epochs, baseline.seconds, baseline.resumed),
    }


def build_metrics(run: "Run") -> dict[str, Any]:
    """The record saved as ``metrics.json``."""
    training = _training_record(run.history, run.epochs, run.train_seconds, run.resumed)
    # Whether the NCP's steps ran on the fused kernels, which the baselines' cells have not.
    training["fused_kernels"] = kernels.graph_stepper(run.model.rnn_cell) is not None
    metrics = {
        "task": {"name": "irregular_oscillator", "seed": run.seed, **TASK, "split": SPLIT},
        "model": _describe_model(run.model),
        "training": training,
        "train": run.scores["train"],
        "val": run.scores["val"],
        "test": run.scores["test"],
        "baselines": {b.name: _baseline_record(b, run.epochs) for b in run.baselines},
        "export": run.export,
        "monitor": dict(run.monitor.summary()),
        "plots": run.plots,
    }
    if run.baselines:
        metrics["comparison"] = compare(metrics)
    metrics["seconds"] = time.perf_counter() - run.start
    return metrics


def _model_rows(metrics: dict[str, Any]) -> list[str]:
    """The report's table: every model on the test split."""
    test, trivial, model = metrics["test"], metrics["test"]["baselines"], metrics["model"]

    def row(name: str, inputs: str, parameters: Any, scores: dict, seconds: str) -> str:
        return (
            f"| {name} | {inputs} | {parameters} | {scores['mse']:.4f} | {scores['mae']:.4f} "
            f"| {seconds} |"
        )

    rows = [
        "| model | inputs | parameters | test MSE | test MAE | training |",
        "|---|---|---|---|---|---|",
        row(
            f"NCP: CfC + AutoNCP({UNITS}, {MOTOR_NEURONS}) + linear readout",
            "x; the time gaps as timespans",
            f"{model['parameters']} ({model['unmasked_parameters']} unmasked)",
            test,
            f"{metrics['training']['seconds']:.1f} s",
        ),
    ]
    for baseline in metrics["baselines"].values():
        seconds = f"{baseline['training']['seconds']:.1f} s"
        inputs = "x and the time gaps, as 2 features"
        parameters, scores = baseline["parameters"], baseline["test"]
        rows.append(row(baseline["description"], inputs, parameters, scores, seconds))
    mean, linear = trivial["train_mean"], trivial["linear_no_memory"]
    rows.append(row("predict the training mean", "none", mean["parameters"], mean, "-"))
    inputs = "x and the time gap of the step"
    rows.append(row("linear, no memory", inputs, linear["parameters"], linear, "-"))
    return rows


def _comparison_lines(metrics: dict[str, Any]) -> list[str]:
    """The report's section on the NCP against its recurrent baselines."""
    found, seed = metrics["comparison"], metrics["task"]["seed"]
    best = found["best_mse"]
    ncp_mse = metrics["test"]["mse"]
    headline = f"Lowest test MSE: {best['model']}, {best['mse']:.4f}"
    if best["model"] != "NCP":
        headline += f" (the NCP's: {ncp_mse:.4f})"
    lines = ["## The NCP against a GRU and an LSTM of its size", "", headline + ".", ""]
    sections = [
        (f"Where the NCP measured better (one run, seed {seed}):", found["better"]),
        ("Where it measured worse:", found["worse"]),
        ("Ties (to 4 decimals):", found["ties"]),
        ("Note:", found["notes"]),
        ("By design (not measured here):", found["by_design"]),
    ]
    for title, sentences in sections:
        if sentences or title.startswith("Where"):
            lines += [title, ""] + [f"- {s}" for s in sentences or ["nothing"]] + [""]
    lines += [
        "One run with one seed: rerun with other `--seed` values before trusting differences "
        "of a few percent.",
        "",
    ]
    return lines


def _report_markdown(metrics: dict[str, Any]) -> str:
    training = metrics["training"]
    export = metrics["export"]
    exported = (
        f"`model.mlpackage` (step kind, float16, dt input): max |error| against MLX "
        f"{export['max_abs_error']:.2e} over {export['verified_sequences']} test sequences"
        if export["status"] == "ok"
        else f"not exported ({export.get('reason') or export.get('error')})"
    )
    count = 1 + len(metrics["baselines"])
    trained = f"All {count} trained models" if count > 1 else "Training"
    lines = [
        "# ncps_mlx demo",
        "",
        f"Forecast a noisy, irregularly sampled damped oscillation {TASK['horizon']:g} time "
        f"units ahead with {metrics['model']['description']} "
        f"({metrics['model']['parameters']} parameters).",
        "",
        *_model_rows(metrics),
        "",
        f"NCP: R² {metrics['test']['r2']:.3f}; best validation epoch {training['best_epoch']} "
        f"of {training['epochs_run']}; trained in {training['seconds']:.1f} s on "
        f"{training['device']}.",
        "",
        f"{trained}: `fit` with {training['epochs']} epochs in batches of "
        f"{training['batch_size']}, {training['optimizer']}, gradients clipped to norm "
        f"{training['clip_norm']:g}, seed {metrics['task']['seed']}, the weights of the best "
        "validation epoch kept.",
        "",
    ]
    if metrics["baselines"]:
        lines += _comparison_lines(metrics)
    lines += [f"Core ML: {exported}.", ""]
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
    for baseline in metrics["baselines"].values():
        lines.append(
            f"  {baseline['description'].split(' ')[0]:8s} (baseline, {baseline['parameters']} "
            f"parameters): test MSE {baseline['test']['mse']:.4f}  MAE "
            f"{baseline['test']['mae']:.4f}  training {baseline['training']['seconds']:.1f} s"
        )
    if "comparison" in metrics:
        found = metrics["comparison"]
        lines += [f"  NCP better: {sentence}" for sentence in found["better"]]
        lines += [f"  NCP worse:  {sentence}" for sentence in found["worse"]]
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
    if metrics["baselines"]:
        files.append(f"{BASELINES_DIR}/")
    if metrics["export"]["status"] == "ok":
        files.insert(1, "model.mlpackage")
    return files + metrics["plots"]


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
