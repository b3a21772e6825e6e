"""Plots of a monitored run (needs matplotlib: ``pip install 'ncps-mlx[plot]'``)."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import atomic_write

if TYPE_CHECKING:
    from .report import Run

GIB = 2**30
GB = 1e9
# Panel title, y label, and (key, legend label, scale) of the series it shows.
PANELS = [
    ("Utilization", "%", [
        ("cpu_percent", "process CPU (% of a core)", 1),
        ("system_cpu_percent", "machine CPU", 1),
        ("gpu_utilization_percent", "GPU active", 1),
        ("gpu_device_utilization_percent", "GPU device (IOAccelerator)", 1),
    ]),
    ("Memory bandwidth", "GB/s", [
        ("dram_read_bytes_per_s", "DRAM read (measured)", 1 / GB),
        ("dram_write_bytes_per_s", "DRAM write (measured)", 1 / GB),
        ("est_bandwidth_bytes_per_s", "step traffic / step time (estimated)", 1 / GB),
    ]),
    ("Memory", "GiB", [
        ("process_rss_bytes", "process RSS", 1 / GIB),
        ("mlx_active_bytes", "MLX active", 1 / GIB),
        ("mlx_peak_bytes", "MLX peak", 1 / GIB),
        ("mlx_cache_bytes", "MLX cache", 1 / GIB),
    ]),
    ("Step time", "ms", [("step_time_s", "step time", 1000)]),
]  # fmt: skip


def _series(records: list[dict[str, Any]], key: str, scale: float) -> tuple[list, list]:
    points = [(r["time_s"], r[key] * scale) for r in records if r.get(key) is not None]
    return [t for t, _ in points], [v for _, v in points]


def plot_run(run: "Run", path: Path) -> Path:
    """Save the four panels of :data:`PANELS` (those with data) to ``path``."""
    # A bare Figure, not pyplot: saving needs no GUI backend, and the caller's pyplot
    # (a notebook's inline backend, say) is left as it was.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 2.6 * len(PANELS)))
    axes = figure.subplots(len(PANELS), 1, sharex=True)
    for axis, (title, unit, series) in zip(axes, PANELS, strict=True):
        for key, label, scale in series:
            times, values = _series(
                run.steps if key.startswith(("est_", "step")) else run.samples, key, scale
            )
            if values:
                axis.plot(times, values, label=label, marker="." if len(values) < 50 else None)
        axis.set_title(title, loc="left", fontsize=10)
        axis.set_ylabel(unit)
        if axis.lines:
            axis.legend(fontsize=8, loc="upper right")
        else:
            axis.text(0.5, 0.5, "not available on this platform", ha="center",
                      va="center", transform=axis.transAxes, color="gray")  # fmt: skip
    for event in run.events:
        if event.get("event") not in (None, "validation"):
            for axis in axes:
                axis.axvline(event["time_s"], color="red", alpha=0.4, linewidth=1)
    axes[-1].set_xlabel("time (s)")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100, format=path.suffix[1:] or "png"))
    return path
