"""Sequence layers: one time scan shared by every cell."""

import copy
from typing import Any, NamedTuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from . import _inputs, ops
from .cells import CfCCell, LSTMCell, LTCCell, WiredCfCCell
from .cells.base import Cell, Consts, check_positive_int, numpy_consts
from .cells.cfc import CfCMode
from .cells.ltc import Mapping
from .wirings import FullyConnected, Wiring

State = mx.array | tuple[mx.array, mx.array]


class Call(NamedTuple):
    """Checked, batch-first arguments of a sequence layer call."""

    x: mx.array
    h: mx.array | None
    c: mx.array | None
    dt: mx.array | float
    batched: bool
    mask: mx.array | None = None


class RNN(nn.Module):
    """Runs a :class:`~ncps_mlx.cells.Cell` over a sequence.

    The layer owns everything about sequences so the cells do not: batch-first or
    time-first layout, unbatched input, timespans, the initial state, ``return_sequences``,
    the mixed-memory LSTM and the output projection. Work that depends only on the input
    (the cell's :meth:`~ncps_mlx.cells.Cell.project`) is done for all steps at once before
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
        self.rnn_cell = cell
        self.return_sequences = bool(return_sequences)
        self.batch_first = bool(batch_first)
        self.mixed_memory = bool(mixed_memory)
        self.proj_size = proj_size
        if self.mixed_memory:
            self.lstm = LSTMCell(cell.input_size, cell.state_size)
        if proj_size is not None:
            check_positive_int(type(self).__name__, "proj_size", proj_size)
            self.fc = nn.Linear(cell.output_size, proj_size)

    @property
    def input_size(self) -> int:
        return self.rnn_cell.input_size

    @property
    def state_size(self) -> int:
        return self.rnn_cell.state_size

    @property
    def output_size(self) -> int:
        return self.proj_size if self.proj_size is not None else self.rnn_cell.output_size

    @property
    def dtype(self) -> mx.Dtype:
        """The dtype of the parameters, in which the layer computes."""
        return tree_flatten(self.rnn_cell.parameters())[0][1].dtype

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

        Returns:
            ``(y, hx)``: outputs (B, T, output_size), or (B, output_size) without
            ``return_sequences``, in the input's layout; and the final state.
        """
        return self.forward(*self.check_call(x, hx, timespans, mask))

    def check_call(
        self, x: Any, hx: State | None = None, timespans: Any = None, mask: Any = None
    ) -> Call:
        """Validate the arguments of a call and bring them to batch-first arrays.

        Raises:
            ValueError: Naming the argument, its value and what is accepted.
        """
        owner = type(self).__name__
        x, batched = _inputs.check_sequence(owner, x, self.input_size, self.batch_first)
        batch, steps = x.shape[0], x.shape[1]
        h, c = _inputs.check_state(owner, hx, self.mixed_memory, self.state_size, batch, batched)
        mask = _inputs.check_mask(owner, mask, batch, steps, batched, self.batch_first)
        positive = self.rnn_cell.requires_positive_timespans
        dt = _inputs.check_timespans(
            owner, timespans, batch, steps, batched, self.batch_first, positive, mask
        )
        return Call(x, h, c, dt, batched, mask)

    def forward(
        self,
        x: mx.array,
        h: mx.array | None,
        c: mx.array | None,
        dt: mx.array | float,
        batched: bool = True,
        mask: mx.array | None = None,
        consts: Consts | None = None,
    ) -> tuple[mx.array, State]:
        """A call on checked arguments (see :meth:`check_call`); safe to compile.
        ``consts`` is what :meth:`derive` returned, if the caller keeps it across calls."""
        y, h, c = self.scan(x, h, c, dt, mask, consts)
        if not batched:
            y, h = y[0], h[0]
            c = c[0] if c is not None else None
        elif self.return_sequences and not self.batch_first:
            y = y.swapaxes(0, 1)
        return y, ((h, c) if self.mixed_memory else h)

    def derive(self) -> Consts:
        """What a call computes from the weights alone before its time loop: each cell's
        :meth:`~ncps_mlx.cells.Cell.derive` (masks folded in, products laid out).
        ``make_predict(model, frozen=True)`` computes it once instead of on every call."""
        consts = {"cell": self.rnn_cell.derive()}
        if self.mixed_memory:
            consts["lstm"] = self.lstm.derive()
        return consts

    @property
    def runs_direct(self) -> bool:
        """Whether :meth:`direct_step` can run here and now: the cell's steps run fused
        (see :mod:`ncps_mlx.kernels`) and the layer is in evaluation mode."""
        return not self.training and self.rnn_cell.runs_fused

    def direct_consts(self, consts: Consts) -> Consts:
        """What :meth:`direct_step` reads, as NumPy arrays, from :meth:`derive`'s
        ``consts`` (computed while :attr:`runs_direct`)."""
        direct = {"cell": self.rnn_cell.direct_consts(consts["cell"])}
        if self.mixed_memory:
            direct["lstm"] = self.lstm.direct_consts(consts["lstm"])
        if self.proj_size is not None:
            direct["fc"] = numpy_consts({"w_t": self.fc.weight.T, "b": self.fc.bias})
        return direct

    def direct_step(
        self,
        consts: Consts,
        x: np.ndarray,
        h: np.ndarray,
        c: np.ndarray | None,
        dt: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One time step on float32 NumPy arrays, run at once on the calling thread
        (:mod:`ncps_mlx.kernels.direct`): ``x`` (B, input_size), ``h`` and ``c``
        (B, state_size; ``c`` ``None`` without mixed memory), ``dt`` (B, 1), ``consts``
        from :meth:`direct_consts`. Returns ``(y, h, c)``. :class:`ncps_mlx.Controller`
        calls it."""
        if self.mixed_memory:
            h, c = self.lstm.direct_step(consts["lstm"], x, h, c)
        y, h = self.rnn_cell.direct_step(consts["cell"], x, h, dt)
        if self.proj_size is not None:
            y = y @ consts["fc"]["w_t"] + consts["fc"]["b"]
        return y, h, c

    def scan(
        self,
        x: mx.array,
        h: mx.array | None = None,
        c: mx.array | None = None,
        dt: mx.array | float = 1.0,
        mask: mx.array | None = None,
        consts: Consts | None = None,
    ) -> tuple[mx.array, mx.array, mx.array | None]:
        """The computation without checks: batch-first ``x`` (B, T, F), states (B, H) or
        ``None``, ``dt`` a float or (B, T, 1), ``mask`` ``None`` or boolean (B, T, 1),
        ``consts`` from :meth:`derive` (computed here when ``None``).
        Returns ``(y, h, c)``, ``y`` batch-first."""
        dtype = self.dtype
        x = x.astype(dtype)
        zeros = mx.zeros((x.shape[0], self.state_size), dtype=dtype)
        h = zeros if h is None else h.astype(dtype)
        if self.mixed_memory:
            c = zeros if c is None else c.astype(dtype)
        if isinstance(dt, mx.array):
            dt = dt.astype(dtype)
        derived = self.derive() if consts is None else consts
        consts = derived["cell"]
        inputs = _steps(self.rnn_cell.project(consts, x))
        if self.mixed_memory:
            lstm_consts = derived["lstm"]
            lstm_inputs = ops.split_steps(self.lstm.project(lstm_consts, x))
        timed = isinstance(dt, mx.array)
        outputs = []
        last = None
        for t in range(x.shape[1]):
            h_before, c_before = h, c
            if self.mixed_memory:
                h, c = self.lstm.step(lstm_consts, lstm_inputs[t], h, c)
            y, h = self.rnn_cell.step(consts, inputs[t], h, dt[:, t] if timed else dt)
            if mask is not None:
                # A masked step leaves the state as it was; only real steps move it.
                real = mask[:, t]
                h = mx.where(real, h, h_before)
                c = mx.where(real, c, c_before) if self.mixed_memory else c
                last = y if last is None else mx.where(real, y, last)
            if self.return_sequences:
                outputs.append(y)
        if self.return_sequences:
            y = mx.stack(outputs, axis=1)
        elif last is not None:
            y = last  # the output of each sample's last real step
        if self.proj_size is not None:
            y = self.fc(y)
        if mask is not None and self.return_sequences:
            y = mx.where(mask, y, mx.zeros((), dtype=y.dtype))
        return y, h, c

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
        """Constructor arguments (JSON-serialisable) that rebuild this layer."""
        if not hasattr(self, "_config"):
            raise NotImplementedError(
                f"[{type(self).__name__}] a plain RNN over a cell has no config, so it cannot "
                "be saved with ncps_mlx.save: save its weights with model.save_weights(path), "
                "or use CfC or LTC"
            )
        return copy.deepcopy(self._config)


def _units_config(units: int | Wiring) -> Any:
    return units.get_config() if isinstance(units, Wiring) else units


def _units_from_config(units: Any) -> int | Wiring:
    return Wiring.from_config(units) if isinstance(units, dict) else units


class CfC(RNN):
    """A `Closed-form Continuous-time <https://arxiv.org/abs/2106.13898>`_ RNN.

    Same constructor and call as ``ncps.torch.CfC`` (ncps 1.0.1). With an int ``units``
    the cell is a :class:`~ncps_mlx.cells.CfCCell` with a backbone; with a
    :class:`~ncps_mlx.wirings.Wiring` (e.g. ``AutoNCP(32, 4)``) it is a
    :class:`~ncps_mlx.cells.WiredCfCCell` and the backbone arguments must stay ``None``.

    Example:
        >>> import mlx.core as mx
        >>> from ncps_mlx import CfC
        >>> from ncps_mlx.wirings import AutoNCP
        >>> model = CfC(20, AutoNCP(32, 4))
        >>> y, h = model(mx.zeros((8, 50, 20)))   # y: (8, 50, 4), h: (8, 32)

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
            :class:`~ncps_mlx.cells.WiredCfCCell`). Default: ``False``.
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

    @property
    def wiring(self) -> Wiring | None:
        return getattr(self.rnn_cell, "wiring", None)


class LTC(RNN):
    """A `Liquid time-constant <https://ojs.aaai.org/index.php/AAAI/article/view/16936>`_ RNN.

    Same constructor and call as ``ncps.torch.LTC`` (ncps 1.0.1); an int ``units`` means
    ``FullyConnected(units)``. ``proj_size`` and ``solver`` are additions.

    Example:
        >>> import mlx.core as mx
        >>> from ncps_mlx import LTC
        >>> from ncps_mlx.wirings import AutoNCP
        >>> model = LTC(20, AutoNCP(32, 4))
        >>> y, h = model(mx.zeros((8, 50, 20)), timespans=mx.ones((8, 50)))

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
        solver (str): ODE solver, see :class:`~ncps_mlx.cells.LTCCell`. Default:
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

    @property
    def wiring(self) -> Wiring:
        return self.rnn_cell.wiring

    def apply_weight_constraints(self) -> None:
        """Clip the positive parameters (only needed with explicit constraints)."""
        self.rnn_cell.apply_weight_constraints()


MODELS = {"CfC": CfC, "LTC": LTC}


def model_from_config(config: dict[str, Any]) -> RNN:
    """Rebuild a :class:`CfC` or :class:`LTC` from its :meth:`get_config`."""
    config = dict(config)
    name = config.pop("class_name", None)
    if name not in MODELS:
        raise ValueError(f"unknown model class {name!r}; expected one of {list(MODELS)}")
    config["units"] = _units_from_config(config["units"])
    return MODELS[name](**config)


def _steps(projected: mx.array | tuple[mx.array, ...]) -> list:
    """A cell's projected inputs (time along axis 1) as one entry per time step."""
    if isinstance(projected, mx.array):
        return ops.split_steps(projected)
    return list(zip(*(ops.split_steps(part) for part in projected), strict=True))
