"""Accelerated steps, registered per cell type, and the layer's direct step built on them.

A cell states its math once; the kernels offer faster ways to run it. An adapter for a
cell type is two factories, each taking a cell and returning a stepper when it runs that
cell here and now (the device, the dtype, the cell's options), else ``None``. (A layer
the scan calls, such as the output projection's ``nn.Linear``, may have a ``graph``
adapter too: a stand-in with the layer's call.)

* ``graph(cell)``: an object with the cell's own ``derive`` / ``project`` / ``step``
  protocol ([`Cell`][ncps_mlx.cells.Cell]) whose step is a fused MLX primitive: lazy,
  differentiable and compilable. The sequence scan asks for one once per call and runs
  the cell's own step when there is none.
* ``direct(cell)``: a callable running one step at once on NumPy arrays (no graph, no
  gradients), with everything derived from the weights computed when it is built. The
  [`Controller`][ncps_mlx.Controller] uses one per layer part when each has one.

Adapters match a cell's exact type: a subclass may compute something else, so it gets
none until it registers its own.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Factory = Callable[[Any], Any]


@dataclass(frozen=True)
class Adapter:
    """The steppers the kernels offer for one cell type."""

    graph: Factory | None = None
    direct: Factory | None = None


_ADAPTERS: dict[type, Adapter] = {}


def register(cell_type: type, *, graph: Factory | None = None, direct: Factory | None = None):
    """Offer accelerated steppers for cells of exactly ``cell_type`` (see the module)."""
    _ADAPTERS[cell_type] = Adapter(graph, direct)


def graph_stepper(cell: Any) -> Any | None:
    """A fused stepper with the cell's protocol for ``cell`` here and now, or ``None``."""
    adapter = _ADAPTERS.get(type(cell))
    return adapter.graph(cell) if adapter is not None and adapter.graph else None


def direct_stepper(cell: Any) -> Any | None:
    """A NumPy step for ``cell`` here and now (evaluation mode), or ``None``."""
    adapter = _ADAPTERS.get(type(cell))
    return adapter.direct(cell) if adapter is not None and adapter.direct else None


class DirectLayer:
    """One time step of a sequence layer on float32 NumPy arrays, run at once on the
    calling thread: the mixed-memory LSTM, the cell and the projection.

    Call it with ``x`` (B, input_size), ``h`` and ``c`` (B, state_size; ``c`` ``None``
    without mixed memory) and ``dt`` (B, 1); it returns ``(y, h, c)``.
    """

    def __init__(self, cell: Callable, lstm: Callable | None, projection: tuple | None):
        self._cell, self._lstm, self._projection = cell, lstm, projection

    def __call__(
        self, x: np.ndarray, h: np.ndarray, c: np.ndarray | None, dt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self._lstm is not None:
            h, c = self._lstm(x, h, c)
        y, h = self._cell(x, h, dt)
        if self._projection is not None:
            weight_t, bias = self._projection
            y = y @ weight_t + bias
        return y, h, c


def direct_layer(layer: Any) -> DirectLayer | None:
    """The [`DirectLayer`][ncps_mlx.kernels.registry.DirectLayer] of a sequence layer in evaluation
    mode, or ``None`` when a part of it has no direct stepper here."""
    if layer.training:
        return None
    cell = direct_stepper(layer.rnn_cell)
    lstm = direct_stepper(layer.lstm) if layer.mixed_memory else None
    if cell is None or (layer.mixed_memory and lstm is None):
        return None
    projection = None
    if layer.proj_size is not None:
        weight_t, bias = layer.fc.weight.T, layer.fc.bias
        projection = (np.ascontiguousarray(np.array(weight_t)), np.array(bias))
    return DirectLayer(cell, lstm, projection)
