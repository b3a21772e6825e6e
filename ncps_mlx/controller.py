"""A trained model run one time step per call, its state carried: a controller's loop."""

import copy
import math
from typing import Any

import mlx.core as mx
import numpy as np

from . import kernels, numerics
from ._inputs import as_float32_numpy
from .errors import NumericsError, see
from .rnn import RNN

_FLOAT32_MAX = float(np.finfo(np.float32).max)
# The per-call finiteness test of an array `a`: `isfinite(vdot(a, a))`, nan or inf when a
# value is, at half the cost of `isfinite(a).all()` on small arrays. It also overflows on
# huge finite values, so `np.isfinite(a).all()` confirms before anything is refused.
_isfinite, _vdot = math.isfinite, np.vdot


def _where_nonfinite(array: np.ndarray) -> str:
    """``nan at [0, 2], inf at [1, 0]``: the first few non-finite values and positions."""
    bad = np.argwhere(~np.isfinite(array))
    shown = ", ".join(f"{array[tuple(i)]} at {list(map(int, i))}" for i in bad[:3])
    return shown + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")


class Controller:
    """A trained model run one time step per call, with its state carried between calls.

    Each call takes the newest inputs and returns the model's outputs for them, as NumPy
    arrays. The controller runs a copy of the model taken when it is built, with
    everything derived from the weights computed then: later changes to the model are
    not seen.

    Where the fused kernels run every part of the model (the CPU device, float32
    weights, the LTC's semi-implicit solver; see [`ncps_mlx.kernels`][ncps_mlx.kernels]) each call
    runs them directly on the calling thread
    ([`ncps_mlx.kernels.direct_layer`][ncps_mlx.kernels.direct_layer]): no MLX graph and no
    evaluation, whose hand-over to MLX's worker thread costs more than the step itself on a virtual
    machine. Elsewhere (the GPU, other dtypes or solvers, a cell of your own) it calls
    ``make_predict(model, frozen=True)`` with one-step sequences.
    [`direct`][ncps_mlx.Controller.direct] says which; the results are the same (the tests compare
    both with the model's call).

    Inputs, outputs and the state are float32 NumPy arrays whatever the model's dtype: a
    float16 or bfloat16 model gets its inputs converted to its dtype and returns float32.

    Numerical failures are never silent. A nan or inf in the inputs is refused (unless
    ``allow_nonfinite``) before it reaches the state. When finite inputs give a nan or
    inf output or state, the call raises [`NumericsError`][ncps_mlx.errors.NumericsError] and the
    state stays as it was. When the cell declares the timespans its solver stays finite
    for ([`timespan_bounds`][ncps_mlx.cells.Cell.timespan_bounds]: the LTC's explicit solvers have a
    largest stable step, its semi-implicit solver in float16 a smallest one), a timespan
    outside them warns once with [`UnstableSolverWarning`][ncps_mlx.numerics.UnstableSolverWarning].

    Example:
        ```python
        import numpy as np
        from ncps_mlx import CfC, Controller

        controller = Controller(CfC(4, 16))
        action = controller(np.zeros(4))
        assert action.shape == (16,)
        action = controller(np.ones(4), timespan=0.5)  # the state carried over
        controller.reset()  # back to zeros
        ```

    Args:
        model (RNN): A [`CfC`][ncps_mlx.CfC] or [`LTC`][ncps_mlx.LTC], or any ``RNN``
            over a cell of its own, in any dtype.
        allow_nonfinite (bool): Let nan and inf inputs (and states given to
            [`reset`][ncps_mlx.Controller.reset]) through, and return whatever the model makes of
            them: a nan stays in the state until [`reset`][ncps_mlx.Controller.reset]. Default:
            ``False`` (refuse them, and raise [`NumericsError`][ncps_mlx.errors.NumericsError] on
            non-finite results).

    Raises:
        ValueError: ``model`` is not an ncps_mlx ``RNN``.
    """

    def __init__(self, model: RNN, *, allow_nonfinite: bool = False):
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
        self._check_finite = not allow_nonfinite
        # Results NumPy cannot hold (bfloat16), or not float32, are cast in MLX.
        self._dtype = self._model.dtype
        self._cast = self._dtype != mx.float32
        # The solver's bounds, from the copy's frozen weights; checked until one warning.
        self._bounds = numerics.timespan_bounds(self._model)
        self._watch = self._bounds is not None
        self._low, self._high = self._bounds or (-math.inf, math.inf)

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
        """Start again from ``state`` (shaped as [`state`][ncps_mlx.Controller.state] returns it),
        or from zeros at the next call when ``None``.

        Raises:
            ValueError: ``state`` has the wrong shape, or holds nan or inf (unless the
                controller was built with ``allow_nonfinite=True``).
        """
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
        for name, array in zip(("h", "c"), arrays, strict=False):
            if self._check_finite and not np.isfinite(array).all():
                raise ValueError(
                    f"[{self._owner}] the state {name!r} must be finite but holds "
                    f"{_where_nonfinite(array)}\n{see('non-finite')}"
                )
        self._batched = arrays[0].ndim == 2
        arrays = [np.ascontiguousarray(np.atleast_2d(array)) for array in arrays]
        self._state = (arrays[0], arrays[1] if len(arrays) == 2 else None)

    def __call__(self, x: Any, timespan: Any = 1.0) -> np.ndarray:
        """One time step.

        Args:
            x: The inputs, ``(input_size,)`` or ``(B, input_size)``. The batch stays the
                same until [`reset`][ncps_mlx.Controller.reset].
            timespan: The time elapsed since the previous step: a number, or one per
                sample ``(B,)``. Default: 1.

        Returns:
            The outputs, float32, ``(output_size,)`` or ``(B, output_size)`` like ``x``.

        Raises:
            ValueError: ``x`` or ``timespan`` has the wrong type or shape; ``x`` holds nan
                or inf (unless ``allow_nonfinite``); ``timespan`` is not finite, negative,
                or zero for a cell that divides by it; the batch differs from the state's.
                The state is unchanged.
            NumericsError: Finite inputs gave a nan or inf output or state (the message
                names which, and the likely cause). The state is unchanged.

        Warns:
            UnstableSolverWarning: ``timespan`` is outside the bounds the cell declares
                for its solver ([`timespan_bounds`][ncps_mlx.cells.Cell.timespan_bounds]); once per
                controller.
        """
        x, batched = self._check_input(x)
        dt = self._check_timespan(timespan, x.shape[0])
        h, c = self._start(x.shape[0])
        if self._direct is not None:
            y, h, c = self._direct(x, h, c, dt)
        else:
            y, h, c = self._predicted(x, h, c, dt)
        if self._check_finite and not (
            _isfinite(_vdot(h, h))
            and (y is h or _isfinite(_vdot(y, y)))
            and (c is None or _isfinite(_vdot(c, c)))
        ):
            results = {"output y": y, "state h": h, "memory c": c}
            bad = [
                name for name, a in results.items() if a is not None and not np.isfinite(a).all()
            ]
            if bad:
                raise self._nonfinite_error(x, dt, bad)
        self._state, self._batched = (h, c), batched
        return np.array(y if batched else y[0], dtype=np.float32)

    def _nonfinite_error(self, x: np.ndarray, dt: np.ndarray, bad: list[str]) -> NumericsError:
        """The error of finite inputs giving non-finite results (named in ``bad``), with
        the likely cause."""
        shortest, longest = float(dt.min()), float(dt.max())
        dtype = str(self._dtype).removeprefix("mlx.core.")
        largest = float(mx.finfo(self._dtype).max)
        if self._bounds is not None and not (self._low <= shortest and longest <= self._high):
            cause = "The likely cause: " + numerics.beyond_bounds(
                self._model, shortest, longest, self._bounds
            )
        elif max(float(np.abs(x).max()), longest) > largest:
            cause = (
                f"The likely cause: the inputs or the timespan exceed {dtype}'s largest value "
                f"({largest:.5g}) and become inf in it; scale them, or run the model in "
                "float32 (model.set_dtype(mx.float32))."
            )
        elif self._dtype in (mx.float16, mx.bfloat16):
            cause = (
                f"The likely cause: a value inside the step overflowed {dtype} (largest "
                f"{largest:.5g}); run the model in float32 (model.set_dtype(mx.float32))"
                + (" or bfloat16 (float32's range)." if self._dtype == mx.float16 else ".")
            )
        else:
            cause = (
                "The likely cause: a value inside the step overflowed: huge weights, inputs "
                "or a state given to reset(), or a state that grew over earlier steps."
            )
        return NumericsError(
            f"[{self._owner}] finite inputs gave nan or inf in the {' and the '.join(bad)}; "
            f"the state is kept as it was before this call. {cause}\n{see('non-finite')}"
        )

    def _predicted(
        self, x: np.ndarray, h: np.ndarray, c: np.ndarray | None, dt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        hx = (mx.array(h), mx.array(c)) if c is not None else mx.array(h)
        # The model casts the float32 inputs, state and timespans to its dtype.
        y, state = self._predict(mx.array(x[:, None]), hx, mx.array(dt))
        h, c = state if isinstance(state, tuple) else (state, None)
        if self._cast:  # float32 NumPy out (NumPy holds no bfloat16)
            y, h = y.astype(mx.float32), h.astype(mx.float32)
            c = c.astype(mx.float32) if c is not None else None
            mx.eval([part for part in (y, h, c) if part is not None])
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
        return as_float32_numpy(self._owner, name, value)

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
        if self._check_finite and not _isfinite(_vdot(x, x)) and not np.isfinite(x).all():
            raise ValueError(
                f"[{self._owner}] 'x' must be finite but holds {_where_nonfinite(x)}; the "
                "state is unchanged (build the controller with allow_nonfinite=True to let "
                f"nan through)\n{see('non-finite')}"
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
        if self._watch:
            high = dt.max() if self._high < math.inf else low
            if low < self._low or high > self._high:
                self._unstable(float(low), float(high), depth=3)
        return np.ascontiguousarray(np.broadcast_to(dt.reshape(-1, 1), (batch, 1)))

    def _unstable(self, shortest: float, longest: float, depth: int) -> None:
        """Warn (once) of timespans outside the solver's bounds, attributed to the frame
        ``depth`` levels up counting this method's caller as 1 (the controller's caller)."""
        self._watch = False
        numerics.warn_unstable(
            self._model, shortest, longest, self._owner, self._bounds, stacklevel=depth + 1
        )

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
            if self._watch and not (self._low <= value <= self._high):
                self._unstable(value, value, depth=4)
            dt = np.full((batch, 1), value, np.float32)
            dt.flags.writeable = False
            self._constant_dt = (batch, value, dt)
        return self._constant_dt[2]
