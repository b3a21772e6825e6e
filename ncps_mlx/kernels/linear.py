"""A linear layer (a sequence layer's output projection) on the kernels' product
([`addmm`][ncps_mlx.kernels.addmm]): all time steps at once, on every core."""

import mlx.core as mx
import mlx.nn as nn

from . import primitives
from .library import usable
from .registry import register


class FusedLinear:
    """``layer(x)``, ``x @ W^T + b``, as one product on the kernels."""

    def __init__(self, layer: nn.Linear):
        self.layer = layer

    def __call__(self, x: mx.array) -> mx.array:
        bias = self.layer.bias if "bias" in self.layer else None
        return primitives.addmm(bias, x, self.layer.weight.T)


register(nn.Linear, graph=lambda layer: FusedLinear(layer) if usable(layer.weight.dtype) else None)
