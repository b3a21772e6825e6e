"""Plots of a monitored run (needs matplotlib: ``pip install 'ncps-mlx[plot]'``).

One panel per kind of figure the run holds (a platform without GPU counters gets no
empty GPU panel), each in the unit that suits its values' magnitude (MiB for a small
model's memory, not 0.003 GiB). The first step, which includes compilation, is marked
apart and left out of the step-time axis, so it does not flatten the steps after it.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .report import Run

# Units by magnitude, largest first: (name, size in the recorded unit).
PERCENT = (("%", 1.0),)
BYTES = (("GiB", 2.0**30), ("MiB", 2.0**20), ("KiB", 2.0**10), ("B", 1.0))
BYTES_PER_S = (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3), ("B/s", 1.0))
SECONDS = (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6))

#: The step-time axis ends this far above the 99th percentile of the later steps.
STEP_AXIS_MARGIN = 1.25


@dataclass(frozen=True)
class Panel:
    """One panel: its title, the units its values may be shown in, and its series as
    (record key, legend label)."""

    title: str
    units: tuple[tuple[str, float], ...]
    series: tuple[tuple[str, str], ...]


PANELS = (
    Panel("Utilization", PERCENT, (
        ("cpu_percent", "process CPU (% of a core)"),
        ("system_cpu_percent", "machine CPU"),
        ("gpu_utilization_percent", "GPU active"),
        ("gpu_device_utilization_percent", "GPU device (IOAccelerator)"),
    )),
    Panel("Memory bandwidth", BYTES_PER_S, (
        ("dram_read_bytes_per_s", "DRAM read (measured)"),
        ("dram_write_bytes_per_s", "DRAM write (measured)"),
        ("est_bandwidth_bytes_per_s", "step traffic / step time (estimated)"),
    )),
    # Apart: a process's RSS (the interpreter and its libraries, tens of MiB at least)
    # would flatten a small model's MLX memory (KiB) on a shared axis.
    Panel("Process memory", BYTES, (("process_rss_bytes", "process RSS"),)),
    Panel("MLX memory", BYTES, (
        ("mlx_active_bytes", "MLX active"),
        ("mlx_peak_bytes", "MLX peak"),
        ("mlx_cache_bytes", "MLX cache"),
    )),
    Panel("Step time", SECONDS, (("step_time_s", "step time"),)),
)  # fmt: skip
STEP_TIME = PANELS[-1]

Series = tuple[list[float], list[float]]  # times, values in the recorded unit


def pick_unit(units: tuple[tuple[str, float], ...], magnitude: float) -> tuple[str, float]:
    """The largest unit in which ``magnitude`` is at least 1 (else the smallest)."""
    return next((unit for unit in units if abs(magnitude) >= unit[1]), units[-1])


def _series(run: "Run", key: str) -> Series:
    records = run.steps if key.startswith(("est_", "step")) else run.samples
    points = [(r["time_s"], r[key]) for r in records if r.get(key) is not None]
    return [t for t, _ in points], [v for _, v in points]


def panels_with_data(run: "Run") -> list[tuple[Panel, dict[str, Series]]]:
    """The panels of `PANELS` the run has figures for, each with its series."""
    drawn = []
    for panel in PANELS:
        series = {key: _series(run, key) for key, _ in panel.series}
        series = {key: points for key, points in series.items() if points[1]}
        if series:
            drawn.append((panel, series))
    return drawn


def draw_run(run: "Run") -> "Figure":
    """The figure `plot_run` saves: a panel per kind of figure the run holds."""
    # A bare Figure, not pyplot: saving needs no GUI backend, and the caller's pyplot
    # (a notebook's inline backend, say) is left as it was.
    from matplotlib.figure import Figure

    panels = panels_with_data(run)
    figure = Figure(figsize=(9, 2.6 * max(len(panels), 1)))
    axes = figure.subplots(max(len(panels), 1), 1, sharex=True, squeeze=False)[:, 0]
    if not panels:
        axes[0].text(0.5, 0.5, "no figures were recorded", ha="center", va="center",
                     transform=axes[0].transAxes, color="gray")  # fmt: skip
    for axis, (panel, series) in zip(axes, panels, strict=False):
        if panel is STEP_TIME:
            _draw_step_times(axis, *series["step_time_s"])
        else:
            _draw_lines(axis, panel, series)
        axis.set_title(panel.title, loc="left", fontsize=10)
        axis.legend(fontsize=8, loc="upper right")
    for event in run.events:
        if event.get("event") not in (None, "validation"):
            for axis in axes:
                axis.axvline(event["time_s"], color="red", alpha=0.4, linewidth=1)
    axes[-1].set_xlabel("time (s)")
    figure.tight_layout()
    return figure


def plot_run(run: "Run", path: Path) -> Path:
    """Save `draw_run`'s figure to ``path`` (format from its suffix; png default)."""
    figure = draw_run(run)
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100, format=path.suffix[1:] or "png"))
    return path


def _draw_lines(axis: "Axes", panel: Panel, series: dict[str, Series]) -> None:
    largest = max(abs(value) for _, values in series.values() for value in values)
    unit, size = pick_unit(panel.units, largest)
    for key, label in panel.series:
        if key in series:
            times, values = series[key]
            axis.plot(times, [v / size for v in values], label=label, **_marker(values))
    axis.set_ylabel(unit)


def _draw_step_times(axis: "Axes", times: list[float], values: list[float]) -> None:
    """The steps after the first on an axis fitted to them; the first one (compilation)
    as its own marker, named in a note when it lies above the axis."""
    first, later = values[0], values[1:]
    top = robust_top(later) if later else first * STEP_AXIS_MARGIN
    unit, size = pick_unit(SECONDS, top)
    if later:
        axis.plot(times[1:], [v / size for v in later], label="step time", **_marker(later))
    # Above the axis, the first step shows as a triangle on its top edge.
    axis.plot([times[0]], [min(first, top) / size], linestyle="none", clip_on=False,
              marker="^" if first > top else "o", color="tab:orange",
              label="first step (includes compilation)")  # fmt: skip
    axis.set_ylim(0, top / size)
    axis.set_ylabel(unit)
    above = [f"first step {first / size:.3g} {unit}"] if first > top else []
    if any(value > top for value in later):
        count = sum(value > top for value in later)
        above.append(f"{count} later step{'s' * (count > 1)} up to {max(later) / size:.3g} {unit}")
    if above:
        axis.text(0.01, 0.96, f"above the axis: {'; '.join(above)}", transform=axis.transAxes,
                  ha="left", va="top", fontsize=8, color="tab:orange")  # fmt: skip


def robust_top(values: list[float]) -> float:
    """The top of an axis for ``values``: their 99th percentile with a margin, so one
    stray value does not flatten the rest."""
    ordered = sorted(values)
    position = 0.99 * (len(ordered) - 1)  # linear interpolation, as numpy's default
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    percentile = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    return percentile * STEP_AXIS_MARGIN if percentile > 0 else max(ordered[-1], 1e-9)


def _marker(values: list[Any]) -> dict[str, Any]:
    return {"marker": "."} if len(values) < 50 else {}
