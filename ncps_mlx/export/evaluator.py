"""A numpy evaluator for saved Core ML ML Program packages (``.mlpackage``).

Core ML cannot run on Linux, so a package exported there cannot be checked by running it.
This module reads what was written to disk, the protobuf in ``model.mlmodel`` and the
weights in ``weight.bin`` (both found through ``Manifest.json``), and evaluates the
program's ``main`` function op by op with numpy. Each op is computed in float64 from its
inputs and its result is rounded to the dtype the package declares for it, which models a
device that stores every intermediate in that dtype (fp16 for a FLOAT16 program).

Only the ops listed in `SUPPORTED_OPS` are evaluated; any other op raises
`UnsupportedOpError` instead of being skipped. Needs the ``export`` extra
(coremltools) for the protobuf classes only, never for running the model.
"""

import inspect
import json
import math
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from coremltools.proto import MIL_pb2, Model_pb2
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import NCPSError, see

__all__ = [
    "SUPPORTED_OPS",
    "PackageFormatError",
    "Program",
    "UnsupportedOpError",
    "evaluate",
    "load_program",
]

TensorSpec = tuple[tuple[int, ...], np.dtype]


class UnsupportedOpError(NCPSError):
    """The program holds an op (or an op input) the evaluator does not implement."""


class PackageFormatError(NCPSError):
    """A package part is missing or malformed (manifest, protobuf, weight blobs)."""

    def __init__(self, message: str):
        super().__init__(f"{message}\n{see('package-format')}")


# Protobuf DataType names -> numpy dtypes. Looked up by name, so the enum numbers stay
# coremltools' business. STRING is handled separately (consts only).
_DTYPE_NAMES = {
    "BOOL": np.bool_,
    "FLOAT16": np.float16,
    "FLOAT32": np.float32,
    "FLOAT64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}
_DTYPES = {MIL_pb2.DataType.Value(name): np.dtype(t) for name, t in _DTYPE_NAMES.items()}
_STRING = MIL_pb2.DataType.Value("STRING")

# weight.bin record layout, from MILBlob's StorageFormat.hpp: a 64-byte blob_metadata
# (u32 sentinel, u32 BlobDataType, u64 size in bytes, u64 absolute data offset, reserved).
# BlobDataType has no Python binding, so its byte-aligned codes are copied here.
_BLOB_SENTINEL = 0xDEADBEEF
_BLOB_HEADER = struct.Struct("<IIQQ")
_BLOB_DTYPES = {
    1: np.dtype(np.float16),
    2: np.dtype(np.float32),
    3: np.dtype(np.uint8),
    4: np.dtype(np.int8),
    6: np.dtype(np.int16),
    7: np.dtype(np.uint16),
    14: np.dtype(np.int32),
    15: np.dtype(np.uint32),
}
_MODEL_PATH_PREFIX = "@model_path/"


@dataclass(frozen=True)
class _Literal:
    """An op argument given inline in the protobuf rather than by name."""

    value: Any


@dataclass(frozen=True)
class _Op:
    type: str
    inputs: dict[str, tuple[str | _Literal, ...]]
    outputs: tuple[tuple[str, TensorSpec], ...]


@dataclass
class _State:
    """A state buffer; ops receive this object so they can read and overwrite it."""

    value: np.ndarray


@dataclass(frozen=True)
class Program:
    """The ``main`` function of a saved ML Program, parsed and ready to evaluate.

    Attributes:
        spec: The ``Model_pb2.Model`` read from the package.
        inputs: Function inputs (state inputs excluded): name -> (shape, dtype). A dimension
            the package leaves flexible is ``-1``.
        states: State inputs of a stateful model: name -> (shape, dtype).
        outputs: Names of the function's outputs, in order.
        op_types: Types of the non-const ops, in program order.
        constants: Values of the const ops (weights decoded from ``weight.bin``), by name.
        operations: The non-const ops, in program order.
    """

    spec: Model_pb2.Model = field(repr=False)
    inputs: dict[str, TensorSpec]
    states: dict[str, TensorSpec]
    outputs: list[str]
    op_types: list[str]
    constants: Mapping[str, Any] = field(repr=False)
    operations: tuple[_Op, ...] = field(repr=False)


# --- reading the package -------------------------------------------------------------


def load_program(path: str | os.PathLike) -> Program:
    """Parse a saved ``.mlpackage`` of type mlProgram.

    Args:
        path: The package directory.

    Returns:
        The package's ``main`` function with its constants decoded.

    Raises:
        PackageFormatError: A part of the package is missing or malformed.
    """
    model_file = _model_file(Path(path))
    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(model_file.read_bytes())
    except Exception as exc:  # protobuf raises its own DecodeError
        raise PackageFormatError(f"{model_file}: not a Core ML model protobuf ({exc})") from exc
    if spec.WhichOneof("Type") != "mlProgram":
        raise PackageFormatError(f"{model_file}: a {spec.WhichOneof('Type')}, not an mlProgram")
    if "main" not in spec.mlProgram.functions:
        raise PackageFormatError(f"{model_file}: the program has no 'main' function")
    function = spec.mlProgram.functions["main"]
    if function.opset not in function.block_specializations:
        raise PackageFormatError(f"{model_file}: no block for the function's opset")
    block = function.block_specializations[function.opset]

    inputs, states = {}, {}
    for var in function.inputs:
        kind = var.type.WhichOneof("type")
        if kind == "stateType":
            states[var.name] = _tensor_spec(var.type.stateType.wrappedType, var.name)
        else:
            inputs[var.name] = _tensor_spec(var.type, var.name)

    blobs = _BlobFiles(model_file.parent)
    constants, operations = {}, []
    for op in block.operations:
        if op.type == "const":
            name = op.outputs[0].name
            constants[name] = _value(op.attributes["val"], blobs, name)
        else:
            operations.append(_parse_op(op, blobs))
    return Program(
        spec=spec,
        inputs=inputs,
        states=states,
        outputs=list(block.outputs),
        op_types=[op.type for op in operations],
        constants=constants,
        operations=tuple(operations),
    )


def _model_file(package: Path) -> Path:
    """Find the model protobuf through Manifest.json, as Core ML does."""
    manifest_file = package / "Manifest.json"
    try:
        manifest = json.loads(manifest_file.read_text())
        root = manifest["rootModelIdentifier"]
        relative = manifest["itemInfoEntries"][root]["path"]
    except FileNotFoundError as exc:
        raise PackageFormatError(f"{package}: no Manifest.json; not an .mlpackage") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise PackageFormatError(f"{manifest_file}: malformed manifest ({exc!r})") from exc
    model_file = _inside(package / "Data", relative, manifest_file)
    if not model_file.is_file():
        raise PackageFormatError(f"{manifest_file}: names {relative!r}, which is missing")
    return model_file


def _inside(root: Path, relative: str, source: object) -> Path:
    """Join ``relative`` onto ``root``, refusing paths that escape the package."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise PackageFormatError(f"{source}: path {relative!r} points outside the package")
    return path


class _BlobFiles:
    """Weight files of one package, each read once."""

    def __init__(self, model_dir: Path):
        self._model_dir = model_dir
        self._data: dict[str, bytes] = {}

    def read(self, file_name: str, offset: int, spec: TensorSpec) -> np.ndarray:
        """Decode the blob record at ``offset`` of ``file_name`` as a tensor of ``spec``."""
        data = self._file(file_name)
        where = f"{file_name} at offset {offset}"
        if offset < 0 or offset + _BLOB_HEADER.size > len(data):
            raise PackageFormatError(f"{where}: blob header beyond the file's {len(data)} bytes")
        sentinel, code, size, start = _BLOB_HEADER.unpack_from(data, offset)
        if sentinel != _BLOB_SENTINEL:
            raise PackageFormatError(f"{where}: bad blob sentinel {sentinel:#010x}")
        shape, dtype = spec
        if _BLOB_DTYPES.get(code) != dtype:
            raise PackageFormatError(f"{where}: blob data type code {code}, declared {dtype}")
        if start + size > len(data):
            raise PackageFormatError(f"{where}: blob data beyond the end of the file")
        if size != math.prod(shape) * dtype.itemsize:
            raise PackageFormatError(f"{where}: {size} bytes, declared {shape} {dtype}")
        return np.frombuffer(data, dtype.newbyteorder("<"), math.prod(shape), start).reshape(shape)

    def _file(self, file_name: str) -> bytes:
        if file_name not in self._data:
            if not file_name.startswith(_MODEL_PATH_PREFIX):
                raise PackageFormatError(f"weight file {file_name!r} is not under @model_path")
            relative = file_name[len(_MODEL_PATH_PREFIX) :]
            path = _inside(self._model_dir, relative, "model.mlmodel")
            if not path.is_file():
                raise PackageFormatError(f"weight file {path} is missing")
            self._data[file_name] = path.read_bytes()
        return self._data[file_name]


def _tensor_spec(value_type: MIL_pb2.ValueType, name: str) -> TensorSpec:
    if value_type.WhichOneof("type") != "tensorType":
        raise PackageFormatError(f"{name!r}: a {value_type.WhichOneof('type')}, not a tensor")
    tensor_type = value_type.tensorType
    if tensor_type.dataType not in _DTYPES:
        name_of = MIL_pb2.DataType.Name(tensor_type.dataType)
        raise PackageFormatError(f"{name!r}: data type {name_of} is not supported here")
    shape = tuple(
        dim.constant.size if dim.WhichOneof("dimension") == "constant" else -1
        for dim in tensor_type.dimensions
    )
    return shape, _DTYPES[tensor_type.dataType]


def _value(value: MIL_pb2.Value, blobs: _BlobFiles, name: str) -> Any:
    """Decode the value of const ``name``: a numpy array, or a str for string scalars."""
    kind = value.WhichOneof("value")
    if value.type.tensorType.dataType == _STRING and kind == "immediateValue":
        strings = list(value.immediateValue.tensor.strings.values)
        return strings[0] if value.type.tensorType.rank == 0 else np.array(strings)
    spec = _tensor_spec(value.type, name)
    if kind == "blobFileValue":
        return blobs.read(value.blobFileValue.fileName, value.blobFileValue.offset, spec)
    if kind == "immediateValue" and value.immediateValue.WhichOneof("value") == "tensor":
        return _immediate_tensor(value.immediateValue.tensor, spec)
    raise PackageFormatError(f"{name!r}: a value of kind {kind!r} is not supported here")


def _immediate_tensor(tensor: MIL_pb2.TensorValue, spec: TensorSpec) -> np.ndarray:
    shape, dtype = spec
    field_name = tensor.WhichOneof("value")
    if field_name == "bytes":  # fp16 and 8-bit types: raw little-endian values
        data = np.frombuffer(tensor.bytes.values, dtype.newbyteorder("<"))
    elif field_name is None:  # an empty tensor
        data = np.zeros(0, dtype)
    else:
        data = np.asarray(getattr(tensor, field_name).values).astype(dtype)
    if data.size != math.prod(shape):
        raise PackageFormatError(f"const holds {data.size} values, declared shape {shape}")
    return data.reshape(shape)


def _parse_op(op: MIL_pb2.Operation, blobs: _BlobFiles) -> _Op:
    inputs = {
        name: tuple(
            arg.name
            if arg.WhichOneof("binding") == "name"
            else _Literal(_value(arg.value, blobs, f"{op.type}.{name}"))
            for arg in argument.arguments
        )
        for name, argument in op.inputs.items()
    }
    # Outputs of an unsupported op may not even be tensors; evaluate() rejects the op.
    outputs = ()
    if op.type in _OPS:
        outputs = tuple((var.name, _tensor_spec(var.type, var.name)) for var in op.outputs)
    return _Op(op.type, inputs, outputs)


# --- evaluation ----------------------------------------------------------------------


def evaluate(
    program_or_path: Program | str | os.PathLike,
    inputs: Mapping[str, np.ndarray],
    states: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Evaluate the ``main`` function of a saved package with numpy.

    Args:
        program_or_path: A `Program` from `load_program`, or a package path.
        inputs: A value for every function input, cast to its declared dtype.
        states: Values of the state buffers of a stateful model; a state left out starts
            as zeros, as a fresh ``MLState`` does.

    Returns:
        The outputs by name, and the state values after the run by name. Every value
        carries the dtype the package declares for it.

    Raises:
        ValueError: An input or state is missing, unknown, or of the wrong shape.
        UnsupportedOpError: The program holds an op the evaluator does not implement.
    """
    program = program_or_path
    if not isinstance(program, Program):
        program = load_program(program_or_path)
    _check_supported(program)

    env: dict[str, Any] = dict(program.constants)
    env.update(_feeds("input", program.inputs, inputs, zeros_if_missing=False))
    buffers = {
        name: _State(value)
        for name, value in _feeds(
            "state", program.states, states or {}, zeros_if_missing=True
        ).items()
    }
    env.update(buffers)
    # Overflow to inf and NaNs are part of what a low-precision device produces; report
    # them in the values, not as warnings.
    with np.errstate(all="ignore"):
        for op in program.operations:
            _run(op, env)
    outputs = {name: np.array(env[name]) for name in program.outputs}
    return outputs, {name: buffer.value.copy() for name, buffer in buffers.items()}


def _check_supported(program: Program) -> None:
    """Reject the whole program before any op runs, so no partial work is reported."""
    for op in program.operations:
        if op.type not in _OPS:
            supported = ", ".join(sorted(SUPPORTED_OPS))
            raise UnsupportedOpError(
                f"Core ML op {op.type!r} is not supported by the evaluator; supported: {supported}"
                f"\n{see('unsupported-op')}"
            )
        unknown = set(op.inputs) - _PARAMETERS[op.type]
        if unknown:  # ignoring an input could silently change what the op computes
            raise UnsupportedOpError(
                f"op {op.type!r}: inputs {sorted(unknown)} are not supported\n"
                + see("unsupported-op")
            )


def _feeds(
    kind: str,
    specs: Mapping[str, TensorSpec],
    given: Mapping[str, Any],
    zeros_if_missing: bool,
) -> dict[str, np.ndarray]:
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise ValueError(f"unknown {kind}(s) {unknown}; the program's {kind}s are {list(specs)}")
    values = {}
    for name, (shape, dtype) in specs.items():
        if name not in given:
            if not zeros_if_missing:
                raise ValueError(f"missing {kind} {name!r} (shape {shape}, {dtype})")
            values[name] = np.zeros(shape, dtype)
            continue
        value = np.asarray(given[name])
        if not _shape_matches(value.shape, shape):
            raise ValueError(f"{kind} {name!r}: expected shape {shape}, got {value.shape}")
        values[name] = value.astype(dtype)
    return values


def _shape_matches(actual: tuple[int, ...], declared: tuple[int, ...]) -> bool:
    return len(actual) == len(declared) and all(
        d in (-1, a) for a, d in zip(actual, declared, strict=True)
    )


def _run(op: _Op, env: dict[str, Any]) -> None:
    """Evaluate one op and store its outputs, rounded to their declared dtypes."""
    arguments = {name: _resolve(args, env) for name, args in op.inputs.items()}
    result = _OPS[op.type](**arguments)
    results = () if result is None else result if isinstance(result, tuple) else (result,)
    if len(results) != len(op.outputs):
        raise PackageFormatError(
            f"op {op.type!r} produced {len(results)} values, the package declares "
            f"{len(op.outputs)} outputs"
        )
    for (name, (shape, dtype)), value in zip(op.outputs, results, strict=True):
        value = np.asarray(value).astype(dtype)
        if not _shape_matches(value.shape, shape):
            raise PackageFormatError(
                f"op {op.type!r} output {name!r}: computed shape {value.shape}, "
                f"the package declares {shape}"
            )
        env[name] = value


def _resolve(args: tuple[str | _Literal, ...], env: Mapping[str, Any]) -> Any:
    """Look up an op input; variadic inputs (concat's values) become lists."""
    values = [_promote(arg.value if isinstance(arg, _Literal) else env[arg]) for arg in args]
    return values[0] if len(values) == 1 else values


def _promote(value: Any) -> Any:
    # Compute in float64 so the only rounding is the one to the declared output dtype.
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.astype(np.float64)
    return value


# --- op implementations --------------------------------------------------------------
# Semantics and defaults follow the MIL op reference (coremltools.converters.mil ops).


def _ints(value: Any) -> list[int]:
    return [int(v) for v in np.ravel(value)]


def _axes(axes: Any) -> tuple[int, ...] | None:
    return None if axes is None else tuple(_ints(axes))


def _list(values: Any) -> list[Any]:
    return values if isinstance(values, list) else [values]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))  # no overflow for large |x|


def _erf(x: np.ndarray) -> np.ndarray:
    # numpy has no erf; math.erf is exact to double precision.
    return np.vectorize(math.erf, otypes=[np.float64])(x)


_GELU = {
    "EXACT": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "TANH_APPROXIMATION": lambda x: (
        0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    ),
    "SIGMOID_APPROXIMATION": lambda x: x * _sigmoid(1.702 * x),
}


def _gelu(x: np.ndarray, mode: str = "EXACT") -> np.ndarray:
    if mode not in _GELU:
        raise UnsupportedOpError(f"gelu mode {mode!r} is not supported\n{see('unsupported-op')}")
    return _GELU[mode](x)


def _reshape(x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    shape = _ints(shape)
    if len(shape) == x.ndim:  # 0 copies the input's dimension only at equal rank
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return np.reshape(x, shape)


def _matmul(x: np.ndarray, y: np.ndarray, transpose_x: Any = False, transpose_y: Any = False):
    if bool(transpose_x) and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if bool(transpose_y) and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    out = np.matmul(x, weight.T)
    return out if bias is None else out + bias


def _conv_pads(
    pad_type: str,
    spatial: tuple[int, ...],
    kernel: list[int],
    strides: list[int],
    pad: Any,
) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim; ``kernel`` is the dilated kernel size."""
    if pad_type == "valid":
        return [(0, 0)] * len(spatial)
    if pad_type == "custom":
        p = _ints(pad)
        return [(p[2 * i], p[2 * i + 1]) for i in range(len(spatial))]
    if pad_type in ("same", "same_lower"):
        # Output size ceil(in / stride); an odd total pads more after ('same', as in
        # TensorFlow) or before ('same_lower').
        totals = [
            max(0, (math.ceil(n / s) - 1) * s + k - n)
            for n, k, s in zip(spatial, kernel, strides, strict=True)
        ]
        if pad_type == "same":
            return [(t // 2, t - t // 2) for t in totals]
        return [(t - t // 2, t // 2) for t in totals]
    raise UnsupportedOpError(
        f"conv pad_type {pad_type!r} is not supported\n{see('unsupported-op')}"
    )


def _conv(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    strides: Any = None,
    pad_type: str = "valid",
    pad: Any = None,
    dilations: Any = None,
    groups: Any = 1,
) -> np.ndarray:
    """N-d grouped convolution of x (N, C_in, *D) with weight (C_out, C_in/groups, *K)."""
    dims = x.ndim - 2
    strides = _ints(strides) if strides is not None else [1] * dims
    dilations = _ints(dilations) if dilations is not None else [1] * dims
    groups = int(groups)
    kernel = weight.shape[2:]
    dilated = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    pads = _conv_pads(pad_type, x.shape[2:], dilated, strides, pad)
    x = np.pad(x, [(0, 0), (0, 0), *pads])
    spatial_axes = tuple(range(2, 2 + dims))
    windows = sliding_window_view(x, dilated, axis=spatial_axes)  # (N, C, *O_full, *K_dil)
    windows = windows[
        (slice(None), slice(None))
        + tuple(slice(None, None, s) for s in strides)
        + tuple(slice(None, None, d) for d in dilations)
    ]  # (N, C, *O, *K)
    n, c_in = x.shape[:2]
    c_out = weight.shape[0]
    out_spatial = windows.shape[2 : 2 + dims]
    # Group the channels and flatten the kernel, then contract channels x kernel at once.
    patches = windows.reshape(n, groups, c_in // groups, math.prod(out_spatial), -1)
    patches = patches.transpose(0, 1, 3, 2, 4).reshape(n, groups, math.prod(out_spatial), -1)
    kernels = weight.reshape(groups, c_out // groups, -1)
    out = np.einsum("ngpk,gok->ngop", patches, kernels).reshape(n, c_out, *out_spatial)
    return out if bias is None else out + bias.reshape(-1, *[1] * dims)


def _split(
    x: np.ndarray, axis: Any, num_splits: Any = None, split_sizes: Any = None
) -> tuple[np.ndarray, ...]:
    axis = int(axis)
    if split_sizes is not None:
        return tuple(np.split(x, np.cumsum(_ints(split_sizes))[:-1], axis=axis))
    return tuple(np.split(x, int(num_splits), axis=axis))


def _concat(values: Any, axis: Any, interleave: Any = False) -> np.ndarray:
    values, axis = _list(values), int(axis)
    if not bool(interleave):
        return np.concatenate(values, axis=axis)
    # Interleaving takes one slice of each input in turn along the axis.
    axis = axis % values[0].ndim
    stacked = np.stack(values, axis=axis + 1)
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


def _slice_by_index(
    x: np.ndarray,
    begin: Any,
    end: Any,
    stride: Any = None,
    begin_mask: Any = None,
    end_mask: Any = None,
    squeeze_mask: Any = None,
) -> np.ndarray:
    rank = x.ndim
    begin, end = _ints(begin), _ints(end)
    stride = _ints(stride) if stride is not None else [1] * rank
    begin_mask = np.ravel(begin_mask) if begin_mask is not None else [False] * rank
    end_mask = np.ravel(end_mask) if end_mask is not None else [False] * rank
    squeeze_mask = np.ravel(squeeze_mask) if squeeze_mask is not None else [False] * rank
    index = []
    for i in range(rank):
        if squeeze_mask[i]:  # take the single element at begin and drop the axis
            index.append(0 if begin_mask[i] else begin[i])
            continue
        start = None if begin_mask[i] else begin[i]
        stop = None if end_mask[i] else end[i]
        index.append(slice(start, stop, stride[i]))
    return x[tuple(index)]


def _slice_by_size(x: np.ndarray, begin: Any, size: Any) -> np.ndarray:
    index = []
    for start, size_, n in zip(_ints(begin), _ints(size), x.shape, strict=True):
        start = start + n if start < 0 else start
        index.append(slice(start, None if size_ == -1 else start + size_))  # -1: to the end
    return x[tuple(index)]


def _batch_norm(
    x: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    epsilon: Any = 1e-5,
) -> np.ndarray:
    shape = (-1,) + (1,) * (x.ndim - 2)  # parameters run along the channel axis 1
    out = (x - mean.reshape(shape)) / np.sqrt(variance.reshape(shape) + epsilon)
    if gamma is not None:
        out = out * gamma.reshape(shape)
    if beta is not None:
        out = out + beta.reshape(shape)
    return out


def _write_state(input: _State, data: np.ndarray) -> None:
    input.value = np.asarray(data).astype(input.value.dtype)


def _update_state(state: _State, value: np.ndarray) -> np.ndarray:
    _write_state(state, value)
    return state.value


_OPS: dict[str, Callable[..., Any]] = {
    # Values and types
    "cast": lambda x, dtype: x,  # the cast itself is the rounding to the declared dtype
    "identity": lambda x: x,
    # Shapes
    "reshape": _reshape,
    "expand_dims": lambda x, axes: np.expand_dims(x, _axes(axes)),
    "squeeze": lambda x, axes=None: np.squeeze(x, _axes(axes)),
    "transpose": lambda x, perm: np.transpose(x, _ints(perm)),
    "split": _split,
    "concat": _concat,
    "stack": lambda values, axis: np.stack(_list(values), axis=int(axis)),
    "slice_by_index": _slice_by_index,
    "slice_by_size": _slice_by_size,
    # Linear algebra
    "conv": _conv,
    "linear": _linear,
    "matmul": _matmul,
    # Elementwise binary (numpy broadcasting)
    "add": lambda x, y: np.add(x, y),
    "sub": lambda x, y: np.subtract(x, y),
    "mul": lambda x, y: np.multiply(x, y),
    "real_div": lambda x, y: np.true_divide(x, y),
    "maximum": lambda x, y: np.maximum(x, y),
    "minimum": lambda x, y: np.minimum(x, y),
    "pow": lambda x, y: np.power(x, y),
    "select": lambda cond, a, b: np.where(cond, a, b),
    # Elementwise unary
    "clip": lambda x, alpha, beta: np.minimum(np.maximum(x, alpha), beta),
    "sigmoid": _sigmoid,
    "tanh": lambda x: np.tanh(x),
    "exp": lambda x: np.exp(x),
    "log": lambda x, epsilon=1e-45: np.log(x + epsilon),
    "abs": lambda x: np.abs(x),
    "sqrt": lambda x: np.sqrt(x),
    "square": lambda x: np.square(x),
    "relu": lambda x: np.maximum(x, 0.0),
    "silu": lambda x: x * _sigmoid(x),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "gelu": _gelu,
    "erf": _erf,
    # Normalization and reductions
    "batch_norm": _batch_norm,
    "reduce_sum": lambda x, axes=None, keep_dims=False: np.sum(
        x, axis=_axes(axes), keepdims=bool(keep_dims)
    ),
    "reduce_mean": lambda x, axes=None, keep_dims=False: np.mean(
        x, axis=_axes(axes), keepdims=bool(keep_dims)
    ),
    # State (iOS18): coreml_update_state is saved as write_state followed by read_state.
    "read_state": lambda input: input.value,
    "write_state": _write_state,
    "coreml_update_state": _update_state,
}

# The input names each op accepts, as MIL names them.
_PARAMETERS = {name: set(inspect.signature(fn).parameters) for name, fn in _OPS.items()}

SUPPORTED_OPS: frozenset[str] = frozenset(_OPS) | {"const"}
"""Op types `evaluate` implements; any other op raises `UnsupportedOpError`."""
