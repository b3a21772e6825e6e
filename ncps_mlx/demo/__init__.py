"""The demo job: train an NCP on irregularly sampled data, compare it, export it, report it.

``ncps-mlx demo`` (or `run_demo`) forecasts noisy damped oscillations observed at
irregular times (`datasets.irregular_oscillator`) half a time unit ahead, with a CfC
over an ``AutoNCP(24, 4)`` wiring fed the elapsed time of every step. The report
compares it with a GRU and an LSTM of the same parameter count, given the elapsed times
as an input feature and trained with the same `fit` settings
(`ncps_mlx.demo.baselines`), and with predicting the mean and a linear fit that has no
memory; what it says of the comparison is written from the measured numbers
(`ncps_mlx.demo.comparison`).
Everything goes to one folder:

- ``checkpoints/``: what `fit` writes while training the NCP; ``baselines/gru/`` and
  ``baselines/lstm/`` the same for the baselines;
- ``model.safetensors``: the NCP's weights of its best validation epoch (`ncps_mlx.load`);
- ``model.mlpackage``: the Core ML export (step kind, float16, ``dt`` input), checked
  against the MLX model (needs coremltools: ``pip install 'ncps-mlx[export]'``);
- ``metrics.json``, ``monitor.jsonl``, ``report.md``;
- ``loss.png``, ``predictions.png``, ``wiring.png``, ``monitor.png`` (needs matplotlib:
  ``pip install 'ncps-mlx[plot]'``).

Every file is written atomically, so a failed run leaves no half-written file behind.
"""

import contextlib
import json
import shutil
import time
from io import StringIO
from pathlib import Path
from typing import Any

import mlx.core as mx

from .. import io
from ..config.output import holds_run
from ..costs import parameter_count
from ..datasets import SequenceData
from ..rnn import CfC
from ..training.checkpoint import trained_with
from ..training.fit import LAST_CHECKPOINT
from .baselines import train_baselines as train_baselines
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
from .training import EpochLog as EpochLog
from .training import make_optimizer as make_optimizer
from .training import train as train

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


def _prepare_folder(out: Path, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Apply the rules of an output folder; the metrics of a finished run to resume."""
    if resume and overwrite:
        raise ValueError("[demo] resume continues a run, overwrite replaces it: pick one")
    if holds_run(out) and not (resume or overwrite):
        raise ValueError(
            f"[demo] {str(out)!r} already holds a run: --resume continues it, --overwrite "
            "replaces it, or choose another --out"
        )
    if resume and (out / "metrics.json").exists():  # written last: the run is finished
        return json.loads((out / "metrics.json").read_text())
    if overwrite:
        for folder in ("checkpoints", "baselines"):  # what training would resume from
            shutil.rmtree(out / folder, ignore_errors=True)
        (out / "metrics.json").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return None


def run_demo(
    out: str | Path = "ncps_demo",
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    log: Log = print,
    *,
    export: bool = True,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    baselines: bool = True,
) -> dict[str, Any]:
    """Train, evaluate, save, export and report under ``out``; returns ``metrics.json``.

    Args:
        out: Output folder (created if needed).
        epochs: Training epochs.
        seed: Seeds the data, the initial weights and the data order.
        log: Where progress lines and the summary go.
        export: Export and verify a Core ML package (when coremltools is installed).
        progress: Show ``fit``'s progress bar; otherwise log a line every few epochs.
        resume: Continue the training saved in ``out/checkpoints`` and ``out/baselines``
            (by a run stopped with Ctrl-C or killed) with the same ``epochs`` and ``seed``.
            A finished run (its ``metrics.json`` written) is left as it is.
        overwrite: Replace the run that ``out`` holds. Without it or ``resume``, a folder
            that holds a run is refused.
        baselines: Train the GRU and LSTM baselines and compare the NCP with them. On a
            CPU they take several times the NCP's training time: MLX runs them as graph
            operations, the NCP runs on the package's fused kernels.

    Raises:
        ValueError: ``out`` holds a run and neither ``resume`` nor ``overwrite`` is set.
        TrainingInterrupted: Ctrl-C stopped the training; it is saved to resume.
    """
    start = time.perf_counter()
    out = Path(out)
    finished = _prepare_folder(out, resume, overwrite)
    if finished is not None:
        log(f"the demo in {out} is finished: its outputs are unchanged (--overwrite runs it again)")
        return finished
    splits = make_task(seed)
    mx.random.seed(seed)
    model = build_model()
    for line in _introduction(model, epochs):
        log(line)
    resumed = resume and (out / "checkpoints" / LAST_CHECKPOINT).exists()
    trained = train(model, splits, out, epochs, seed, progress=progress, log=log, resume=resume)
    run = Run(seed, epochs, start, splits, model, *trained, resumed=resumed)
    run.scores, run.prediction = evaluate(model, splits)
    io.save(
        model,
        out / "model.safetensors",
        metadata={
            "demo": {"seed": seed, **run.scores["test"]},
            **trained_with(timespans=True, mask=False),  # export keeps the time-gap input
        },
    )
    run.monitor.save(out / "monitor.jsonl")
    if baselines:  # after the NCP's files: stopping here loses none of them
        run.baselines = train_baselines(
            splits,
            out,
            epochs,
            seed,
            parameter_count(model),
            progress=progress,
            log=log,
            resume=resume,
        )
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
