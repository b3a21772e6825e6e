"""Activation functions the CfC backbone accepts, by name, over an op set.

Each takes the op set ``o`` first ([`ncps_mlx.ops`][ncps_mlx.ops] for MLX, `ncps_mlx.export.mil`
for Core ML), so the table serves the cells and the exporter alike; the fused kernels
check at load time that they know the same names.
"""

from collections.abc import Callable
from types import ModuleType
from typing import Any


def lecun_tanh(o: ModuleType, x: Any) -> Any:
    """LeCun's scaled tanh, ``1.7159 * tanh(0.666 * x)``.

    The reference uses 0.666, not 2/3; the constant is kept so weights trained with it
    give the same function.
    """
    return 1.7159 * o.tanh(0.666 * x)


def tanh(o: ModuleType, x: Any) -> Any:
    """The hyperbolic tangent."""
    return o.tanh(x)


def relu(o: ModuleType, x: Any) -> Any:
    """``max(x, 0)``."""
    return o.relu(x)


def silu(o: ModuleType, x: Any) -> Any:
    """``x * sigmoid(x)``."""
    return o.silu(x)


def gelu(o: ModuleType, x: Any) -> Any:
    """The exact (erf) GELU, torch.nn.GELU's default."""
    return o.gelu(x)


ACTIVATIONS: dict[str, Callable[[ModuleType, Any], Any]] = {
    "lecun_tanh": lecun_tanh,
    "tanh": tanh,
    "relu": relu,
    "silu": silu,
    "gelu": gelu,
}
"""The backbone activations by name, each `f(o, x)` over an op set `o`; the order is the
fused kernels' numbering."""
