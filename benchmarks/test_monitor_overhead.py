"""Smoke run of the monitor-overhead measurement (the figures come from
``python -m benchmarks.monitor_overhead``; see docs/monitoring.md)."""

from benchmarks.monitor_overhead import measure


def test_monitor_overhead_measurement_runs(smoke):
    sizes = {"rounds": 1, "steps": 2, "batch": 2, "seq_len": 4, "units": 12} if smoke else {}
    result = measure(**sizes)
    assert result["steps_each"] > 0 and result["sample_cost_s"] > 0
