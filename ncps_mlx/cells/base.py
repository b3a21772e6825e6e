"""The interface every recurrent cell of the package implements.

A cell computes ONE time step. To let a sequence layer move work out of its time loop,
the step is split in three parts:

* :meth:`Cell.derive` computes the arrays every step reuses (weights with their wiring
  masks folded in, heads fused, positivity constraints applied) once per call;
* :meth:`Cell.project` does the work that depends only on the input, for any number of
  leading axes at once (a whole sequence in one large operation);
* :meth:`Cell.step` advances the state by one step from a projected input.

Calling the cell runs the three in order for a single step.
"""

from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_map

from ..errors import WiringError
from ..wirings import Wiring

Consts = dict[str, Any]


class Cell(nn.Module):
    """Base class of the cells: one step ``(x_t, h_t, dt_t) -> (y_t, h_{t+1})``."""

    #: Whether a zero timespan is meaningless for this cell (LTC divides by it).
    requires_positive_timespans: bool = False

    @property
    def input_size(self) -> int:
        raise NotImplementedError

    @property
    def state_size(self) -> int:
        raise NotImplementedError

    @property
    def output_size(self) -> int:
        raise NotImplementedError

    def derive(self) -> Consts:
        """Arrays derived from the parameters that every step of a call reuses."""
        raise NotImplementedError

    def project(self, consts: Consts, x: mx.array) -> Any:
        """The input-only part of a step, for inputs of shape ``(..., input_size)``."""
        raise NotImplementedError

    def step(
        self, consts: Consts, inputs: Any, h: mx.array, dt: mx.array | float
    ) -> tuple[mx.array, mx.array]:
        """Advance ``h`` by one step of length ``dt`` given projected ``inputs``."""
        raise NotImplementedError

    @property
    def runs_fused(self) -> bool:
        """Whether a step here and now runs as one fused kernel, and so whether
        :meth:`direct_step` can run."""
        return False

    def direct_consts(self, consts: Consts) -> Consts:
        """What :meth:`direct_step` reads, as NumPy arrays, from :meth:`derive`'s ``consts``
        (computed while :attr:`runs_fused`): NumPy arrays for the arithmetic around the
        kernels, evaluated ``mx.array`` for what the kernels read (:func:`kernel_consts`)."""
        raise NotImplementedError(f"[{type(self).__name__}] has no direct step")

    def direct_step(
        self, consts: Consts, x: np.ndarray, h: np.ndarray, dt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`project` and :meth:`step` on NumPy arrays, run at once on the calling
        thread by the fused kernels (:mod:`ncps_mlx.kernels.direct`): float32 ``x``
        (B, input_size), ``h`` (B, state_size), ``dt`` (B, 1) and
        :meth:`direct_consts`. No gradients."""
        raise NotImplementedError(f"[{type(self).__name__}] has no direct step")

    def __call__(
        self, x: mx.array, h: mx.array, dt: mx.array | float = 1.0
    ) -> tuple[mx.array, mx.array]:
        """One step from raw inputs ``x`` (B, input_size) and state ``h`` (B, state_size).

        Returns:
            ``(y, h_next)``: the output (B, output_size) and the new state.
        """
        consts = self.derive()
        return self.step(consts, self.project(consts, x), h, dt)


def numpy_consts(consts: Any) -> Any:
    """``consts`` with every ``mx.array`` as a C-ordered NumPy array (what the direct
    kernels take); other values as they are."""
    if isinstance(consts, mx.array):
        return np.ascontiguousarray(np.array(consts))
    if isinstance(consts, dict):
        return {key: numpy_consts(value) for key, value in consts.items()}
    if isinstance(consts, (list, tuple)):
        return type(consts)(numpy_consts(value) for value in consts)
    return consts


def kernel_consts(arrays: Any) -> Any:
    """A tree of ``mx.array`` made row-major and evaluated: the direct kernels read them
    in place, on the calling thread."""
    arrays = tree_map(mx.contiguous, arrays)
    mx.eval(arrays)
    return arrays


def check_positive_int(owner: str, name: str, value: Any, minimum: int = 1) -> None:
    """Raise a ValueError unless ``value`` is an int no smaller than ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"[{owner}] {name!r} must be an integer >= {minimum} but got {value!r}")


def check_choice(owner: str, name: str, value: Any, choices: tuple) -> None:
    """Raise a ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"[{owner}] unknown {name} {value!r}; choose one of {list(choices)}")


class WiredCell(Cell):
    """A cell whose neurons and synapses are given by a :class:`~ncps_mlx.wirings.Wiring`."""

    def _attach_wiring(self, wiring: Wiring, input_size: int | None) -> None:
        owner = type(self).__name__
        if not isinstance(wiring, Wiring):
            raise ValueError(f"[{owner}] 'wiring' must be a Wiring but got {wiring!r}")
        if input_size is not None:
            wiring.build(input_size)
        if not wiring.is_built():
            raise WiringError(
                f"[{owner}] the wiring is not built: pass the input size or call "
                "wiring.build(input_dim) first"
            )
        self._wiring = wiring

    @property
    def wiring(self) -> Wiring:
        return self._wiring

    @property
    def input_size(self) -> int:
        return self._wiring.input_dim

    @property
    def state_size(self) -> int:
        return self._wiring.units

    @property
    def output_size(self) -> int:
        return self._wiring.output_dim

    @property
    def synapse_count(self) -> int:
        """Synapses between the cell's neurons."""
        return int(self._wiring.synapse_count)

    @property
    def sensory_synapse_count(self) -> int:
        """Synapses from the input features to the cell's neurons."""
        return int(self._wiring.sensory_synapse_count)
