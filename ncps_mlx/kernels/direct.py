"""The fused kernels run directly on NumPy arrays: one step now, on the calling thread.

Every MLX evaluation hands its work to the stream's worker thread and waits for it. A
wake-up costs little on a Mac's cores but tens of microseconds across the virtual CPUs of
a cloud machine: more than a controller's whole step (see the
[hardware guide](https://ncps-mlx.github.io/ncps_mlx/hardware/)). These forms
run the forward passes of [`cfc_step`][ncps_mlx.kernels.cfc_step] and
[`ltc_step`][ncps_mlx.kernels.ltc_step] (and of the mixed-memory LSTM and an LTC's sensory
synapses) at once, without a graph; [`ncps_mlx.Controller`][ncps_mlx.Controller] is built on them.
They compute no gradients.

A step's arrays are float32 NumPy arrays (others are converted), laid out as the graph
forms take them; the weights are evaluated ``mx.array`` (read in place, see
[`evaluated`][ncps_mlx.kernels.direct.evaluated]). Each function returns new NumPy arrays.
Shapes and synapse indices are checked in C++ (``ValueError``).
"""

from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_map

from .library import library
from .primitives import chain_codes

_SYNAPSE_FIELDS = ("pre", "post", "sigma", "mu", "w", "w_erev")


def evaluated(arrays: Any) -> Any:
    """A tree of ``mx.array`` made row-major and evaluated: the direct forms read weights
    in place, on the calling thread."""
    arrays = tree_map(mx.contiguous, arrays)
    mx.eval(arrays)
    return arrays


def _library() -> Any:
    return library("kernels.direct")


def _synapse_vectors(synapses: dict[str, mx.array]) -> list[mx.array]:
    return [synapses[name] for name in _SYNAPSE_FIELDS]


def cfc_step(
    projected: np.ndarray,
    h: np.ndarray,
    dt: np.ndarray,
    weights: list[mx.array],
    layout: list[tuple[int, int]],
    mode: str = "default",
    activation: str = "lecun_tanh",
) -> np.ndarray:
    """[`ncps_mlx.kernels.cfc_step`][ncps_mlx.kernels.cfc_step]'s new state, computed now."""
    out = np.empty(h.shape, np.float32)
    codes = chain_codes(layout, mode, activation)
    _library().cfc_step_direct(projected, h, dt, weights, *codes, out)
    return out


def ltc_step(
    v: np.ndarray,
    cm: np.ndarray,
    numerator: np.ndarray,
    denominator: np.ndarray,
    synapses: dict[str, mx.array],
    unfolds: int,
) -> np.ndarray:
    """[`ncps_mlx.kernels.ltc_step`][ncps_mlx.kernels.ltc_step]'s new potentials, computed now."""
    out = np.empty(v.shape, np.float32)
    per_neuron = [v, cm, numerator, denominator]
    _library().ltc_step_direct(per_neuron, _synapse_vectors(synapses), unfolds, out)
    return out


def synapse_sums(
    x: np.ndarray, synapses: dict[str, mx.array], neurons: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(sum_s w_erev_s a_s, sum_s w_s a_s)`` per postsynaptic neuron, (B, neurons), with
    ``a_s = sigmoid(sigma_s (x_pre - mu_s))``: an LTC's sensory synapses for inputs ``x``
    (B, F). ``synapses`` as [`ltc_step`][ncps_mlx.kernels.direct.ltc_step] takes them, ``pre``
    indexing ``x``'s columns."""
    numerator = np.empty((x.shape[0], neurons), np.float32)
    denominator = np.empty_like(numerator)
    _library().synapse_sums_direct(x, _synapse_vectors(synapses), numerator, denominator)
    return numerator, denominator


def lstm_step(
    z: np.ndarray, h: np.ndarray, c: np.ndarray, wh_t: mx.array
) -> tuple[np.ndarray, np.ndarray]:
    """The mixed-memory LSTM's ``(h', c')`` ([`LSTMCell`][ncps_mlx.cells.LSTMCell]) from its
    projected input ``z`` (B, 4N), state ``h``, ``c`` (B, N) and recurrent ``wh_t`` (N, 4N)."""
    h_next, c_next = np.empty(h.shape, np.float32), np.empty(c.shape, np.float32)
    _library().lstm_step_direct(z, h, c, wh_t, h_next, c_next)
    return h_next, c_next
