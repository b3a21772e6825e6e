"""``ncps-mlx policies``: one command trains, evaluates, deploys, draws and times the
policies into one folder, and what it reports is what its saved models do."""

import json

import numpy as np
import pytest

import ncps_mlx
from ncps_mlx import cli
from ncps_mlx.policies import CONDITIONS, ModelPolicy, evaluate
from ncps_mlx.policies.run import _eventful_steps

pytest.importorskip("gymnasium")
pytest.importorskip("matplotlib")

ARGS = ["policies", "--quick", "--tasks", "pendulum", "--models", "cfc-ncp", "--seeds", "2"]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("policies") / "run"
    assert cli.main([*ARGS, "--out", str(out)]) == 0
    return out


def test_the_command_writes_the_whole_run(run_folder):
    names = {path.relative_to(run_folder).as_posix() for path in run_folder.rglob("*.*")}
    for name in (
        "report.md",
        "evaluation.md",
        "evaluation.json",
        "results.json",
        "models/pendulum-cfc-ncp.safetensors",
        "figures/circuit.png",
        "figures/traces.png",
        "figures/attributions.png",
    ):
        assert name in names
    report = (run_folder / "report.md").read_text()
    for section in ("## Returns", "## Inside the circuit", "## Latency in the loop"):
        assert section in report
    results = json.loads((run_folder / "results.json").read_text())
    assert "latency" in results
    if "deployment" in results:  # with coremltools: the package ran in the loop
        assert (run_folder / "deployment" / "pendulum-cfc-ncp.mlpackage").is_dir()
        assert "## Deployed in the loop" in report


def test_the_reported_returns_are_what_the_saved_model_does(run_folder):
    evaluation = json.loads((run_folder / "evaluation.json").read_text())
    assert evaluation["seeds"] == [0, 1]
    rows = {row["policy"]: row for row in evaluation["rows"]}
    assert set(rows) == {"expert", "CfC-NCP"}
    assert set(rows["CfC-NCP"]["returns"]) == set(CONDITIONS)
    model = ncps_mlx.load(run_folder / "models" / "pendulum-cfc-ncp.safetensors")
    policy = ModelPolicy(model, "pendulum")
    for name, perturbation in CONDITIONS.items():
        again = evaluate(policy, "pendulum", [0, 1], perturbation)
        np.testing.assert_allclose(again, rows["CfC-NCP"]["returns"][name], rtol=1e-6)


def test_a_finished_run_is_kept_unless_overwritten(run_folder, capsys):
    before = (run_folder / "evaluation.json").read_text()
    code = cli.main([*ARGS, "--out", str(run_folder), "--no-export", "--no-latency"])
    assert code != 0
    assert "--overwrite" in capsys.readouterr().err
    assert (run_folder / "evaluation.json").read_text() == before


def test_the_circuit_figure_shows_the_steps_where_the_neurons_move():
    still = np.zeros((100, 3))
    moving = np.cumsum(np.ones((30, 3)), axis=0)
    states = np.concatenate([moving, still + moving[-1]])
    # The last change leads into step 29; the rest of the episode holds still.
    assert _eventful_steps(states, count=4) == [0, 10, 19, 29]
    assert _eventful_steps(np.zeros((5, 2)), count=3) == [0, 2, 4]


def test_parts_whose_extra_is_missing_are_skipped_and_said_first(tmp_path, monkeypatch):
    from ncps_mlx.export import coreml
    from ncps_mlx.policies import QUICK, run

    def no_coremltools():
        raise ImportError("Core ML export needs coremltools: pip install 'ncps-mlx[export]'")

    monkeypatch.setattr(coreml, "require_coremltools", no_coremltools)
    real_find_spec = run.importlib.util.find_spec
    monkeypatch.setattr(
        run.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a),
    )
    lines = []
    run.run_policies(
        tmp_path / "run",
        tasks=["pendulum"],
        kinds=["cfc-ncp"],
        seeds=[0],
        settings=QUICK,
        latency=False,
        log=lines.append,
    )
    assert lines[:2] == [
        "deployed in the loop: skipped, Core ML export needs coremltools: pip install "
        "'ncps-mlx[export]'",
        "inside the circuit: skipped, the figures need matplotlib: pip install 'ncps-mlx[plot]'",
    ]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Deployed in the loop\n\nSkipped: Core ML export needs coremltools" in report
    assert "## Inside the circuit\n\nSkipped: the figures need matplotlib" in report
    assert not (tmp_path / "run" / "figures").exists()
    assert not (tmp_path / "run" / "deployment").exists()
