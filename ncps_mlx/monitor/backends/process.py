"""CPU and memory of this process and the machine, through psutil (every platform)."""

from typing import Any

from .base import Backend, Figures


class PsutilBackend(Backend):
    """Process CPU share and resident memory, machine CPU and memory use (``psutil``).

    ``cpu_percent`` is this process's CPU time over wall time since the previous sample,
    in percent of one core (so up to 100 x cores), as ``top`` shows it.
    """

    name = "psutil"
    keys = {
        "cpu_percent": "this process's CPU use since the previous sample, % of one core",
        "system_cpu_percent": "the whole machine's CPU use, % of all cores",
        "process_rss_bytes": "resident memory of this process",
        "system_memory_used_bytes": "memory in use on the machine",
        "system_memory_percent": "memory in use on the machine, % of total",
    }

    def __init__(self, psutil_module: Any = None):
        self._psutil = psutil_module
        self._process = None

    def probe(self) -> bool:
        if self._psutil is None:
            try:
                import psutil
            except ImportError:
                return False
            self._psutil = psutil
        try:
            self._process = self._psutil.Process()
            # The first calls only set the reference point for the next ones.
            self._process.cpu_percent(None)
            self._psutil.cpu_percent(None)
        except Exception:
            return False
        return True

    def sample(self) -> Figures:
        memory = self._psutil.virtual_memory()
        return {
            "cpu_percent": self._process.cpu_percent(None),
            "system_cpu_percent": self._psutil.cpu_percent(None),
            "process_rss_bytes": self._process.memory_info().rss,
            "system_memory_used_bytes": memory.total - memory.available,
            "system_memory_percent": memory.percent,
        }
