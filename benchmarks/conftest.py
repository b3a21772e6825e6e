"""Fixtures and machine information for the benchmark suite.

Smoke mode is pytest-benchmark's own ``--benchmark-disable``: every benchmark body runs once,
untimed, and the workloads shrink (see :meth:`Case.smoke`) because ``mx.compile`` runs a C++
compiler on the first call of every new shape.
"""

import os
import platform
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

from benchmarks.workloads import (
    Case,
    case_info,
    mlx_peak_memory,
    runner,
    torch_saved_bytes,
)

# Untimed calls before timing: the first compiles, the second runs on warm caches.
WARMUP_CALLS = 2


def _is_smoke(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_disable"))


@pytest.fixture
def smoke(request: pytest.FixtureRequest) -> bool:
    """True under ``--benchmark-disable``: run each case once, shrunk."""
    return _is_smoke(request.config)


@pytest.fixture
def measure(benchmark: Any, smoke: bool) -> Callable[[Case, str], None]:
    """``measure(case, impl)`` warms up, records ``extra_info`` and times one call per round.

    Torch cases skip when torch or ncps is missing. For mlx the peak memory of one call
    (after warm-up) is stored as ``peak_memory_bytes``; for a torch train case, what its
    forward pass saves for backward as ``saved_for_backward_bytes``.
    """

    def _measure(case: Case, impl: str) -> None:
        if impl == "torch":
            pytest.importorskip("torch")
            pytest.importorskip("ncps")
        case = case.smoke() if smoke else case
        run = runner(case, impl)
        for _ in range(0 if smoke else WARMUP_CALLS):
            run()
        benchmark.group = case.group
        benchmark.extra_info.update(case_info(case, impl))
        if impl == "mlx":
            benchmark.extra_info["peak_memory_bytes"] = mlx_peak_memory(run)
        else:
            benchmark.extra_info["torch_threads"] = _torch_threads()
            if case.mode == "train":
                benchmark.extra_info["saved_for_backward_bytes"] = torch_saved_bytes(case)
        benchmark(run)

    return _measure


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Stored with every saved result, so a number is never separated from its machine."""
    machine_info.update(collect_machine_info())


def collect_machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "chip": _chip(),
        "cores_physical": _physical_cores(),
        "cores_logical": os.cpu_count(),
        "memory_total_bytes": _memory_bytes(),
        "os": _os_name(),
        "python": sys.version.split()[0],
        "numpy_version": np.__version__,
        "mlx_version": _version("mlx"),
        "mlx_default_device": str(mx.default_device()),
        "mlx_device_info": _mlx_device_info(),
        "ncps_mlx_version": _version("ncps-mlx") or _ncps_mlx_version(),
        "ncps_mlx_threads": _kernel_threads(),
        "torch_version": _version("torch"),
        "torch_threads": _torch_threads(),
        "ncps_version": _version("ncps"),
    }
    return info


def _run(*command: str) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _cpuinfo_lines() -> list[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            return handle.read().splitlines()
    except OSError:
        return []


def _cpuinfo_values(key: str) -> list[str]:
    rows = (line.split(":", 1) for line in _cpuinfo_lines() if ":" in line)
    return [value.strip() for name, value in rows if name.strip() == key]


def _chip() -> str | None:
    if sys.platform == "darwin":
        return _run("sysctl", "-n", "machdep.cpu.brand_string")
    names = _cpuinfo_values("model name")
    return names[0] if names else platform.processor() or None


def _physical_cores() -> int | None:
    if sys.platform == "darwin":
        found = _run("sysctl", "-n", "hw.physicalcpu")
        return int(found) if found else None
    pairs = set(zip(_cpuinfo_values("physical id"), _cpuinfo_values("core id"), strict=False))
    return len(pairs) or os.cpu_count()


def _memory_bytes() -> int | None:
    if sys.platform == "darwin":
        found = _run("sysctl", "-n", "hw.memsize")
        return int(found) if found else None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _os_name() -> str:
    if sys.platform == "darwin":
        return f"macOS {platform.mac_ver()[0]} ({platform.machine()})"
    try:
        name = platform.freedesktop_os_release().get("PRETTY_NAME", "")
    except (OSError, AttributeError):
        name = ""
    return f"{platform.system()} {platform.release()} {name} ({platform.machine()})".strip()


def _mlx_device_info() -> dict[str, Any] | None:
    if not hasattr(mx, "device_info"):
        return None
    try:
        return {str(key): _plain(value) for key, value in mx.device_info().items()}
    except Exception as error:  # backend-specific: record it, never fail a run
        return {"error": repr(error)}


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _ncps_mlx_version() -> str | None:
    # Run from a checkout (pythonpath ".") the package is importable but not installed.
    import ncps_mlx

    return getattr(ncps_mlx, "__version__", None)


def _kernel_threads() -> int | str:
    """The fused kernels' thread count, or why they do not run here."""
    from ncps_mlx import kernels

    return kernels.unavailable_reason() or kernels.threads()


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()
