"""The demo job's Python entry point, also without its optional dependencies."""

import json
import sys

import numpy as np
import pytest

from ncps_mlx import cli, load
from ncps_mlx.demo import SPLIT, linear_baseline, make_task


def test_demo_without_matplotlib_or_coremltools(tmp_path, capsys, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.pyplot", "coremltools"):
        monkeypatch.setitem(sys.modules, name, None)  # importing them raises ImportError
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--epochs", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "epoch   1/1  loss" in printed
    assert "Plots skipped: matplotlib is not installed (pip install 'ncps-mlx[plot]')" in printed
    assert (
        "Core ML export skipped: coremltools is not installed (pip install 'ncps-mlx[export]')"
        in printed
    )
    assert not list(out.glob("*.png")) and not (out / "model.mlpackage").exists()
    assert load(out / "model.safetensors").output_size == 1
    assert (out / "metrics.json").is_file() and (out / "monitor.jsonl").is_file()


def test_run_demo_without_export_returns_its_metrics(tmp_path, monkeypatch):
    from ncps_mlx import demo

    monkeypatch.setattr(demo, "write_figures", lambda out, run, log: [])
    lines = []
    metrics = demo.run_demo(
        tmp_path, epochs=1, seed=2, log=lines.append, export=False, progress=False
    )
    assert metrics["export"] == {"status": "skipped", "reason": "--no-export"}
    assert metrics["task"]["seed"] == 2 and metrics["training"]["epochs_run"] == 1
    assert not any("Core ML" in line for line in lines)


def test_task_splits_and_linear_baseline():
    splits = make_task(0)
    assert {name: len(data) for name, data in splits.items()} == SPLIT
    assert all(data.timespans is not None for data in splits.values())
    # Least squares without memory beats predicting the mean, but not by much.
    test = splits["test"]
    linear = np.mean((linear_baseline(splits["train"], test) - test.y) ** 2)
    assert 0.5 * np.var(test.y) < linear < np.var(test.y)


def test_a_failed_export_is_reported_and_exits_1(tmp_path, capsys, monkeypatch):
    pytest.importorskip("coremltools")
    from ncps_mlx import demo, export

    def broken(*args, **kwargs):
        raise RuntimeError("no converter today")

    monkeypatch.setattr(export, "to_coreml", broken)
    monkeypatch.setattr(demo, "write_figures", lambda out, run, log: [])
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--epochs", "1", "--no-progress"]) == 1
    assert "Core ML export failed: RuntimeError: no converter today" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["export"]["status"] == "failed"
    assert (out / "model.safetensors").is_file() and not (out / "model.mlpackage").exists()
