"""The CfC cells on the fused chain step ([`cfc_step`][ncps_mlx.kernels.cfc_step]).

A [`CfCCell`][ncps_mlx.cells.CfCCell] is a chain of one unit, a
[`WiredCfCCell`][ncps_mlx.cells.WiredCfCCell] a chain of one unit per wiring layer. Each unit's
weights are read from its cell's [`derive`][ncps_mlx.cells.CfCCell.derive] and its public
backbone and pure-mode parameters.
"""

from typing import Any, NamedTuple

import mlx.core as mx
import numpy as np

from ..cells.cfc import CfCCell
from ..cells.wired_cfc import WiredCfCCell
from . import direct, primitives
from .library import usable
from .registry import register

Layout = list[tuple[int, int]]


class Chain(NamedTuple):
    """What a chain's step reads: the first unit's derived arrays (for the input
    projection), every unit's weights in the kernel's order, and the layout."""

    first: dict[str, mx.array]
    weights: list[mx.array]
    layout: Layout


def _unit_weights(cell: CfCCell, consts: dict, first: bool) -> list[mx.array]:
    """One unit's weights as [`cfc_step`][ncps_mlx.kernels.cfc_step] takes them. The first
    unit takes its input share projected; the others read the previous unit's state."""
    weights = [] if first else [consts["wx_t"], consts["b"]]
    weights.append(consts["wh_t"])
    if cell.backbone:
        for layer in cell.backbone[1:]:
            weights += [mx.contiguous(layer.weight.T), layer.bias]
        weights += [consts["heads_w_t"], consts["heads_b"]]
    if cell.mode == "pure":
        weights += [cell.w_tau, cell.A]
    return weights


def _units(cell: CfCCell | WiredCfCCell) -> list[CfCCell]:
    return cell.layers if isinstance(cell, WiredCfCCell) else [cell]


def chain(cell: CfCCell | WiredCfCCell) -> Chain:
    """The fused form of ``cell``'s derived arrays."""
    units = _units(cell)
    derived = cell.derive()
    per_unit = derived if isinstance(cell, WiredCfCCell) else [derived]
    weights = []
    for index, (unit, consts) in enumerate(zip(units, per_unit, strict=True)):
        weights += _unit_weights(unit, consts, first=index == 0)
    layout = [(unit.hidden_size, len(unit.backbone)) for unit in units]
    return Chain(per_unit[0], weights, layout)


def _activation(cell: CfCCell | WiredCfCCell) -> str:
    return _units(cell)[0].backbone_activation


def _output(cell: CfCCell | WiredCfCCell, h_next: Any) -> Any:
    """The output: the last unit's new state (the whole state for a single cell)."""
    if isinstance(cell, CfCCell):
        return h_next
    return h_next[..., -cell.layer_sizes[-1] :]


class FusedCfC:
    """A CfC cell (or wired CfC) whose step is one [`cfc_step`][ncps_mlx.kernels.cfc_step]."""

    def __init__(self, cell: CfCCell | WiredCfCCell):
        self.cell = cell

    def derive(self) -> Chain:
        """The cell's derived arrays in the chain form the kernel reads."""
        return chain(self.cell)

    def project(self, consts: Chain, x: mx.array) -> mx.array:
        """The first unit's projection, `b + x @ wx_t`, on the kernels' product."""
        return primitives.addmm(consts.first["b"], x, consts.first["wx_t"])

    def step(
        self, consts: Chain, inputs: mx.array, h: mx.array, dt: mx.array | float
    ) -> tuple[mx.array, mx.array]:
        """One step of the whole chain in one kernel call.

        Returns:
            `(y, h_next)`: the last unit's new state, and every unit's new state
            concatenated, as the cell's `step` returns them.
        """
        if not isinstance(dt, mx.array):  # the scan passes a float or (B, 1)
            dt = mx.array(dt, dtype=h.dtype).reshape(1, 1)
        batch = h.shape[0]
        dt = mx.broadcast_to(dt, (batch, 1))
        # Reshaped, not passed as they are: MLX then lets go of each step's primitive,
        # and of its second output (a cache for the backward pass), as soon as the next
        # step has read the state. Passed directly, inference peaks 20-30% higher.
        inputs, h = inputs.reshape(batch, -1), h.reshape(batch, -1)
        mode, activation = self.cell.mode, _activation(self.cell)
        h_next = primitives.cfc_step(inputs, h, dt, consts.weights, consts.layout, mode, activation)
        return _output(self.cell, h_next), h_next

    def sequence(
        self,
        consts: Chain,
        projected: mx.array,
        h: mx.array,
        dt: mx.array | float,
        memory: tuple[mx.array, mx.array, mx.array] | None = None,
    ) -> tuple[mx.array, mx.array, mx.array | None]:
        """Every step at once: ``(outputs, states, cells)``, (B, T, ...) each, for the
        projected inputs (B, T, width) from ``h`` (B, N), ``dt`` a float or (B, T, 1);
        ``memory`` the mixed-memory LSTM's ``(z, c, wh_t)`` (see
        [`cfc_sequence`][ncps_mlx.kernels.cfc_sequence]), ``cells`` its memories (else ``None``)."""
        batch, steps = projected.shape[:2]
        if not isinstance(dt, mx.array):
            dt = mx.array(dt, dtype=h.dtype).reshape(1, 1, 1)
        dt = mx.broadcast_to(dt, (batch, steps, 1))
        mode, activation = self.cell.mode, _activation(self.cell)
        # A cell in training mode keeps what its backward pass needs; in evaluation mode
        # (inference) nothing, which a gradient then computes again.
        found = primitives.cfc_sequence(
            projected, h, dt, consts.weights, consts.layout, mode, activation,
            keep_cache=self.cell.training, memory=memory,
        )  # fmt: skip
        states, cells = found if memory is not None else (found, None)
        return _output(self.cell, states), states, cells


class DirectCfC:
    """A CfC cell's (or wired CfC's) step on NumPy arrays, its weights read once."""

    def __init__(self, cell: CfCCell | WiredCfCCell):
        self.cell = cell
        consts = chain(cell)
        self._wx_t = np.ascontiguousarray(np.array(consts.first["wx_t"]))
        self._b = np.array(consts.first["b"])
        self._weights = direct.evaluated(consts.weights)
        self._layout = consts.layout

    def __call__(
        self, x: np.ndarray, h: np.ndarray, dt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        projected = x @ self._wx_t + self._b
        mode, activation = self.cell.mode, _activation(self.cell)
        h_next = direct.cfc_step(projected, h, dt, self._weights, self._layout, mode, activation)
        return _output(self.cell, h_next), h_next


def _runs_fused(cell: CfCCell | WiredCfCCell) -> bool:
    units = _units(cell)
    dropping = any(unit.applies_dropout for unit in units)
    return not dropping and usable(units[0].ff1.weight.dtype)


def _fused(cell: CfCCell | WiredCfCCell) -> FusedCfC | None:
    return FusedCfC(cell) if _runs_fused(cell) else None


def _direct(cell: CfCCell | WiredCfCCell) -> DirectCfC | None:
    return DirectCfC(cell) if _runs_fused(cell) else None


for _cell_type in (CfCCell, WiredCfCCell):
    register(_cell_type, graph=_fused, direct=_direct)
