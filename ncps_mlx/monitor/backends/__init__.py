"""Monitoring backends, by name. ``"auto"`` picks every sudoless one; the monitor keeps
those whose `probe` succeeds on this machine."""

from collections.abc import Iterable

from .base import Backend, Figures, RateCounter
from .iokit import IOAcceleratorBackend
from .ioreport import IOReportBackend
from .mlx_memory import MLXMemoryBackend
from .nvml import NVMLBackend
from .powermetrics import PowermetricsBackend
from .process import PsutilBackend

BACKENDS: dict[str, type[Backend]] = {
    cls.name: cls
    for cls in (
        MLXMemoryBackend,
        PsutilBackend,
        NVMLBackend,
        IOReportBackend,
        IOAcceleratorBackend,
        PowermetricsBackend,
    )
}
#: What ``backends="auto"`` tries. powermetrics needs sudo, so it must be asked for.
AUTO = ("mlx", "psutil", "nvml", "ioreport", "ioaccelerator")


def create(spec: str | Iterable[str | Backend]) -> list[Backend]:
    """Backend instances for ``"auto"`` or a list of names and/or instances."""
    items = AUTO if spec == "auto" else spec
    if isinstance(items, str):
        items = [items]
    backends = []
    for item in items:
        if isinstance(item, Backend):
            backends.append(item)
        elif item in BACKENDS:
            backends.append(BACKENDS[item]())
        else:
            raise ValueError(
                f"[Monitor] unknown backend {item!r}; use 'auto' or names from {sorted(BACKENDS)}"
            )
    return backends


__all__ = ["AUTO", "BACKENDS", "Backend", "Figures", "RateCounter", "create"]
