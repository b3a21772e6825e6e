"""The macOS monitoring backends (IOReport, IOAccelerator, powermetrics), run anywhere.

Their ctypes and subprocess layers are replaced by fakes that serve recorded data from
``tests/fixtures/monitor``, so what is checked here is everything except the C calls
themselves: channel selection, unit conversions, residency shares, frequency tables,
first-sample and failure behaviour, and resource release.
"""

import inspect
import json
import platform
import struct
import subprocess
from pathlib import Path

import pytest

from ncps_mlx.monitor.backends.iokit import (
    IOAcceleratorBackend,
    parse_performance_statistics,
    pick_statistics,
)
from ncps_mlx.monitor.backends.ioreport import (
    INT64_MIN,
    Channel,
    IOReportBackend,
    _IOReportLibrary,
    dram_bytes,
    energy_joules,
    gpu_residency,
    parse_voltage_states,
    power_watts,
    read_channels,
)
from ncps_mlx.monitor.backends.powermetrics import PowermetricsBackend, parse_powermetrics_plist

FIXTURES = Path(__file__).parent / "fixtures" / "monitor"
OFF_MAC = pytest.mark.skipif(platform.system() == "Darwin", reason="checks the non-macOS path")
M2_GPU_MHZ = [444.0, 612.0, 808.0, 968.0, 1110.0, 1236.0, 1338.0, 1398.0]


def _recorded_delta() -> tuple[list[Channel], float, bytes]:
    """The recorded M2 delta: its channels, its length in seconds, its GPU table bytes."""
    doc = json.loads((FIXTURES / "ioreport_m2_delta.json").read_text())
    channels = [
        Channel(
            c["group"], c["subgroup"], c["name"], c["unit"], c.get("value"),
            [(name, r) for name, r in c["states"]] if "states" in c else None,
        )
        for c in doc["channels"]
    ]  # fmt: skip
    table = b"".join(struct.pack("<II", *pair) for pair in doc["pmgr"]["voltage-states9"])
    return channels, doc["seconds"], table


# -- fakes -----------------------------------------------------------------------------------


class _Handle:
    """An owned reference of the fake library (compared by identity)."""

    def __init__(self, kind: str, payload=None):
        self.kind, self.payload = kind, payload


class FakeIOReport:
    """:class:`_IOReportLibrary`'s methods over recorded :class:`Channel` lists.

    ``groups`` are the groups this "machine" lists (``empty`` ones without channels); a
    subscription containing one of ``refuse`` fails (as ``AMC Stats`` does on M4 Max with
    macOS 26). Each delta serves the next recorded channel list, keeping only the
    subscribed groups. ``live`` holds every owned reference not yet released, to check
    for leaks.
    """

    def __init__(
        self, deltas, groups=("Energy Model", "GPU Stats", "AMC Stats"), refuse=(), empty=()
    ):
        self.deltas = list(deltas)
        self.groups, self.refuse, self.empty = set(groups), set(refuse), set(empty)
        self.live: set[_Handle] = set()
        self.fail_samples_after: int | None = None
        self.samples_taken = 0

    def _own(self, kind, payload=None):
        handle = _Handle(kind, payload)
        self.live.add(handle)
        return handle

    def copy_channels_in_group(self, group, subgroup=None):
        if group not in self.groups:
            return None
        return self._own("channels", set() if group in self.empty else {group})

    def merge_channels(self, into, other):
        into.payload |= other.payload

    def create_subscription(self, channels):
        if channels.payload & self.refuse:
            return None
        return self._own("subscription", frozenset(channels.payload))

    def create_samples(self, subscription, channels):
        if self.fail_samples_after is not None and self.samples_taken >= self.fail_samples_after:
            raise OSError("IOReport went away")
        self.samples_taken += 1
        return self._own("samples", subscription.payload)

    def create_samples_delta(self, previous, current):
        recorded = self.deltas.pop(0)
        return self._own("delta", [c for c in recorded if c.group in current.payload])

    def channels(self, samples):
        return list(samples.payload)

    def channel_group(self, item):
        return item.group

    def channel_subgroup(self, item):
        return item.subgroup

    def channel_name(self, item):
        return item.name

    def channel_unit(self, item):
        return item.unit

    def channel_format(self, item):
        return 2 if item.states is not None else 1

    def simple_integer_value(self, item):
        return INT64_MIN if item.value is None else item.value

    def state_count(self, item):
        return len(item.states)

    def state_name(self, item, index):
        return item.states[index][0]

    def state_residency(self, item, index):
        return item.states[index][1]

    def release(self, ref):
        if ref is not None:
            self.live.remove(ref)  # KeyError: released twice, or never owned


class FakeRegistry:
    """``IORegistry.properties`` over a dict {(service_class, key, entry_name): [values]}."""

    def __init__(self, properties=None, error: Exception | None = None):
        self._properties, self._error = properties or {}, error

    def properties(self, service_class, key, entry_name=None):
        if self._error is not None:
            raise self._error
        return self._properties.get((service_class, key, entry_name), [])


class Clock:
    def __init__(self, *times: float):
        self._times = list(times)

    def __call__(self) -> float:
        return self._times.pop(0)


def _ioreport(deltas, *, table: bytes | None = None, times=(100.0, 100.5), **fake_options):
    registry = FakeRegistry(
        {("AppleARMIODevice", "voltage-states9", "pmgr"): [table]} if table else {}
    )
    library = FakeIOReport(deltas, **fake_options)
    return IOReportBackend(library, registry, clock=Clock(*times)), library


# -- probing off macOS -------------------------------------------------------------------------


@OFF_MAC
def test_no_macos_backend_probes_true_off_macos():
    calls = []
    for backend in (
        IOReportBackend(),
        IOAcceleratorBackend(),
        PowermetricsBackend(run=calls.append),
    ):
        assert backend.probe() is False
    assert calls == []  # not even sudo is tried


@OFF_MAC
def test_probe_is_false_when_the_macos_libraries_cannot_be_loaded():
    # Claiming Darwin makes the real ctypes layer try to load libIOReport and IOKit, which
    # raises OSError here: probe must turn that into False.
    darwin = lambda: "Darwin"  # noqa: E731
    assert IOReportBackend(system=darwin).probe() is False
    assert IOAcceleratorBackend(system=darwin).probe() is False


def test_the_fake_ioreport_library_has_every_method_of_the_real_one():
    real = {n for n, _ in inspect.getmembers(_IOReportLibrary, inspect.isfunction)}
    fake = {n for n, _ in inspect.getmembers(FakeIOReport, inspect.isfunction)}
    assert {n for n in real if not n.startswith("_")} <= fake


# -- IOReport: the backend over a recorded delta -------------------------------------------------


def test_ioreport_samples_the_recorded_m2_delta():
    channels, seconds, table = _recorded_delta()
    backend, _ = _ioreport([channels], table=table, times=(100.0, 100.0 + seconds))
    assert backend.probe() is True

    first = backend.sample()
    assert set(first) == set(IOReportBackend.keys)
    assert all(value is None for value in first.values())  # rates need two samples

    figures = backend.sample()
    assert set(figures) == set(IOReportBackend.keys)
    assert figures["cpu_power_w"] == pytest.approx(250e-3 / 0.5)  # "CPU Energy" 250 mJ
    assert figures["gpu_power_w"] == pytest.approx(1.5e9 * 1e-9 / 0.5)  # "GPU Energy" nJ
    assert figures["ane_power_w"] == pytest.approx(10e-3 / 0.5)
    assert figures["dram_power_w"] == pytest.approx(300e-3 / 0.5)
    # GPUPH: OFF 3.0M of 12.0M -> busy 75 %; active P1 1.2M, P5 0.6M, P7 1.2M, P8 6.0M.
    assert figures["gpu_utilization_percent"] == pytest.approx(75.0)
    expected_mhz = (444 * 1.2 + 1110 * 0.6 + 1338 * 1.2 + 1398 * 6.0) / 9.0
    assert figures["gpu_frequency_mhz"] == pytest.approx(expected_mhz)  # 1243.6
    assert figures["dram_read_bytes_per_s"] == pytest.approx(4e9 / 0.5)  # "DCS RD"
    assert figures["dram_write_bytes_per_s"] == pytest.approx(1.5e9 / 0.5)  # "DCS WR"


def test_ioreport_uses_the_real_elapsed_time_between_samples():
    channels, _, table = _recorded_delta()
    backend, _ = _ioreport([channels], table=table, times=(10.0, 11.0))
    assert backend.probe()
    backend.sample()
    assert backend.sample()["cpu_power_w"] == pytest.approx(0.25)  # 250 mJ over 1 s


def test_ioreport_releases_every_reference_it_owns():
    channels, _, _ = _recorded_delta()
    backend, library = _ioreport([channels, channels], times=(0.0, 0.5, 1.0))
    assert backend.probe()
    for _ in range(3):
        backend.sample()
    assert {h.kind for h in library.live} == {"channels", "subscription", "samples"}
    backend.close()
    assert library.live == set()
    backend.close()  # idempotent


def test_ioreport_without_amc_stats_still_gives_power_and_gpu():
    # M4 Max / macOS 26: "AMC Stats" is listed, but a subscription including it fails.
    channels, _, table = _recorded_delta()
    backend, library = _ioreport([channels], table=table, refuse={"AMC Stats"})
    assert backend.probe() is True
    backend.sample()
    figures = backend.sample()
    assert figures["dram_read_bytes_per_s"] is None
    assert figures["dram_write_bytes_per_s"] is None
    assert figures["cpu_power_w"] == pytest.approx(0.5)
    assert figures["gpu_utilization_percent"] == pytest.approx(75.0)
    backend.close()
    assert library.live == set()  # the refused channel set was released too


@pytest.mark.parametrize(
    "options",
    [{"groups": ()}, {"groups": ("GPU Stats",), "empty": {"GPU Stats"}}, {"refuse": {"GPU Stats"}}],
    ids=["no-groups", "empty-groups", "refused"],
)
def test_ioreport_probe_is_false_without_a_subscription(options):
    backend, library = _ioreport([], **options)
    assert backend.probe() is False
    assert library.live == set()


def test_ioreport_missing_groups_give_none():
    channels, _, table = _recorded_delta()
    backend, _ = _ioreport([channels], table=table, groups=("GPU Stats",))
    assert backend.probe()
    backend.sample()
    figures = backend.sample()
    assert figures["gpu_utilization_percent"] == pytest.approx(75.0)
    for key in ("cpu_power_w", "gpu_power_w", "ane_power_w", "dram_power_w"):
        assert figures[key] is None
    assert figures["dram_read_bytes_per_s"] is None


def test_ioreport_errors_in_sample_propagate():
    channels, _, _ = _recorded_delta()
    backend, library = _ioreport([channels])
    assert backend.probe()
    backend.sample()
    library.fail_samples_after = 1
    with pytest.raises(OSError, match="went away"):
        backend.sample()


def test_ioreport_null_delta_raises():
    backend, library = _ioreport([])
    library.create_samples_delta = lambda previous, current: None
    assert backend.probe()
    backend.sample()
    with pytest.raises(RuntimeError, match="Delta"):
        backend.sample()


def test_ioreport_frequency_table_fallbacks():
    channels, _, table = _recorded_delta()

    def frequency(registry) -> float | None:
        backend = IOReportBackend(FakeIOReport([channels]), registry, clock=Clock(0.0, 0.5))
        assert backend.probe()  # a missing table never costs the other figures
        backend.sample()
        return backend.sample()["gpu_frequency_mhz"]

    sram = {("AppleARMIODevice", "voltage-states9-sram", "pmgr"): [table]}
    assert frequency(FakeRegistry(sram)) == pytest.approx(1243.6)  # the second key
    assert frequency(None) is None
    assert frequency(FakeRegistry({})) is None
    assert frequency(FakeRegistry(error=OSError("no pmgr"))) is None
    short = {("AppleARMIODevice", "voltage-states9", "pmgr"): [table[:-8]]}
    assert frequency(FakeRegistry(short)) is None  # 7 frequencies for 8 P-states


# -- IOReport: the parsing functions --------------------------------------------------------------


def _energy(name: str, value: int | None, unit: str = "mJ") -> Channel:
    return Channel("Energy Model", "", name, unit, value)


@pytest.mark.parametrize(
    ("value", "unit", "joules"),
    [
        (250, "mJ", 0.25),
        (250_000, "uJ", 0.25),
        (250_000_000, "nJ", 0.25),
        (250, " mJ ", 0.25),  # labels can carry padding
        (250, "mW", None),  # not an energy unit: never guessed
        (-1, "mJ", None),  # a counter that went backwards
        (None, "mJ", None),
    ],
)
def test_energy_units(value, unit, joules):
    assert energy_joules(value, unit) == (pytest.approx(joules) if joules else None)


def test_power_prefers_totals_over_their_parts():
    channels = [
        _energy("GPU Energy", 2_000_000_000, "nJ"),
        _energy("GPU0", 9_999),  # part of the total: not added to it
        _energy("EACC_CPU", 100),
        _energy("PACC0_CPU", 300),  # CPU rails alone never make a CPU figure
    ]
    figures = power_watts(channels, 2.0)
    assert figures["gpu_power_w"] == pytest.approx(1.0)
    assert figures["cpu_power_w"] is None


def test_power_sums_parts_and_dies():
    channels = [
        _energy("DIE_0_CPU Energy", 7497),  # M1 Ultra: one channel per die
        _energy("DIE_1_CPU Energy", 2627),
        _energy("ANE0_0", 58),
        _energy("ANE0_1", 7),
        _energy("DRAM0_0", 1065),
        _energy("DRAM0_1", 1051),
        _energy("GPU0", 400),
        _energy("GPU SRAM0", 50),  # not GPU core power
    ]
    figures = power_watts(channels, 0.5)
    assert figures["cpu_power_w"] == pytest.approx((7.497 + 2.627) / 0.5)
    assert figures["ane_power_w"] == pytest.approx((0.058 + 0.007) / 0.5)
    assert figures["dram_power_w"] == pytest.approx((1.065 + 1.051) / 0.5)
    assert figures["gpu_power_w"] == pytest.approx(0.4 / 0.5)


def test_power_is_none_when_a_channel_cannot_be_converted():
    channels = [_energy("DIE_0_CPU Energy", 100), _energy("DIE_1_CPU Energy", 100, "kWh")]
    assert power_watts(channels, 1.0)["cpu_power_w"] is None
    assert power_watts([_energy("CPU Energy", 100)], 0.0)["cpu_power_w"] is None


def _gpuph(*states: tuple[str, int], subgroup: str = "GPU Performance States") -> Channel:
    return Channel("GPU Stats", subgroup, "GPUPH", "", None, list(states))


def test_gpu_residency_counts_off_idle_and_down_as_inactive():
    channel = _gpuph(("OFF", 200), ("IDLE", 100), ("DOWN", 100), ("P1", 300), ("P2", 300))
    figures = gpu_residency([channel], [400.0, 1000.0])
    assert figures["gpu_utilization_percent"] == pytest.approx(60.0)
    assert figures["gpu_frequency_mhz"] == pytest.approx(700.0)


def test_gpu_residency_of_an_idle_gpu():
    figures = gpu_residency([_gpuph(("OFF", 500), ("P1", 0), ("P2", 0))], [400.0, 1000.0])
    assert figures["gpu_utilization_percent"] == 0.0
    assert figures["gpu_frequency_mhz"] is None  # no active time to average over


def test_gpu_residency_needs_the_gpuph_channel():
    none = {"gpu_utilization_percent": None, "gpu_frequency_mhz": None}
    assert gpu_residency([], M2_GPU_MHZ) == none
    assert gpu_residency([_gpuph(("OFF", 1), ("P1", 1), subgroup="Other")], [1.0]) == none
    assert gpu_residency([_gpuph(("OFF", 1), ("P1", -5))], [1.0]) == none


def _amc(name: str, value: int | None) -> Channel:
    return Channel("AMC Stats", "Perf Counters", name, "bytes", value)


def test_dram_bytes_reads_only_the_aggregate_counters():
    requestors_only = [_amc("GFX DCS RD", 10**9), _amc("PCPU0 DCS WR", 10**9)]
    assert dram_bytes(requestors_only, 1.0) == {
        "dram_read_bytes_per_s": None,
        "dram_write_bytes_per_s": None,
    }
    per_die = [_amc("DIE0 DCS RD", 3 * 10**9), _amc("DIE1 DCS RD", 10**9), _amc("AMC Write", 5)]
    figures = dram_bytes(per_die, 2.0)
    assert figures["dram_read_bytes_per_s"] == pytest.approx(2e9)
    assert figures["dram_write_bytes_per_s"] == pytest.approx(2.5)


def test_unreadable_counters_give_none_through_read_channels():
    # macOS 27 betas answered INT64_MIN for AMC channels that could not be read.
    library = FakeIOReport([])
    delta = library._own("delta", [_amc("DCS RD", None), _amc("DCS WR", 10)])
    channels = read_channels(library, delta)
    assert channels[0].value is None and channels[1].value == 10
    figures = dram_bytes(channels, 1.0)
    assert figures["dram_read_bytes_per_s"] is None
    assert figures["dram_write_bytes_per_s"] == 10.0


def _table(*frequencies: int) -> bytes:
    return b"".join(struct.pack("<II", f, 700) for f in frequencies)


def test_voltage_states_in_hz_and_khz():
    assert parse_voltage_states(_table(0, 444_000_000, 1_398_000_000)) == [444.0, 1398.0]
    assert parse_voltage_states(_table(0, 338_000, 1_620_000)) == [338.0, 1620.0]
    assert parse_voltage_states(_recorded_delta()[2]) == M2_GPU_MHZ


@pytest.mark.parametrize("data", [b"", b"\x01\x02\x03", _table(0, 0), _table(5, 6), None, "x"])
def test_voltage_states_of_another_shape_give_none(data):
    assert parse_voltage_states(data) is None


# -- IOAccelerator ------------------------------------------------------------------------------


def _statistics() -> dict:
    return json.loads((FIXTURES / "ioaccelerator_m2.json").read_text())["PerformanceStatistics"]


EXPECTED_ACCELERATOR = {
    "gpu_device_utilization_percent": 42,
    "gpu_renderer_utilization_percent": 40,
    "gpu_tiler_utilization_percent": 12,
    "gpu_in_use_system_memory_bytes": 1202913280,
    "gpu_alloc_system_memory_bytes": 10952982528,
}


class FakeIOKit:
    def __init__(self, *results):
        self._results = list(results)

    def performance_statistics(self):
        result = self._results.pop(0) if len(self._results) > 1 else self._results[0]
        if isinstance(result, Exception):
            raise result
        return result


def test_performance_statistics_of_the_recorded_m2():
    assert parse_performance_statistics(_statistics()) == EXPECTED_ACCELERATOR


def test_performance_statistics_without_numbers_give_none():
    figures = parse_performance_statistics(
        {"Device Utilization %": True, "Tiler Utilization %": "7", "In use system memory": 1e999}
    )
    assert figures == dict.fromkeys(EXPECTED_ACCELERATOR)


def test_pick_statistics_prefers_the_active_gpu():
    idle = {"In use system memory": 1}
    active = {"Device Utilization %": 5}
    assert pick_statistics(["junk", idle, active]) is active
    assert pick_statistics(["junk", idle]) is idle
    assert pick_statistics([{"unrelated": 1}, None]) is None


def test_ioaccelerator_backend_with_a_fake_library():
    backend = IOAcceleratorBackend(FakeIOKit([_statistics()]))
    assert backend.probe() is True
    assert backend.sample() == EXPECTED_ACCELERATOR


@pytest.mark.parametrize("result", [[], [{"unrelated": 1}], OSError("no IOKit")])
def test_ioaccelerator_probe_is_false_without_statistics(result):
    assert IOAcceleratorBackend(FakeIOKit(result)).probe() is False


def test_ioaccelerator_sample_raises_when_the_statistics_go():
    backend = IOAcceleratorBackend(FakeIOKit([_statistics()], [], OSError("gone")))
    assert backend.probe()
    with pytest.raises(RuntimeError, match="PerformanceStatistics"):
        backend.sample()
    with pytest.raises(OSError, match="gone"):
        backend.sample()


# -- powermetrics -------------------------------------------------------------------------------

PLIST = (FIXTURES / "powermetrics_m2.plist").read_bytes()
EXPECTED_POWERMETRICS = {
    "cpu_power_w": 1.2345,  # processor/cpu_power 1234.5 mW
    "gpu_power_w": 3.012,
    "ane_power_w": 0.02,
    "gpu_frequency_mhz": 1243.6,  # gpu/freq_hz holds MHz
    "gpu_utilization_percent": 75.0,  # 1 - idle_ratio 0.25
}


def _report(processor: str = "", gpu: str = "", elapsed_ns: int = 500_000_000) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>'
        f"<key>elapsed_ns</key><integer>{elapsed_ns}</integer>"
        f"<key>processor</key><dict>{processor}</dict><key>gpu</key><dict>{gpu}</dict>"
        "</dict></plist>"
    ).encode()


def test_powermetrics_plist_of_the_recorded_m2():
    assert parse_powermetrics_plist(PLIST) == pytest.approx(EXPECTED_POWERMETRICS)


def test_powermetrics_energy_keys_over_the_elapsed_time():
    report = _report(
        "<key>cpu_energy</key><integer>250</integer><key>ane_energy</key><integer>5</integer>",
        "<key>gpu_energy</key><integer>1000</integer>",
    )
    figures = parse_powermetrics_plist(report)
    assert figures["cpu_power_w"] == pytest.approx(0.5)  # 250 mJ over 0.5 s
    assert figures["ane_power_w"] == pytest.approx(0.01)
    assert figures["gpu_power_w"] == pytest.approx(2.0)  # from gpu/gpu_energy
    assert figures["gpu_frequency_mhz"] is None
    assert figures["gpu_utilization_percent"] is None


def test_powermetrics_reads_the_last_report_of_a_stream():
    stream = _report("<key>cpu_power</key><real>1</real>") + b"\x00\n" + PLIST + b"\x00"
    assert parse_powermetrics_plist(stream) == pytest.approx(EXPECTED_POWERMETRICS)


@pytest.mark.parametrize(
    ("gpu", "mhz", "busy"),
    [
        ("<key>freq_hz</key><real>1398000000</real>", 1398.0, None),  # in Hz after all
        ("<key>freq_hz</key><real>0</real><key>idle_ratio</key><real>1.0</real>", None, 0.0),
        ("<key>idle_ratio</key><real>1.5</real>", None, None),  # not a ratio
        ("<key>idle_ratio</key><string>0.2</string>", None, None),
    ],
)
def test_powermetrics_gpu_fields(gpu, mhz, busy):
    figures = parse_powermetrics_plist(_report(gpu=gpu))
    assert figures["gpu_frequency_mhz"] == mhz
    assert figures["gpu_utilization_percent"] == busy


@pytest.mark.parametrize("output", [b"", b"powermetrics: unrecognized sampler\n", b"\x00\x00"])
def test_powermetrics_output_without_a_report_raises(output):
    with pytest.raises(ValueError, match="no plist"):
        parse_powermetrics_plist(output)


class FakeRun:
    """``subprocess.run`` answering from a list of results (or exceptions to raise)."""

    def __init__(self, *results):
        self.results, self.calls = list(results), []

    def __call__(self, argv, **options):
        self.calls.append((argv, options))
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


def _done(returncode: int = 0, stdout: bytes = b"", stderr: bytes = b""):
    return subprocess.CompletedProcess([], returncode, stdout, stderr)


def _powermetrics(run: FakeRun, root: bool = False, system: str = "Darwin", **options):
    return PowermetricsBackend(run=run, system=lambda: system, is_root=lambda: root, **options)


def test_powermetrics_probe_asks_sudo_without_prompting():
    run = FakeRun(_done(0))
    assert _powermetrics(run).probe() is True
    argv, options = run.calls[0]
    assert argv == ["sudo", "-n", "true"]
    assert options["stdin"] is subprocess.DEVNULL


@pytest.mark.parametrize(
    "answer",
    [_done(1, stderr=b"sudo: a password is required"), FileNotFoundError("sudo"),
     subprocess.TimeoutExpired("sudo", 5)],
)  # fmt: skip
def test_powermetrics_probe_is_false_without_password_less_sudo(answer):
    assert _powermetrics(FakeRun(answer)).probe() is False


def test_powermetrics_probe_as_root_and_off_macos():
    run = FakeRun()
    assert _powermetrics(run, root=True).probe() is True
    assert _powermetrics(run, root=True, system="Linux").probe() is False
    assert run.calls == []


def test_powermetrics_sample_runs_one_window_and_parses_it():
    run = FakeRun(_done(0, stdout=PLIST), _done(0, stdout=PLIST))
    backend = _powermetrics(run, window_ms=500)
    assert backend.sample() == pytest.approx(EXPECTED_POWERMETRICS)
    argv, options = run.calls[0]
    assert argv == [
        "sudo", "-n", "powermetrics", "--samplers", "cpu_power,gpu_power,ane_power",
        "-i", "500", "-n", "1", "-f", "plist",
    ]  # fmt: skip
    assert options["timeout"] == pytest.approx(10.5)
    _powermetrics(run, root=True).sample()
    assert run.calls[1][0][0] == "powermetrics"  # root needs no sudo


def test_powermetrics_sample_raises_on_failure_and_timeout():
    backend = _powermetrics(FakeRun(_done(1, stderr=b"must be invoked as the superuser")))
    with pytest.raises(RuntimeError, match="status 1: must be invoked as the superuser"):
        backend.sample()
    backend = _powermetrics(FakeRun(subprocess.TimeoutExpired("powermetrics", 2)), timeout_s=2)
    with pytest.raises(RuntimeError, match="within 2 s"):
        backend.sample()
    with pytest.raises(ValueError, match="no plist"):
        _powermetrics(FakeRun(_done(0, stdout=b"garbage"))).sample()


@pytest.mark.parametrize("window_ms", [0, -5, 0.5])
def test_powermetrics_window_must_be_positive_ms(window_ms):
    with pytest.raises(ValueError, match="window_ms"):
        PowermetricsBackend(window_ms)
