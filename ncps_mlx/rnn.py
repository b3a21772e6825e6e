"""Sequence layers: a cell run over time by the shared scan ([`ncps_mlx.scan`][ncps_mlx.scan])."""

import copy
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from . import scan
from ._checks import check_int
from .cells import CfCCell, LSTMCell, LTCCell, WiredCfCCell
from .cells.base import Cell, cell_config, cell_from_config
from .cells.cfc import CfCMode
from .cells.ltc import Mapping
from .scan import State
from .wirings import FullyConnected, Wiring


class RNN(nn.Module):
    """Runs a [`Cell`][ncps_mlx.cells.Cell] over a sequence.

    The layer owns everything about sequences so the cells do not: batch-first or
    time-first layout, unbatched input, timespans, the initial state, ``return_sequences``,
    the mixed-memory LSTM and the output projection. Work that depends only on the input
    (the cell's [`project`][ncps_mlx.cells.Cell.project]) is done for all steps at once before
    the loop.

    Args:
        cell (Cell): The cell to run.
        return_sequences (bool): Return every step's output, not just the last. Default:
            ``True``.
        batch_first (bool): Inputs are (batch, time, features); else (time, batch,
            features). Default: ``True``.
        mixed_memory (bool): Run an LSTM memory cell before the cell at each step; the
            state becomes a pair ``(h, c)``. Default: ``False``.
        proj_size (int, optional): Project outputs with a linear layer to this size.
            Default: ``None``.
    """

    def __init__(
        self,
        cell: Cell,
        *,
        return_sequences: bool = True,
        batch_first: bool = True,
        mixed_memory: bool = False,
        proj_size: int | None = None,
    ):
        super().__init__()
        _check_cell(cell)
        self.rnn_cell = cell
        self.return_sequences = bool(return_sequences)
        self.batch_first = bool(batch_first)
        self.mixed_memory = bool(mixed_memory)
        self.proj_size = proj_size
        if self.mixed_memory:
            self.lstm = LSTMCell(cell.input_size, cell.state_size)
        if proj_size is not None:
            check_int(type(self).__name__, "proj_size", proj_size)
            self.fc = nn.Linear(cell.output_size, proj_size)

    @property
    def input_size(self) -> int:
        """The number of input features per step: the cell's."""
        return self.rnn_cell.input_size

    @property
    def state_size(self) -> int:
        """The size of the cell's hidden state (and of the LSTM memory, with `mixed_memory`)."""
        return self.rnn_cell.state_size

    @property
    def output_size(self) -> int:
        """The number of output features per step: `proj_size` if set, else the cell's."""
        return self.proj_size if self.proj_size is not None else self.rnn_cell.output_size

    @property
    def dtype(self) -> mx.Dtype:
        """The dtype of the parameters, in which the layer computes."""
        leaves = tree_flatten(self.rnn_cell.parameters()) or tree_flatten(self.parameters())
        return leaves[0][1].dtype if leaves else mx.float32

    def apply_weight_constraints(self) -> None:
        """Apply the cell's constraints after an update, if it has any (an LTC with
        ``implicit_param_constraints=False`` clips its positive parameters)."""
        constrain = getattr(self.rnn_cell, "apply_weight_constraints", None)
        if constrain is not None:
            constrain()

    @property
    def wiring(self) -> Wiring | None:
        """The cell's wiring, if it has one."""
        return getattr(self.rnn_cell, "wiring", None)

    def __call__(
        self, x: Any, hx: State | None = None, timespans: Any = None, mask: Any = None
    ) -> tuple[mx.array, State]:
        """Run the layer over a sequence.

        Args:
            x: Input of shape (B, T, F) (batch_first), (T, B, F) otherwise, or (T, F)
                unbatched.
            hx: Initial state (B, state_size), or ``(h, c)`` with mixed memory; zeros when
                ``None``. Unbatched input takes unbatched states.
            timespans: Elapsed time of each step: a scalar, or (B, T) / (B, T, 1) laid out
                like the input ((T,) or (T, 1) unbatched). Default: 1 per step.
            mask: Which steps are real, boolean (B, T) laid out like the input ((T,)
                unbatched). At a masked step the state is carried over unchanged and the
                output is zero, so with padding at the end the final state and the
                output without ``return_sequences`` are those of each sample's last real
                step. Default: every step is real.

        Every MLX transformation applies: inside ``mx.compile`` or ``mx.vmap`` the checks
        that need values (finite, positive timespans) are skipped, the shape checks run.

        Returns:
            ``(y, hx)``: outputs (B, T, output_size), or (B, output_size) without
            ``return_sequences``, in the input's layout; and the final state.
        """
        return scan.run(self, scan.check_call(self, x, hx, timespans, mask))

    def _set_config(self, **arguments: Any) -> None:
        # Kept outside the module's dict so it is neither a parameter nor compiled state.
        config = {"class_name": type(self).__name__, **arguments}
        config.update(
            return_sequences=self.return_sequences,
            batch_first=self.batch_first,
            mixed_memory=self.mixed_memory,
            proj_size=self.proj_size,
        )
        object.__setattr__(self, "_config", config)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable) that rebuild this layer; for a plain
        ``RNN``, its cell's registered class and config (see
        [`register_cell`][ncps_mlx.register_cell]).

        Raises:
            NotImplementedError: The cell's class is not registered or has no config.
        """
        if hasattr(self, "_config"):
            return copy.deepcopy(self._config)
        return {
            "class_name": "RNN",
            "cell": cell_config(self.rnn_cell),
            "return_sequences": self.return_sequences,
            "batch_first": self.batch_first,
            "mixed_memory": self.mixed_memory,
            "proj_size": self.proj_size,
        }


_PROTOCOL = ("input_size", "state_size", "output_size", "derive", "project", "step")


def _check_cell(cell: Any) -> None:
    missing = [name for name in _PROTOCOL if not hasattr(type(cell), name)]
    if not isinstance(cell, nn.Module) or missing:
        lacking = f" (it lacks {', '.join(missing)})" if missing else ""
        raise ValueError(
            "[RNN] 'cell' must be an ncps_mlx.Cell: an mlx.nn.Module with input_size, "
            f"state_size, output_size, derive, project and step, but got {cell!r}{lacking}"
        )


def _units_config(units: int | Wiring) -> Any:
    return units.get_config() if isinstance(units, Wiring) else units


def _units_from_config(units: Any) -> int | Wiring:
    return Wiring.from_config(units) if isinstance(units, dict) else units


class CfC(RNN):
    """A [Closed-form Continuous-time](https://arxiv.org/abs/2106.13898) RNN.

    Same constructor and call as ``ncps.torch.CfC`` (ncps 1.0.1). With an int ``units``
    the cell is a [`CfCCell`][ncps_mlx.cells.CfCCell] with a backbone; with a
    [`Wiring`][ncps_mlx.wirings.Wiring] (e.g. ``AutoNCP(32, 4)``) it is a
    [`WiredCfCCell`][ncps_mlx.cells.WiredCfCCell] and the backbone arguments must stay ``None``.

    Example:
        ```python
        import mlx.core as mx
        from ncps_mlx import CfC
        from ncps_mlx.wirings import AutoNCP

        model = CfC(20, AutoNCP(32, 4))
        y, h = model(mx.zeros((8, 50, 20)))
        assert y.shape == (8, 50, 4) and h.shape == (8, 32)
        ```

    Args:
        input_size (int): Number of input features.
        units (int or Wiring): Hidden units, or a wiring.
        proj_size (int, optional): Size of a linear output projection. Default: ``None``.
        return_sequences (bool): Default: ``True``.
        batch_first (bool): Default: ``True``.
        mixed_memory (bool): Default: ``False``.
        mode (str): ``"default"``, ``"pure"`` or ``"no_gate"``. Default: ``"default"``.
        activation (str): Backbone activation. Default: ``"lecun_tanh"``.
        backbone_units (int, optional): Default: ``128`` (not with a wiring).
        backbone_layers (int, optional): Default: ``1`` (not with a wiring).
        backbone_dropout (float, optional): Default: ``0.0`` (not with a wiring).
        strict_wiring (bool): With a wiring, follow it exactly (see
            [`WiredCfCCell`][ncps_mlx.cells.WiredCfCCell]). Default: ``False``.
    """

    def __init__(
        self,
        input_size: int,
        units: int | Wiring,
        proj_size: int | None = None,
        return_sequences: bool = True,
        batch_first: bool = True,
        mixed_memory: bool = False,
        mode: CfCMode = "default",
        activation: str = "lecun_tanh",
        backbone_units: int | None = None,
        backbone_layers: int | None = None,
        backbone_dropout: float | None = None,
        *,
        strict_wiring: bool = False,
    ):
        backbone = {
            "backbone_units": backbone_units,
            "backbone_layers": backbone_layers,
            "backbone_dropout": backbone_dropout,
        }
        if isinstance(units, Wiring):
            for name, value in backbone.items():
                if value is not None:
                    raise ValueError(f"[CfC] {name!r} cannot be used with a wiring")
            cell = WiredCfCCell(input_size, units, mode, strict_wiring=strict_wiring)
        else:
            if strict_wiring:
                raise ValueError("[CfC] 'strict_wiring' needs a wiring for 'units'")
            cell = CfCCell(
                input_size,
                units,
                mode,
                activation,
                128 if backbone_units is None else backbone_units,
                1 if backbone_layers is None else backbone_layers,
                0.0 if backbone_dropout is None else backbone_dropout,
            )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            batch_first=batch_first,
            mixed_memory=mixed_memory,
            proj_size=proj_size,
        )
        self._set_config(
            input_size=input_size,
            units=_units_config(units),
            mode=mode,
            activation=activation,
            **backbone,
            strict_wiring=strict_wiring,
        )


class LTC(RNN):
    """A [Liquid time-constant](https://ojs.aaai.org/index.php/AAAI/article/view/16936) RNN.

    Same constructor and call as ``ncps.torch.LTC`` (ncps 1.0.1); an int ``units`` means
    ``FullyConnected(units)``. ``proj_size`` and ``solver`` are additions.

    Example:
        ```python
        import mlx.core as mx
        from ncps_mlx import LTC
        from ncps_mlx.wirings import AutoNCP

        model = LTC(20, AutoNCP(32, 4))
        y, h = model(mx.zeros((8, 50, 20)), timespans=mx.ones((8, 50)))
        assert y.shape == (8, 50, 4) and h.shape == (8, 32)
        ```

    Args:
        input_size (int): Number of input features.
        units (int or Wiring): Hidden units (fully connected) or a wiring.
        return_sequences (bool): Default: ``True``.
        batch_first (bool): Default: ``True``.
        mixed_memory (bool): Default: ``False``.
        input_mapping (str or None): ``"affine"``, ``"linear"`` or ``None``. Default:
            ``"affine"``.
        output_mapping (str or None): Likewise. Default: ``"affine"``.
        ode_unfolds (int): Solver sub-steps per time step. Default: ``6``.
        epsilon (float): Default: ``1e-8``.
        implicit_param_constraints (bool): Softplus positivity in the forward pass.
            Default: ``True``.
        proj_size (int, optional): Size of a linear output projection. Default: ``None``.
        solver (str): ODE solver, see [`LTCCell`][ncps_mlx.cells.LTCCell]. Default:
            ``"semi_implicit"``.
    """

    def __init__(
        self,
        input_size: int,
        units: int | Wiring,
        return_sequences: bool = True,
        batch_first: bool = True,
        mixed_memory: bool = False,
        input_mapping: Mapping = "affine",
        output_mapping: Mapping = "affine",
        ode_unfolds: int = 6,
        epsilon: float = 1e-8,
        implicit_param_constraints: bool = True,
        *,
        proj_size: int | None = None,
        solver: str = "semi_implicit",
    ):
        wiring = units if isinstance(units, Wiring) else FullyConnected(units)
        cell = LTCCell(
            wiring,
            input_size,
            input_mapping,
            output_mapping,
            ode_unfolds,
            epsilon,
            implicit_param_constraints,
            solver=solver,
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            batch_first=batch_first,
            mixed_memory=mixed_memory,
            proj_size=proj_size,
        )
        self._set_config(
            input_size=input_size,
            units=_units_config(units),
            input_mapping=input_mapping,
            output_mapping=output_mapping,
            ode_unfolds=ode_unfolds,
            epsilon=epsilon,
            implicit_param_constraints=implicit_param_constraints,
            solver=solver,
        )


MODELS = {"CfC": CfC, "LTC": LTC}


def model_from_config(config: dict[str, Any]) -> RNN:
    """Rebuild a [`CfC`][ncps_mlx.CfC], an [`LTC`][ncps_mlx.LTC] or an [`RNN`][ncps_mlx.RNN] over a
    registered cell from its [`get_config`][ncps_mlx.RNN.get_config]."""
    config = dict(config)
    name = config.pop("class_name", None)
    if name == "RNN":
        return RNN(cell_from_config(config.pop("cell")), **config)
    if name not in MODELS:
        raise ValueError(f"unknown model class {name!r}; expected one of {[*MODELS, 'RNN']}")
    config["units"] = _units_from_config(config["units"])
    return MODELS[name](**config)
