"""The ``ncps-mlx`` command."""

import json

import pytest

from ncps_mlx import cli, load


def test_demo_trains_and_writes_its_outputs(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert cli.main(["demo", "--out", str(tmp_path), "--epochs", "30"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["final_loss"] < 0.5 * metrics["initial_loss"]
    assert (tmp_path / "loss.png").stat().st_size > 1000
    model = load(tmp_path / "model.safetensors")
    assert model.output_size == 1
    assert "epoch   30/30" in capsys.readouterr().out


def test_version_and_help(capsys):
    from ncps_mlx import __version__

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __version__
    assert cli.main([]) == 2
