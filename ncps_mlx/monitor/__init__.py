"""Monitoring: memory, bandwidth and utilization sampled while a model trains.

See [`Monitor`][ncps_mlx.monitor.Monitor]. Figures come from backends (`backends`); what a step must
move through memory comes from what the cells declare
([`ncps_mlx.costs.step_traffic`][ncps_mlx.costs.step_traffic]) and is reported with an ``est_``
prefix, apart from measured figures.
"""

from ..costs import Traffic, step_traffic
from .chips import Chip, detect_chip
from .health import HealthEvent, HealthWatch
from .monitor import Monitor
from .report import Run, Summary

__all__ = [
    "Chip",
    "HealthEvent",
    "HealthWatch",
    "Monitor",
    "Run",
    "Summary",
    "Traffic",
    "detect_chip",
    "step_traffic",
]
