"""Export a CfC or LTC layer to a Core ML ``.mlpackage`` laid out for the Neural Engine."""

import contextlib
import functools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from .._checks import check_choice, check_int
from ..errors import see
from ..rnn import RNN

KINDS = ("step", "sequence", "stateful")
"""The kinds of package `to_coreml` writes: one step with the state as input and output, a
whole sequence, or one step with the state kept inside Core ML."""
PRECISIONS = ("float16", "float32")
COMPUTE_UNITS = {
    "cpu_and_ne": "CPU_AND_NE",
    "cpu_only": "CPU_ONLY",
    "cpu_and_gpu": "CPU_AND_GPU",
    "all": "ALL",
}
#: The ops an exported package may hold: element-wise ops, 1x1 convolutions, channel
#: split/concat, layout changes at the boundary and state access. No gather, loop or
#: recurrent-layer op, which would leave the Neural Engine.
ALLOWED_OPS = frozenset(
    {
        "conv", "add", "sub", "mul", "real_div", "sigmoid", "tanh", "exp", "abs", "relu",
        "silu", "gelu", "clip", "split", "concat", "reshape", "squeeze", "transpose",
        "slice_by_size", "read_state", "write_state",
    }
)  # fmt: skip
FP16_TIMESPAN_RANGE = {"CfC": (0.0, 1000.0), "LTC": (0.01, 1000.0)}
"""In float16 exports the elapsed time is clamped to these ranges before use: `time_a * t`
(CfC) and `cm / (t / unfolds)` (LTC) must stay far below float16's 65504."""


def timespan_range(model: RNN) -> tuple[float, float]:
    """The float16 clamp of a model's elapsed time: the LTC's for a cell that divides by
    it (`requires_positive_timespans`), else the CfC's."""
    return FP16_TIMESPAN_RANGE["LTC" if model.rnn_cell.requires_positive_timespans else "CfC"]


#: Key of the package's user metadata that holds the interface and model description.
METADATA_KEY = "ncps_mlx"
# Earliest targets: float16 inputs need iOS 16 / macOS 13; Core ML state needs 18 / 15.
_MINIMUM_TARGETS = {"step": "macOS13", "sequence": "macOS13", "stateful": "macOS15"}


def require_coremltools() -> Any:
    """Import coremltools quietly (see `_quiet_import`).

    Returns:
        The `coremltools` module.

    Raises:
        ImportError: coremltools is not installed; the message says how to install it.
    """
    try:
        with _quiet_import():
            import coremltools
    except ImportError as error:
        raise ImportError(
            "Core ML export needs coremltools: pip install 'ncps-mlx[export]'\n"
            + see("coremltools-missing")
        ) from error
    return coremltools


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    """Hold back the warnings coremltools logs while it is imported.

    They concern nothing an export does: its native runtime, which off macOS is absent by
    design (eight "Failed to load _MLModelProxy" lines on Linux; on a Mac a broken one
    fails loudly when a package is run), and untested versions of the frameworks it
    converts from (torch, scikit-learn), which an export never uses. Warnings logged
    later, while converting, are shown.
    """
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _without_progress_bars() -> Iterator[None]:
    """Run coremltools' pass pipelines without their tqdm bars: three bars of compiler
    passes per export say nothing to whoever exports a layer of a few hundred weights."""
    from coremltools.converters.mil.mil.passes import pass_pipeline

    bar = getattr(pass_pipeline, "tqdm", None)  # where coremltools 9.0 draws them
    if bar is None:
        yield
        return
    pass_pipeline.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        pass_pipeline.tqdm = bar


@dataclass
class Interface:
    """Names and shapes of a package's inputs, states and outputs (its contract)."""

    kind: str
    inputs: dict[str, list[int]] = field(default_factory=dict)
    states: dict[str, list[int]] = field(default_factory=dict)
    outputs: dict[str, list[int]] = field(default_factory=dict)


def interface(
    model: RNN, kind: str, batch_size: int, seq_len: int | None, timespans: bool
) -> Interface:
    """The fixed input, state and output names and shapes of an export."""
    b, f, n = batch_size, model.input_size, model.state_size
    spec = Interface(kind)
    recurrent = ["h", "c"] if model.mixed_memory else ["h"]
    if kind == "sequence":
        spec.inputs["x"] = [b, seq_len, f]
        spec.inputs.update({f"{name}0": [b, n] for name in recurrent})
        if timespans:
            spec.inputs["dt"] = [b, seq_len]
        spec.outputs["y"] = (
            [b, seq_len, model.output_size] if model.return_sequences else [b, model.output_size]
        )
    else:
        spec.inputs["x"] = [b, f]
        if kind == "step":
            spec.inputs.update({name: [b, n] for name in recurrent})
        else:
            spec.states.update({name: [b, n] for name in recurrent})
        if timespans:
            spec.inputs["dt"] = [b, 1]
        spec.outputs["y"] = [b, model.output_size]
    if kind != "stateful":
        spec.outputs.update({f"{name}_out": [b, n] for name in recurrent})
    return spec


def _check_arguments(
    model: Any,
    path: Path,
    kind: str,
    precision: str,
    batch_size: int,
    seq_len: int | None,
    compute_units: str,
) -> None:
    owner = "to_coreml"
    if not isinstance(model, RNN):
        raise TypeError(f"[{owner}] 'model' must be an ncps_mlx CfC or LTC layer, got {model!r}")
    check_choice(owner, "kind", kind, KINDS)
    check_choice(owner, "precision", precision, PRECISIONS)
    check_choice(owner, "compute_units", compute_units, tuple(COMPUTE_UNITS))
    check_int(owner, "batch_size", batch_size)
    if kind == "sequence":
        check_int(owner, "seq_len", seq_len)
    elif seq_len is not None:
        raise ValueError(f"[{owner}] 'seq_len' is only for kind='sequence', got {seq_len!r}")
    if kind == "stateful" and precision != "float16":
        raise ValueError(
            f"[{owner}] kind='stateful' keeps its state in Core ML state tensors, which must "
            f"be float16: use precision='float16'\n{see('export-arguments')}"
        )
    if path.suffix != ".mlpackage":
        raise ValueError(f"[{owner}] 'path' must end in .mlpackage, got {str(path)!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"[{owner}] the directory {str(path.parent)!r} does not exist")


def _target(ct: Any, kind: str, requested: Any) -> Any:
    minimum = getattr(ct.target, _MINIMUM_TARGETS[kind])
    if requested is None:
        return minimum
    target = getattr(ct.target, requested, None) if isinstance(requested, str) else requested
    if not isinstance(target, type(minimum)):
        # Every name, macOS ones included (aliases of iOS ones), that this kind can use.
        members = type(minimum).__members__.items()
        names = ", ".join(name for name, t in members if t.value >= minimum.value)
        raise ValueError(
            f"[to_coreml] unknown minimum_deployment_target {requested!r}; use one of {names}"
        )
    if target.value < minimum.value:
        raise ValueError(
            f"[to_coreml] kind={kind!r} needs minimum_deployment_target >= "
            f"{_MINIMUM_TARGETS[kind]} (or its iOS equivalent), got "
            f"{requested if isinstance(requested, str) else target.name}\n{see('export-arguments')}"
        )
    return target


def _named(value: Any, name: str, dtype: Any) -> Any:
    """The output ``name``: a final cast fixes its name and type."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    return mb.cast(x=value.var, dtype=types.builtin_to_string(dtype), name=name)


def _build_program(model: RNN, spec: Interface, precision: str, opset: Any) -> Any:
    """The MIL program of an export, built in float32."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program, types

    from . import mil
    from .graphs import ModelGraph

    # float16 packages take and return float16 (no conversions on the device); the
    # program is still built in float32 and lowered by coremltools' precision pass.
    io_type = types.fp16 if precision == "float16" else types.fp32
    placeholders = {
        name: mb.TensorSpec(tuple(shape), dtype=io_type) for name, shape in spec.inputs.items()
    }
    placeholders.update(
        {
            name: mb.StateTensorSpec(tuple(shape), dtype=types.fp16)
            for name, shape in spec.states.items()
        }
    )
    graph = ModelGraph(model)
    batch = spec.inputs["x"][0]
    steps = spec.inputs["x"][1] if spec.kind == "sequence" else 1
    with Function(placeholders, opset) as function:
        inputs = {
            name: mil.Tensor(var if name in spec.states else mb.cast(x=var, dtype="fp32"))
            for name, var in function.inputs.items()
        }
        x = mil.to_layout(inputs["x"], batch, steps)
        dt = 1.0
        if "dt" in inputs:
            dt = mil.Tensor(mb.reshape(x=inputs["dt"].var, shape=[batch, 1, 1, steps]))
            if precision == "float16":
                dt = mil.clip(dt, *timespan_range(model))
        recurrent = {}
        for name in ("h", "c"):
            if name in spec.states:
                value = mb.cast(x=mb.read_state(input=inputs[name].var), dtype="fp32")
                recurrent[name] = mil.to_layout(mil.Tensor(value), batch, 1)
            elif name in inputs or f"{name}0" in inputs:
                recurrent[name] = mil.to_layout(inputs.get(name, inputs.get(f"{name}0")), batch, 1)
        y, h, c = graph.run(x, recurrent["h"], recurrent.get("c"), dt)
        per_step = len(spec.outputs["y"]) == 3  # (B, T, out): a sequence that keeps every step
        outputs = [_named(mil.from_layout(y, per_step), "y", io_type)]
        for name, value in (("h", h), ("c", c)):
            if name in spec.states:
                flat = mb.reshape(x=value.var, shape=spec.states[name])
                mb.coreml_update_state(state=inputs[name].var, value=mb.cast(x=flat, dtype="fp16"))
            elif f"{name}_out" in spec.outputs:
                outputs.append(_named(mil.squeeze(value), f"{name}_out", io_type))
        function.set_outputs(outputs)
    program = Program()
    program.add_function("main", function)
    return program


def _describe(
    ct_model: Any, model: RNN, spec: Interface, precision: str, compute_units: str
) -> None:
    ct_model.short_description = (
        f"ncps_mlx {type(model).__name__} ({spec.kind} kind, {precision}); see the "
        f"'{METADATA_KEY}' metadata for the interface."
    )
    ct_model.author = f"ncps_mlx {__version__}"
    metadata = {
        "kind": spec.kind,
        "precision": precision,
        "compute_units": compute_units,
        "inputs": spec.inputs,
        "states": spec.states,
        "outputs": spec.outputs,
        "timespan_range": timespan_range(model) if precision == "float16" else None,
        "model": model.get_config(),
        "ncps_mlx_version": __version__,
    }
    ct_model.user_defined_metadata[METADATA_KEY] = json.dumps(metadata)
    descriptions = {
        "x": "input features",
        "h": "hidden state",
        "c": "LSTM memory (mixed memory)",
        "h0": "initial hidden state",
        "c0": "initial LSTM memory",
        "dt": "elapsed time of each step",
        "y": "outputs",
        "h_out": "hidden state after the last step",
        "c_out": "LSTM memory after the last step",
    }
    for name in spec.inputs:
        ct_model.input_description[name] = descriptions[name]
    for name in spec.outputs:
        ct_model.output_description[name] = descriptions[name]


@contextlib.contextmanager
def _replacing(path: Path):
    """Yield a temporary path beside ``path``; move it over ``path`` only on success."""
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    target = staging / path.name
    try:
        yield target
        backup = staging / "previous"
        if path.exists():
            os.replace(path, backup)
        os.replace(target, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def to_coreml(
    model: RNN,
    path: str | os.PathLike,
    *,
    kind: str = "step",
    precision: str = "float16",
    batch_size: int = 1,
    seq_len: int | None = None,
    compute_units: str = "cpu_and_ne",
    minimum_deployment_target: Any = None,
    timespans: bool = False,
) -> Path:
    """Export a [`CfC`][ncps_mlx.CfC] or [`LTC`][ncps_mlx.LTC] layer to Core ML.

    The graph follows the Neural Engine's rules: (B, C, 1, S) layout, 1x1 convolutions
    for dense layers with the CfC heads fused into one, wiring masks and positivity
    constraints folded into the weights, LTC synapses evaluated only where the wiring has
    them, no loops or gathers, fixed shapes, float16 throughout by default.

    Args:
        model: The layer to export (its current weights, in evaluation mode).
        path: Where to write the package; must end in ``.mlpackage``. Written atomically:
            an existing package is replaced only once the new one is complete.
        kind: ``"step"`` (inputs ``x``, ``h`` [, ``c``] [, ``dt``]; outputs ``y``,
            ``h_out`` [, ``c_out``]: the host drives the time loop), ``"sequence"``
            (``seq_len`` steps unrolled: inputs ``x`` (B, T, F), ``h0`` [, ``c0``]
            [, ``dt`` (B, T)]; outputs ``y``, ``h_out`` [, ``c_out``]) or ``"stateful"``
            (the state lives in Core ML state tensors ``h`` [, ``c``]: input ``x``
            [, ``dt``], output ``y``; macOS 15 / iOS 18).
        precision: ``"float16"`` (inputs, outputs and every op) or ``"float32"``.
        batch_size: The fixed batch size B.
        seq_len: Steps T of a ``"sequence"`` export.
        compute_units: Recorded as the preferred units: ``"cpu_and_ne"``, ``"cpu_only"``,
            ``"cpu_and_gpu"`` or ``"all"``.
        minimum_deployment_target: A ``coremltools.target`` or its name (e.g.
            ``"macOS14"``); default the earliest the kind supports.
        timespans: Add the ``dt`` input (elapsed time per step); else every step is 1.
            float16 exports clamp it to `FP16_TIMESPAN_RANGE`.

    Returns:
        The path of the saved package.

    Raises:
        ValueError: For an unsupported request, before anything is written.
        ImportError: Without coremltools (``pip install 'ncps-mlx[export]'``).
    """
    path = Path(path)
    _check_arguments(model, path, kind, precision, batch_size, seq_len, compute_units)
    ct = require_coremltools()
    target = _target(ct, kind, minimum_deployment_target)
    with evaluation_mode(model):
        spec = interface(model, kind, batch_size, seq_len, timespans)
        program = _build_program(model, spec, precision, target)
    with _without_progress_bars():
        ct_model = ct.convert(
            program,
            convert_to="mlprogram",
            compute_precision=getattr(ct.precision, precision.upper()),
            minimum_deployment_target=target,
            compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[compute_units]),
            skip_model_load=True,
        )
    _describe(ct_model, model, spec, precision, compute_units)
    with _replacing(path) as staging:
        ct_model.save(str(staging))
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ncps_mlx description stored in an exported package."""
    require_coremltools()
    from .evaluator import load_program

    return program_metadata(load_program(path), path)


def program_metadata(program: Any, path: str | os.PathLike) -> dict[str, Any]:
    """The ncps_mlx description of an already loaded package (see
    [`read_metadata`][ncps_mlx.export.read_metadata])."""
    user = program.spec.description.metadata.userDefined
    if METADATA_KEY not in user:
        raise ValueError(
            f"{str(path)!r} was not exported by ncps_mlx (no '{METADATA_KEY}' metadata)\n"
            + see("package-format")
        )
    return json.loads(user[METADATA_KEY])


@contextlib.contextmanager
def evaluation_mode(model: RNN):
    """Run the body with ``model`` in evaluation mode, then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
