"""Check a saved Core ML package against the MLX model it was exported from.

Off a Mac nothing executes an ML program, so `verify` evaluates the saved package
(protobuf and weight file) with the numpy evaluator of `evaluator`, which rounds
every op to its declared precision, and runs the same inputs through the MLX model. On
macOS it also runs Core ML's own prediction (CPU only, then CPU + Neural Engine) and
reads the per-op device placement from ``MLComputePlan``; that part goes through
[`CoreMLRuntime`][ncps_mlx.export.CoreMLRuntime], kept small so its logic can be tested with a
stand-in.
"""

import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from .. import scan
from ..rnn import RNN
from .coreml import evaluation_mode, program_metadata, require_coremltools

Predict = Callable[
    [dict[str, np.ndarray], dict[str, np.ndarray]],
    tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
]


@dataclass(frozen=True)
class Comparison:
    """Largest errors of one output against the MLX model.

    ``max_rel_error`` is the largest absolute error over the largest magnitude of the
    reference output, so outputs near zero do not inflate it.
    """

    max_abs_error: float
    max_rel_error: float

    @classmethod
    def of(cls, value: np.ndarray, reference: np.ndarray) -> "Comparison":
        """Compare an output with the MLX model's; a non-finite value is an infinite error.

        Args:
            value: The output to check.
            reference: The MLX model's output for the same inputs.

        Raises:
            ValueError: The two shapes differ.
        """
        value, reference = np.asarray(value, np.float64), np.asarray(reference, np.float64)
        if value.shape != reference.shape:
            raise ValueError(
                f"output shape {value.shape} differs from the model's {reference.shape}"
            )
        error = float(np.max(np.abs(value - reference))) if value.size else 0.0
        if not np.isfinite(value).all():
            error = float("inf")
        scale = max(float(np.max(np.abs(reference))) if reference.size else 0.0, 1e-12)
        return cls(error, error / scale)


@dataclass
class VerifyReport:
    """What `verify` measured; ``max_*`` cover every output of the numpy run."""

    path: str
    kind: str
    precision: str
    steps: int
    op_types: list[str]
    outputs: dict[str, Comparison]
    coreml: dict[str, dict[str, Comparison]] = field(default_factory=dict)
    placement: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def max_abs_error(self) -> float:
        """The largest absolute error of any output of the numpy run."""
        return max(c.max_abs_error for c in self.outputs.values())

    @property
    def max_rel_error(self) -> float:
        """The largest relative error of any output of the numpy run."""
        return max(c.max_rel_error for c in self.outputs.values())

    def __str__(self) -> str:
        lines = [
            f"{self.path}: kind={self.kind} precision={self.precision} steps={self.steps}",
            f"{'run':<24} {'output':<8} {'max abs error':>14} {'max rel error':>14}",
        ]
        runs = {
            "numpy evaluator": self.outputs,
            **{f"Core ML {k}": v for k, v in self.coreml.items()},
        }
        for run, outputs in runs.items():
            for name, c in outputs.items():
                lines.append(
                    f"{run:<24} {name:<8} {c.max_abs_error:>14.3e} {c.max_rel_error:>14.3e}"
                )
        for units, devices in self.placement.items():
            counts = ", ".join(f"{device}: {n}" for device, n in sorted(devices.items()))
            lines.append(f"placement ({units}): {counts}")
        return "\n".join(lines)


class CoreMLRuntime:
    """Core ML's own prediction and op placement (macOS only; verified on a Mac only)."""

    UNITS = {"cpu_only": "CPU_ONLY", "cpu_and_ne": "CPU_AND_NE"}

    @staticmethod
    def available() -> bool:
        """Whether Core ML can run here: on macOS only."""
        return platform.system() == "Darwin"

    def predictor(self, path: Path, compute_units: str) -> Predict:
        """A function that runs the package at `path` with Core ML's own prediction.

        Args:
            path: The saved `.mlpackage`.
            compute_units: `"cpu_only"` or `"cpu_and_ne"` (CPU and Neural Engine).

        Returns:
            `predict(inputs, states) -> (outputs, final_states)`: a stateful package's
            state is made on the first call, written with `states`, and kept across
            calls; `final_states` are read back from it (empty for a stateless package).
        """
        import coremltools as ct

        units = getattr(ct.ComputeUnit, self.UNITS[compute_units])
        model = ct.models.MLModel(str(path), compute_units=units)
        state = None

        def predict(inputs, states):
            nonlocal state
            if states and state is None:
                state = model.make_state()
                for name, value in states.items():
                    state.write_state(name, value)
            outputs = (
                model.predict(inputs, state=state) if state is not None else model.predict(inputs)
            )
            final = {name: state.read_state(name) for name in states} if states else {}
            return outputs, final

        return predict

    def placement(self, path: Path, compute_units: str) -> dict[str, int]:
        """Operations (constants aside) per preferred device, from ``MLComputePlan``."""
        import coremltools as ct
        from coremltools.models.compute_plan import MLComputePlan

        compiled = ct.models.utils.compile_model(str(path))
        plan = MLComputePlan.load_from_path(
            path=compiled, compute_units=getattr(ct.ComputeUnit, self.UNITS[compute_units])
        )
        counts: dict[str, int] = {}
        for function in plan.model_structure.program.functions.values():
            for operation in function.block.operations:
                if operation.operator_name == "const":
                    continue
                usage = plan.get_compute_device_usage_for_mlprogram_operation(operation)
                device = (
                    "unknown" if usage is None else type(usage.preferred_compute_device).__name__
                )
                counts[device] = counts.get(device, 0) + 1
        return counts


def _check_inputs(
    meta: dict[str, Any], model: RNN, inputs: dict[str, Any]
) -> dict[str, np.ndarray]:
    arrays = {name: np.asarray(value, dtype=np.float32) for name, value in inputs.items()}
    x = arrays.get("x")
    if x is None or x.ndim != 3:
        raise ValueError("[verify] inputs['x'] must be a (batch, steps, features) sequence")
    batch, state = meta["inputs"]["x"][0], (meta["inputs"]["x"][0], model.state_size)
    steps = meta["inputs"]["x"][1] if meta["kind"] == "sequence" else x.shape[1]
    expected = {"x": (batch, steps, model.input_size), "h": state}
    if model.mixed_memory:
        expected["c"] = state
    if "dt" in meta["inputs"]:
        expected["dt"] = (batch, steps)
        if "dt" not in arrays:
            raise ValueError("[verify] the package takes timespans: pass 'dt' (batch, steps)")
    for name, value in arrays.items():
        if name not in expected:
            raise ValueError(
                f"[verify] unexpected input {name!r}; this package takes {sorted(expected)}"
            )
        if value.shape != expected[name]:
            raise ValueError(
                f"[verify] {name!r} must have shape {expected[name]}, got {value.shape}"
            )
    arrays.setdefault("h", np.zeros(state, np.float32))
    if model.mixed_memory:
        arrays.setdefault("c", np.zeros(state, np.float32))
    return arrays


def _reference(model: RNN, arrays: dict[str, np.ndarray], per_step: bool) -> dict[str, np.ndarray]:
    """The MLX model on the same inputs: per step like a host loop, or in one call."""
    h, c = mx.array(arrays["h"]), mx.array(arrays["c"]) if "c" in arrays else None
    x = mx.array(arrays["x"])
    dt = mx.array(arrays["dt"])[..., None] if "dt" in arrays else 1.0
    chunks = [slice(t, t + 1) for t in range(x.shape[1])] if per_step else [slice(None)]
    ys = []
    for chunk in chunks:
        step_dt = dt[:, chunk] if isinstance(dt, mx.array) else dt
        y, h, c = scan.scan(model, x[:, chunk], h, c, step_dt)
        ys.append(y[:, 0] if per_step and y.ndim == 3 else y)
    result = {"y": np.array(mx.stack(ys, axis=1) if per_step else ys[0]), "h_out": np.array(h)}
    if c is not None:
        result["c_out"] = np.array(c)
    return result


def _rollout(
    predict: Predict, meta: dict[str, Any], arrays: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Drive a package over the sequence the way an app would, returning its outputs."""
    dtype = np.float16 if meta["precision"] == "float16" else np.float32
    feed = lambda value: np.asarray(value, dtype=dtype)  # noqa: E731
    recurrent = [name for name in ("h", "c") if name in arrays]
    if meta["kind"] == "sequence":
        inputs = {"x": feed(arrays["x"]), **{f"{n}0": feed(arrays[n]) for n in recurrent}}
        if "dt" in arrays:
            inputs["dt"] = feed(arrays["dt"])
        outputs, _ = predict(inputs, {})
        return {name: np.asarray(value) for name, value in outputs.items()}
    states = {n: feed(arrays[n]) for n in recurrent} if meta["kind"] == "stateful" else {}
    carried = {n: feed(arrays[n]) for n in recurrent}
    ys = []
    for t in range(arrays["x"].shape[1]):
        inputs = {"x": feed(arrays["x"][:, t])}
        if "dt" in arrays:
            inputs["dt"] = feed(arrays["dt"][:, t : t + 1])
        if meta["kind"] == "step":
            inputs.update(carried)
        outputs, states = predict(inputs, states)
        carried = {n: outputs[f"{n}_out"] for n in recurrent if f"{n}_out" in outputs}
        ys.append(np.asarray(outputs["y"]))
    final = states if meta["kind"] == "stateful" else carried
    return {"y": np.stack(ys, axis=1), **{f"{n}_out": np.asarray(v) for n, v in final.items()}}


def verify(
    path: str | Path,
    model: RNN,
    inputs: dict[str, Any],
    *,
    runtime: CoreMLRuntime | None = None,
) -> VerifyReport:
    """Run a saved package and the MLX model on the same inputs and compare them.

    Args:
        path: An ``.mlpackage`` written by [`to_coreml`][ncps_mlx.export.to_coreml].
        model: The MLX layer it was exported from.
        inputs: ``x`` (B, T, F) for every kind (a ``step`` or ``stateful`` package is
            driven over the T steps, carrying its state), optionally the initial ``h``
            [and ``c``] (B, state_size), and ``dt`` (B, T) when exported with timespans.
        runtime: Core ML's own prediction; default [`CoreMLRuntime`][ncps_mlx.export.CoreMLRuntime]
            on macOS and none elsewhere.

    Returns:
        A [`VerifyReport`][ncps_mlx.export.VerifyReport] with the largest absolute and relative
        error of each output, and on macOS Core ML's errors and op placement.
    """
    require_coremltools()  # the evaluator reads the package with coremltools' protobuf classes
    from . import evaluator

    path = Path(path)
    program = evaluator.load_program(path)
    meta = program_metadata(program, path)
    arrays = _check_inputs(meta, model, inputs)
    with evaluation_mode(model):
        reference = _reference(model, arrays, per_step=meta["kind"] != "sequence")

    def compare(predict: Predict) -> dict[str, Comparison]:
        produced = _rollout(predict, meta, arrays)
        return {name: Comparison.of(produced[name], reference[name]) for name in reference}

    report = VerifyReport(
        path=str(path),
        kind=meta["kind"],
        precision=meta["precision"],
        steps=arrays["x"].shape[1],
        op_types=program.op_types,
        outputs=compare(lambda i, s: evaluator.evaluate(program, i, s)),
    )
    if runtime is None and CoreMLRuntime.available():
        runtime = CoreMLRuntime()
    if runtime is not None:
        for units in CoreMLRuntime.UNITS:
            report.coreml[units] = compare(runtime.predictor(path, units))
            report.placement[units] = runtime.placement(path, units)
    return report
