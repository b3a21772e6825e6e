"""The LTC cell on the fused semi-implicit step ([`ltc_step`][ncps_mlx.kernels.ltc_step]).

The kernel evaluates the synapses that exist, one entry each
([`synapses`][ncps_mlx.cells.LTCCell.synapses]), through all ODE unfolds of a step; the
sensory synapses, which depend on the input only, are the cell's own `project`.
"""

from typing import Any

import mlx.core as mx
import numpy as np

from ..cells.ltc import LTCCell, map_features
from . import direct, primitives
from .library import usable
from .registry import register


def _synapse_vectors(cell: LTCCell, sensory: bool) -> dict[str, mx.array]:
    synapses = cell.synapses(sensory=sensory)
    return {
        "pre": synapses.pre,
        "post": synapses.post,
        "sigma": synapses.sigma,
        "mu": synapses.mu,
        "w": synapses.w,
        "w_erev": synapses.w * synapses.erev,
    }


def _leak(consts: dict) -> dict[str, Any]:
    """``cm``, ``gleak`` and ``leak_current`` of [`LTCCell.derive`][ncps_mlx.cells.LTCCell.derive]
    as (N,) vectors."""
    return {name: consts[name].reshape(-1) for name in ("cm", "gleak", "leak_current")}


def _kernel_terms(cell: LTCCell, leak: dict, sensory: tuple, dt: Any) -> tuple[Any, Any, Any]:
    """``cm``, ``numerator`` and ``denominator`` of [`ltc_step`][ncps_mlx.kernels.ltc_step]
    from the sensory sums and the timespan; arithmetic only, so MLX and NumPy alike."""
    numerator, denominator = sensory
    return (
        leak["cm"] / (dt / cell.ode_unfolds),
        leak["leak_current"] + numerator,
        leak["gleak"] + denominator + cell.epsilon,
    )


class FusedLTC:
    """An LTC cell whose step is one [`ltc_step`][ncps_mlx.kernels.ltc_step]."""

    def __init__(self, cell: LTCCell):
        self.cell = cell

    def derive(self) -> dict[str, Any]:
        """The cell's derived arrays, with the leak terms as vectors and the recurrent
        synapses as the kernel's per-synapse vectors."""
        consts = self.cell.derive()
        return {"cell": consts, **_leak(consts), "synapses": _synapse_vectors(self.cell, False)}

    def project(self, consts: dict, x: mx.array) -> tuple[mx.array, mx.array]:
        """The cell's sensory sums, batch-major as the kernel takes them.

        The cell's are neuron-major, `(N, T, 1, B)`; these are `(B, T, N)`.
        """
        sums = self.cell.project(consts["cell"], x)
        return tuple(mx.transpose(mx.squeeze(total, -2)) for total in sums)

    def step(
        self, consts: dict, inputs: tuple[mx.array, mx.array], h: mx.array, dt: mx.array | float
    ) -> tuple[mx.array, mx.array]:
        """One LTC step (all its ODE unfolds) in one kernel call.

        Returns:
            `(y, h_next)`: the mapped motor neurons, and every neuron's new potential.
        """
        cm, numerator, denominator = _kernel_terms(self.cell, consts, inputs, dt)
        cm = mx.broadcast_to(cm, h.shape)
        synapses = consts["synapses"]
        v = primitives.ltc_step(h, cm, numerator, denominator, synapses, self.cell.ode_unfolds)
        return self.cell.map_outputs(v), v


class DirectLTC:
    """An LTC cell's step on NumPy arrays, its weights read once."""

    def __init__(self, cell: LTCCell):
        self.cell = cell
        self._leak = {key: np.array(value) for key, value in _leak(cell.derive()).items()}
        names = [f"{side}_{kind}" for side in ("input", "output") for kind in ("w", "b")]
        self._mappings = {name: np.array(cell[name]) for name in names if name in cell}
        self._synapses = direct.evaluated(_synapse_vectors(cell, False))
        self._sensory = direct.evaluated(_synapse_vectors(cell, True))

    def __call__(
        self, x: np.ndarray, h: np.ndarray, dt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        cell = self.cell
        x = map_features(x, cell.input_mapping, self._mappings, "input")
        sensory = direct.synapse_sums(x, self._sensory, cell.state_size)
        cm, numerator, denominator = _kernel_terms(cell, self._leak, sensory, dt)
        v = direct.ltc_step(h, cm, numerator, denominator, self._synapses, cell.ode_unfolds)
        y = map_features(v[:, : cell.output_size], cell.output_mapping, self._mappings, "output")
        return y, v


def _runs_fused(cell: LTCCell) -> bool:
    return cell.solver == "semi_implicit" and usable(cell.sigma.dtype)


register(
    LTCCell,
    graph=lambda cell: FusedLTC(cell) if _runs_fused(cell) else None,
    direct=lambda cell: DirectLTC(cell) if _runs_fused(cell) else None,
)
