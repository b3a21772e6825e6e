"""The demo job's Python entry point, also without its optional dependencies."""

import json
import re
import sys

import numpy as np
import pytest
from mlx.utils import tree_flatten

from ncps_mlx import baselines, cli, load
from ncps_mlx.cells.base import CELLS
from ncps_mlx.costs import parameter_count
from ncps_mlx.demo import SPLIT, build_model, linear_baseline, make_task
from ncps_mlx.demo.baselines import (
    BASELINES,
    NAMES,
    GRUBaselineCell,
    LSTMBaselineCell,
    build_baseline,
    matched_hidden_size,
    train_baseline,
    with_gaps,
)
from ncps_mlx.demo.comparison import compare, percent_lower


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


# -- the recurrent baselines ------------------------------------------------------------


def test_the_demo_baselines_are_the_packages_under_their_saved_names():
    # The cells are tested in test_baselines.py; checkpoints name them by class name, so
    # the demo's saved baselines load as the package's cells.
    assert (GRUBaselineCell, LSTMBaselineCell) == (
        baselines.GRUBaselineCell,
        baselines.LSTMBaselineCell,
    )
    assert CELLS["GRUBaselineCell"] is GRUBaselineCell
    assert CELLS["LSTMBaselineCell"] is LSTMBaselineCell
    assert [BASELINES[name].label for name in NAMES] == ["GRU", "LSTM"]


def test_baselines_get_the_time_gaps_as_a_feature_and_the_ncps_parameter_count():
    splits = make_task(0)
    gapped = with_gaps(splits["train"])
    assert gapped.timespans is None and gapped.x.shape[-1] == 2
    np.testing.assert_array_equal(gapped.x[..., 1], splits["train"].timespans)
    ncp = parameter_count(build_model())
    for name in ("gru", "lstm"):
        hidden = matched_hidden_size(name, 2, ncp)
        counts = {
            size: parameter_count(build_baseline(name, 2, size))
            for size in (hidden - 1, hidden, hidden + 1)
        }
        assert abs(counts[hidden] - ncp) <= 0.1 * ncp
        # The closest size: one unit more or less is further from the NCP's count.
        assert abs(counts[hidden] - ncp) == min(abs(count - ncp) for count in counts.values())


def test_a_baseline_trains_the_same_twice_given_the_seed(tmp_path):
    splits = {name: data.subset(slice(0, 32)) for name, data in make_task(0).items()}
    runs = [
        train_baseline("gru", splits, tmp_path / str(i), 2, 3, 1557, progress=False, log=print)
        for i in range(2)
    ]
    weights = [dict(tree_flatten(run.model.parameters())) for run in runs]
    for key, value in weights[0].items():
        np.testing.assert_array_equal(np.array(value), np.array(weights[1][key]), err_msg=key)
    assert runs[0].scores == runs[1].scores


# -- the comparison's sentences ---------------------------------------------------------


def _metrics(ncp_mse, gru_mse, *, fused=True, resumed=False):
    model = {
        "parameters": 1557,
        "unmasked_parameters": 1433,
        "neurons": {"inter": 12, "command": 8, "motor": 4},
    }
    training = {"seconds": 4.0, "fused_kernels": fused, "resumed": resumed}
    gru = {
        "description": "GRU(21) + linear readout",
        "hidden_size": 21,
        "parameters": 1555,
        "test": {"mse": gru_mse, "mae": 0.2},
        "training": {"seconds": 20.0, "resumed": False},
    }
    test = {"mse": ncp_mse, "mae": 0.1}
    return {"model": model, "training": training, "test": test, "baselines": {"gru": gru}}


def test_the_comparison_says_where_the_ncp_is_better_and_where_not():
    found = compare(_metrics(0.0306, 0.0289))
    assert found["best_mse"] == {"model": "GRU(21)", "mse": 0.0289}
    assert found["worse"] == [
        "test MSE: the GRU(21)'s is 5.6% lower than the NCP's (0.0289 vs 0.0306)"
    ]
    assert found["better"] == [
        "test MAE: 50.0% lower than the GRU(21)'s (0.1000 vs 0.2000)",
        "training time: 5.0x shorter than the GRU(21)'s (4.0 s vs 20.0 s)",
    ]
    assert "fused CPU kernels" in found["notes"][0]
    assert any("1433 of them act" in sentence for sentence in found["by_design"])

    found = compare(_metrics(0.0289, 0.0306, fused=False))
    assert found["best_mse"]["model"] == "NCP" and found["notes"] == []
    assert found["better"][0] == "test MSE: 5.6% lower than the GRU(21)'s (0.0289 vs 0.0306)"
    found = compare(_metrics(0.03061, 0.03059))
    assert found["ties"] == ["test MSE: the NCP and the GRU(21) tie at 0.0306"]
    # A resumed run timed only its resumed part: its times are not compared.
    found = compare(_metrics(0.0306, 0.0289, resumed=True))
    assert not [s for s in found["better"] + found["worse"] if s.startswith("training time")]
    assert found["notes"] == [
        "training times are not compared: a resumed run times only its resumed part"
    ]


# -- the report -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A two-epoch demo without export or figures: its metrics, report and printed lines."""
    from ncps_mlx import demo

    out = tmp_path_factory.mktemp("demo")
    lines = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "write_figures", lambda out, run, log: [])
        metrics = demo.run_demo(
            out, epochs=2, seed=1, log=lines.append, export=False, progress=False
        )
    return metrics, (out / "report.md").read_text(), lines


def test_the_report_sets_same_size_baselines_beside_the_ncp(short_run):
    metrics, report, lines = short_run
    ncp = metrics["model"]["parameters"]
    assert list(metrics["baselines"]) == ["gru", "lstm"]
    for name, label in (("gru", "GRU"), ("lstm", "LSTM")):
        baseline = metrics["baselines"][name]
        assert abs(baseline["parameters"] - ncp) <= 0.1 * ncp
        assert baseline["training"]["epochs_run"] == 2 and baseline["training"]["seconds"] > 0
        row = (
            f"| {label}({baseline['hidden_size']}) + linear readout | x and the time gaps, as 2 "
            f"features | {baseline['parameters']} | {baseline['test']['mse']:.4f} | "
            f"{baseline['test']['mae']:.4f} | {baseline['training']['seconds']:.1f} s |"
        )
        assert row in report.splitlines()
    assert f"| {ncp} ({metrics['model']['unmasked_parameters']} unmasked) |" in report
    assert any(line.startswith("  GRU(") for line in lines)


ERROR_SENTENCE = re.compile(
    r"test (MSE|MAE): (?:the (\w+\(\d+\))'s is )?([\d.]+)% lower than the (?:NCP's|(\w+\(\d+\))'s) "
    r"\(([\d.]+) vs ([\d.]+)\)"
)


def test_the_reports_sentences_follow_its_numbers(short_run):
    metrics, report, lines = short_run
    found = metrics["comparison"]
    labels = {b["description"].split(" ")[0]: b for b in metrics["baselines"].values()}
    checked = 0
    for verdict in ("better", "worse"):
        for sentence in found[verdict]:
            assert f"- {sentence}" in report.splitlines()
            assert any(sentence in line for line in lines)  # printed too
            match = ERROR_SENTENCE.fullmatch(sentence)
            if match is None:
                assert sentence.startswith("training time: ")
                continue
            figure, theirs_lower, pct, ours_higher_label, low, high = match.groups()
            label = theirs_lower or ours_higher_label
            ncp, other = metrics["test"][figure.lower()], labels[label]["test"][figure.lower()]
            # "better" sentences put the NCP's figure first, "worse" ones the baseline's.
            assert (verdict == "better") == (ncp < other) == (theirs_lower is None)
            low_value, high_value = sorted((ncp, other))
            assert (low, high) == (f"{low_value:.4f}", f"{high_value:.4f}")
            assert pct == f"{percent_lower(low_value, high_value):.1f}"
            checked += 1
    assert checked + len(found["ties"]) == 2 * len(labels)  # MSE and MAE for each
    best = min(
        [("NCP", metrics["test"]["mse"])] + [(k, b["test"]["mse"]) for k, b in labels.items()],
        key=lambda item: item[1],
    )
    assert found["best_mse"] == {"model": best[0], "mse": best[1]}
    assert f"Lowest test MSE: {best[0]}, {best[1]:.4f}" in report
