"""One set of rules for an output folder, in `fit`, `ncps-mlx train` and `ncps-mlx demo`.

A folder that holds a run is refused unless the caller resumes or overwrites it; the saved
model is the epoch with the lowest ``val_loss``; resuming a finished run changes nothing.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlx.utils import tree_flatten

import ncps_mlx
from ncps_mlx import CfC
from ncps_mlx.datasets import sine_waves
from ncps_mlx.training import fit

ROOT = Path(__file__).parents[1]
TOML = """\
seed = 0

[data]
name = "sine_waves"
options = {{ num_sequences = 24, seq_len = 8 }}
validation_fraction = 0.25

[model]
type = "CfC"
units = 4
backbone_units = 8

[training]
epochs = {epochs}
batch_size = 8
learning_rate = 0.05

[output]
dir = "run"
progress = false
"""


def _fit(folder: Path, **kwargs):
    data = sine_waves(16, 8, seed=1)
    model = CfC(2, 4, backbone_units=8, proj_size=1)
    kwargs = {"epochs": 2, "batch_size": 8, "progress": False, **kwargs}
    return model, fit(model, data, data, checkpoint_dir=folder, **kwargs)


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "100"}
    command = [sys.executable, "-m", "ncps_mlx.cli", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def test_fit_refuses_a_folder_that_holds_a_run(tmp_path):
    _fit(tmp_path)
    with pytest.raises(ValueError, match=r"already holds a run \(last.safetensors, best"):
        _fit(tmp_path)
    with pytest.raises(ValueError, match="pick one"):
        _fit(tmp_path, resume=True, overwrite=True)


def test_fit_overwrite_starts_afresh(tmp_path):
    _fit(tmp_path, epochs=3)
    _, history = _fit(tmp_path, overwrite=True)
    assert len(history) == 2
    header, _ = ncps_mlx.io.read_checkpoint(tmp_path / "last.safetensors")
    assert header["metadata"]["training"]["epoch"] == 2
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_resuming_a_finished_fit_trains_and_writes_nothing(tmp_path):
    _fit(tmp_path)
    before = _mtimes(tmp_path)
    model, history = _fit(tmp_path, resume=True)
    assert history.finished_before and len(history) == 2
    assert _mtimes(tmp_path) == before
    saved = ncps_mlx.load(tmp_path / "last.safetensors")
    for (_, a), (_, b) in zip(
        tree_flatten(model.parameters()), tree_flatten(saved.parameters()), strict=True
    ):
        np.testing.assert_array_equal(np.array(a), np.array(b))


def test_train_saves_the_best_epoch_and_follows_the_rules(tmp_path):
    (tmp_path / "run.toml").write_text(TOML.format(epochs=4))
    first = _cli("train", "run.toml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "run"
    best = ncps_mlx.load(run / "checkpoints" / "best.safetensors")
    saved = ncps_mlx.load(run / "model.safetensors")
    for (_, a), (_, b) in zip(
        tree_flatten(best.parameters()), tree_flatten(saved.parameters()), strict=True
    ):
        np.testing.assert_array_equal(np.array(a), np.array(b))

    again = _cli("train", "run.toml", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert "--overwrite" in again.stderr and "Traceback" not in again.stderr

    before = _mtimes(run)
    resumed = _cli("train", "run.toml", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "is finished (4 epochs): its outputs are unchanged" in resumed.stdout
    assert _mtimes(run) == before

    (tmp_path / "run.toml").write_text(TOML.format(epochs=2))
    replaced = _cli("train", "run.toml", "--overwrite", cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr
    header, _ = ncps_mlx.io.read_checkpoint(run / "checkpoints" / "last.safetensors")
    assert header["metadata"]["training"]["epoch"] == 2


def test_demo_follows_the_same_rules(tmp_path):
    args = ("demo", "--out", "d", "--epochs", "2", "--no-export", "--no-progress",
            "--no-baselines")  # fmt: skip
    assert _cli(*args, cwd=tmp_path).returncode == 0
    again = _cli(*args, cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert "Traceback" not in again.stderr

    before = _mtimes(tmp_path / "d")
    resumed = _cli(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0 and "is finished" in resumed.stdout
    assert _mtimes(tmp_path / "d") == before

    replaced = _cli(*args, "--overwrite", cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr
    assert _mtimes(tmp_path / "d") != before
