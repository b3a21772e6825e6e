"""MLX's allocator counters: memory held by arrays, the peak, and the buffer cache."""

import mlx.core as mx

from .base import Backend, Figures


class MLXMemoryBackend(Backend):
    """``mx.get_active_memory`` / ``get_peak_memory`` / ``get_cache_memory`` (every platform).

    On Apple silicon this is unified memory the GPU uses; on Linux it is host memory.
    """

    name = "mlx"
    keys = {
        "mlx_active_bytes": "bytes held by live MLX arrays",
        "mlx_peak_bytes": "largest mlx_active_bytes since the last reset",
        "mlx_cache_bytes": "bytes MLX keeps cached for reuse",
    }

    def sample(self) -> Figures:
        """MLX's active, peak and cached bytes now."""
        return {
            "mlx_active_bytes": mx.get_active_memory(),
            "mlx_peak_bytes": mx.get_peak_memory(),
            "mlx_cache_bytes": mx.get_cache_memory(),
        }
