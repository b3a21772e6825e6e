"""Running a config: train with ``fit`` and save the results."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx

from .._files import atomic_write
from ..rnn import RNN
from ..training.fit import BEST_CHECKPOINT
from .build import budget_bytes, build_callbacks, build_data, build_model, build_optimizer
from .output import CHECKPOINTS
from .resolved import Config


def run_config(config: Config, *, log: Callable[[str], Any] = print):
    """Train as ``config`` says and save the results in ``config.output.dir``.

    Writes ``checkpoints/`` (during training), ``model.safetensors`` (the weights of the
    epoch with the lowest ``val_loss``, as ``checkpoints/best.safetensors``; the last
    epoch's without validation data), ``metrics.json``, and ``monitor.jsonl`` /
    ``model.mlpackage`` when asked for. Resuming a finished run writes nothing.

    Returns:
        The [`History`][ncps_mlx.training.History] of the run (all epochs when resumed).

    Raises:
        TrainingDivergedError: The loss became nan or inf (see ``fit``).
        TrainingInterrupted: Ctrl-C stopped the training (see ``fit``); with
            ``output.resume`` the run continues from where it stopped.
    """
    from ..training import fit

    out = config.output.dir
    train, val = build_data(config)
    mx.random.seed(config.seed)  # the initial weights
    model = build_model(config.model, config.data.info)
    monitor = _make_monitor(config, model)
    log(config.summary())
    start = time.perf_counter()
    history = fit(
        model,
        train,
        val,
        loss=config.training.loss,
        optimizer=build_optimizer(config.training),
        epochs=config.training.epochs,
        batch_size=config.training.batch_size,
        metrics=list(config.training.metrics),
        callbacks=build_callbacks(config.training),
        monitor=monitor,
        checkpoint_dir=out / CHECKPOINTS,
        resume=config.output.resume,
        overwrite=config.output.overwrite,
        progress=config.output.progress,
        clip_norm=config.training.clip_norm,
        clip_tensor_norm=config.training.clip_tensor_norm,
        clip_value=config.training.clip_value,
        l2=config.training.l2,
        l2_params=config.training.l2_params,
        lr_decay_per_epoch=config.training.lr_decay_per_epoch,
        shuffle=config.training.shuffle,
        seed=config.seed,
        memory_budget=budget_bytes(config.training.memory_budget_mb),
    )
    if history.finished_before and (out / "metrics.json").exists():  # written last
        log(f"the run in {out} is finished ({len(history)} epochs): its outputs are unchanged")
        return history
    if _is_main_process():  # under mlx.launch, one process writes (as fit does)
        _write_results(config, model, history, time.perf_counter() - start, monitor, log)
    return history


def _is_main_process() -> bool:
    return not mx.distributed.is_available() or mx.distributed.init().rank() == 0


def _make_monitor(config: Config, model: RNN) -> Any:
    if not config.output.monitor:
        return None
    from ..monitor import Monitor

    return Monitor(model=model, seq_len=config.data.info.seq_len)


def _write_results(
    config: Config, model: RNN, history: Any, seconds: float, monitor: Any, log: Callable
) -> None:
    from .. import io
    from ..training.checkpoint import trained_with

    out = config.output.dir
    info = config.data.info
    best = out / CHECKPOINTS / BEST_CHECKPOINT
    if best.exists():  # the saved model is the best epoch's, as in fit's best.safetensors
        io.load_weights(model, best)
    inputs = trained_with(timespans=info.timespans, mask=info.mask)
    metadata = {"config": config.to_dict(), **inputs}
    log(f"wrote {io.save(model, out / 'model.safetensors', metadata=metadata)}")
    metrics = _metrics_record(config, history, seconds)
    path = out / "metrics.json"
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=2)))
    log(f"wrote {path}")
    if monitor is not None:
        log(f"wrote {monitor.save(out / 'monitor.jsonl')}")
    if config.output.export_coreml:
        from ..export import to_coreml

        path = to_coreml(model, out / "model.mlpackage", timespans=config.data.info.timespans)
        log(f"wrote {path}")


def _metrics_record(config: Config, history: Any, seconds: float) -> dict[str, Any]:
    rows = history.rows
    final = {key: value for key, value in rows[-1].items() if key != "epoch"} if rows else {}
    record = {
        "epochs_run": len(rows),
        "stop_reason": history.stop_reason,
        "seconds": round(seconds, 3),
        "train_seconds": round(sum(row.get("seconds", 0.0) for row in rows), 3),
        "final": final,
        "parameters": config.model.parameters,
    }
    if rows and "val_loss" in rows[-1]:
        best = min(rows, key=lambda row: row["val_loss"])
        record["best"] = {"epoch": best["epoch"], "val_loss": best["val_loss"]}
    record["config"] = config.to_dict()
    return record
