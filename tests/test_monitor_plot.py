"""The monitor's figure: only panels with data, units by magnitude, and a step-time axis
that the first (compiling) step does not flatten. Checked on the axes, not the pixels."""

import pytest

from ncps_mlx.monitor import Run
from ncps_mlx.monitor.plot import BYTES, SECONDS, draw_run, pick_unit, robust_top

pytest.importorskip("matplotlib")

MIB = 2**20
FIRST_STEP_S = 0.250  # compilation
LATER_STEP_S = 0.004


def _linux_run(steps=40, with_psutil=True):
    """What a small model's run records on Linux: no GPU figures, MiB-sized memory."""
    samples = []
    for index in range(10):
        sample = {"time_s": 0.1 * index, "mlx_active_bytes": 3 * MIB + index * 1000,
                  "mlx_peak_bytes": 4 * MIB, "mlx_cache_bytes": 2 * MIB}  # fmt: skip
        if with_psutil:
            sample.update(cpu_percent=95.0 + index, system_cpu_percent=50.0,
                          process_rss_bytes=300 * MIB + index * MIB)  # fmt: skip
        samples.append(sample)
    times = [FIRST_STEP_S] + [LATER_STEP_S * (1 + 0.1 * (i % 3)) for i in range(steps - 1)]
    step_records = [
        {"step": i, "time_s": 0.3 + 0.005 * i, "step_time_s": t, "est_bandwidth_bytes_per_s": 2e8}
        for i, t in enumerate(times)
    ]
    return Run(meta={"backends": ["mlx", "psutil"]}, samples=samples, steps=step_records)


def _axes(run):
    return {axis.get_title(loc="left"): axis for axis in draw_run(run).axes}


def test_only_panels_with_data_are_drawn():
    assert list(_axes(_linux_run())) == [
        "Utilization", "Memory bandwidth", "Process memory", "MLX memory", "Step time"
    ]  # fmt: skip
    # Without psutil there is no utilization on Linux at all: no empty panel for it.
    assert list(_axes(_linux_run(with_psutil=False))) == [
        "Memory bandwidth", "MLX memory", "Step time"
    ]  # fmt: skip
    (axis,) = draw_run(Run()).axes
    assert [text.get_text() for text in axis.texts] == ["no figures were recorded"]


def test_utilization_on_linux_shows_the_cpu():
    axis = _axes(_linux_run())["Utilization"]
    assert axis.get_ylabel() == "%"
    labels = [line.get_label() for line in axis.lines]
    assert labels == ["process CPU (% of a core)", "machine CPU"]


def test_units_follow_the_magnitude_of_the_values():
    axes = _axes(_linux_run())
    assert axes["MLX memory"].get_ylabel() == "MiB"  # 3 MiB, not 0.003 GiB
    assert max(axes["MLX memory"].lines[0].get_ydata()) == pytest.approx(3 + 9000 / MIB)
    assert axes["Process memory"].get_ylabel() == "MiB"
    assert axes["Memory bandwidth"].get_ylabel() == "MB/s"
    assert max(axes["Memory bandwidth"].lines[0].get_ydata()) == pytest.approx(200)
    assert axes["Step time"].get_ylabel() == "ms"


def test_the_first_step_is_marked_apart_and_left_off_the_axis_range():
    axis = _axes(_linux_run())["Step time"]
    low, high = axis.get_ylim()
    slowest_later = LATER_STEP_S * 1.2 * 1000  # ms
    assert low == 0 and slowest_later <= high < FIRST_STEP_S * 1000 / 10
    step_line, first = axis.lines
    assert first.get_label() == "first step (includes compilation)"
    assert list(first.get_ydata()) == [pytest.approx(high)]  # on the top edge
    assert first.get_marker() == "^" and len(step_line.get_ydata()) == 39
    (note,) = axis.texts
    assert note.get_text() == "above the axis: first step 250 ms"


def test_a_stray_later_step_is_clipped_and_counted():
    run = _linux_run(steps=300)
    run.steps[150]["step_time_s"] = 2.0  # a pause, say
    axis = _axes(run)["Step time"]
    assert axis.get_ylim()[1] < 10  # ms: the 4-5 ms steps fill the axis
    (note,) = axis.texts
    assert note.get_text() == "above the axis: first step 250 ms; 1 later step up to 2e+03 ms"


def test_a_first_step_within_the_range_is_drawn_where_it_is():
    run = _linux_run(steps=5)
    run.steps[0]["step_time_s"] = LATER_STEP_S
    axis = _axes(run)["Step time"]
    assert axis.lines[1].get_marker() == "o" and not axis.texts
    assert _axes(_linux_run(steps=1))["Step time"].get_ylim()[1] > FIRST_STEP_S * 1000


def test_health_events_are_marked_on_every_panel():
    run = _linux_run()
    run.events = [
        {"event": "nan", "step": 3, "time_s": 0.5},
        {"event": "validation", "time_s": 0.6},
    ]
    for axis in _axes(run).values():
        marks = [line for line in axis.lines if list(line.get_xdata()) == [0.5, 0.5]]
        assert len(marks) == 1


def test_pick_unit_and_robust_top():
    assert pick_unit(BYTES, 0.003 * 2**30) == ("MiB", 2.0**20)
    assert pick_unit(BYTES, 5 * 2**30) == ("GiB", 2.0**30)
    assert pick_unit(BYTES, 0) == ("B", 1.0)
    assert pick_unit(SECONDS, 0.004) == ("ms", 1e-3)
    assert pick_unit(SECONDS, 2e-5) == ("µs", 1e-6)
    assert robust_top([1.0] * 99 + [1000.0]) < 20
    assert robust_top([2.0]) == pytest.approx(2.5)
    assert robust_top([0.0, 0.0]) > 0


def test_plot_saves_the_figure(tmp_path):
    path = _linux_run().plot(tmp_path / "monitor.png")
    assert path.read_bytes().startswith(b"\x89PNG")
