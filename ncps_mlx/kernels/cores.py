"""How many threads the fused kernels use.

The kernels cut their work into pieces fixed by the problem (batch rows, weight rows)
and run the pieces on a pool of threads, so results are bit-identical for any thread
count. The count is the CPUs this process may run on (its affinity mask, where the
platform has one), or ``NCPS_MLX_THREADS`` when set.
"""

import os

from .._checks import check_int
from . import library as _library  # a cycle: the library sets the count when it loads

MAX_THREADS = 256
ENVIRONMENT = "NCPS_MLX_THREADS"


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the platform has one
    (Linux: a container's or ``taskset``'s limit), else every CPU."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def configured() -> int:
    """``NCPS_MLX_THREADS`` when set (an int in 1..256, else a ValueError naming it),
    otherwise [`available_cpus`][ncps_mlx.kernels.cores.available_cpus] (at most 256)."""
    value = os.environ.get(ENVIRONMENT, "").strip()
    if not value:
        return min(available_cpus(), MAX_THREADS)
    try:
        count = int(value)
    except ValueError:
        count = value
    return check_int("ncps_mlx", ENVIRONMENT, count, 1, MAX_THREADS)


def threads() -> int:
    """The threads the kernels use (building them if needed)."""
    return _library.library("kernels.threads").thread_count()


def set_threads(count: int) -> None:
    """Use ``count`` threads (1..256) from now on; results do not change, only speed."""
    count = check_int("set_threads", "count", count, 1, MAX_THREADS)
    _library.library("kernels.set_threads").set_thread_count(count)
