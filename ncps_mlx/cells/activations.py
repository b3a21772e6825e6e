"""Activation functions the CfC backbone accepts, by name."""

from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn

from .. import ops


def lecun_tanh(x: mx.array) -> mx.array:
    """LeCun's scaled tanh, ``1.7159 * tanh(0.666 * x)``.

    The reference uses 0.666, not 2/3; the constant is kept so weights trained with it
    give the same function.
    """
    return 1.7159 * ops.tanh(0.666 * x)


def silu(x: mx.array) -> mx.array:
    """``x * sigmoid(x)``."""
    return x * ops.sigmoid(x)


# nn.relu and nn.gelu are compiled functions, which copy.deepcopy cannot copy: plain
# functions around them keep a cell copyable (a frozen predict, a Controller copy it).
def _relu(x: mx.array) -> mx.array:
    return nn.relu(x)


def _gelu(x: mx.array) -> mx.array:
    # torch.nn.GELU's default is the exact erf form, which nn.gelu is.
    return nn.gelu(x)


ACTIVATIONS: dict[str, Callable[[mx.array], mx.array]] = {
    "lecun_tanh": lecun_tanh,
    "tanh": ops.tanh,
    "relu": _relu,
    "silu": silu,
    "gelu": _gelu,
}


def get_activation(name: str, owner: str) -> Callable[[mx.array], mx.array]:
    """Look up an activation by name, raising a ValueError that lists the choices."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"[{owner}] unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None
