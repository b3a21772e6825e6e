"""Data-parallel fit over two processes equals one process on the whole batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ncps_mlx import CfC, load
from ncps_mlx.datasets import SequenceData
from ncps_mlx.training import fit
from ncps_mlx.wirings import AutoNCP

EPOCHS, BATCH = 3, 8
ROOT = Path(__file__).resolve().parents[1]
LAUNCH = Path(sys.executable).parent / "mlx.launch"


def model():
    mx.random.seed(0)
    return CfC(3, AutoNCP(10, 2))


def data():
    # Variable lengths, so the shards of a batch hold different numbers of real steps.
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 13, size=21)
    mask = np.arange(12)[None] < lengths[:, None]
    x = rng.normal(size=(21, 12, 3)) * mask[..., None]
    y = rng.normal(size=(21, 12, 2)) * mask[..., None]
    return SequenceData(x, y, mask=mask)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not LAUNCH.exists(), reason="mlx.launch is not installed")
def test_two_ranks_end_with_the_parameters_of_one_process(tmp_path):
    command = [
        str(LAUNCH), "--backend", "ring", "--hosts", "127.0.0.1", "-n", "2",
        "--starting-port", str(free_port()), "--python", sys.executable,
        str(ROOT / "tests/scripts/distributed_fit.py"), str(tmp_path / "ranks"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rank 0 done" in result.stdout and "rank 1 done" in result.stdout

    single = model()
    history = fit(single, data(), epochs=EPOCHS, batch_size=BATCH, progress=False)
    ranks = load(tmp_path / "ranks/last.safetensors")
    expected = dict(tree_flatten(single.parameters()))
    for key, value in tree_flatten(ranks.parameters()):
        np.testing.assert_allclose(np.array(value), np.array(expected[key]), rtol=1e-4, atol=1e-6)
    initial = dict(tree_flatten(model().parameters()))
    moved = max(float(mx.abs(expected[key] - initial[key]).max()) for key in expected)
    assert moved > 1e-2  # training changed the weights, so agreement means something
    logged = [json.loads(line)["loss"] for line in (tmp_path / "ranks/metrics.jsonl").open()]
    np.testing.assert_allclose(logged, history["loss"], rtol=1e-5)
