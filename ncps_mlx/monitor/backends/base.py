"""The interface every monitoring backend implements.

A backend reads one source of hardware figures (MLX's allocator, psutil, NVML,
IOReport...). The monitor calls `Backend.probe` once and `Backend.sample`
on its background thread at every interval; a backend that raises is disabled with one
warning and the run goes on without its figures. Figures a platform cannot give are
left out (or None), never guessed: everything a backend reports is measured, and the
monitor's own estimates carry an ``est_`` prefix.
"""

from typing import ClassVar

Figures = dict[str, float | int | None]


class Backend:
    """One source of figures. Subclasses set `name` and `keys`."""

    #: Short name used in warnings, ``Monitor(backends=[...])`` and the records' sources.
    name: ClassVar[str] = "backend"
    #: The keys :meth:`sample` may return, with their meaning (for docs and summaries).
    keys: ClassVar[dict[str, str]] = {}

    def probe(self) -> bool:
        """Whether the source is usable here. Called once; must not raise."""
        return True

    def sample(self) -> Figures:
        """The current figures. Rates (per second) need two samples: the first call
        returns None for them. May raise; the monitor then disables the backend."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what `probe` acquired."""

    def why_unavailable(self) -> str:
        """Why `probe` returned False here, in words a user can act on (what is
        missing, what to install or where it runs). Asked only after a failed probe."""
        return "its source is not available on this machine"


def off_macos(system: str, on_macos: str) -> str:
    """The reason a macOS backend gives: ``on_macos`` on a Mac, else that it needs one."""
    return on_macos if system == "Darwin" else f"it needs macOS (this is {system or 'unknown'})"


class RateCounter:
    """Turns monotonically increasing counters into per-second rates between samples."""

    def __init__(self) -> None:
        self._previous: tuple[float, dict[str, float]] | None = None

    def rates(self, now: float, counters: dict[str, float]) -> dict[str, float | None]:
        """Each counter's increase per second since the previous call, and remember these.

        Args:
            now: The time of the reading, in seconds on a monotonic clock.
            counters: The counters' current values, by key.

        Returns:
            The rate of each counter, or None for a counter without an earlier reading (all
            of them on the first call, or when the clock has not advanced).
        """
        previous, self._previous = self._previous, (now, dict(counters))
        if previous is None or now <= previous[0]:
            return {key: None for key in counters}
        elapsed = now - previous[0]
        return {
            key: (value - previous[1][key]) / elapsed if key in previous[1] else None
            for key, value in counters.items()
        }
