"""A trained model run one time step per call, its state carried: a controller's loop."""

import copy
import math
from typing import Any

import mlx.core as mx
import numpy as np

from . import kernels
from .errors import see
from .rnn import RNN

_FLOAT32_MAX = float(np.finfo(np.float32).max)


class Controller:
    """A trained model run one time step per call, with its state carried between calls.

    Each call takes the newest inputs and returns the model's outputs for them, as NumPy
    arrays. The controller runs a copy of the model taken when it is built, with
    everything derived from the weights computed then: later changes to the model are
    not seen.

    Where the fused kernels run every part of the model (the CPU device, float32
    weights, the LTC's semi-implicit solver; see :mod:`ncps_mlx.kernels`) each call runs
    them directly on the calling thread (:func:`ncps_mlx.kernels.direct_layer`): no MLX
    graph and no evaluation, whose hand-over to MLX's worker thread costs more than the
    step itself on a virtual machine. Elsewhere (the GPU, other dtypes or solvers, a cell
    of your own) it calls
    ``make_predict(model, frozen=True)`` with one-step sequences. :attr:`direct` says
    which; the results are the same (the tests compare both with the model's call).

    Example:
        >>> import numpy as np
        >>> from ncps_mlx import CfC, Controller
        >>> controller = Controller(CfC(4, 16))
        >>> action = controller(np.zeros(4))               # (16,)
        >>> action = controller(np.ones(4), timespan=0.5)  # the state carried over
        >>> controller.reset()                             # back to zeros

    Args:
        model (RNN): A :class:`~ncps_mlx.CfC` or :class:`~ncps_mlx.LTC`, or any ``RNN``
            over a cell of its own.
    """

    def __init__(self, model: RNN):
        if not isinstance(model, RNN):
            raise ValueError(f"[Controller] 'model' must be an ncps_mlx RNN but got {type(model)}")
        self._model = copy.deepcopy(model)
        self._model.eval()
        # The copy is called one batch-first step at a time and returns that step only.
        self._model.batch_first, self._model.return_sequences = True, False
        self._owner = f"Controller({type(model).__name__})"
        self._positive = self._model.rnn_cell.requires_positive_timespans
        self._direct = kernels.direct_layer(self._model)
        if self._direct is None:
            from .training.steps import make_predict

            self._predict = make_predict(self._model, frozen=True)
        self._state: tuple[np.ndarray, np.ndarray | None] | None = None
        self._batched = True
        self._constant_dt: tuple[int, float, np.ndarray] | None = None

    @property
    def direct(self) -> bool:
        """Whether calls run directly on the fused kernels (else through MLX's graph)."""
        return self._direct is not None

    @property
    def state(self) -> np.ndarray | tuple[np.ndarray, np.ndarray] | None:
        """A copy of the state the next call starts from: (B, state_size), or
        (state_size,) after unbatched calls; a pair ``(h, c)`` with mixed memory;
        ``None`` before the first call after a reset (zeros)."""
        if self._state is None:
            return None
        parts = [part if self._batched else part[0] for part in self._state if part is not None]
        parts = [part.copy() for part in parts]
        return tuple(parts) if self._model.mixed_memory else parts[0]

    def reset(self, state: Any = None) -> None:
        """Start again from ``state`` (shaped as :attr:`state` returns it), or from zeros
        at the next call when ``None``."""
        if state is None:
            self._state = None
            return
        parts = state if isinstance(state, (tuple, list)) else (state,)
        if len(parts) != (2 if self._model.mixed_memory else 1):
            need = "a pair (h, c)" if self._model.mixed_memory else "one array (not a pair)"
            raise ValueError(f"[{self._owner}] the state must be {need}\n{see('initial-state')}")
        arrays = [self._as_float32("state", part) for part in parts]
        size = self._model.state_size
        first = arrays[0].shape
        for array in arrays:
            if array.ndim not in (1, 2) or array.shape[-1] != size or array.shape != first:
                raise ValueError(
                    f"[{self._owner}] the state must have shape (batch, {size}) or ({size},) "
                    f"but got {array.shape}\n{see('initial-state')}"
                )
        self._batched = arrays[0].ndim == 2
        arrays = [np.ascontiguousarray(np.atleast_2d(array)) for array in arrays]
        self._state = (arrays[0], arrays[1] if len(arrays) == 2 else None)

    def __call__(self, x: Any, timespan: Any = 1.0) -> np.ndarray:
        """One time step.

        Args:
            x: The inputs, ``(input_size,)`` or ``(B, input_size)``. The batch stays the
                same until :meth:`reset`.
            timespan: The time elapsed since the previous step: a number, or one per
                sample ``(B,)``. Default: 1.

        Returns:
            The outputs, ``(output_size,)`` or ``(B, output_size)`` like ``x``.
        """
        x, batched = self._check_input(x)
        dt = self._check_timespan(timespan, x.shape[0])
        h, c = self._start(x.shape[0])
        if self._direct is not None:
            y, h, c = self._direct(x, h, c, dt)
        else:
            y, h, c = self._predicted(x, h, c, dt)
        self._state, self._batched = (h, c), batched
        return np.array(y if batched else y[0], dtype=np.float32)

    def _predicted(
        self, x: np.ndarray, h: np.ndarray, c: np.ndarray | None, dt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        hx = (mx.array(h), mx.array(c)) if c is not None else mx.array(h)
        y, state = self._predict(mx.array(x[:, None]), hx, mx.array(dt))
        h, c = state if isinstance(state, tuple) else (state, None)
        return np.array(y), np.array(h), (np.array(c) if c is not None else None)

    def _start(self, batch: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self._state is None:
            zeros = np.zeros((batch, self._model.state_size), np.float32)
            return zeros, (zeros if self._model.mixed_memory else None)
        h, c = self._state
        if h.shape[0] != batch:
            raise ValueError(
                f"[{self._owner}] the state holds {h.shape[0]} samples but the input has "
                f"{batch}: call reset() to start a new batch"
            )
        return h, c

    def _as_float32(self, name: str, value: Any) -> np.ndarray:
        accepted = (np.ndarray, mx.array, list, tuple, int, float)
        array = np.asarray(value) if isinstance(value, accepted) else None
        if array is None or not (
            np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
        ):
            raise ValueError(
                f"[{self._owner}] {name!r} must be a numeric NumPy or MLX array (or a number "
                f"or list) but got {type(value).__name__}"
                + (f" of {array.dtype}" if array is not None else "")
            )
        return array.astype(np.float32, copy=False)

    def _check_input(self, x: Any) -> tuple[np.ndarray, bool]:
        # A float32 NumPy array, the common case, needs no conversion.
        if not (type(x) is np.ndarray and x.dtype == np.float32):
            x = self._as_float32("x", x)
        size = self._model.input_size
        if x.ndim not in (1, 2) or x.shape[-1] != size or 0 in x.shape:
            raise ValueError(
                f"[{self._owner}] 'x' must have shape ({size},) or (batch, {size}) but got "
                f"shape {x.shape}\n{see('input-shape')}"
            )
        return np.ascontiguousarray(np.atleast_2d(x)), x.ndim == 2

    def _check_timespan(self, timespan: Any, batch: int) -> np.ndarray:
        if type(timespan) in (int, float):  # the common case: one number for every sample
            return self._constant_timespan(timespan, batch)
        dt = self._as_float32("timespan", timespan)
        if dt.shape not in ((), (batch,), (batch, 1)):
            raise ValueError(
                f"[{self._owner}] 'timespan' must be a number or have shape ({batch},) (one "
                f"per sample) but got shape {dt.shape}\n{see('timespans')}"
            )
        low = dt.min()
        if not np.isfinite(dt).all() or low < 0 or (self._positive and low == 0):
            allowed = "> 0" if self._positive else ">= 0"
            raise ValueError(
                f"[{self._owner}] 'timespan' must be finite and {allowed} but got "
                f"{timespan!r}\n{see('timespans')}"
            )
        return np.ascontiguousarray(np.broadcast_to(dt.reshape(-1, 1), (batch, 1)))

    def _constant_timespan(self, timespan: float, batch: int) -> np.ndarray:
        """``timespan`` for every sample, (batch, 1): checked as the general case is, and
        kept (read only) while calls repeat it, since it costs more to build than a step
        of a small model takes."""
        try:  # as float32, which the steps compute in (a huge int is no float)
            value = float(timespan)
            value = float(np.float32(value)) if abs(value) <= _FLOAT32_MAX else math.inf
        except OverflowError:
            value = math.inf
        if not math.isfinite(value) or value < 0 or (self._positive and value == 0):
            allowed = "> 0" if self._positive else ">= 0"
            raise ValueError(
                f"[{self._owner}] 'timespan' must be finite and {allowed} but got "
                f"{timespan!r}\n{see('timespans')}"
            )
        if self._constant_dt is None or self._constant_dt[:2] != (batch, value):
            dt = np.full((batch, 1), value, np.float32)
            dt.flags.writeable = False
            self._constant_dt = (batch, value, dt)
        return self._constant_dt[2]
