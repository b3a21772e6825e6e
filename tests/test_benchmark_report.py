"""benchmarks/report.py on a small synthetic pytest-benchmark result."""

import json
import sys
import types

import pytest

from benchmarks import report


def _bench(model, mode, impl, batch, seq_len, median, **extra):
    info = {"model": model, "mode": mode, "impl": impl, "batch": batch, "seq_len": seq_len}
    group = f"{model}-{mode}-b{batch}-t{seq_len}"
    return {
        "group": group,
        "name": f"test_model[{group}-{impl}]",
        "extra_info": {**info, **extra},
        "stats": {"median": median, "mean": median * 1.1, "rounds": 5},
    }


@pytest.fixture
def result():
    return {
        "machine_info": {"chip": "Test Chip M9", "cores_physical": 4, "torch_threads": 3},
        "commit_info": {"id": "abc123"},
        "datetime": "2026-01-01T00:00:00",
        "benchmarks": [
            _bench("ltc_ncp", "inference", "mlx", 8, 32, 0.004, peak_memory_bytes=2048),
            _bench("cfc_fc", "train", "torch", 32, 128, 0.05, torch_threads=3),
            _bench("cfc_fc", "step1", "torch", 1, 1, 64e-6),
            _bench("cfc_fc", "step1_graph", "torch", 1, 1, 60e-6),
            _bench("cfc_fc", "step1_graph", "mlx", 1, 1, 40e-6),
            _bench("cfc_fc", "train", "mlx", 32, 128, 0.02, peak_memory_bytes=2**20),
            {"name": "test_unrelated", "extra_info": {}, "stats": {"median": 1.0}},
        ],
    }


@pytest.fixture
def no_costs(monkeypatch):
    # None in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "ncps_mlx.costs", None)


def test_rows_pair_implementations_and_sort(result):
    rows = report.collect_rows(result["benchmarks"])
    assert [(row.model, row.mode) for row in rows] == [
        ("cfc_fc", "train"),
        ("ltc_ncp", "inference"),
        ("cfc_fc", "step1"),
        ("cfc_fc", "step1_graph"),
    ]
    train, inference, step1, graph = rows
    assert (train.mlx, train.torch, train.peak_memory_bytes) == (0.02, 0.05, 2**20)
    assert train.speedup == pytest.approx(2.5)
    assert inference.torch is None and inference.speedup is None
    assert step1.mlx is None and step1.speedup is None
    assert graph.speedup == pytest.approx(1.5)


def test_tables_show_medians_ratios_and_missing_counterparts(result, no_costs):
    text = report.render(result, source="r.json")
    assert "| cfc_fc | 32 | 128 | 20 ms | 50 ms | 2.50x | 1.0 MiB |" in text
    assert "| ltc_ncp | 8 | 32 | 4 ms | - | - | 2.0 KiB |" in text
    assert "| cfc_fc | 1 | 1 | - | 64 us | - | - |" in text
    assert "| Chip / CPU | Test Chip M9 |" in text
    assert "| PyTorch threads | 3 |" in text
    assert "commit `abc123`" in text
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections == [
        "## Machine",
        "## Models",
        "## " + report.MODE_TITLES["train"],
        "## " + report.MODE_TITLES["inference"],
        "## " + report.MODE_TITLES["step1"],
        "## " + report.MODE_TITLES["step1_graph"],
        "## Device-independent cost per time step",
    ]
    assert report.MODE_NOTES["step1_graph"] in text


def test_render_is_independent_of_result_order(result, no_costs):
    shuffled = dict(result, benchmarks=list(reversed(result["benchmarks"])))
    assert report.render(result) == report.render(shuffled)


def test_missing_costs_module_leaves_a_note(result, no_costs):
    text = report.render(result)
    assert "Not available: `ncps_mlx.costs` cannot be imported" in text


def test_costs_table_uses_step_costs(result, monkeypatch):
    calls = []

    def step_costs(model, *, batch, mode):
        calls.append((type(model).__name__, batch, mode))
        if type(model).__name__ == "LTC":
            raise NotImplementedError("no LTC yet")
        return {"flops": 1234567, "transcendentals": 640, "bytes": 2.5e6, "graph_ops": 42}

    fake = types.ModuleType("ncps_mlx.costs")
    fake.step_costs = step_costs
    monkeypatch.setitem(sys.modules, "ncps_mlx.costs", fake)
    text = report.render(result)
    # A controller step is costed as one inference step at batch 1, once: the graph
    # step is the same computation.
    assert calls == [("CfC", 32, "train"), ("LTC", 8, "inference"), ("CfC", 1, "inference")]
    assert "| cfc_fc | train | 32 | 1,234,567 | 640 | 2.5e+06 | 42 |" in text
    assert "| cfc_fc | step1 | 1 | 1,234,567 | 640 | 2.5e+06 | 42 |" in text
    assert "- ltc_ncp inference b8: NotImplementedError: no LTC yet" in text


def test_main_writes_markdown_and_plot(result, no_costs, tmp_path):
    source = tmp_path / "result.json"
    source.write_text(json.dumps(result))
    out, png = tmp_path / "docs" / "bench.md", tmp_path / "docs" / "bench.png"
    report.main([str(source), "--out", str(out), "--plot", str(png)])
    assert out.read_text() == report.render(result, source="result.json")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_pairs_still_writes(tmp_path):
    png = tmp_path / "empty.png"
    report.plot([report.Row("cfc_fc", "train", 32, 128, mlx=0.1)], png)
    assert png.stat().st_size > 0


def test_directory_means_newest_autosave(tmp_path):
    machine = tmp_path / "Linux-CPython-3.11-64bit"
    machine.mkdir()
    for name in ("0001_base.json", "0003_new.json", "0002_mid.json"):
        (machine / name).write_text("{}")
    assert report.find_result(tmp_path).name == "0003_new.json"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no pytest-benchmark JSON"):
        report.find_result(empty)


def test_breakdown_splits_the_train_step_into_products_and_rest(result, no_costs):
    result["benchmarks"] += [
        _bench("cfc_fc", "matmuls", "mlx", 32, 128, 0.015, peak_memory_bytes=4096),
        _bench("cfc_fc", "matmuls", "torch", 32, 128, 0.01),
    ]
    result["benchmarks"][1]["extra_info"]["saved_for_backward_bytes"] = 3 * 2**20
    text = report.render(result)
    # Train rows gain the reference's saved activations; products get their own table.
    assert "| cfc_fc | 32 | 128 | 20 ms | 50 ms | 2.50x | 1.0 MiB | 3.0 MiB |" in text
    assert "| cfc_fc | 32 | 128 | 15 ms | 10 ms | 0.67x | 4.0 KiB |" in text
    assert "| cfc_fc b32 t128 | matrix products | 15 ms | 10 ms | 1.5 |" in text
    assert "| cfc_fc b32 t128 | everything else | 5 ms | 40 ms | 0.1 |" in text
    assert "| cfc_fc b32 t128 | whole train step | 20 ms | 50 ms | 0.4 |" in text
    # CfC(16, 64): backbone 128, heads 256, one input product over all 4096 tokens.
    per_step = 3 * 2 * 32 * (64 * 128 + 128 * 256)
    flops = 128 * per_step + 2 * (2 * 4096 * 16 * 128)
    alone = f"mlx {flops / 0.015 / 1e9:.1f} GFLOP/s, torch {flops / 0.01 / 1e9:.1f} GFLOP/s"
    whole = f"mlx {flops / 0.02 / 1e9:.1f} GFLOP/s, torch {flops / 0.05 / 1e9:.1f} GFLOP/s"
    assert f"{flops / 1e9:.2f} GFLOP in products; products alone: {alone}" in text
    assert f"whole train step (at least): {whole}" in text
    assert "## Where the time goes" in text
    # A step faster than its products alone did them another way: no difference shown.
    result["benchmarks"][-2]["stats"]["median"] = 0.03
    assert "| cfc_fc b32 t128 | everything else | - | 40 ms | - |" in report.render(result)
    # Products are no model case: neither costed nor plotted.
    assert "matmuls" not in text.split("## Device-independent")[1]


def test_matmul_shapes_are_the_train_steps_products():
    from benchmarks.workloads import MODELS, build_mlx, matmul_shapes

    model = build_mlx(MODELS["cfc_fc"])
    consts = model.rnn_cell.derive()
    shapes = matmul_shapes(model, 4, 3)
    # Forward products inside the loop use the derived weights the step multiplies by.
    loop = {(k, n) for m, k, n in shapes if m == 4}
    assert consts["wh_t"].shape in loop and consts["heads_w_t"].shape in loop
    assert shapes[0] == (12, 16, consts["wx_t"].shape[1])
    assert len(shapes) == 2 + 3 * 2 * 3
    # The mixed-memory LSTM's products and the output projection's are counted too.
    mixed = build_mlx(MODELS["cfc_mixed"])
    lstm = (mixed.rnn_cell.hidden_size, 4 * mixed.rnn_cell.hidden_size)
    assert (4, *lstm) in matmul_shapes(mixed, 4, 3)
    assert len(matmul_shapes(mixed, 4, 3)) == 4 + 3 * 3 * 3
    projected = build_mlx(MODELS["cfc_xor"])
    assert (12, 192, 1) in matmul_shapes(projected, 4, 3)
    with pytest.raises(ValueError, match="only a fully connected CfC"):
        matmul_shapes(build_mlx(MODELS["ltc_ncp"]), 4, 3)
