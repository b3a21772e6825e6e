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

    def __call__(
        self, x: mx.array, h: mx.array, dt: mx.array | float = 1.0
    ) -> tuple[mx.array, mx.array]:
        """One step from raw inputs ``x`` (B, input_size) and state ``h`` (B, state_size).

        Returns:
            ``(y, h_next)``: the output (B, output_size) and the new state.
        """
        consts = self.derive()
        return self.step(consts, self.project(consts, x), h, dt)


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
