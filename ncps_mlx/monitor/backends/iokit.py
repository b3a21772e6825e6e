"""GPU utilization and GPU memory as the Apple GPU driver reports them, without sudo.

The figures are the ``PerformanceStatistics`` dictionary of the ``IOAccelerator``
IORegistry entry (``AGXAccelerator...`` on Apple silicon), the one Activity Monitor and
``ioreg -rc IOAccelerator`` show, e.g. on an M2 Max:

```text
"PerformanceStatistics" = {"Device Utilization %"=7, "Renderer Utilization %"=7,
    "Tiler Utilization %"=7, "In use system memory"=1202913280,
    "Alloc system memory"=10952982528, ...}
```

Limits: the utilizations are the driver's own percentages (integers, smoothed by the
driver over a window it does not document), not time measured between two samples as
`ioreport`'s residency is; the memory figures are what the driver holds for the
GPU in unified memory, not all memory the GPU touches.

Verified only on a Mac, not in this project's CI: the IOKit/CoreFoundation calls
(`_cf.IORegistry`) cannot run on Linux. `parse_performance_statistics`
works on the plain dictionary they return and is tested everywhere with recorded ones.
"""

import contextlib
import math
import platform
from collections.abc import Callable
from typing import Any

from .base import Backend, Figures, off_macos

SERVICE_CLASS = "IOAccelerator"
PROPERTY = "PerformanceStatistics"
#: PerformanceStatistics key -> figure.
STATISTICS = {
    "Device Utilization %": "gpu_device_utilization_percent",
    "Renderer Utilization %": "gpu_renderer_utilization_percent",
    "Tiler Utilization %": "gpu_tiler_utilization_percent",
    "In use system memory": "gpu_in_use_system_memory_bytes",
    "Alloc system memory": "gpu_alloc_system_memory_bytes",
}


def _number(value: Any) -> int | float | None:
    """``value`` if it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def parse_performance_statistics(statistics: dict[str, Any]) -> Figures:
    """The figures in one ``PerformanceStatistics`` dictionary; None for a key it lacks
    or whose value is not a number."""
    return {figure: _number(statistics.get(key)) for key, figure in STATISTICS.items()}


def pick_statistics(candidates: list[Any]) -> dict[str, Any] | None:
    """The dictionary to read among those of every accelerator entry: the first that
    reports a device utilization (the active GPU), else the first with any known key."""
    dicts = [c for c in candidates if isinstance(c, dict)]
    for wanted in (("Device Utilization %",), tuple(STATISTICS)):
        for statistics in dicts:
            if any(key in statistics for key in wanted):
                return statistics
    return None


class _IOKitLibrary:
    """The ``PerformanceStatistics`` of every IOAccelerator entry, as Python dicts."""

    def __init__(self, registry: Any = None):
        from ._cf import IORegistry

        self._registry = registry if registry is not None else IORegistry()

    def performance_statistics(self) -> list[Any]:
        # One property rather than all of them: the accelerator's full property table
        # (shader caches...) is far larger, and this runs at every sample.
        return self._registry.properties(SERVICE_CLASS, PROPERTY)


class IOAcceleratorBackend(Backend):
    """GPU utilization and GPU memory from the driver's ``PerformanceStatistics``
    (macOS, no sudo). See the module docstring for their limits.

    Args:
        library: An `_IOKitLibrary` (or a fake with ``performance_statistics()``);
            by default opened in `probe`, on macOS only.
        system: ``platform.system``, replaceable for tests.
    """

    name = "ioaccelerator"
    keys = {
        "gpu_device_utilization_percent": "GPU utilization as the driver reports it",
        "gpu_renderer_utilization_percent": "GPU renderer (fragment) utilization, driver's",
        "gpu_tiler_utilization_percent": "GPU tiler (vertex) utilization, driver's",
        "gpu_in_use_system_memory_bytes": "unified memory the GPU driver has in use",
        "gpu_alloc_system_memory_bytes": "unified memory the GPU driver has allocated",
    }

    def __init__(self, library: Any = None, *, system: Callable[[], str] = platform.system):
        self._library = library
        self._system = system

    def probe(self) -> bool:
        """Whether an IOAccelerator entry reports `PerformanceStatistics` here; opens
        IOKit on macOS. Never raises."""
        with contextlib.suppress(Exception):  # OSError (no IOKit), a missing symbol...
            if self._library is None:
                if self._system() != "Darwin":
                    return False
                self._library = _IOKitLibrary()
            return pick_statistics(self._library.performance_statistics()) is not None
        return False

    def why_unavailable(self) -> str:
        """That the backend needs macOS, or, on a Mac, that no entry has the statistics."""
        return off_macos(
            self._system(), "no IOAccelerator entry in the IORegistry has PerformanceStatistics"
        )

    def sample(self) -> Figures:
        """The GPU utilization and memory figures the driver reports now.

        Raises:
            RuntimeError: No entry has `PerformanceStatistics` any more.
        """
        statistics = pick_statistics(self._library.performance_statistics())
        if statistics is None:
            raise RuntimeError("no IOAccelerator entry has PerformanceStatistics any more")
        return parse_performance_statistics(statistics)
