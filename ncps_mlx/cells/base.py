"""The cell protocol: what a recurrent cell computes, and what it declares about it.

A cell computes ONE time step. To let a sequence layer move work out of its time loop,
the step is split in three parts:

* [`Cell.derive`][ncps_mlx.cells.Cell.derive] computes the arrays every step reuses (weights with
  their wiring masks folded in, heads fused, positivity constraints applied) once per call;
* [`Cell.project`][ncps_mlx.cells.Cell.project] does the work that depends only on the input, for
  any number of leading axes at once (a whole sequence in one large operation);
* [`Cell.step`][ncps_mlx.cells.Cell.step] advances the state by one step from a projected input.

Calling the cell runs the three in order for a single step. A cell is pure MLX math: it
knows nothing of sequences, kernels, devices or cost models. What other parts need to
know about it, it declares: its sizes, [`Cell.footprint`][ncps_mlx.cells.Cell.footprint] (the work
of a step, for the cost and traffic estimates),
[`Cell.timespan_bounds`][ncps_mlx.cells.Cell.timespan_bounds] (the timespans its solver stays finite
for, for the numerical checks) and [`Cell.get_config`][ncps_mlx.cells.Cell.get_config] (to be saved
and rebuilt, with [`register_cell`][ncps_mlx.register_cell]). See the guide "Writing your own cell".
"""

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .. import _inputs
from ..errors import WiringError, see
from ..wirings import Wiring

Consts = Any


@dataclass(frozen=True)
class Footprint:
    """The work of one time step of a cell, per sample.

    Attributes:
        hoisted_products: ``(inputs, outputs)`` of each matrix product on the input alone,
            which [`Cell.project`][ncps_mlx.cells.Cell.project] does for every step before the time
            loop.
        loop_products: ``(inputs, outputs)`` of each matrix product inside the time loop.
        elementwise: Other arithmetic operations (additions, multiplications, ...).
        transcendentals: Sigmoid, tanh and exp evaluations.
        synapse_slots: Synapse conductances evaluated (included in the counts above).
        saved_values: Values a training step keeps for the backward pass.
    """

    hoisted_products: tuple[tuple[int, int], ...] = ()
    loop_products: tuple[tuple[int, int], ...] = ()
    elementwise: int = 0
    transcendentals: int = 0
    synapse_slots: int = 0
    saved_values: int = 0

    @property
    def flops(self) -> int:
        """Floating-point operations: two per multiply-add of the products, plus the rest."""
        products = self.hoisted_products + self.loop_products
        return 2 * sum(a * b for a, b in products) + self.elementwise

    def __add__(self, other: "Footprint") -> "Footprint":
        """The footprint of both steps, one after the other."""
        return Footprint(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(Footprint))
        )


class Cell(nn.Module):
    """Base class of the cells: one step ``(x_t, h_t, dt_t) -> (y_t, h_{t+1})``.

    A subclass implements [`input_size`][ncps_mlx.cells.Cell.input_size],
    [`state_size`][ncps_mlx.cells.Cell.state_size], [`output_size`][ncps_mlx.cells.Cell.output_size]
    and [`step`][ncps_mlx.cells.Cell.step]; [`derive`][ncps_mlx.cells.Cell.derive] and
    [`project`][ncps_mlx.cells.Cell.project] default to nothing and the identity.
    [`footprint`][ncps_mlx.cells.Cell.footprint] and [`get_config`][ncps_mlx.cells.Cell.get_config]
    are optional: without them the cost estimates leave the cell out, and a model holding it cannot
    be saved with [`ncps_mlx.save`][ncps_mlx.save] (its weights still can, with
    ``model.save_weights``). [`timespan_bounds`][ncps_mlx.cells.Cell.timespan_bounds] is optional
    too: without it timespans are not checked against the solver's limits.

    Steps must be written with MLX operations (``mlx.core``, ``mlx.nn`` or
    [`ncps_mlx.ops`][ncps_mlx.ops]) so that gradients, ``mx.compile`` and every device work.
    """

    #: Whether a zero timespan is meaningless for this cell (LTC divides by it).
    requires_positive_timespans: bool = False

    #: Whether ``step`` reads ``dt``. A cell that ignores it (the baselines of
    #: ``ncps_mlx.baselines``) is given the elapsed time as an input feature where
    #: timespans matter (the demo, the policies).
    uses_timespans: bool = True

    @property
    def input_size(self) -> int:
        """Features of the input ``x``."""
        raise NotImplementedError(f"[{type(self).__name__}] define the input_size property")

    @property
    def state_size(self) -> int:
        """Size of the state ``h``."""
        raise NotImplementedError(f"[{type(self).__name__}] define the state_size property")

    @property
    def output_size(self) -> int:
        """Size of the output ``y``."""
        raise NotImplementedError(f"[{type(self).__name__}] define the output_size property")

    def derive(self) -> Consts:
        """Arrays derived from the parameters that every step of a call reuses."""
        return {}

    def project(self, consts: Consts, x: mx.array) -> Any:
        """The input-only part of a step, for inputs of shape ``(..., input_size)``.

        A sequence layer passes ``(B, T, input_size)`` and gives [`step`][ncps_mlx.cells.Cell.step]
        the slice of each array in the result along axis 1 (time). Default: ``x`` itself.
        """
        return x

    def step(
        self, consts: Consts, inputs: Any, h: mx.array, dt: mx.array | float
    ) -> tuple[mx.array, mx.array]:
        """Advance ``h`` (B, state_size) by one step of length ``dt`` (a float or
        (B, 1)) given projected ``inputs``. Returns ``(y, h_next)``."""
        raise NotImplementedError(f"[{type(self).__name__}] define step()")

    def footprint(self) -> Footprint | None:
        """The work of a step, for [`ncps_mlx.costs.step_costs`][ncps_mlx.costs.step_costs] and the
        monitor's traffic estimate; ``None`` (the default) when not declared."""
        return None

    def timespan_bounds(self) -> tuple[float, float] | None:
        """``(smallest, largest)`` elapsed time per step for which the cell's solver is
        known to stay finite and stable with its current parameters, in their dtype;
        ``None`` (the default) when not declared.

        The cell only declares them: the [`Controller`][ncps_mlx.Controller] (and training) warn
        with [`UnstableSolverWarning`][ncps_mlx.numerics.UnstableSolverWarning] when given timespans
        outside them (see [`ncps_mlx.numerics`][ncps_mlx.numerics]); cells without bounds are not
        checked.
        """
        return None

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable) that rebuild this cell."""
        raise NotImplementedError(
            f"[{type(self).__name__}] define get_config() returning the constructor "
            "arguments (and decorate the class with @ncps_mlx.register_cell) to save models "
            "holding it with ncps_mlx.save; or save the weights only with "
            f"model.save_weights(path)\n{see('custom-cell')}"
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Cell":
        """The cell [`get_config`][ncps_mlx.cells.Cell.get_config] describes: ``cls(**config)`` by
        default."""
        return cls(**config)

    def __call__(
        self, x: mx.array, h: mx.array, dt: mx.array | float = 1.0
    ) -> tuple[mx.array, mx.array]:
        """One step from raw inputs ``x`` (B, input_size) and state ``h`` (B, state_size).

        ``dt`` is the time elapsed: a number for every sample, or one per sample as an
        array of shape (B,) or (B, 1). It must be finite and ``>= 0`` (``> 0`` for a cell
        with ``requires_positive_timespans``); the values are not checked inside
        ``mx.compile`` or ``mx.vmap``, where they cannot be read.

        Returns:
            ``(y, h_next)``: the output (B, output_size) and the new state.

        Raises:
            ValueError: If ``dt`` has another shape, or values outside those allowed.
        """
        batch = x.shape[0] if x.ndim else 1
        dt = check_step_timespan(type(self).__name__, dt, batch, self.requires_positive_timespans)
        consts = self.derive()
        return self.step(consts, self.project(consts, x), h, dt)


def check_step_timespan(owner: str, dt: Any, batch: int, positive: bool) -> mx.array | float:
    """``dt`` of one step of a batch of ``batch`` as a float, a 0-d array or a (batch, 1)
    array.

    A (batch,) vector is one timespan per sample, as in a layer's timespans. Broadcast as
    it is against the (batch, units) state, it would give unit ``j`` of every sample the
    timespan of sample ``j`` whenever the batch size equals the number of units.

    Raises:
        ValueError: Naming ``dt``, its shape or values, and what is allowed.
    """
    if isinstance(dt, numbers.Real) and not isinstance(dt, bool):
        if not (math.isfinite(dt) and _allowed(dt, positive)):
            _raise_for_values(owner, dt, dt, positive)
        return float(dt)
    allowed = f"a number or an array of shape ({batch},) or ({batch}, 1)"
    if isinstance(dt, (np.ndarray, list, tuple)):  # as a layer's timespans
        dt = _inputs.as_array(owner, "dt", dt)
    if not isinstance(dt, mx.array):
        raise ValueError(f"[{owner}] 'dt' must be {allowed} but got {type(dt).__name__}")
    if dt.ndim > 0 and tuple(dt.shape) not in ((batch,), (batch, 1)):
        raise ValueError(
            f"[{owner}] 'dt' must be {allowed} (one timespan per sample), but got shape "
            f"{tuple(dt.shape)}\n{see('timespans')}"
        )
    if _has_disallowed_values(dt, positive):
        _raise_for_values(owner, mx.min(dt).item(), mx.max(dt).item(), positive)
    return dt.reshape(batch, 1) if dt.ndim == 1 else dt


def _allowed(dt: Any, positive: bool) -> Any:
    return dt > 0 if positive else dt >= 0


def _has_disallowed_values(dt: mx.array, positive: bool) -> bool:
    """Whether ``dt`` holds a non-finite or out-of-range value; ``False`` inside
    ``mx.compile`` or ``mx.vmap``, where values cannot be read.

    Read through the buffer protocol: evaluating ``dt`` alone and checking it with numpy
    costs a few microseconds, an MLX reduction and ``.item()`` twenty times more.
    """
    if dt.dtype == mx.bfloat16:  # no buffer format for it
        dt = dt.astype(mx.float32)
    try:
        values = np.asarray(memoryview(dt))
    except (RuntimeError, ValueError) as error:
        if "function transformations" in str(error):
            return False
        raise
    return not bool(np.all(np.isfinite(values) & _allowed(values, positive)))


def _raise_for_values(owner: str, low: float, high: float, positive: bool) -> None:
    raise ValueError(
        f"[{owner}] 'dt' must be finite and {'> 0' if positive else '>= 0'}, but got values "
        f"in [{low}, {high}]\n{see('timespans')}"
    )


#: Cell classes a saved model may name, by class name (see :func:`register_cell`).
CELLS: dict[str, type[Cell]] = {}


def register_cell(cls: type[Cell]) -> type[Cell]:
    """Let models holding cells of class ``cls`` be saved and loaded by name.

    Use it as a class decorator. The class must define
    [`Cell.get_config`][ncps_mlx.cells.Cell.get_config]; a checkpoint then stores the cell's class
    name and config, and [`ncps_mlx.load`][ncps_mlx.load] rebuilds the cell with ``cls(**config)``
    (in a process that has registered it).

    Defining the class again (re-running a notebook cell) replaces the registration.

    Raises:
        ValueError: ``cls`` is not a [`Cell`][ncps_mlx.cells.Cell] subclass, or a class of another
            module is registered under its name.
    """
    if not (isinstance(cls, type) and issubclass(cls, Cell)):
        raise ValueError(f"[register_cell] expected a Cell subclass but got {cls!r}")
    known = CELLS.get(cls.__name__)
    redefined = known is not None and _qualified(known) == _qualified(cls)
    if known is not None and not redefined:
        raise ValueError(
            f"[register_cell] another class named {cls.__name__!r} is registered "
            f"({known.__module__}); give the cell a unique class name"
        )
    CELLS[cls.__name__] = cls
    return cls


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def cell_config(cell: Cell) -> dict[str, Any]:
    """What a checkpoint stores of ``cell``: its registered class name and config."""
    name = type(cell).__name__
    if CELLS.get(name) is not type(cell):
        raise NotImplementedError(
            f"[{name}] cell classes must be registered to be saved: decorate the class "
            f"with @ncps_mlx.register_cell\n{see('custom-cell')}"
        )
    return {"class_name": name, "config": cell.get_config()}


def cell_from_config(config: dict[str, Any]) -> Cell:
    """Rebuild a cell from `cell_config`'s result."""
    name = config.get("class_name")
    if name not in CELLS:
        raise ValueError(
            f"unknown cell class {name!r}: import the module that defines it, whose class "
            f"is decorated with @ncps_mlx.register_cell (registered: {sorted(CELLS)})\n"
            + see("custom-cell")
        )
    return CELLS[name].from_config(config.get("config", {}))


class WiredCell(Cell):
    """A cell whose neurons and synapses are given by a [`Wiring`][ncps_mlx.wirings.Wiring]."""

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

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Cell:
        """The cell `config` describes, with its wiring rebuilt from its own config.

        Args:
            config: What [`get_config`][ncps_mlx.cells.Cell.get_config] returned: the
                constructor arguments, with `"wiring"` as a wiring config.
        """
        return cls(**{**config, "wiring": Wiring.from_config(config["wiring"])})

    @property
    def wiring(self) -> Wiring:
        """The wiring, built."""
        return self._wiring

    @property
    def input_size(self) -> int:
        """Features of the input `x`: the wiring's `input_dim`."""
        return self._wiring.input_dim

    @property
    def state_size(self) -> int:
        """Size of the state `h`: one value per neuron of the wiring (`wiring.units`)."""
        return self._wiring.units

    @property
    def output_size(self) -> int:
        """Size of the output `y`: the wiring's motor neurons (`wiring.output_dim`)."""
        return self._wiring.output_dim

    @property
    def sensory_size(self) -> int:
        """Input features (the wiring's sensory neurons): ``wiring.input_dim``, as in ncps."""
        return self._wiring.input_dim

    @property
    def motor_size(self) -> int:
        """Motor neurons: ``wiring.output_dim``, as in ncps. An LTC's outputs are theirs; a
        wired CfC's are its last layer's, the same neurons for an NCP."""
        return self._wiring.output_dim

    @property
    def synapse_count(self) -> int:
        """Synapses between the cell's neurons."""
        return int(self._wiring.synapse_count)

    @property
    def sensory_synapse_count(self) -> int:
        """Synapses from the input features to the cell's neurons."""
        return int(self._wiring.sensory_synapse_count)

    def state_neurons(self) -> np.ndarray:
        """The wiring neuron each entry of the state `h` holds.

        Entry `k` of `h` is the state of neuron `state_neurons()[k]`. By default the state
        is in neuron-id order (`np.arange(units)`), as in an LTC; a cell that lays its
        state out otherwise overrides this (a
        [`WiredCfCCell`][ncps_mlx.cells.WiredCfCCell] keeps its layers' states one after
        the other). `h[..., np.argsort(cell.state_neurons())]` puts a state in neuron-id
        order.

        Returns:
            Integer array of length `state_size`: a permutation of the neuron ids.
        """
        return np.arange(self._wiring.units)
