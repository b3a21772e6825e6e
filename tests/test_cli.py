"""The ``ncps-mlx`` command."""

import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

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


# -- Ctrl-C ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted(cli.build_parser()._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("command", COMMANDS)
def test_ctrl_c_in_any_command_is_one_line_and_exit_130(command, tmp_path, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"_{command}", interrupted)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.safetensors").touch()  # export checks that its checkpoint exists
    arguments = {"kernels": ["status"], "export": ["model.safetensors", "--out", "m.mlpackage"]}
    arguments.update({"train": ["run.toml"], "validate": ["run.toml"]})
    assert cli.main([command, *arguments.get(command, [])]) == cli.INTERRUPTED == 130
    assert capsys.readouterr().err == f"ncps-mlx {command}: interrupted\n"


def test_ctrl_c_outside_fit_names_the_checkpoint_to_continue_from(tmp_path, monkeypatch, capsys):
    import ncps_mlx.config

    def interrupted(config):  # e.g. while writing the results, or a second Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ncps_mlx.config, "run_config", interrupted)
    (tmp_path / "run.toml").write_text(RUN_TOML)
    assert cli.main(["train", "run.toml", "--resume"]) == 130
    assert capsys.readouterr().err == "ncps-mlx train: interrupted\n"  # nothing saved yet
    (tmp_path / "run/checkpoints").mkdir(parents=True)
    (tmp_path / "run/checkpoints/last.safetensors").write_bytes(b"saved")
    assert cli.main(["train", "run.toml", "--resume"]) == 130
    assert capsys.readouterr().err == (
        "ncps-mlx train: interrupted; continue from 'run/checkpoints/last.safetensors' with "
        "`ncps-mlx train run.toml --resume`\n"
    )


def start(tmp_path, *arguments):
    """``ncps-mlx`` in another process, as a terminal would start it."""
    return subprocess.Popen(
        [sys.executable, "-u", "-m", "ncps_mlx.cli", *arguments],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        # A test run in the background may ignore SIGINT, which its children inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def ctrl_c_when(child, ready, timeout=60.0):
    """Send SIGINT once ``ready()``; the exit code and stderr."""
    end = time.monotonic() + timeout
    while not ready() and child.poll() is None and time.monotonic() < end:
        time.sleep(0.005)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=timeout)
    return child.returncode, err


RUN_TOML = """\
seed = 0

[data]
name = "sine_waves"
options = { num_sequences = 32, seq_len = 8 }
validation_fraction = 0.25

[model]
type = "CfC"
units = 4
backbone_units = 8
backbone_dropout = 0.1

[training]
epochs = 12
batch_size = 4
learning_rate = 0.01
schedule = "cosine"

[output]
dir = "run"
progress = false
"""


def weights(path):
    return {k: np.array(v) for k, v in tree_flatten(load(path).parameters())}


def without_time(rows):
    return [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")} for row in rows]


def test_ctrl_c_in_train_saves_and_resume_finishes_the_same_run(tmp_path, monkeypatch):
    (tmp_path / "run.toml").write_text(RUN_TOML)
    checkpoint = tmp_path / "run/checkpoints/last.safetensors"
    child = start(tmp_path, "train", "run.toml")
    code, err = ctrl_c_when(child, checkpoint.exists)
    assert code == 130 and "Traceback" not in err
    said = err.strip().splitlines()[-1]
    assert said.startswith("ncps-mlx train: ") and "interrupted" in said
    assert said.endswith("continue with `ncps-mlx train run.toml --resume`")

    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "run.toml", "--resume"]) == 0
    assert cli.main(["train", "run.toml", "--out", "whole"]) == 0
    resumed, whole = weights("run/model.safetensors"), weights("whole/model.safetensors")
    for key, value in whole.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)
    rows = [
        without_time(
            map(json.loads, Path(f"{out}/checkpoints/metrics.jsonl").read_text().splitlines())
        )
        for out in ("run", "whole")
    ]
    assert len(rows[0]) == 12 and rows[0] == rows[1]


def test_ctrl_c_in_demo_saves_and_resume_finishes_the_same_run(tmp_path, monkeypatch):
    arguments = ["demo", "--out", "demo", "--epochs", "2", "--no-export", "--no-progress"]
    child = start(tmp_path, *arguments)
    code, err = ctrl_c_when(child, (tmp_path / "demo/checkpoints/last.safetensors").exists)
    assert code == 130 and "Traceback" not in err
    said = err.strip().splitlines()[-1]
    assert said.startswith("ncps-mlx demo: ") and "interrupted" in said
    assert said.endswith(f"continue with `ncps-mlx {' '.join(arguments)} --resume`")

    monkeypatch.chdir(tmp_path)
    assert cli.main([*arguments, "--resume"]) == 0
    assert cli.main([*arguments[:2], "whole", *arguments[3:]]) == 0
    resumed, whole = weights("demo/model.safetensors"), weights("whole/model.safetensors")
    for key, value in whole.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)
    histories = [
        without_time(json.loads(Path(f"{out}/metrics.json").read_text())["training"]["history"])
        for out in ("demo", "whole")
    ]
    assert histories[0] == histories[1]


def test_ctrl_c_ends_a_live_monitor_with_its_recording(tmp_path):
    child = start(tmp_path, "monitor", "live", "--interval", "0.05", "--out", "live.jsonl")
    lines = []

    def sampled():  # the header, the backends, then a first sample
        lines.append(child.stdout.readline())
        return len(lines) >= 3

    code, err = ctrl_c_when(child, sampled)
    assert code == 130 and err == "ncps-mlx monitor: interrupted\n"
    assert (tmp_path / "live.jsonl").is_file()
