"""A small numpy-like face on coremltools' MIL builder, in the Neural Engine's layout.

Every activation is a rank-4 tensor laid out ``(B, C, 1, S)`` (batch, channels, 1,
sequence), the layout Apple's Neural Engine guidance asks for: dense layers become 1x1
convolutions over ``C`` and per-channel constants broadcast as ``(1, C, 1, 1)``.
`Tensor` wraps a MIL ``Var`` with the arithmetic operators so the cells' update
equations read as they do in the MLX code. The module is an op set with the names of
[`ncps_mlx.ops`][ncps_mlx.ops] (``sigmoid``, ``tanh``, ``exp``, ``relu``, ``silu``, ``gelu``,
``chunks``), so the math the cells write once over an op set (their activations, the CfC
solution, the LSTM update, the LTC synaptic sums) builds the graph here, and the ODE
solvers of [`ncps_mlx.cells.solvers`][ncps_mlx.cells.solvers] run on it unchanged.

Only call these inside an ``@mb.program`` function. Programs are built in float32;
``coremltools.convert`` lowers them to float16 when asked.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from coremltools.converters.mil import Builder as mb


def _operand(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.var
    if np.isscalar(value):
        return np.float32(value)
    return np.asarray(value, dtype=np.float32)


class Tensor:
    """A MIL value with ``+ - * /``, unary ``-`` and ``abs``."""

    __slots__ = ("var",)
    # Makes numpy defer to the reflected operators, so ``array * tensor`` is a MIL op.
    __array_ufunc__ = None

    def __init__(self, var: Any):
        self.var = var

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the MIL value, `(B, C, 1, S)` for an activation."""
        return tuple(self.var.shape)

    def __add__(self, other: Any) -> "Tensor":
        return Tensor(mb.add(x=self.var, y=_operand(other)))

    def __radd__(self, other: Any) -> "Tensor":
        return Tensor(mb.add(x=_operand(other), y=self.var))

    def __sub__(self, other: Any) -> "Tensor":
        return Tensor(mb.sub(x=self.var, y=_operand(other)))

    def __rsub__(self, other: Any) -> "Tensor":
        return Tensor(mb.sub(x=_operand(other), y=self.var))

    def __mul__(self, other: Any) -> "Tensor":
        return Tensor(mb.mul(x=self.var, y=_operand(other)))

    def __rmul__(self, other: Any) -> "Tensor":
        return Tensor(mb.mul(x=_operand(other), y=self.var))

    def __truediv__(self, other: Any) -> "Tensor":
        return Tensor(mb.real_div(x=self.var, y=_operand(other)))

    def __rtruediv__(self, other: Any) -> "Tensor":
        return Tensor(mb.real_div(x=_operand(other), y=self.var))

    def __neg__(self) -> "Tensor":
        return Tensor(mb.mul(x=self.var, y=np.float32(-1.0)))

    def __abs__(self) -> "Tensor":
        return Tensor(mb.abs(x=self.var))


def channels(values: np.ndarray) -> np.ndarray:
    """A per-channel constant shaped ``(1, C, 1, 1)`` to broadcast over the layout."""
    return np.asarray(values, dtype=np.float32).reshape(1, -1, 1, 1)


def dense(x: Tensor, weight: np.ndarray, bias: np.ndarray | None = None) -> Tensor:
    """``weight @ x + bias`` over the channels: a 1x1 convolution, ``weight`` (out, in)."""
    kernel = np.asarray(weight, dtype=np.float32)[:, :, None, None]
    arguments = {"x": x.var, "weight": kernel}
    if bias is not None:
        arguments["bias"] = np.asarray(bias, dtype=np.float32)
    return Tensor(mb.conv(**arguments))


def sigmoid(x: Tensor) -> Tensor:
    """The logistic sigmoid, element-wise."""
    return Tensor(mb.sigmoid(x=x.var))


def tanh(x: Tensor) -> Tensor:
    """The hyperbolic tangent, element-wise."""
    return Tensor(mb.tanh(x=x.var))


def exp(x: Tensor) -> Tensor:
    """The exponential, element-wise."""
    return Tensor(mb.exp(x=x.var))


def relu(x: Tensor) -> Tensor:
    """`max(x, 0)`, element-wise."""
    return Tensor(mb.relu(x=x.var))


def silu(x: Tensor) -> Tensor:
    """`x * sigmoid(x)`, element-wise."""
    return Tensor(mb.silu(x=x.var))


def gelu(x: Tensor) -> Tensor:
    """The exact GELU (with the error function, not the tanh approximation), element-wise."""
    return Tensor(mb.gelu(x=x.var, mode="EXACT"))


def clip(x: Tensor, low: float, high: float) -> Tensor:
    """`x` limited to `[low, high]`, element-wise."""
    return Tensor(mb.clip(x=x.var, alpha=np.float32(low), beta=np.float32(high)))


def split(x: Tensor, sizes: Sequence[int]) -> list[Tensor]:
    """Split along the channels into parts of the given sizes."""
    if len(sizes) == 1:
        return [x]
    return [Tensor(v) for v in mb.split(x=x.var, split_sizes=list(sizes), axis=1)]


def chunks(x: Tensor, count: int) -> list[Tensor]:
    """``x`` cut into ``count`` equal parts along the channels (as
    [`ncps_mlx.ops.chunks`][ncps_mlx.ops.chunks])."""
    return split(x, [x.shape[1] // count] * count)


def concat(parts: Sequence[Tensor], axis: int = 1) -> Tensor:
    """`parts` joined along `axis` (the channels by default); a single part as it is."""
    if len(parts) == 1:
        return parts[0]
    return Tensor(mb.concat(values=[p.var for p in parts], axis=axis))


def squeeze(x: Tensor) -> Tensor:
    """``(B, C, 1, 1)`` to ``(B, C)``.

    States leave through this and outputs through `from_layout`, so a state that
    is also the output (a CfC's) stays two ops: coremltools' passes would merge two
    identical reshapes into one value carrying both names.
    """
    return Tensor(mb.squeeze(x=x.var, axes=[2, 3]))


def at_step(x: Tensor, t: int) -> Tensor:
    """Position ``t`` of the sequence axis, keeping the rank: ``(B, C, 1, 1)``."""
    if x.shape[-1] == 1:
        return x
    return Tensor(mb.slice_by_size(x=x.var, begin=[0, 0, 0, t], size=[-1, -1, -1, 1]))


def to_layout(x: Tensor, batch: int, steps: int) -> Tensor:
    """``(B, F)`` (one step) or ``(B, T, F)`` to ``(B, F, 1, T)``."""
    if len(x.shape) == 2:
        return Tensor(mb.reshape(x=x.var, shape=[batch, x.shape[1], 1, 1]))
    moved = mb.transpose(x=x.var, perm=[0, 2, 1])
    return Tensor(mb.reshape(x=moved, shape=[batch, x.shape[2], 1, steps]))


def from_layout(x: Tensor, sequence: bool) -> Tensor:
    """``(B, C, 1, S)`` back to ``(B, S, C)`` (``sequence``) or ``(B, C)``."""
    batch, width, _, steps = x.shape
    if not sequence:
        return Tensor(mb.reshape(x=x.var, shape=[batch, width]))
    flat = mb.reshape(x=x.var, shape=[batch, width, steps])
    return Tensor(mb.transpose(x=flat, perm=[0, 2, 1]))
