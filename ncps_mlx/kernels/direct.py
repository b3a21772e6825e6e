"""The fused kernels run directly on NumPy arrays: one step now, on the calling thread.

Every MLX evaluation hands its work to the stream's worker thread and waits for it. A
wake-up costs little on a Mac's cores but tens of microseconds across the virtual CPUs of
a cloud machine: more than a controller's whole step (see :doc:`hardware`). These forms
run the forward passes of :func:`~ncps_mlx.kernels.cfc_step` and
:func:`~ncps_mlx.kernels.ltc_step` (and of the mixed-memory LSTM and an LTC's sensory
synapses) at once, without a graph; :class:`ncps_mlx.Controller` is built on them. They
compute no gradients.

A step's arrays are float32 NumPy arrays (others are converted), laid out as the graph
forms take them; the weights are evaluated ``mx.array`` (read in place, see
:func:`ncps_mlx.cells.base.kernel_consts`). Each function returns new NumPy arrays.
Shapes and synapse indices are checked in C++ (``ValueError``).
"""

from types import ModuleType

import mlx.core as mx
import numpy as np

from . import chain_codes, unavailable_reason

_SYNAPSE_FIELDS = ("pre", "post", "sigma", "mu", "w", "w_erev")


def _kernels() -> ModuleType:
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"[kernels.direct] {reason}")
    from . import _module

    return _module


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
    """:func:`ncps_mlx.kernels.cfc_step`'s new state, computed now."""
    out = np.empty(h.shape, np.float32)
    codes = chain_codes(layout, mode, activation)
    _kernels().cfc_step_direct(projected, h, dt, weights, *codes, out)
    return out


def ltc_step(
    v: np.ndarray,
    cm: np.ndarray,
    numerator: np.ndarray,
    denominator: np.ndarray,
    synapses: dict[str, mx.array],
    unfolds: int,
) -> np.ndarray:
    """:func:`ncps_mlx.kernels.ltc_step`'s new potentials, computed now."""
    out = np.empty(v.shape, np.float32)
    per_neuron = [v, cm, numerator, denominator]
    _kernels().ltc_step_direct(per_neuron, _synapse_vectors(synapses), unfolds, out)
    return out


def synapse_sums(
    x: np.ndarray, synapses: dict[str, mx.array], neurons: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(sum_s w_erev_s a_s, sum_s w_s a_s)`` per postsynaptic neuron, (B, neurons), with
    ``a_s = sigmoid(sigma_s (x_pre - mu_s))``: an LTC's sensory synapses for inputs ``x``
    (B, F). ``synapses`` as :func:`ltc_step` takes them, ``pre`` indexing ``x``'s columns."""
    numerator = np.empty((x.shape[0], neurons), np.float32)
    denominator = np.empty_like(numerator)
    _kernels().synapse_sums_direct(x, _synapse_vectors(synapses), numerator, denominator)
    return numerator, denominator


def lstm_step(
    z: np.ndarray, h: np.ndarray, c: np.ndarray, wh_t: mx.array
) -> tuple[np.ndarray, np.ndarray]:
    """The mixed-memory LSTM's ``(h', c')`` (:class:`~ncps_mlx.cells.LSTMCell`) from its
    projected input ``z`` (B, 4N), state ``h``, ``c`` (B, N) and recurrent ``wh_t`` (N, 4N)."""
    h_next, c_next = np.empty(h.shape, np.float32), np.empty(c.shape, np.float32)
    _kernels().lstm_step_direct(z, h, c, wh_t, h_next, c_next)
    return h_next, c_next
