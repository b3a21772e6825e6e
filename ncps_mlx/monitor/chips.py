"""Which Apple chip this is, and its peak memory bandwidth.

Peaks are Apple's published unified-memory bandwidths. Where one chip name comes in two
bandwidths (M3 Max, M4 Max), the GPU core count from the IORegistry tells them apart.
"""

import platform
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

GB = 1e9
#: Peak DRAM bandwidth in GB/s, by chip; a dict when it depends on the GPU core count.
PEAK_BANDWIDTH_GBPS: dict[str, float | dict[int, float]] = {
    "M1": 68.25,
    "M1 Pro": 200,
    "M1 Max": 400,
    "M1 Ultra": 800,
    "M2": 100,
    "M2 Pro": 200,
    "M2 Max": 400,
    "M2 Ultra": 800,
    "M3": 100,
    "M3 Pro": 150,
    "M3 Max": {30: 300, 40: 400},
    "M3 Ultra": 819,
    "M4": 120,
    "M4 Pro": 273,
    "M4 Max": {32: 410, 40: 546},
    "M5": 153,
    "M5 Pro": 307,
    "M5 Max": {40: 614},
}


@dataclass(frozen=True)
class Chip:
    """An Apple chip: its name (e.g. ``"M2 Pro"``), GPU cores and peak bandwidth."""

    name: str
    gpu_cores: int | None
    peak_bandwidth_bytes_per_s: float | None


def parse_brand(brand: str) -> str | None:
    """``"Apple M3 Max"`` -> ``"M3 Max"``; None for anything that is not an M-series chip."""
    match = re.search(r"\b(M\d+)(?: (Pro|Max|Ultra))?\b", brand)
    if match is None:
        return None
    return " ".join(part for part in match.groups() if part)


def parse_gpu_cores(ioreg_output: str) -> int | None:
    """The ``"gpu-core-count" = N`` entry of ``ioreg -rc AGXAccelerator``."""
    match = re.search(r'"gpu-core-count"\s*=\s*(\d+)', ioreg_output)
    return int(match.group(1)) if match else None


def peak_bandwidth(name: str, gpu_cores: int | None) -> float | None:
    """Peak bytes per second, or None when the chip (or its variant) is not known."""
    peak = PEAK_BANDWIDTH_GBPS.get(name)
    if isinstance(peak, dict):
        peak = peak.get(gpu_cores) if gpu_cores is not None else None
    return None if peak is None else peak * GB


def _output(run: Callable[..., subprocess.CompletedProcess], command: list[str]) -> str:
    try:
        return run(command, capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def detect_chip(
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    system: Callable[[], str] = platform.system,
) -> Chip | None:
    """This machine's Apple chip, or None elsewhere (or if it cannot be read)."""
    if system() != "Darwin":
        return None
    name = parse_brand(_output(run, ["sysctl", "-n", "machdep.cpu.brand_string"]))
    if name is None:
        return None
    cores = parse_gpu_cores(_output(run, ["ioreg", "-rc", "AGXAccelerator", "-d", "1"]))
    return Chip(name, cores, peak_bandwidth(name, cores))
