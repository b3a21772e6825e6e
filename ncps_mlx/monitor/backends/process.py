"""CPU and memory of a process and the machine, through psutil (every platform)."""

from typing import Any

from .base import Backend, Figures

#: The figures of the watched process, None once it has ended.
PROCESS_KEYS = ("cpu_percent", "process_rss_bytes")


class PsutilBackend(Backend):
    """Process CPU share and resident memory, machine CPU and memory use (``psutil``).

    ``cpu_percent`` is the process's CPU time over wall time since the previous sample,
    in percent of one core (so up to 100 x cores), as ``top`` shows it. The two CPU
    shares are None in the first sample: the probe just before it leaves too short a
    window to measure.

    Args:
        psutil_module: ``psutil``, replaceable for tests; imported in `probe`.
        pid: The process to watch; this one by default. Once it ends (or is a zombie
            its parent has not collected) its figures are None and `process_ended`
            is True; the machine's figures go on.
    """

    name = "psutil"
    keys = {
        "cpu_percent": "the watched process's CPU use since the previous sample, % of one core",
        "system_cpu_percent": "the whole machine's CPU use, % of all cores",
        "process_rss_bytes": "resident memory of the watched process",
        "system_memory_used_bytes": "memory in use on the machine",
        "system_memory_percent": "memory in use on the machine, % of total",
    }

    def __init__(self, psutil_module: Any = None, pid: int | None = None):
        self._psutil = psutil_module
        self.pid = pid
        self._process = None
        self._error: Exception | None = None
        self._sampled = False
        #: Whether the watched process has ended (seen at a sample).
        self.process_ended = False

    def probe(self) -> bool:
        """Import psutil and open the process to watch; whether that worked. Never raises:
        the error is kept for `why_unavailable`."""
        if self._psutil is None:
            try:
                import psutil
            except ImportError as error:
                self._error = error
                return False
            self._psutil = psutil
        try:
            self._process = self._psutil.Process(self.pid)
            # The first calls only set the reference point for the next ones.
            self._process.cpu_percent(None)
            self._psutil.cpu_percent(None)
        except Exception as error:  # the process is gone, or belongs to another user
            self._error = error
            return False
        return True

    def why_unavailable(self) -> str:
        """That psutil is not installed, or why it cannot read the process."""
        if isinstance(self._error, ImportError):
            return "psutil is not installed: pip install 'ncps-mlx[monitor]'"
        target = "this process" if self.pid is None else f"process {self.pid}"
        return f"psutil cannot read {target} ({type(self._error).__name__}: {self._error})"

    def sample(self) -> Figures:
        """The process's CPU share and resident memory (None once it has ended) and the
        machine's CPU and memory use; the CPU shares are None in the first sample."""
        memory = self._psutil.virtual_memory()
        figures: Figures = {
            **self._process_figures(),
            "system_cpu_percent": self._psutil.cpu_percent(None),
            "system_memory_used_bytes": memory.total - memory.available,
            "system_memory_percent": memory.percent,
        }
        if not self._sampled:  # measured over the microseconds since the probe: noise
            self._sampled = True
            figures["cpu_percent"] = figures["system_cpu_percent"] = None
        return figures

    def _process_figures(self) -> Figures:
        if not self.process_ended:
            try:
                with self._process.oneshot():
                    if self.pid is not None and not self._alive():
                        raise self._psutil.NoSuchProcess(self.pid)
                    return {
                        "cpu_percent": self._process.cpu_percent(None),
                        "process_rss_bytes": self._process.memory_info().rss,
                    }
            except self._psutil.NoSuchProcess:  # ZombieProcess is one too
                self.process_ended = True
        return dict.fromkeys(PROCESS_KEYS)

    def _alive(self) -> bool:
        # is_running() also catches a pid the system gave to a new process; a zombie
        # "runs" for psutil but has ended, with an RSS of 0.
        process = self._process
        return process.is_running() and process.status() != self._psutil.STATUS_ZOMBIE
