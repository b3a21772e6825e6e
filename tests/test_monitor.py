"""The monitor: sampling thread, steps, failure handling, records, reports, traffic model."""

import json
import math
import threading
import time
import types
import warnings

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import pytest

from ncps_mlx import CfC, cli
from ncps_mlx.monitor import Chip, Monitor, Run, step_traffic
from ncps_mlx.monitor.backends import Backend, RateCounter, create
from ncps_mlx.monitor.backends.nvml import NVMLBackend
from ncps_mlx.monitor.chips import detect_chip, parse_brand, parse_gpu_cores, peak_bandwidth
from ncps_mlx.training import make_train_step
from ncps_mlx.wirings import AutoNCP

INTERVAL = 0.01


class Counter(Backend):
    name = "counter"
    keys = {"ticks": "samples taken"}

    def __init__(self):
        self.ticks = 0

    def sample(self):
        self.ticks += 1
        return {"ticks": self.ticks}


class FailsAfter(Backend):
    name = "flaky"

    def __init__(self, good: int):
        self.good = good

    def sample(self):
        if self.good == 0:
            raise OSError("device went away")
        self.good -= 1
        return {"flaky_value": 1.0}


class Unavailable(Backend):
    name = "absent"

    def probe(self):
        return False

    def sample(self):  # pragma: no cover - never called
        raise AssertionError


class ProbeRaises(Backend):
    name = "broken"

    def probe(self):
        raise RuntimeError("library mismatch")


def _wait_for(condition, timeout=5.0):
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(INTERVAL)
    assert condition()


def _threads():
    return {t for t in threading.enumerate() if t.name == "ncps-mlx-monitor"}


def test_samples_in_the_background_until_stopped():
    with Monitor(INTERVAL, [Counter()], health=False) as mon:
        _wait_for(lambda: len(mon.samples) >= 5)
        assert len(_threads()) == 1
    count = len(mon.samples)
    time.sleep(5 * INTERVAL)
    assert len(mon.samples) == count and not _threads()
    times = [s["time_s"] for s in mon.samples]
    assert times == sorted(times)
    assert [s["ticks"] for s in mon.samples] == list(range(1, count + 1))


def test_auto_backends_on_this_machine_report_memory():
    with Monitor(INTERVAL) as mon:
        _wait_for(lambda: len(mon.samples) >= 2)
    names = [b.name for b in mon.backends]
    assert "mlx" in names
    sample = mon.samples[-1]
    for key in ("mlx_active_bytes", "mlx_peak_bytes", "mlx_cache_bytes"):
        assert isinstance(sample[key], int)
    if "psutil" in names:
        assert sample["process_rss_bytes"] > 0 and sample["cpu_percent"] >= 0


def test_a_backend_failing_mid_run_is_disabled_once_and_the_rest_go_on():
    flaky = pytest.warns(RuntimeWarning, match="'flaky' failed and is disabled")
    with flaky as caught, Monitor(INTERVAL, [Counter(), FailsAfter(good=2)], health=False) as mon:
        _wait_for(lambda: len(mon.samples) >= 6)
    assert sum("flaky" in str(w.message) for w in caught) == 1
    assert [b.name for b in mon.backends] == ["counter"]
    assert "flaky_value" in mon.samples[1] and "flaky_value" not in mon.samples[-1]
    assert all("ticks" in s for s in mon.samples)


def test_unavailable_and_broken_backends_are_left_out():
    with pytest.warns(RuntimeWarning, match="'broken' could not start"):
        mon = Monitor(INTERVAL, [Unavailable(), ProbeRaises(), Counter()], health=False)
        mon.start()
    mon.stop()
    assert [b.name for b in mon.backends] == ["counter"]


def test_unknown_backend_and_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        Monitor(backends=["gpu"])
    with pytest.raises(ValueError, match="'interval' must be a number > 0"):
        Monitor(interval=0)
    with pytest.raises(ValueError, match="'model' and 'seq_len' together"):
        Monitor(model=CfC(2, 4))


def test_an_exception_in_the_step_leaves_records_and_no_thread():
    with pytest.raises(ZeroDivisionError), Monitor(INTERVAL, [Counter()], health=False) as mon:
        with mon.step(samples=4):
            pass
        with mon.step(samples=4):
            1 / 0  # noqa: B018
    assert len(mon.steps) == 1 and mon.samples and not _threads()


def test_keyboard_interrupt_stops_the_monitor_and_keeps_records():
    with pytest.raises(KeyboardInterrupt), Monitor(INTERVAL, [Counter()], health=False) as mon:
        with mon.step(samples=2):
            pass
        raise KeyboardInterrupt
    assert len(mon.steps) == 1 and not _threads()
    mon.stop()  # idempotent


def _train(mon, model, steps=3, batch=4, seq_len=6):
    optimizer = optim.Adam(1e-2)
    train_step = make_train_step(model, optimizer, nn.losses.mse_loss)
    x = mx.random.normal((batch, seq_len, model.input_size))
    y = mx.random.normal((batch, seq_len, model.output_size))
    for _ in range(steps):
        with mon.step(samples=batch) as step:
            step.loss = train_step(x, y)


def test_steps_of_a_real_training_loop_carry_time_throughput_and_traffic():
    model = CfC(3, AutoNCP(8, 2))
    chip = Chip("M2", 10, 100e9)
    with Monitor(INTERVAL, ["mlx"], model=model, seq_len=6, chip=chip) as mon:
        _train(mon, model)
    expected = step_traffic(model, 4, 6).total
    assert [s["step"] for s in mon.steps] == [0, 1, 2]
    for record in mon.steps:
        assert record["step_time_s"] > 0
        assert record["samples_per_s"] == pytest.approx(4 / record["step_time_s"])
        assert record["est_bytes"] == expected
        bandwidth = expected / record["step_time_s"]
        assert record["est_bandwidth_bytes_per_s"] == pytest.approx(bandwidth)
        assert record["est_bandwidth_fraction"] == pytest.approx(bandwidth / 100e9)
        assert math.isfinite(record["loss"])


def test_without_a_known_chip_the_fraction_is_absent_not_made_up():
    mon = Monitor(INTERVAL, [Counter()], chip=None, health=False)
    mon.chip = None
    with mon, mon.step(samples=2, est_bytes=1000):
        pass
    assert mon.steps[0]["est_bytes"] == 1000
    assert mon.steps[0]["est_bandwidth_fraction"] is None


def test_a_nan_loss_becomes_a_health_event():
    with Monitor(INTERVAL, [Counter()]) as mon:
        for loss in (1.0, 0.9, float("nan")):
            with mon.step(samples=1) as step:
                step.loss = loss
    assert [e["event"] for e in mon.events] == ["nan"]
    assert mon.events[0]["step"] == 2 and "time_s" in mon.events[0]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_records_round_trip_through_files(suffix, tmp_path):
    with Monitor(INTERVAL, [Counter()], chip=Chip("M1", 8, 68.25e9)) as mon:
        with mon.step(samples=2, est_bytes=100) as step:
            step.loss = float("nan")
        _wait_for(lambda: len(mon.samples) >= 2)
    path = mon.save(tmp_path / f"run{suffix}")

    run = Run.load(path)

    def present(records):  # CSV has no way to tell None from absent
        return [{k: v for k, v in r.items() if v is not None} for r in records]

    assert present(run.samples) == present(mon.samples)
    assert present(run.events) == present(mon.events)
    assert run.meta["chip"] == "M1" and run.meta["backends"] == ["counter"]
    assert [s["step_time_s"] for s in run.steps] == [s["step_time_s"] for s in mon.steps]
    with pytest.raises(ValueError, match=r"\.jsonl or \.csv"):
        mon.save(tmp_path / "run.txt")


def test_summary_prometheus_and_plot(tmp_path):
    with Monitor(INTERVAL, [Counter()]) as mon:
        for _ in range(3):
            with mon.step(samples=2, est_bytes=100) as step:
                step.loss = 1.0
        _wait_for(lambda: len(mon.samples) >= 3)
    summary = mon.summary()
    assert summary["steps"] == 3 and summary["backends"] == "counter"
    assert summary["ticks"]["max"] == mon.samples[-1]["ticks"]
    assert summary["step_time_s"]["mean"] > 0
    assert "figure" in str(summary) and "ticks" in str(summary)
    json.dumps(summary)

    text = mon.prometheus()
    assert "# TYPE ncps_mlx_ticks gauge" in text
    assert f"ncps_mlx_steps_total {len(mon.steps)}" in text

    matplotlib = pytest.importorskip("matplotlib")
    backend = matplotlib.get_backend()
    matplotlib.use("svg")  # stands in for a notebook's inline backend
    try:
        path = mon.plot(tmp_path / "monitor.png")
        assert matplotlib.get_backend() == "svg"  # the caller's backend is left alone
    finally:
        matplotlib.use(backend)
    assert path.stat().st_size > 1000


def test_rate_counter_gives_none_first_then_rates():
    counter = RateCounter()
    assert counter.rates(1.0, {"bytes": 100}) == {"bytes": None}
    assert counter.rates(1.5, {"bytes": 600}) == {"bytes": 1000.0}
    assert counter.rates(1.5, {"bytes": 700}) == {"bytes": None}  # no time elapsed


def test_create_resolves_names_and_instances():
    counter = Counter()
    backends = create(["mlx", counter])
    assert backends[0].name == "mlx" and backends[1] is counter
    assert "powermetrics" not in [b.name for b in create("auto")]


def test_nvml_backend_reads_a_fake_library():
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda index: f"gpu{index}",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=87, memory=40),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=3 * 2**30),
        nvmlDeviceGetPowerUsage=lambda h: 123456,
        nvmlDeviceGetClockInfo=lambda h, clock: 1410,
        NVML_CLOCK_GRAPHICS=0,
    )
    backend = NVMLBackend(nvml=fake)
    assert backend.probe()
    assert backend.sample() == {
        "gpu_utilization_percent": 87,
        "gpu_memory_busy_percent": 40,
        "gpu_memory_used_bytes": 3 * 2**30,
        "gpu_power_w": 123.456,
        "gpu_frequency_mhz": 1410,
    }


def test_nvml_backend_is_unavailable_without_a_driver():
    def missing():
        raise OSError("libnvidia-ml.so.1 not found")

    assert not NVMLBackend(nvml=types.SimpleNamespace(nvmlInit=missing)).probe()


# -- chips ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "brand,name",
    [("Apple M1", "M1"), ("Apple M3 Max", "M3 Max"), ("Apple M2 Ultra", "M2 Ultra"),
     ("Intel(R) Core(TM) i9", None), ("AMD EPYC", None)],
)  # fmt: skip
def test_parse_brand(brand, name):
    assert parse_brand(brand) == name


def test_peak_bandwidth_uses_the_gpu_core_count_where_it_matters():
    assert peak_bandwidth("M2 Pro", None) == 200e9
    assert peak_bandwidth("M3 Max", 30) == 300e9
    assert peak_bandwidth("M3 Max", 40) == 400e9
    assert peak_bandwidth("M3 Max", None) is None
    assert peak_bandwidth("M9", 10) is None
    assert parse_gpu_cores('| "gpu-core-count" = 38\n') == 38
    assert parse_gpu_cores("nothing") is None


def test_detect_chip_from_recorded_command_output():
    outputs = {"sysctl": "Apple M4 Max\n", "ioreg": '  "gpu-core-count" = 40\n'}

    def run(command, **kwargs):
        return types.SimpleNamespace(stdout=outputs[command[0]])

    chip = detect_chip(run=run, system=lambda: "Darwin")
    assert chip == Chip("M4 Max", 40, 546e9)
    assert detect_chip(run=run, system=lambda: "Linux") is None


# -- command line --------------------------------------------------------------------
def test_cli_live_view_and_report(tmp_path, capsys):
    run_file = tmp_path / "run.jsonl"
    assert cli.main(["monitor", "--interval", "0.02", "--duration", "0.15",
                     "--backends", "mlx", "--out", str(run_file)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "backends: mlx" in printed and f"wrote {run_file}" in printed
    assert len(Run.load(run_file).samples) >= 3

    pytest.importorskip("matplotlib")
    assert cli.main(["monitor", "report", str(run_file), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "monitor.png").is_file()
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["samples"] >= 3
    assert cli.main(["monitor", "report"]) == 2


def test_monitor_does_not_warn_on_a_healthy_run():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Monitor(INTERVAL, ["mlx"]) as mon:
            _wait_for(lambda: len(mon.samples) >= 2)
