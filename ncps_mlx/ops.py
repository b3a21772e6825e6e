"""The op set the cells write their math with, on MLX: sigmoid and tanh that stay fast on
every backend, the other activations, ``exp`` and [`chunks`][ncps_mlx.ops.chunks]; and a cheap split
into time steps.

Math shared with the Core ML export (an activation, the CfC solution, the LSTM update, the
LTC synaptic sums) is written once as a function of an op set ``o``:
`ncps_mlx.export.mil` has the same functions on Core ML tensors, so
``lecun_tanh(ops, x)`` is an MLX computation and ``lecun_tanh(mil, x)`` a MIL graph.

On Metal, ``mx.sigmoid`` and ``mx.tanh`` are native GPU instructions. MLX's CPU backend
evaluates them with scalar libm calls (15-20 ns per element on x86), which dominates
recurrent models whose every step is thousands of gates and synapses. On the CPU, for
float32, this module evaluates tanh as a clamped rational function (odd degree-13
numerator over even degree-6 denominator, the minimax form Eigen and XLA use) built from
multiplies and adds only, so ``mx.compile`` fuses it with its neighbours into one
vectorised loop; ``sigmoid(x) = (1 + tanh(x / 2)) / 2``. The absolute error stays below
4e-7 (checked in the tests against float64; the native functions are about 1e-7), and
gradients use the analytic derivatives of the outputs. Other dtypes and devices use MLX's
own functions.

The rational form is a dozen graph nodes where ``mx.tanh`` is one, and MLX fuses it in
pieces; it pays only on large arrays, where the scalar libm cost dominates: an LTC's
synapse grid (batch x pre x post), not a CfC's (batch x units) gates. Measured on a
2-core x86 CPU with B=32, T=128: LTC(16, AutoNCP(32, 8)) inference 170 -> 112 ms, while
rational gates would slow CfC(16, AutoNCP(64, 8)) training from 179 to 230 ms.
"""

import contextlib
from collections.abc import Iterator

import mlx.core as mx
import mlx.nn as nn

# Beyond +-7.9053 tanh rounds to +-1 in float32: the rational form is fitted inside.
_CLAMP = 7.90531110763549805
# Coefficients of x^1, x^3, ..., x^13 (numerator) and x^0, x^2, ..., x^6 (denominator).
_NUMERATOR = (
    4.89352455891786e-03,
    6.37261928875436e-04,
    1.48572235717979e-05,
    5.12229709037114e-08,
    -8.60467152213735e-11,
    2.00018790482477e-13,
    -2.76076847742355e-16,
)
_DENOMINATOR = (
    4.89352518554385e-03,
    2.26843463243900e-03,
    1.18534705686654e-04,
    1.19825839466702e-06,
)


def _horner(coefficients: tuple[float, ...], z: mx.array) -> mx.array:
    result = coefficients[-1]
    for coefficient in reversed(coefficients[:-1]):
        result = result * z + coefficient
    return result


def _rational_tanh(x: mx.array) -> mx.array:
    x = mx.clip(x, -_CLAMP, _CLAMP)
    x2 = x * x
    return x * _horner(_NUMERATOR, x2) / _horner(_DENOMINATOR, x2)


# Compiled on their own (shapeless, like mlx.nn.gelu): an eager call is one fused kernel,
# and inside a compiled graph they are inlined and fused with their neighbours.
_tanh_kernel = mx.compile(_rational_tanh, shapeless=True)
_sigmoid_kernel = mx.compile(lambda x: 0.5 + 0.5 * _rational_tanh(0.5 * x), shapeless=True)


@mx.custom_function
def _fast_tanh(x: mx.array) -> mx.array:
    return _tanh_kernel(x)


@_fast_tanh.vjp
def _fast_tanh_vjp(primals, cotangent, output):
    return cotangent * (1.0 - output * output)


@mx.custom_function
def _fast_sigmoid(x: mx.array) -> mx.array:
    return _sigmoid_kernel(x)


@_fast_sigmoid.vjp
def _fast_sigmoid_vjp(primals, cotangent, output):
    return cotangent * output * (1.0 - output)


#: Smallest array (elements) that takes the rational path.
RATIONAL_MIN_SIZE = 8192
_native_only = False


@contextlib.contextmanager
def native_transcendentals() -> Iterator[None]:
    """Use MLX's own sigmoid and tanh throughout, as on Metal (used to count kernels)."""
    global _native_only
    previous, _native_only = _native_only, True
    try:
        yield
    finally:
        _native_only = previous


def _use_rational(x: mx.array) -> bool:
    return (
        not _native_only
        and x.size >= RATIONAL_MIN_SIZE
        and x.dtype == mx.float32
        and mx.default_device().type == mx.cpu
    )


def sigmoid(x: mx.array) -> mx.array:
    """The logistic function ``1 / (1 + exp(-x))``."""
    return _fast_sigmoid(x) if _use_rational(x) else mx.sigmoid(x)


def tanh(x: mx.array) -> mx.array:
    """The hyperbolic tangent."""
    return _fast_tanh(x) if _use_rational(x) else mx.tanh(x)


exp = mx.exp


def relu(x: mx.array) -> mx.array:
    """``max(x, 0)``."""
    # nn.relu and nn.gelu are compiled functions, which copy.deepcopy cannot copy: plain
    # functions around them keep a module that stores one copyable.
    return nn.relu(x)


def gelu(x: mx.array) -> mx.array:
    """The exact (erf) GELU, torch.nn.GELU's default."""
    return nn.gelu(x)


def silu(x: mx.array) -> mx.array:
    """``x * sigmoid(x)``."""
    return x * sigmoid(x)


def chunks(x: mx.array, count: int) -> list[mx.array]:
    """``x`` cut into ``count`` equal parts along its feature (last) axis."""
    return mx.split(x, count, axis=-1)


@mx.custom_function
def split_steps(a: mx.array) -> list[mx.array]:
    """``a`` (d, T, ...) as the T arrays (d, ...) of its time steps.

    Differentiable like ``[a[:, t] for t in range(T)]``, but where the backward pass of
    each slice writes its cotangent into a zero array of ``a``'s full shape (and a
    compiled graph keeps most of those alive before summing them: memory and work grow
    with T squared), this one stacks the T cotangents once.
    """
    return [mx.squeeze(step, 1) for step in mx.split(a, a.shape[1], axis=1)]


@split_steps.vjp
def _split_steps_vjp(primals, cotangents, outputs):
    return mx.stack(cotangents, axis=1)
