"""The live view of ``ncps-mlx monitor``: one line per sample, of this machine and of one
process, by default the view's own, or a training run's with ``pid``.

Backends asked for by name must run: one that cannot says which, why, and what runs here
instead (`LiveViewError`), rather than a table of dashes.
"""

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import NCPSError, see
from . import backends as backend_registry
from .backends import Backend
from .backends.process import PsutilBackend
from .monitor import Monitor

#: The columns: sample key, heading, scale from the key's unit to the heading's.
LIVE_FIGURES = (
    ("cpu_percent", "cpu%", 1),
    ("process_rss_bytes", "rss MiB", 2**-20),
    ("mlx_active_bytes", "mlx MiB", 2**-20),
    ("gpu_utilization_percent", "gpu%", 1),
    ("gpu_power_w", "gpu W", 1),
    ("ane_power_w", "ane W", 1),
    ("dram_read_bytes_per_s", "rd GB/s", 1e-9),
    ("dram_write_bytes_per_s", "wr GB/s", 1e-9),
)
#: The backend that reads the allocator of the process it runs in, never another's.
OWN_PROCESS_ONLY = "mlx"


class LiveViewError(NCPSError):
    """The live view cannot start: a backend asked for cannot run here, or the process to
    watch is not there."""


def live_header() -> str:
    """The live view's column headings, aligned with the columns of `live_line`."""
    return f"{'time s':>8} " + " ".join(f"{label:>9}" for _, label, _ in LIVE_FIGURES)


def live_line(sample: dict) -> str:
    """One sample as a line of the live view: its time, then each figure of
    `LIVE_FIGURES` in the heading's unit, or `-` when the sample lacks it."""
    cells = [f"{sample['time_s']:8.1f}"]
    for key, _, scale in LIVE_FIGURES:
        value = sample.get(key)
        cells.append(f"{value * scale:>9.1f}" if value is not None else f"{'-':>9}")
    return " ".join(cells)


def backend_names(spec: str, pid: int | None = None) -> list[str]:
    """The backends ``--backends spec`` asks for: ``"auto"`` or comma-separated names.

    With a ``pid``, ``psutil`` is always one of them (it watches that process) and
    ``mlx`` is not (it can only read the view's own allocator).

    Raises:
        ValueError: An unknown name, an empty list, or ``mlx`` named with a pid.
    """
    if spec == "auto":
        names = list(backend_registry.AUTO)
        return [n for n in names if n != OWN_PROCESS_ONLY] if pid is not None else names
    names = list(dict.fromkeys(name.strip() for name in spec.split(",") if name.strip()))
    known = sorted(backend_registry.BACKENDS)
    unknown = [name for name in names if name not in backend_registry.BACKENDS]
    if unknown or not names:
        what = f"unknown backend {unknown[0]!r}" if unknown else "no backend named"
        raise ValueError(f"[Monitor] {what}; use 'auto' or comma-separated names from {known}")
    if pid is not None and OWN_PROCESS_ONLY in names:
        raise ValueError(
            f"[Monitor] backend {OWN_PROCESS_ONLY!r} reads the MLX memory of the monitor's "
            f"own process, not of process {pid}; leave it out with --pid (its memory is "
            "the 'rss MiB' column)"
        )
    if pid is not None and "psutil" not in names:
        names.insert(0, "psutil")
    return names


def process_name(pid: int) -> str:
    """The name of process ``pid``, which the view is about to watch.

    Raises:
        LiveViewError: No such process, one psutil may not read, or no psutil.
    """
    try:
        import psutil
    except ImportError as error:
        raise LiveViewError(
            "watching a process (--pid) needs psutil: pip install 'ncps-mlx[monitor]'"
        ) from error
    try:
        return psutil.Process(pid).name()
    except psutil.NoSuchProcess as error:
        raise LiveViewError(
            f"no process has pid {pid}: it has ended, or the number is wrong. "
            "Find your training's pid with `pgrep -f 'ncps-mlx train'` or `ps`, or start "
            "it in the background and watch `$!`"
        ) from error
    except psutil.AccessDenied as error:
        raise LiveViewError(
            f"process {pid} cannot be read by this user; run the monitor as its user"
        ) from error


class LiveView:
    """Samples the machine (and the process ``pid``) and writes one line per sample.

    Args:
        backends: ``"auto"`` or comma-separated backend names (see `backend_names`).
        pid: The process whose CPU and memory to show; the view's own by default.
        interval: Seconds between samples.

    Raises:
        ValueError: An unknown backend name (or ``mlx`` with a pid), a bad interval.
        LiveViewError: The process ``pid`` is not there or cannot be read.
    """

    def __init__(self, backends: str = "auto", *, pid: int | None = None, interval: float = 0.5):
        names = backend_names(backends, pid)
        self.pid = pid
        self.process_name = process_name(pid) if pid is not None else None
        # Backends named by the user must run; 'auto' takes what runs here.
        self.required = set(names) if backends != "auto" else set()
        if pid is not None:
            self.required.add("psutil")
        self.watched = PsutilBackend(pid=pid) if pid is not None else None
        self.monitor = Monitor(interval, [self._backend(name) for name in names], health=False)

    def _backend(self, name: str) -> Backend:
        if name == "psutil" and self.watched is not None:
            return self.watched
        return backend_registry.BACKENDS[name]()

    def start(self) -> "LiveView":
        """Probe the backends and start sampling.

        Raises:
            LiveViewError: A required backend cannot run here; the message says why and
                which backends can.
        """
        self.monitor.start()
        missing = {n: r for n, r in self.monitor.unavailable.items() if n in self.required}
        if missing:
            self.monitor.stop()
            lines = [f"backend {name!r} cannot run here: {why}" for name, why in missing.items()]
            available = ", ".join(self._available_here()) or "none"
            raise LiveViewError(
                "\n".join([*lines, f"Available here: {available}.", see("monitor-backends")])
            )
        return self

    def stop(self) -> None:
        """Stop sampling; the samples taken are kept for `save`."""
        self.monitor.stop()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the samples (as [`Monitor.save`][ncps_mlx.monitor.Monitor.save]), the watched
        process in the meta record: ``pid`` and ``process`` (its name)."""
        run = self.monitor.run
        if self.pid is not None:
            run.meta.update(pid=self.pid, process=self.process_name)
        return run.save(path)

    @property
    def process_ended(self) -> bool:
        """Whether the watched process has ended (False without one)."""
        return self.watched is not None and self.watched.process_ended

    def intro(self) -> list[str]:
        """The lines above the samples: what is watched, which backends run, the header."""
        lines = []
        if self.pid is not None:
            lines.append(
                f"watching process {self.pid} ({self.process_name}): cpu% and rss MiB are "
                "its own, the other figures the machine's"
            )
        running = ", ".join(b.name for b in self.monitor.backends)
        if self.monitor.unavailable:
            running += f"; not available here: {', '.join(self.monitor.unavailable)}"
        lines.append(f"backends: {running} (Ctrl-C stops)")
        lines.append(live_header())
        return lines

    def follow(self, write: Callable[[str], None], duration: float | None = None) -> None:
        """Write the intro, then each sample's line, until ``duration`` seconds have passed
        (never, by default) or the watched process ends, which a last line says."""
        for line in self.intro():
            write(line)
        end = None if duration is None else time.monotonic() + duration
        shown = 0
        while end is None or time.monotonic() < end:
            time.sleep(self.monitor.interval / 4)
            # Read first: every sample taken while the process ran is then in the list.
            ended = self.process_ended
            samples = self.monitor.samples[shown:]
            shown += len(samples)
            for sample in samples:
                write(live_line(sample))
            if ended:
                write(f"process {self.pid} ({self.process_name}) exited; the view ends")
                return

    def _available_here(self) -> list[str]:
        """The backends that run on this machine (probing those not started yet)."""
        started = {backend.name for backend in self.monitor.backends}
        tried = started | set(self.monitor.unavailable)
        if self.pid is not None:
            tried.add(OWN_PROCESS_ONLY)
        return [
            name
            for name in backend_registry.BACKENDS
            if name in started or (name not in tried and _runs_here(name))
        ]


def _runs_here(name: str) -> bool:
    backend = backend_registry.BACKENDS[name]()
    try:
        return bool(backend.probe())
    except Exception:  # a probe that raises says "not here" too
        return False
    finally:
        with contextlib.suppress(Exception):
            backend.close()
