"""An exported Core ML package run one time step per call, its state carried: the
package's counterpart of [`Controller`][ncps_mlx.Controller], to run a policy in the loop
as it will run on the device."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_choice
from .._inputs import as_float32_numpy
from ..controller import _where_nonfinite
from ..errors import NumericsError, see
from .coreml import program_metadata, require_coremltools
from .verify import CoreMLRuntime, Predict

_OWNER = "PackageController"
_STEPPABLE_KINDS = ("step", "stateful")  # one step per prediction
_DTYPES = {"float16": np.dtype(np.float16), "float32": np.dtype(np.float32)}


@dataclass(frozen=True)
class PackageInfo:
    """What a step or stateful package takes and returns, read from the metadata
    [`to_coreml`][ncps_mlx.export.to_coreml] stores in it.

    Attributes:
        kind: ``"step"`` (the state is an input and an output) or ``"stateful"`` (Core ML
            keeps the state).
        precision: ``"float16"`` or ``"float32"``: the dtype of its inputs, outputs and ops.
        batch_size: The batch the package was exported for; every call takes that many
            samples.
        input_size: Features per sample.
        output_size: Outputs per sample.
        state_size: Units of the hidden state ``h`` (and of the memory ``c``).
        mixed_memory: Whether the state is a pair ``(h, c)``.
        timespans: Whether the package takes the elapsed time of each step (its ``dt``
            input); without it every step lasts 1.
        positive_timespans: Whether a timespan must be > 0 (the LTC divides by it); else
            >= 0.
        timespan_range: The range a float16 package clamps timespans to
            ([`FP16_TIMESPAN_RANGE`][ncps_mlx.export.FP16_TIMESPAN_RANGE]); ``None`` in
            float32.
        model: The exported layer's config (its ``get_config()``).
    """

    kind: str
    precision: str
    batch_size: int
    input_size: int
    output_size: int
    state_size: int
    mixed_memory: bool
    timespans: bool
    positive_timespans: bool
    timespan_range: tuple[float, float] | None
    model: dict[str, Any]

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], path: str | os.PathLike) -> "PackageInfo":
        """The description of the package at ``path`` from its metadata.

        Raises:
            ValueError: The package is of another kind than ``"step"`` or ``"stateful"``.
        """
        if meta["kind"] not in _STEPPABLE_KINDS:
            raise ValueError(
                f"[{_OWNER}] {str(path)!r} is a {meta['kind']!r} package, which runs a whole "
                f"sequence per prediction; a controller runs the kinds {list(_STEPPABLE_KINDS)}, "
                "one step per call: export one with to_coreml(model, path, kind='step')"
            )
        batch, features = meta["inputs"]["x"]
        recurrent = {**meta["inputs"], **meta["states"]}
        span = meta.get("timespan_range")
        model = meta["model"]
        return cls(
            kind=meta["kind"],
            precision=meta["precision"],
            batch_size=batch,
            input_size=features,
            output_size=meta["outputs"]["y"][-1],
            state_size=recurrent["h"][-1],
            mixed_memory="c" in recurrent,
            timespans="dt" in meta["inputs"],
            # The LTC divides by the timespan; a float16 export says so by its range.
            positive_timespans=model.get("class_name") == "LTC" or bool(span and span[0] > 0),
            timespan_range=tuple(span) if span else None,
            model=model,
        )


class PackageController:
    """An exported Core ML package run one time step per call, with its state carried
    between calls: [`Controller`][ncps_mlx.Controller] for a package from
    [`to_coreml`][ncps_mlx.export.to_coreml] of kind ``"step"`` or ``"stateful"``.

    Calls take and return what the [`Controller`][ncps_mlx.Controller] of the exported model
    does, float32 NumPy arrays, within the package's batch: it was exported for a fixed
    batch B (``info.batch_size``), so every call takes ``(B, input_size)`` inputs, or
    ``(input_size,)`` when B is 1, which returns ``(output_size,)``. Inputs, timespans
    and the state are cast to the package's precision before they are fed (float16
    packages take float16), as an app on the device would feed them. A float16 package
    clamps timespans to ``info.timespan_range``.

    On macOS the package runs in Core ML ([`CoreMLRuntime`][ncps_mlx.export.CoreMLRuntime]),
    which keeps a stateful package's state; elsewhere, and with ``runtime="evaluator"``,
    the numpy evaluator of ``ncps_mlx.export.evaluator`` runs the saved program (parsed
    once), rounding every op to the package's precision. Off the Mac only the evaluator
    could be run: the Core ML branch is verified with a stand-in runtime only.

    Numerical failures are never silent: nan or inf inputs (or values a float16 package
    cannot hold) are refused before they reach the state, and a call whose finite inputs
    give a nan or inf output or state raises
    [`NumericsError`][ncps_mlx.errors.NumericsError] and keeps the state it started from.

    Example:
        ```python
        import numpy as np
        from ncps_mlx import CfC
        from ncps_mlx.export import PackageController, to_coreml
        from ncps_mlx.wirings import AutoNCP

        path = to_coreml(CfC(3, AutoNCP(8, 2)), "policy.mlpackage", timespans=True)
        controller = PackageController(path)
        action = controller(np.zeros(3), timespan=0.5)
        assert action.shape == (2,) and action.dtype == np.float32
        controller.reset()  # back to zeros
        ```

    Args:
        path (str | os.PathLike): The ``.mlpackage`` to run.
        runtime (CoreMLRuntime | str | None): ``None`` for Core ML on macOS and the
            evaluator elsewhere, ``"evaluator"`` for the evaluator anywhere, or a
            [`CoreMLRuntime`][ncps_mlx.export.CoreMLRuntime] (or an object with its
            ``predictor(path, compute_units)``).
        compute_units (str): Where Core ML runs it: ``"cpu_and_ne"`` (CPU and Neural
            Engine) or ``"cpu_only"``. Unused by the evaluator.

    Raises:
        ValueError: A bad ``runtime`` or ``compute_units``; a package of the
            ``"sequence"`` kind, or not exported by ncps_mlx.
        PackageFormatError: No package at ``path``, or an incomplete one.
        ImportError: Without coremltools (``pip install 'ncps-mlx[export]'``).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        runtime: CoreMLRuntime | str | None = None,
        compute_units: str = "cpu_and_ne",
    ):
        check_choice(_OWNER, "compute_units", compute_units, tuple(CoreMLRuntime.UNITS))
        self._runtime = _chosen_runtime(runtime)
        self._compute_units = compute_units
        require_coremltools()  # the evaluator reads packages with coremltools' protobuf
        from . import evaluator

        self._path = Path(path)
        if not self._path.exists():
            raise evaluator.PackageFormatError(
                f"[{_OWNER}] no package at {str(self._path)!r}; write one with "
                "to_coreml(model, path, kind='step')"
            )
        self._program = evaluator.load_program(self._path)
        self._evaluate = evaluator.evaluate
        self._info = PackageInfo.from_metadata(program_metadata(self._program, path), path)
        self._dtype = _DTYPES[self._info.precision]
        self._names = ("h", "c") if self._info.mixed_memory else ("h",)
        self._state: dict[str, np.ndarray] | None = None
        self._batched = True
        self._predict = self._new_predictor()

    @property
    def info(self) -> PackageInfo:
        """What the package takes and returns: batch, sizes, precision, timespans."""
        return self._info

    @property
    def runtime_name(self) -> str:
        """What runs the package: ``"coreml"`` or ``"evaluator"``."""
        return "evaluator" if self._runtime is None else "coreml"

    @property
    def state(self) -> np.ndarray | tuple[np.ndarray, np.ndarray] | None:
        """A float32 copy of the state the next call starts from: (B, state_size), or
        (state_size,) after unbatched calls; a pair ``(h, c)`` with mixed memory; ``None``
        before the first call after a reset (zeros)."""
        if self._state is None:
            return None
        parts = [self._state[name].astype(np.float32) for name in self._names]
        parts = parts if self._batched else [part[0] for part in parts]
        return tuple(parts) if self._info.mixed_memory else parts[0]

    def reset(self, state: Any = None) -> None:
        """Start again from ``state`` (shaped as [`state`][ncps_mlx.export.PackageController.state]
        returns it), or from zeros at the next call when ``None``. With Core ML a stateful
        package is loaded again, to start a fresh Core ML state.

        Raises:
            ValueError: ``state`` has the wrong shape, or holds nan or inf, or values a
                float16 package cannot hold.
        """
        self._state = None if state is None else self._checked_state(state)
        if self._info.kind == "stateful":
            self._predict = self._new_predictor()

    def __call__(self, x: Any, timespan: Any = 1.0) -> np.ndarray:
        """One time step.

        Args:
            x: The inputs, ``(B, input_size)``, or ``(input_size,)`` for a package of
                batch 1.
            timespan: The time elapsed since the previous step: a number, or one per
                sample ``(B,)``. Default: 1, the only value a package exported without
                timespans takes.

        Returns:
            The outputs, float32, ``(B, output_size)``, or ``(output_size,)`` like ``x``.

        Raises:
            ValueError: ``x`` or ``timespan`` has the wrong type or shape; ``x`` holds nan
                or inf, or values a float16 package cannot hold; ``timespan`` is not
                finite, negative, zero for an LTC, or other than 1 for a package without
                timespans. The state is unchanged.
            NumericsError: Finite inputs gave a nan or inf output or state. The state is
                unchanged.
        """
        inputs, batched = self._check_input(x)
        dt = self._check_timespan(timespan)
        if dt is not None:
            inputs["dt"] = dt
        state = self._state if self._state is not None else self._zeros()
        if self._info.kind == "step":
            outputs, _ = self._predict({**inputs, **state}, {})
            final = {name: outputs[f"{name}_out"] for name in self._names}
        else:
            outputs, final = self._predict(inputs, state)
        y = np.array(outputs["y"], dtype=np.float32)
        final = {name: np.asarray(final[name], self._dtype) for name in self._names}
        self._check_results(y, final)
        self._state, self._batched = final, batched
        return y if batched else y[0]

    def _new_predictor(self) -> Predict:
        """``predict(inputs, states) -> (outputs, final_states)``; Core ML's starts a fresh
        state, written from ``states`` at its first call."""
        if self._runtime is None:
            program, evaluate = self._program, self._evaluate
            return lambda inputs, states: evaluate(program, inputs, states)
        return self._runtime.predictor(self._path, self._compute_units)

    def _zeros(self) -> dict[str, np.ndarray]:
        shape = (self._info.batch_size, self._info.state_size)
        return {name: np.zeros(shape, self._dtype) for name in self._names}

    def _check_results(self, y: np.ndarray, state: dict[str, np.ndarray]) -> None:
        results = {"output y": y, "state h": state["h"], "memory c": state.get("c")}
        bad = [name for name, a in results.items() if a is not None and not np.isfinite(a).all()]
        if not bad:
            return
        if self._info.kind == "stateful":  # Core ML's state took the step: start it again
            self._predict = self._new_predictor()
        cause = (
            "a value inside the step overflowed float16 (largest 65504): export with "
            "precision='float32'"
            if self._info.precision == "float16"
            else "a value inside the step overflowed: huge inputs or a state given to "
            "reset(), or a state that grew over earlier steps"
        )
        raise NumericsError(
            f"[{_OWNER}] finite inputs gave nan or inf in the {' and the '.join(bad)}; the "
            f"state is kept as it was before this call. The likely cause: {cause}.\n"
            + see("non-finite")
        )

    def _check_input(self, x: Any) -> tuple[dict[str, np.ndarray], bool]:
        array = _as_float32("x", x)
        batch, size = self._info.batch_size, self._info.input_size
        if array.shape != (batch, size) and not (batch == 1 and array.shape == (size,)):
            allowed = f"({size},) or (1, {size})" if batch == 1 else f"({batch}, {size})"
            raise ValueError(
                f"[{_OWNER}] 'x' must have shape {allowed} (the package was exported for a "
                f"batch of {batch}) but got shape {array.shape}\n{see('input-shape')}"
            )
        if not np.isfinite(array).all():
            raise ValueError(
                f"[{_OWNER}] 'x' must be finite but holds {_where_nonfinite(array)}; the "
                f"state is unchanged\n{see('non-finite')}"
            )
        feed = self._fed("x", array.reshape(batch, size))
        return {"x": feed}, array.ndim == 2

    def _check_timespan(self, timespan: Any) -> np.ndarray | None:
        """The ``dt`` feed (B, 1), or None for a package without timespans."""
        dt, batch = _as_float32("timespan", timespan), self._info.batch_size
        if dt.shape not in ((), (batch,), (batch, 1)):
            raise ValueError(
                f"[{_OWNER}] 'timespan' must be a number or have shape ({batch},) (one per "
                f"sample) but got shape {dt.shape}\n{see('timespans')}"
            )
        low = dt.min()
        if not np.isfinite(dt).all() or low < 0 or (self._info.positive_timespans and low == 0):
            allowed = "> 0" if self._info.positive_timespans else ">= 0"
            raise ValueError(
                f"[{_OWNER}] 'timespan' must be finite and {allowed} but got {timespan!r}\n"
                + see("timespans")
            )
        if not self._info.timespans:
            if (dt != 1).any():
                raise ValueError(
                    f"[{_OWNER}] {str(self._path)!r} was exported without timespans (every "
                    f"step lasts 1) but got timespan {timespan!r}; export with "
                    "to_coreml(model, path, timespans=True) to pass them\n"
                    + see("export-timespans")
                )
            return None
        with np.errstate(over="ignore"):  # float16 infinity is clamped by the package
            return np.broadcast_to(dt.reshape(-1, 1), (batch, 1)).astype(self._dtype)

    def _checked_state(self, state: Any) -> dict[str, np.ndarray]:
        parts = state if isinstance(state, (tuple, list)) else (state,)
        if len(parts) != len(self._names):
            need = "a pair (h, c)" if self._info.mixed_memory else "one array (not a pair)"
            raise ValueError(f"[{_OWNER}] the state must be {need}\n{see('initial-state')}")
        batch, size = self._info.batch_size, self._info.state_size
        arrays = [_as_float32("state", part) for part in parts]
        for array in arrays:
            if array.shape != (batch, size) and not (batch == 1 and array.shape == (size,)):
                allowed = f"({size},) or (1, {size})" if batch == 1 else f"({batch}, {size})"
                raise ValueError(
                    f"[{_OWNER}] the state must have shape {allowed} (the package was exported "
                    f"for a batch of {batch}) but got {array.shape}\n{see('initial-state')}"
                )
        for name, array in zip(self._names, arrays, strict=True):
            if not np.isfinite(array).all():
                raise ValueError(
                    f"[{_OWNER}] the state {name!r} must be finite but holds "
                    f"{_where_nonfinite(array)}\n{see('non-finite')}"
                )
        fed = {
            name: self._fed(f"the state {name!r}", array.reshape(batch, size))
            for name, array in zip(self._names, arrays, strict=True)
        }
        self._batched = arrays[0].ndim == 2  # only once the state is taken
        return fed

    def _fed(self, what: str, array: np.ndarray) -> np.ndarray:
        """The finite float32 ``array`` in the package's dtype, refused where that dtype
        cannot hold it (float16 ends at 65504)."""
        if self._dtype == array.dtype:
            return np.array(array)
        with np.errstate(over="ignore"):
            feed = array.astype(self._dtype)
        if not np.isfinite(feed).all():
            name = what if what.startswith("the state") else repr(what)
            raise ValueError(
                f"[{_OWNER}] {name} holds values beyond 65504, the largest float16 value this "
                "float16 package can take: scale them, or export with precision='float32'\n"
                + see("non-finite")
            )
        return feed


def _chosen_runtime(runtime: Any) -> Any:
    """The Core ML runtime that runs the package, or None for the numpy evaluator."""
    if isinstance(runtime, str) and runtime == "evaluator":
        return None
    if runtime is None:
        return CoreMLRuntime() if CoreMLRuntime.available() else None
    if not isinstance(runtime, str) and callable(getattr(runtime, "predictor", None)):
        return runtime
    raise ValueError(
        f"[{_OWNER}] 'runtime' must be None (Core ML on macOS, else the evaluator), "
        f"'evaluator' or a CoreMLRuntime but got {runtime!r}"
    )


def _as_float32(name: str, value: Any) -> np.ndarray:
    return as_float32_numpy(_OWNER, name, value)
