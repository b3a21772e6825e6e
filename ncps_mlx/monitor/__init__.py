"""Monitoring: memory, bandwidth and utilization sampled while a model trains.

See :class:`Monitor`. Figures come from backends (:mod:`.backends`); what a step must
move through memory comes from an analytic model (:mod:`.traffic`) and is reported with
an ``est_`` prefix, apart from measured figures.
"""

from .chips import Chip, detect_chip
from .health import HealthEvent, HealthWatch
from .monitor import Monitor
from .report import Run, Summary
from .traffic import Traffic, step_traffic

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
