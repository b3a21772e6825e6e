"""The ``ncps-mlx`` command."""

import importlib
import json
import math

import mlx.core as mx
import numpy as np
import pytest

from ncps_mlx import cli, datasets, load
from ncps_mlx.monitor import Run


def _numbers(value):
    """Every number in a JSON document."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def _importable(name):
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _test_split(task):
    """The demo's test sequences, regenerated from what metrics.json says."""
    arguments = ("num_sequences", "seq_len", "horizon", "noise", "mean_gap")
    data = datasets.irregular_oscillator(
        seed=task["seed"], **{name: task[name] for name in arguments}
    )
    start = task["split"]["train"] + task["split"]["val"]
    return data.subset(slice(start, start + task["split"]["test"]))


def test_demo_trains_evaluates_exports_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--epochs", "3", "--seed", "1"]) == 0
    captured = capsys.readouterr()
    assert "epoch 3/3" in captured.err  # the progress bar
    assert "Results" in captured.out and f"Wrote to {out}/" in captured.out

    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("task", "model", "training", "train", "val", "test", "export", "monitor"):
        assert key in metrics
    numbers = list(_numbers(metrics))
    assert len(numbers) > 50 and all(math.isfinite(number) for number in numbers)
    training, test = metrics["training"], metrics["test"]
    assert training["epochs_run"] == 3 and len(training["history"]) == 3
    assert training["seconds"] > 0 and training["samples_per_s"] > 0
    assert metrics["model"]["parameters"] > 1000
    assert metrics["monitor"]["steps"] == 3 * 14
    for split in ("train", "val", "test"):
        assert metrics[split]["mse"] > 0 and metrics[split]["mae"] > 0
    assert test["mse"] < test["baselines"]["train_mean"]["mse"]

    # The checkpoint reproduces the recorded test MSE, evaluated from scratch.
    model = load(out / "model.safetensors")
    data = _test_split(metrics["task"])
    model.eval()
    y, _ = model(mx.array(data.x), timespans=mx.array(data.timespans))
    mse = float(np.mean((np.array(y, dtype=np.float64) - data.y) ** 2))
    assert mse == pytest.approx(test["mse"], rel=1e-5)

    for name in ("monitor.jsonl", "report.md", "checkpoints/best.safetensors"):
        assert (out / name).is_file()
    assert len(Run.load(out / "monitor.jsonl").steps) == 3 * 14
    if _importable("matplotlib"):
        assert metrics["plots"] == ["loss.png", "predictions.png", "wiring.png", "monitor.png"]
        for name in metrics["plots"]:
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"]({name})" in (out / "report.md").read_text()
    if _importable("coremltools"):
        export = metrics["export"]
        assert export["status"] == "ok", export
        assert (out / "model.mlpackage" / "Manifest.json").is_file()
        assert export["verified_sequences"] == 4 and export["max_abs_error"] < 0.05
    else:
        assert metrics["export"]["status"] == "skipped"
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_demo_arguments():
    from ncps_mlx.demo import DEFAULT_EPOCHS

    args = cli.build_parser().parse_args(["demo", "--no-export", "--no-progress"])
    assert (args.out, args.epochs, args.seed) == ("ncps_demo", DEFAULT_EPOCHS, 0)
    assert args.no_export and args.no_progress
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["demo", "--epochs", "0"])


def test_version_and_help(capsys):
    from ncps_mlx import __version__

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __version__
    assert cli.main([]) == 2
