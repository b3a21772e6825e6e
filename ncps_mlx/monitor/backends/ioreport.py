"""GPU residency, SoC power and DRAM traffic from IOReport, without sudo.

IOReport (``/usr/lib/libIOReport.dylib``) is the private library ``powermetrics`` itself
reads; macmon and mactop read it the same way (asitop ran powermetrics). A subscription to a
few channel groups is sampled at every `IOReportBackend.sample`, and the *delta*
between two consecutive samples gives, per channel, either an integer (energy, bytes)
or a residency per state (time spent in each GPU performance state).

Where each figure comes from (group / subgroup / channel, as named on M1-M4 Macs):

* ``*_power_w``: group ``Energy Model``; energy over the sample's elapsed time, in the
  unit the channel states (``mJ``, ``uJ`` or ``nJ``; ``GPU Energy`` is in nJ where the
  others are mJ). The mJ counters can advance only about every 0.5 s (a published M1
  Ultra trace shows it), so at much shorter intervals one sample can read 0 W and the
  next a burst: compare means over several samples.
* ``gpu_utilization_percent`` / ``gpu_frequency_mhz``: group ``GPU Stats``, subgroup
  ``GPU Performance States``, channel ``GPUPH``: the share of time the GPU spent out of
  ``OFF``/``IDLE``/``DOWN``, and the residency-weighted mean of its P-state frequencies
  while active. The frequencies come from the IORegistry (``AppleARMIODevice`` ``pmgr``,
  property ``voltage-states9``), which has no documented layout; where it is absent or
  does not match the states, the frequency is None.
* ``dram_read_bytes_per_s`` / ``dram_write_bytes_per_s``: group ``AMC Stats``, the
  memory controller's aggregate ``DCS RD`` / ``DCS WR`` byte counters. **Absent on M4
  Max with macOS 26 and on M5** (and reportedly on macOS 27 betas), where ``AMC Stats``
  can be listed but not subscribed (the data moved to coarse ``PMP`` bandwidth
  histograms, which this backend does not turn into figures): these two figures are
  then None, never estimated.

Verified only on a Mac, not in this project's CI: the ctypes layer
(`_IOReportLibrary`, `_cf`) cannot run on Linux. Everything after it works
on plain `Channel` records and is tested everywhere with recorded deltas (and a
fake library with `_IOReportLibrary`'s methods), so only the few C calls are
unverified off a Mac.
"""

import contextlib
import ctypes
import platform
import re
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .base import Backend, Figures, off_macos

IOREPORT_PATH = "/usr/lib/libIOReport.dylib"
ENERGY_GROUP = "Energy Model"
GPU_GROUP, GPU_SUBGROUP, GPU_CHANNEL = "GPU Stats", "GPU Performance States", "GPUPH"
AMC_GROUP = "AMC Stats"
#: IORegistry properties tried, in order, for the GPU frequency table.
GPU_TABLE_KEYS = ("voltage-states9", "voltage-states9-sram")

FORMAT_SIMPLE, FORMAT_STATE = 1, 2  # IOReportChannelGetFormat
INT64_MIN = -(2**63)  # IOReportSimpleGetIntegerValue's answer for an unreadable channel
INACTIVE_STATES = frozenset({"OFF", "IDLE", "DOWN"})
JOULES_PER_UNIT = {"mJ": 1e-3, "uJ": 1e-6, "µJ": 1e-6, "nJ": 1e-9}

_DIE = r"(?:DIE_\d+_)?"  # Ultra chips prefix per-die channels, e.g. "DIE_1_CPU Energy"
#: Power domains: (channels that are the domain's total, channels that are its parts).
#: Totals win when present, so a total and its parts are never added together.
POWER_DOMAINS: dict[str, tuple[str, str | None]] = {
    # No parts for the CPU: its cluster and core rails (EACC_CPU, PACC0_CPU0...) overlap.
    "cpu_power_w": (rf"{_DIE}CPU Energy", None),
    "gpu_power_w": (rf"{_DIE}GPU Energy", rf"{_DIE}GPU\d*"),  # "GPU0"; not "GPU SRAM0"
    "ane_power_w": (rf"{_DIE}ANE Energy", r"ANE\d*(?:_\d+)?"),  # "ANE", "ANE0", "ANE0_1"
    "dram_power_w": (rf"{_DIE}DRAM Energy", r"DRAM\d*(?:_\d+)?"),  # "DRAM", "DRAM0_1"
}
#: The memory controller's aggregate byte counters ("DCS RD"), optionally per die. The
#: per-requestor ones ("GFX DCS RD", "PCPU0 DCS WR"...) are parts of these and the
#: "DCS F1 RD"-style ones a split by frequency, so neither is matched (no double count).
DRAM_TOTAL = re.compile(r"(?:DIE_?\d+[ _])?(?:DCS|AMC) (RD|WR|READ|WRITE)", re.IGNORECASE)


@dataclass(frozen=True)
class Channel:
    """One IOReport channel of a delta: an integer ``value`` (Simple format) or the
    residency of each named state (State format); None for what the channel lacks."""

    group: str
    subgroup: str
    name: str
    unit: str = ""
    value: int | None = None
    states: list[tuple[str, int]] | None = None


# -- parsing: plain Python, tested everywhere ----------------------------------------------


def energy_joules(value: int | None, unit: str) -> float | None:
    """An energy counter delta in joules; None for an unknown unit or an invalid delta."""
    scale = JOULES_PER_UNIT.get(unit.strip())
    if scale is None or value is None or value < 0:
        return None
    return value * scale


def power_watts(channels: Iterable[Channel], seconds: float) -> Figures:
    """CPU, GPU, ANE and DRAM power from the ``Energy Model`` channels of a delta.

    A domain is None when it has no channel, or when one of its channels has an unknown
    unit or an invalid value (a partial sum would understate it).
    """
    energy = [c for c in channels if c.group == ENERGY_GROUP]
    return {
        key: _domain_power(energy, *patterns, seconds) for key, patterns in POWER_DOMAINS.items()
    }


def _domain_power(
    energy: list[Channel], total: str, parts: str | None, seconds: float
) -> float | None:
    for pattern in (total, parts):
        if pattern is None:
            continue
        matched = [c for c in energy if re.fullmatch(pattern, c.name, re.IGNORECASE)]
        if matched:
            joules = [energy_joules(c.value, c.unit) for c in matched]
            if None in joules or seconds <= 0:
                return None
            return sum(joules) / seconds
    return None


def gpu_residency(
    channels: Iterable[Channel], frequencies_mhz: Sequence[float] | None = None
) -> Figures:
    """GPU busy share and mean active frequency from the ``GPUPH`` state residencies.

    ``gpu_utilization_percent`` is 100 x (time in active P-states) / (all time);
    ``gpu_frequency_mhz`` weights ``frequencies_mhz`` (one per active P-state, lowest
    first) by residency, and is None with no table, a table whose length differs from the
    number of P-states (it then describes other states), or no active time.
    """
    gpuph = [
        c.states
        for c in channels
        if (c.group, c.subgroup, c.name) == (GPU_GROUP, GPU_SUBGROUP, GPU_CHANNEL) and c.states
    ]
    if not gpuph or any(r < 0 for states in gpuph for _, r in states):
        return {"gpu_utilization_percent": None, "gpu_frequency_mhz": None}
    total = sum(r for states in gpuph for _, r in states)
    active = [_active_states(states) for states in gpuph]
    busy = sum(r for states in active for _, r in states)
    return {
        "gpu_utilization_percent": 100.0 * busy / total if total > 0 else None,
        "gpu_frequency_mhz": _mean_frequency(active, busy, frequencies_mhz),
    }


def _active_states(states: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(n, r) for n, r in states if n.strip().upper() not in INACTIVE_STATES]


def _mean_frequency(
    active: list[list[tuple[str, int]]], busy: int, frequencies_mhz: Sequence[float] | None
) -> float | None:
    if not frequencies_mhz or busy <= 0:
        return None
    if any(len(states) != len(frequencies_mhz) for states in active):
        return None
    weighted = sum(
        f * r for states in active for f, (_, r) in zip(frequencies_mhz, states, strict=True)
    )
    return weighted / busy


def dram_bytes(channels: Iterable[Channel], seconds: float) -> Figures:
    """DRAM bytes read and written per second from the ``AMC Stats`` aggregate counters.

    None where the chip or OS exposes no such counter (M4 Max on macOS 26, M5: the group
    cannot be subscribed) or the counter is unreadable.
    """
    totals: dict[str, list[int | None]] = {"read": [], "write": []}
    for channel in channels:
        match = DRAM_TOTAL.fullmatch(channel.name) if channel.group == AMC_GROUP else None
        if match:
            direction = "read" if match.group(1).upper() in ("RD", "READ") else "write"
            totals[direction].append(channel.value)
    return {
        f"dram_{direction}_bytes_per_s": _rate(values, seconds)
        for direction, values in totals.items()
    }


def _rate(values: list[int | None], seconds: float) -> float | None:
    counted = [v for v in values if v is not None and v >= 0]
    if not values or len(counted) < len(values) or seconds <= 0:
        return None  # an unreadable counter makes the sum unknown, not smaller
    return sum(counted) / seconds


def parse_voltage_states(data: bytes | None) -> list[float] | None:
    """GPU P-state frequencies in MHz from a ``voltage-states*`` IORegistry property.

    The property is little-endian ``(frequency, voltage)`` pairs of uint32; the zero
    entry (the off state) is dropped. Frequencies are in Hz on M1-M4 and in kHz on some
    newer chips; the magnitude tells them apart (no GPU runs below 100 MHz when active).
    None for anything not of that shape.
    """
    if not isinstance(data, bytes) or not data or len(data) % 8:
        return None
    raw = [frequency for frequency, _ in struct.iter_unpack("<II", data) if frequency]
    if not raw:
        return None
    top = max(raw)
    divisor = 1e6 if top >= 100e6 else 1e3 if top >= 100e3 else None
    return None if divisor is None else [f / divisor for f in raw]


def figures(
    channels: Sequence[Channel], seconds: float, frequencies_mhz: Sequence[float] | None
) -> Figures:
    """Every figure of `IOReportBackend` from one delta over ``seconds``."""
    return {
        **gpu_residency(channels, frequencies_mhz),
        **power_watts(channels, seconds),
        **dram_bytes(channels, seconds),
    }


def read_channels(library: Any, delta: Any) -> list[Channel]:
    """The channels of a delta as `Channel` records, through ``library``'s
    accessors (an `_IOReportLibrary` or a fake with its methods)."""
    return [_read_channel(library, item) for item in library.channels(delta)]


def _read_channel(library: Any, item: Any) -> Channel:
    value = states = None
    kind = library.channel_format(item)
    if kind == FORMAT_SIMPLE:
        value = library.simple_integer_value(item)
        value = None if value == INT64_MIN else value
    elif kind == FORMAT_STATE:
        states = [
            (library.state_name(item, i) or f"S{i}", library.state_residency(item, i))
            for i in range(library.state_count(item))
        ]
    return Channel(
        group=library.channel_group(item) or "",
        subgroup=library.channel_subgroup(item) or "",
        name=library.channel_name(item) or "",
        unit=(library.channel_unit(item) or "").strip(),
        value=value,
        states=states,
    )


# -- the thin ctypes layer: verified only on a Mac -----------------------------------------


class _IOReportLibrary:  # pragma: no cover (macOS)
    """libIOReport's calls, one method each. References are ints (None for NULL);
    ``copy``/``create`` results are owned and go back through `release`."""

    def __init__(self, path: str = IOREPORT_PATH, cf: Any = None):
        from ._cf import CoreFoundation, declare

        self.cf = cf if cf is not None else CoreFoundation()
        lib = ctypes.CDLL(path)
        ptr, u64, i32 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int32
        self._copy = declare(lib, "IOReportCopyChannelsInGroup", ptr, ptr, ptr, u64, u64, u64)
        self._merge = declare(lib, "IOReportMergeChannels", None, ptr, ptr, ptr)
        self._subscribe = declare(
            lib, "IOReportCreateSubscription", ptr, ptr, ptr, ctypes.POINTER(ptr), u64, ptr
        )
        self._samples = declare(lib, "IOReportCreateSamples", ptr, ptr, ptr, ptr)
        self._delta = declare(lib, "IOReportCreateSamplesDelta", ptr, ptr, ptr, ptr)
        self._group = declare(lib, "IOReportChannelGetGroup", ptr, ptr)
        self._subgroup = declare(lib, "IOReportChannelGetSubGroup", ptr, ptr)
        self._name = declare(lib, "IOReportChannelGetChannelName", ptr, ptr)
        self._unit = declare(lib, "IOReportChannelGetUnitLabel", ptr, ptr)
        self._format = declare(lib, "IOReportChannelGetFormat", ctypes.c_int, ptr)
        self._integer = declare(lib, "IOReportSimpleGetIntegerValue", ctypes.c_int64, ptr, i32)
        self._state_count = declare(lib, "IOReportStateGetCount", i32, ptr)
        self._state_name = declare(lib, "IOReportStateGetNameForIndex", ptr, ptr, i32)
        self._residency = declare(lib, "IOReportStateGetResidency", ctypes.c_int64, ptr, i32)

    def copy_channels_in_group(self, group: str, subgroup: str | None = None) -> int | None:
        """The channels of a group (a mutable CFDictionary), None if it does not exist."""
        cf_group = self.cf.string(group)
        cf_subgroup = self.cf.string(subgroup) if subgroup else None
        try:
            return self._copy(cf_group, cf_subgroup, 0, 0, 0)
        finally:
            self.cf.release(cf_group)
            self.cf.release(cf_subgroup)

    def merge_channels(self, into: int, other: int) -> None:
        self._merge(into, other, None)

    def create_subscription(self, channels: int) -> int | None:
        subscribed = ctypes.c_void_p()
        subscription = self._subscribe(None, channels, ctypes.byref(subscribed), 0, None)
        self.cf.release(subscribed.value)  # the samples are taken with `channels` itself
        return subscription

    def create_samples(self, subscription: int, channels: int) -> int | None:
        return self._samples(subscription, channels, None)

    def create_samples_delta(self, previous: int, current: int) -> int | None:
        return self._delta(previous, current, None)

    def channels(self, samples: int) -> list[int]:
        """The channel dictionaries of a sample or delta (borrowed)."""
        return self.cf.items(self.cf.get(samples, "IOReportChannels"))

    def channel_group(self, item: int) -> str | None:
        return self.cf.text(self._group(item))

    def channel_subgroup(self, item: int) -> str | None:
        return self.cf.text(self._subgroup(item))

    def channel_name(self, item: int) -> str | None:
        return self.cf.text(self._name(item))

    def channel_unit(self, item: int) -> str | None:
        return self.cf.text(self._unit(item))

    def channel_format(self, item: int) -> int:
        return self._format(item)

    def simple_integer_value(self, item: int) -> int:
        return self._integer(item, 0)

    def state_count(self, item: int) -> int:
        return self._state_count(item)

    def state_name(self, item: int, index: int) -> str | None:
        return self.cf.text(self._state_name(item, index))

    def state_residency(self, item: int, index: int) -> int:
        return self._residency(item, index)

    def release(self, ref: int | None) -> None:
        self.cf.release(ref)


# -- the backend ---------------------------------------------------------------------------


class IOReportBackend(Backend):
    """GPU busy share and frequency, CPU/GPU/ANE/DRAM power and DRAM bytes per second
    from IOReport (macOS on Apple silicon, no sudo). See the module docstring for where
    each figure comes from and when it is None.

    Every figure covers the time since the previous `sample`; the first one only
    sets the starting point and returns None for all of them.

    Args:
        library: An `_IOReportLibrary` (or a fake with its methods); by default
            opened in `probe`, on macOS only.
        registry: Reads IORegistry properties (`_cf.IORegistry` or a fake with
            ``properties(service_class, key, entry_name)``), for the GPU frequency table;
            by default opened with the library. Without one the frequency is None.
        clock: Monotonic seconds, for the time between samples.
        system: ``platform.system``, replaceable for tests.
        gpu_table_keys: IORegistry ``pmgr`` properties tried for the GPU frequency table.
    """

    name = "ioreport"
    keys = {
        "gpu_utilization_percent": "share of time the GPU was out of its off/idle states",
        "gpu_frequency_mhz": "mean GPU clock while active, weighted by time per P-state",
        "cpu_power_w": "CPU power (IOReport Energy Model)",
        "gpu_power_w": "GPU power (IOReport Energy Model)",
        "ane_power_w": "Neural Engine power (IOReport Energy Model)",
        "dram_power_w": "DRAM power (IOReport Energy Model)",
        "dram_read_bytes_per_s": "bytes read from DRAM per second (AMC Stats; not on M4 Max/M5)",
        "dram_write_bytes_per_s": "bytes written to DRAM per second (AMC Stats; not on M4 Max/M5)",
    }

    def __init__(
        self,
        library: Any = None,
        registry: Any = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        system: Callable[[], str] = platform.system,
        gpu_table_keys: Sequence[str] = GPU_TABLE_KEYS,
    ):
        self._library = library
        self._registry = registry
        self._clock = clock
        self._system = system
        self._gpu_table_keys = tuple(gpu_table_keys)
        self._channels: Any = None
        self._subscription: Any = None
        self._previous: tuple[Any, float] | None = None
        self._frequencies: list[float] | None = None

    def probe(self) -> bool:
        """Open libIOReport (on macOS) and subscribe to its energy, GPU and memory
        controller channels; whether that worked. Never raises."""
        try:
            if self._open():
                return True
        except Exception:  # OSError (no library), AttributeError (a missing symbol)...
            pass
        with contextlib.suppress(Exception):
            self.close()
        return False

    def why_unavailable(self) -> str:
        """That the backend needs macOS, or, on a Mac, that libIOReport or its channels
        could not be opened."""
        return off_macos(
            self._system(),
            "libIOReport could not be opened, or it offered none of the channels it reads",
        )

    def _open(self) -> bool:
        if self._library is None:
            if self._system() != "Darwin":
                return False
            from ._cf import IORegistry

            self._library = _IOReportLibrary()
            if self._registry is None:  # pragma: no cover (macOS)
                self._registry = IORegistry(self._library.cf)
        if not self._subscribe():
            return False
        self._frequencies = self._gpu_frequencies()
        return True

    def _subscribe(self) -> bool:
        # M4 Max on macOS 26 lists "AMC Stats" but refuses to subscribe to it, so a
        # failed subscription is retried without it rather than losing power and GPU.
        for groups in ((ENERGY_GROUP, GPU_GROUP, AMC_GROUP), (ENERGY_GROUP, GPU_GROUP)):
            channels = self._copy_groups(groups)
            if channels is None:
                return False
            subscription = self._library.create_subscription(channels)
            if subscription:
                self._channels, self._subscription = channels, subscription
                return True
            self._library.release(channels)
        return False

    def _copy_groups(self, groups: Iterable[str]) -> Any:
        """The groups' channels merged into one dictionary; None if none has any."""
        library, merged = self._library, None
        for group in groups:
            channels = library.copy_channels_in_group(group, None)
            if not channels or not library.channels(channels):
                library.release(channels)
                continue
            if merged is None:
                merged = channels
            else:
                library.merge_channels(merged, channels)
                library.release(channels)
        return merged

    def _gpu_frequencies(self) -> list[float] | None:
        """The GPU P-state table, or None (the frequency figure is then None)."""
        if self._registry is None:
            return None
        for key in self._gpu_table_keys:
            try:
                values = self._registry.properties("AppleARMIODevice", key, "pmgr")
            except Exception:  # an unreadable table costs the frequency, not the backend
                return None
            table = parse_voltage_states(values[0]) if values else None
            if table:
                return table
        return None

    def sample(self) -> Figures:
        """The figures over the time since the previous sample (all None on the first).

        Raises:
            RuntimeError: IOReport returned no samples, or no difference between two.
        """
        library = self._library
        current = library.create_samples(self._subscription, self._channels)
        now = self._clock()
        if not current:
            raise RuntimeError("IOReportCreateSamples returned nothing")
        previous, self._previous = self._previous, (current, now)
        if previous is None:
            return dict.fromkeys(self.keys)
        try:
            delta = library.create_samples_delta(previous[0], current)
        finally:
            library.release(previous[0])
        if not delta:
            raise RuntimeError("IOReportCreateSamplesDelta returned nothing")
        try:
            channels = read_channels(library, delta)
        finally:
            library.release(delta)
        return figures(channels, now - previous[1], self._frequencies)

    def close(self) -> None:
        """Release the subscription, its channels and the last sample."""
        library = self._library
        if library is None:
            return
        if self._previous is not None:
            library.release(self._previous[0])
        library.release(self._subscription)
        library.release(self._channels)
        self._previous = self._subscription = self._channels = None
