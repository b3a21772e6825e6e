"""NVIDIA GPUs through NVML (``nvidia-ml-py``), for runs off Apple silicon."""

from typing import Any

from .base import Backend, Figures


class NVMLBackend(Backend):
    """Utilization, memory and power of GPU ``index`` from NVML.

    NVML's memory utilization is the share of time the memory was being read or written,
    not bytes per second, so it is reported as ``gpu_memory_busy_percent`` and no
    bandwidth figure is derived from it.
    """

    name = "nvml"
    keys = {
        "gpu_utilization_percent": "share of time a kernel was running on the GPU",
        "gpu_memory_busy_percent": "share of time GPU memory was being read or written",
        "gpu_memory_used_bytes": "GPU memory in use",
        "gpu_power_w": "GPU board power",
        "gpu_frequency_mhz": "GPU graphics clock",
    }

    def __init__(self, index: int = 0, nvml: Any = None):
        self._index = index
        self._nvml = nvml
        self._handle = None
        self._error: Exception | None = None

    def probe(self) -> bool:
        """Import `pynvml`, start NVML and find GPU `index`; whether that worked. Never
        raises: the error is kept for `why_unavailable`."""
        try:
            if self._nvml is None:
                import pynvml

                self._nvml = pynvml
            self._nvml.nvmlInit()
            self._handle = self._nvml.nvmlDeviceGetHandleByIndex(self._index)
        except Exception as error:
            self._error = error
            return False
        return True

    def why_unavailable(self) -> str:
        """That `nvidia-ml-py` is not installed, or which GPU or driver NVML did not find."""
        if isinstance(self._error, ImportError):
            return "it needs an NVIDIA GPU and `pip install nvidia-ml-py`, which is not installed"
        return f"NVML found no NVIDIA GPU {self._index} or driver ({self._error})"

    def sample(self) -> Figures:
        """The GPU's utilization, memory busy share and use, power and clock now."""
        nvml, handle = self._nvml, self._handle
        rates = nvml.nvmlDeviceGetUtilizationRates(handle)
        return {
            "gpu_utilization_percent": rates.gpu,
            "gpu_memory_busy_percent": rates.memory,
            "gpu_memory_used_bytes": nvml.nvmlDeviceGetMemoryInfo(handle).used,
            "gpu_power_w": nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "gpu_frequency_mhz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_GRAPHICS),
        }

    def close(self) -> None:
        """Shut NVML down, if `probe` started it."""
        if self._handle is not None:
            self._nvml.nvmlShutdown()
            self._handle = None
