"""The numpy evaluator of saved Core ML packages, checked against independent numpy code.

Every test builds a small MIL program, converts and saves it, and evaluates the saved
package, so what is checked is what Core ML would load, not the builder's program.
"""

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402
from coremltools.proto.FeatureTypes_pb2 import ArrayFeatureType  # noqa: E402

from ncps_mlx.errors import NCPSError, see  # noqa: E402
from ncps_mlx.export.evaluator import (  # noqa: E402
    SUPPORTED_OPS,
    PackageFormatError,
    UnsupportedOpError,
    evaluate,
    load_program,
)

FP32_TOL = {"rtol": 1e-6, "atol": 1e-6}
FP16_ULP = {"rtol": 2.0**-10, "atol": 2.0**-24}  # one fp16 unit in the last place
RNG = np.random.default_rng(0)


def _save(prog, path: Path, precision: str = "fp32", **convert_args: Any) -> Path:
    compute_precision = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    convert_args.setdefault("minimum_deployment_target", ct.target.macOS13)
    model = ct.convert(
        prog,
        convert_to="mlprogram",
        compute_precision=compute_precision,
        skip_model_load=True,
        **convert_args,
    )
    model.save(str(path))
    return path


def _program(fn, *shapes, opset=None):
    specs = [mb.TensorSpec(shape) for shape in shapes]
    return mb.program(input_specs=specs, opset_version=opset or ct.target.iOS16)(fn)


def _f16(value) -> np.ndarray:
    """Round to fp16, keeping float64 for the next step of a reference computation."""
    return np.asarray(value, np.float64).astype(np.float16).astype(np.float64)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


_erf = np.vectorize(math.erf)


def _const(*shape, low=-1.0, high=1.0, rng=RNG) -> np.ndarray:
    return rng.uniform(low, high, shape).astype(np.float32)


@pytest.fixture
def rng():
    """A generator per test, so values do not depend on which tests run."""
    return np.random.default_rng(1)


# --- one program per op family, checked at fp32 --------------------------------------


@dataclass
class Case:
    id: str
    op: str  # the op type the saved program must contain
    build: Any  # MIL builder function of the inputs
    reference: Any  # numpy function of the inputs (float64), array or tuple of arrays
    shapes: tuple = ((2, 4),)
    low: float = -2.0  # input range
    high: float = 2.0


C4, C3, W34, B3 = _const(4), _const(3), _const(3, 4), _const(3)
POS4 = _const(4, low=0.5, high=2.0)
W43 = _const(4, 3)
COND = RNG.uniform(size=(2, 4)) > 0.5
BN = [_const(3), _const(3, low=0.5, high=2.0), _const(3), _const(3)]

CASES = [
    # elementwise unary
    Case("sigmoid", "sigmoid", lambda x: mb.sigmoid(x=x), _sigmoid),
    Case("tanh", "tanh", lambda x: mb.tanh(x=x), np.tanh),
    Case("exp", "exp", lambda x: mb.exp(x=x), np.exp),
    Case("log", "log", lambda x: mb.log(x=x), np.log, low=0.1),
    Case("abs", "abs", lambda x: mb.abs(x=x), np.abs),
    Case("sqrt", "sqrt", lambda x: mb.sqrt(x=x), np.sqrt, low=0.1),
    Case("square", "square", lambda x: mb.square(x=x), np.square),
    Case("relu", "relu", lambda x: mb.relu(x=x), lambda x: np.maximum(x, 0)),
    Case("silu", "silu", lambda x: mb.silu(x=x), lambda x: x * _sigmoid(x)),
    Case("softplus", "softplus", lambda x: mb.softplus(x=x), lambda x: np.log1p(np.exp(x))),
    Case("erf", "erf", lambda x: mb.erf(x=x), _erf),
    Case(
        "gelu_exact",
        "gelu",
        lambda x: mb.gelu(x=x, mode="EXACT"),
        lambda x: x * 0.5 * (1 + _erf(x / np.sqrt(2))),
    ),
    Case(
        "gelu_tanh",
        "gelu",
        lambda x: mb.gelu(x=x, mode="TANH_APPROXIMATION"),
        lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
    ),
    Case(
        "gelu_sigmoid",
        "gelu",
        lambda x: mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"),
        lambda x: x * _sigmoid(1.702 * x),
    ),
    Case("identity", "identity", lambda x: mb.identity(x=x), lambda x: x),
    Case(
        "clip",
        "clip",
        lambda x: mb.clip(x=x, alpha=np.float32(-0.5), beta=np.float32(0.7)),
        lambda x: np.clip(x, -0.5, 0.7),
    ),
    # elementwise binary, with a broadcast constant or a second input
    Case("add", "add", lambda x: mb.add(x=x, y=C4), lambda x: x + C4),
    Case("sub", "sub", lambda x: mb.sub(x=C4, y=x), lambda x: C4 - x),
    Case("mul", "mul", lambda x: mb.mul(x=x, y=C4), lambda x: x * C4),
    Case("real_div", "real_div", lambda x: mb.real_div(x=x, y=POS4), lambda x: x / POS4),
    Case("maximum", "maximum", lambda x: mb.maximum(x=x, y=C4), lambda x: np.maximum(x, C4)),
    Case("minimum", "minimum", lambda x: mb.minimum(x=x, y=C4), lambda x: np.minimum(x, C4)),
    Case("pow", "pow", lambda x: mb.pow(x=x, y=C4), lambda x: x**C4, low=0.5),
    Case(
        "add_inputs_broadcast",
        "add",
        lambda x, y: mb.add(x=x, y=y),
        lambda x, y: x + y,
        shapes=((2, 1, 4), (3, 1)),
    ),
    Case(
        "select",
        "select",
        lambda x, y: mb.select(cond=COND, a=x, b=y),
        lambda x, y: np.where(COND, x, y),
        shapes=((2, 4), (2, 4)),
    ),
    # casts: through fp16 and back, and to int32 (truncates toward zero)
    Case(
        "cast_fp16",
        "cast",
        lambda x: mb.cast(x=mb.cast(x=x, dtype="fp16"), dtype="fp32"),
        _f16,
    ),
    Case(
        "cast_int32",
        "cast",
        lambda x: mb.cast(x=x, dtype="int32"),
        lambda x: np.trunc(x).astype(np.int32),
        low=-5.0,
        high=5.0,
    ),
    # shapes
    Case(
        "reshape",
        "reshape",
        lambda x: mb.reshape(x=x, shape=[0, 3, -1]),
        lambda x: x.reshape(2, 3, 4),
        shapes=((2, 4, 3),),
    ),
    Case(
        "expand_dims",
        "expand_dims",
        lambda x: mb.expand_dims(x=x, axes=[0, -1]),
        lambda x: x[None, :, :, None],
    ),
    Case(
        "squeeze_axes",
        "squeeze",
        lambda x: mb.squeeze(x=x, axes=[1]),
        lambda x: x[:, 0],
        shapes=((2, 1, 4, 1),),
    ),
    Case(
        "squeeze_all",
        "squeeze",
        lambda x: mb.squeeze(x=x),
        lambda x: x[:, 0, :, 0],
        shapes=((2, 1, 4, 1),),
    ),
    Case(
        "transpose",
        "transpose",
        lambda x: mb.transpose(x=x, perm=[1, 2, 0]),
        lambda x: x.transpose(1, 2, 0),
        shapes=((2, 4, 3),),
    ),
    Case(
        "split_num_splits",
        "split",
        lambda x: tuple(mb.split(x=x, num_splits=2, axis=1)),
        lambda x: (x[:, :2], x[:, 2:]),
    ),
    Case(
        "split_sizes",
        "split",
        lambda x: tuple(mb.split(x=x, split_sizes=[1, 3], axis=-1)),
        lambda x: (x[:, :1], x[:, 1:]),
    ),
    Case(
        "concat",
        "concat",
        lambda x, y: mb.concat(values=[x, y, x], axis=0),
        lambda x, y: np.concatenate([x, y, x], axis=0),
        shapes=((2, 4), (1, 4)),
    ),
    Case(
        "stack",
        "stack",
        lambda x, y: mb.stack(values=[x, y], axis=1),
        lambda x, y: np.stack([x, y], axis=1),
        shapes=((2, 4), (2, 4)),
    ),
    Case(
        "slice_by_index",
        "slice_by_index",
        lambda x: mb.slice_by_index(
            x=x,
            begin=[1, 0, 2],
            end=[3, 5, 0],
            stride=[1, 2, 1],
            begin_mask=[False, True, False],
            end_mask=[False, False, True],
        ),
        lambda x: x[1:3, :5:2, 2:],
        shapes=((4, 6, 3),),
    ),
    Case(
        "slice_by_index_reverse_squeeze",
        "slice_by_index",
        lambda x: mb.slice_by_index(
            x=x,
            begin=[-1, 1, 0],
            end=[0, 0, 0],
            stride=[-1, 1, -2],
            begin_mask=[False, False, True],
            end_mask=[True, False, True],
            squeeze_mask=[False, True, False],
        ),
        lambda x: x[::-1, 1, ::-2],
        shapes=((4, 6, 3),),
    ),
    Case(
        "slice_by_size",
        "slice_by_size",
        lambda x: mb.slice_by_size(x=x, begin=[1, 2], size=[2, -1]),
        lambda x: x[1:3, 2:],
        shapes=((4, 6),),
    ),
    # linear algebra
    Case(
        "linear",
        "linear",
        lambda x: mb.linear(x=x, weight=W34, bias=B3),
        lambda x: x @ W34.T + B3,
    ),
    Case("matmul", "matmul", lambda x: mb.matmul(x=x, y=W43), lambda x: x @ W43),
    Case(
        "matmul_transpose_x",
        "matmul",
        lambda x: mb.matmul(x=x, y=W43, transpose_x=True),
        lambda x: x.T @ W43,
        shapes=((4, 2),),
    ),
    Case(
        "matmul_transpose_y_batched",
        "matmul",
        lambda x, y: mb.matmul(x=x, y=y, transpose_y=True),
        lambda x, y: x @ np.swapaxes(y, -1, -2),
        shapes=((2, 3, 4), (2, 5, 4)),
    ),
    # normalization and reductions
    Case(
        "batch_norm",
        "batch_norm",
        lambda x: mb.batch_norm(
            x=x, mean=BN[0], variance=BN[1], gamma=BN[2], beta=BN[3], epsilon=np.float32(1e-3)
        ),
        lambda x: (
            (x - BN[0][:, None, None])
            / np.sqrt(BN[1][:, None, None] + np.float32(1e-3))
            * BN[2][:, None, None]
            + BN[3][:, None, None]
        ),
        shapes=((2, 3, 2, 2),),
    ),
    Case(
        "reduce_sum",
        "reduce_sum",
        lambda x: mb.reduce_sum(x=x, axes=[1], keep_dims=True),
        lambda x: x.sum(axis=1, keepdims=True),
        shapes=((2, 4, 3),),
    ),
    Case(
        "reduce_mean",
        "reduce_mean",
        lambda x: mb.reduce_mean(x=x, axes=[0, -1]),
        lambda x: x.mean(axis=(0, 2)),
        shapes=((2, 4, 3),),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_op_matches_numpy_at_fp32(rng, case, tmp_path):
    prog = _program(case.build, *case.shapes)
    # The empty pipeline keeps the op as built (the default one removes identity, say).
    path = _save(prog, tmp_path / "op.mlpackage", pass_pipeline=ct.PassPipeline.EMPTY)
    program = load_program(path)
    assert case.op in program.op_types
    xs = [rng.uniform(case.low, case.high, shape).astype(np.float32) for shape in case.shapes]

    outputs, states = evaluate(program, dict(zip(program.inputs, xs, strict=True)))

    expected = case.reference(*[x.astype(np.float64) for x in xs])
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert list(outputs) == program.outputs and states == {}
    for name, want in zip(program.outputs, expected, strict=True):
        assert outputs[name].shape == np.shape(want)
        np.testing.assert_allclose(outputs[name], want, **FP32_TOL)


# --- convolution ---------------------------------------------------------------------


def _conv_reference(x, w, bias, strides, pads, dilations, groups):
    """Direct loops over output positions; pads are ((top, bottom), (left, right))."""
    x = np.pad(x, [(0, 0), (0, 0), *pads])
    n, _, height, width = x.shape
    c_out, c_group, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    out_h = (height - (kh - 1) * dh - 1) // sh + 1
    out_w = (width - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((n, c_out, out_h, out_w))
    for o in range(c_out):
        g = o // (c_out // groups)
        for i in range(out_h):
            for j in range(out_w):
                patch = x[
                    :,
                    g * c_group : (g + 1) * c_group,
                    i * sh : i * sh + (kh - 1) * dh + 1 : dh,
                    j * sw : j * sw + (kw - 1) * dw + 1 : dw,
                ]
                out[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3)) + bias[o]
    return out


CONV_CASES = {
    # id: (input shape, weight shape, conv arguments, expected explicit pads)
    "valid_3x3": ((1, 2, 5, 6), (3, 2, 3, 3), {"pad_type": "valid"}, ((0, 0), (0, 0))),
    # same, stride 2: H 7 -> 4 needs 2 rows (1, 1); W 6 -> 3 needs 1 column, after
    "same_stride2": (
        (2, 2, 7, 6),
        (4, 2, 3, 3),
        {"pad_type": "same", "strides": [2, 2]},
        ((1, 1), (0, 1)),
    ),
    # an even kernel needs an odd total: 'same' pads after, 'same_lower' before
    "same_even_kernel": ((1, 2, 4, 5), (2, 2, 2, 2), {"pad_type": "same"}, ((0, 1), (0, 1))),
    "same_lower_even_kernel": (
        (1, 2, 4, 5),
        (2, 2, 2, 2),
        {"pad_type": "same_lower"},
        ((1, 0), (1, 0)),
    ),
    "custom_dilated_grouped": (
        (2, 4, 6, 5),
        (6, 2, 2, 3),
        {"pad_type": "custom", "pad": [1, 0, 2, 1], "dilations": [2, 1], "groups": 2},
        ((1, 0), (2, 1)),
    ),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_matches_direct_loops(rng, case, tmp_path):
    x_shape, w_shape, args, pads = CONV_CASES[case]
    weight, bias = _const(*w_shape, rng=rng), _const(w_shape[0], rng=rng)
    prog = _program(lambda x: mb.conv(x=x, weight=weight, bias=bias, **args), x_shape)
    program = load_program(_save(prog, tmp_path / "conv.mlpackage"))
    assert "conv" in program.op_types
    x = rng.uniform(-1, 1, x_shape).astype(np.float32)

    (out,) = evaluate(program, {"x": x})[0].values()

    expected = _conv_reference(
        x.astype(np.float64),
        weight,
        bias,
        args.get("strides", [1, 1]),
        pads,
        args.get("dilations", [1, 1]),
        args.get("groups", 1),
    )
    np.testing.assert_allclose(out, expected, **FP32_TOL)


def _pointwise_conv_package(rng, tmp_path: Path, precision: str):
    """A 1x1 conv on the (B, C, 1, S) layout; its 128 weights go to weight.bin."""
    weight, bias = _const(16, 8, 1, 1, rng=rng), _const(16, rng=rng)
    prog = _program(lambda x: mb.conv(x=x, weight=weight, bias=bias), (2, 8, 1, 5))
    return _save(prog, tmp_path / f"pointwise_{precision}.mlpackage", precision), weight, bias


def _blob_offsets(program) -> dict[str, int]:
    """The weight.bin offsets of the consts saved there, by const name."""
    function = program.spec.mlProgram.functions["main"]
    return {
        op.outputs[0].name: op.attributes["val"].blobFileValue.offset
        for op in function.block_specializations[function.opset].operations
        if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue"
    }


def _weight_offset(path: Path) -> int:
    (offset,) = [v for k, v in _blob_offsets(load_program(path)).items() if "weight" in k]
    return offset


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_pointwise_conv_reads_weight_file(rng, precision, tmp_path):
    path, weight, bias = _pointwise_conv_package(rng, tmp_path, precision)
    program = load_program(path)
    assert len(_blob_offsets(program)) == 2  # weight and bias
    x = rng.uniform(-1, 1, (2, 8, 1, 5)).astype(np.float32)

    (out,) = evaluate(program, {"x": x})[0].values()

    w = weight[:, :, 0, 0].astype(np.float64)
    if precision == "fp32":
        expected = np.einsum("oc,bcs->bos", w, x[:, :, 0])[:, :, None] + bias[:, None, None]
        np.testing.assert_allclose(out, expected, **FP32_TOL)
    else:
        product = np.einsum("oc,bcs->bos", _f16(w), _f16(x[:, :, 0]))[:, :, None]
        expected = _f16(product + _f16(bias)[:, None, None])
        assert program.op_types == ["cast", "conv", "cast"]
        np.testing.assert_allclose(out, expected, **FP16_ULP)


def test_tampered_weight_changes_result(rng, tmp_path):
    path, weight, bias = _pointwise_conv_package(rng, tmp_path, "fp32")
    x = rng.uniform(-1, 1, (2, 8, 1, 5)).astype(np.float32)
    (before,) = evaluate(path, {"x": x})[0].values()
    weight_file = path / "Data/com.apple.CoreML/weights/weight.bin"
    data = bytearray(weight_file.read_bytes())
    offset = _weight_offset(path)
    start = struct.unpack_from("<Q", data, offset + 16)[0]
    data[start + 3] ^= 0x80  # the sign bit of weight[0, 0] (little-endian fp32)
    weight_file.write_bytes(bytes(data))

    (after,) = evaluate(path, {"x": x})[0].values()

    # Only output channel 0 moves, by exactly -2 * weight[0, 0] * x[:, 0].
    np.testing.assert_array_equal(after[:, 1:], before[:, 1:])
    change = -2.0 * weight[0, 0, 0, 0] * x[:, 0, 0].astype(np.float64)
    np.testing.assert_allclose(after[:, 0, 0] - before[:, 0, 0], change, **FP32_TOL)


def test_corrupted_sentinel_is_a_format_error(rng, tmp_path):
    path, _, _ = _pointwise_conv_package(rng, tmp_path, "fp32")
    weight_file = path / "Data/com.apple.CoreML/weights/weight.bin"
    data = bytearray(weight_file.read_bytes())
    offset = _weight_offset(path)
    data[offset : offset + 4] = b"\0\0\0\0"
    weight_file.write_bytes(bytes(data))

    with pytest.raises(PackageFormatError, match="sentinel"):
        load_program(path)


def test_missing_manifest_is_a_format_error(tmp_path):
    (tmp_path / "empty.mlpackage").mkdir()
    with pytest.raises(PackageFormatError, match="Manifest.json") as raised:
        load_program(tmp_path / "empty.mlpackage")
    assert str(raised.value).endswith("\n" + see("package-format"))


# --- fp16 programs -------------------------------------------------------------------

W_MLP, B_MLP, S_MLP = _const(3, 4), _const(3), _const(3, low=1.0, high=3.0)


def _mlp(x):
    hidden = mb.tanh(x=mb.linear(x=x, weight=W_MLP, bias=B_MLP))
    return mb.sigmoid(x=mb.mul(x=hidden, y=S_MLP))


def _mlp_reference(x, round_):
    """The MLP in float64, with ``round_`` applied to every op result and constant."""
    hidden = round_(np.tanh(round_(round_(x) @ round_(W_MLP).T + round_(B_MLP))))
    return round_(_sigmoid(round_(hidden * round_(S_MLP))))


def test_fp16_program_rounds_every_op(rng, tmp_path):
    shape = (32, 4)
    x = rng.uniform(-2, 2, shape).astype(np.float32)
    program16 = load_program(_save(_program(_mlp, shape), tmp_path / "m16.mlpackage", "fp16"))
    program32 = load_program(_save(_program(_mlp, shape), tmp_path / "m32.mlpackage", "fp32"))
    assert program16.op_types == ["cast", "linear", "tanh", "mul", "sigmoid", "cast"]
    assert program32.op_types == ["linear", "tanh", "mul", "sigmoid"]

    (out16,) = evaluate(program16, {"x": x})[0].values()
    (out32,) = evaluate(program32, {"x": x})[0].values()

    assert out16.dtype == out32.dtype == np.float32  # the package casts back at the output
    np.testing.assert_allclose(out32, _mlp_reference(x, lambda v: v), **FP32_TOL)
    # Both compute each op exactly and round it once, so they agree to the bit.
    np.testing.assert_array_equal(out16, _mlp_reference(x, _f16))
    # The intermediate roundings matter: rounding only the final result differs.
    assert not np.array_equal(out16, _f16(out32))
    np.testing.assert_allclose(out16, out32, rtol=1e-2, atol=1e-3)


def test_fp16_inputs_and_outputs(rng, tmp_path):
    model = ct.convert(
        _program(_mlp, (2, 4)),
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16,
        minimum_deployment_target=ct.target.macOS13,
        skip_model_load=True,
    )
    fp32, fp16 = ArrayFeatureType.FLOAT32, ArrayFeatureType.FLOAT16
    model = ct.utils.change_input_output_tensor_type(
        model, from_type=fp32, to_type=fp16, input_names=["x"]
    )
    model = ct.utils.change_input_output_tensor_type(model, from_type=fp32, to_type=fp16)
    model.save(str(tmp_path / "io16.mlpackage"))
    program = load_program(tmp_path / "io16.mlpackage")
    assert program.inputs == {"x": ((2, 4), np.dtype(np.float16))}
    assert "cast" not in program.op_types
    x = rng.uniform(-2, 2, (2, 4))  # float64, cast to the declared fp16 on the way in

    outputs, _ = evaluate(program, {"x": x})

    (out,) = outputs.values()
    assert out.dtype == np.float16
    np.testing.assert_allclose(out, _mlp_reference(x, _f16), **FP16_ULP)


# --- stateful programs ---------------------------------------------------------------


@pytest.fixture(scope="module")
def accumulator(tmp_path_factory):
    """acc += x; returns 2 * acc. An fp16 state of shape (1, 8)."""

    @mb.program(
        input_specs=[
            mb.TensorSpec((1, 8), dtype=types.fp16),
            mb.StateTensorSpec((1, 8), dtype=types.fp16),
        ],
        opset_version=ct.target.iOS18,
    )
    def prog(x, acc):
        total = mb.add(x=mb.read_state(input=acc), y=x)
        updated = mb.coreml_update_state(state=acc, value=total)
        return mb.mul(x=updated, y=np.float16(2.0))

    path = tmp_path_factory.mktemp("stateful") / "acc.mlpackage"
    return load_program(_save(prog, path, "fp16", minimum_deployment_target=ct.target.macOS15))


def test_state_accumulates_across_calls(rng, accumulator):
    assert accumulator.inputs == {"x": ((1, 8), np.dtype(np.float16))}
    assert accumulator.states == {"acc": ((1, 8), np.dtype(np.float16))}
    # The saved program spells coreml_update_state as write_state then read_state.
    assert "write_state" in accumulator.op_types
    x1, x2 = (rng.uniform(-2, 2, (1, 8)).astype(np.float16) for _ in range(2))

    out1, states1 = evaluate(accumulator, {"x": x1})  # a fresh state is zeros
    out2, states2 = evaluate(accumulator, {"x": x2}, states1)

    np.testing.assert_array_equal(states1["acc"], x1)
    total = (x1.astype(np.float64) + x2).astype(np.float16)
    np.testing.assert_array_equal(states2["acc"], total)
    np.testing.assert_array_equal(out1["mul_0"], (2 * x1.astype(np.float64)).astype(np.float16))
    np.testing.assert_array_equal(out2["mul_0"], (2 * total.astype(np.float64)).astype(np.float16))
    assert states2["acc"].dtype == out2["mul_0"].dtype == np.float16


def test_given_state_is_not_modified(accumulator):
    start = np.ones((1, 8), np.float16)
    _, states = evaluate(accumulator, {"x": start}, {"acc": start})
    np.testing.assert_array_equal(states["acc"], 2 * start)
    np.testing.assert_array_equal(start, 1)
    with pytest.raises(ValueError, match="unknown state"):
        evaluate(accumulator, {"x": start}, {"accumulator": start})


# --- errors --------------------------------------------------------------------------


def test_unsupported_op_is_named(tmp_path):
    path = _save(_program(lambda x: mb.argsort(x=x), (2, 4)), tmp_path / "sort.mlpackage")
    program = load_program(path)
    assert program.op_types == ["argsort"]
    assert "argsort" not in SUPPORTED_OPS

    with pytest.raises(UnsupportedOpError, match="'argsort'.*supported: abs, add") as info:
        evaluate(program, {"x": np.zeros((2, 4))})
    assert isinstance(info.value, NCPSError)


@pytest.fixture(scope="module")
def mlp_fp32(tmp_path_factory):
    path = tmp_path_factory.mktemp("mlp") / "mlp.mlpackage"
    return load_program(_save(_program(_mlp, (2, 4)), path))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "missing input 'x'"),
        ({"x": np.zeros((2, 4)), "y": np.zeros(1)}, r"unknown input\(s\) \['y'\]"),
        ({"x": np.zeros((4, 2))}, r"input 'x': expected shape \(2, 4\), got \(4, 2\)"),
    ],
    ids=["missing", "unknown", "shape"],
)
def test_bad_inputs_raise_value_error(mlp_fp32, inputs, message):
    with pytest.raises(ValueError, match=message):
        evaluate(mlp_fp32, inputs)


def test_supported_ops_cover_the_op_table():
    tested = {case.op for case in CASES} | {"conv", "const", "read_state", "write_state"}
    assert tested <= SUPPORTED_OPS
    # coreml_update_state is only ever saved as write_state + read_state.
    assert SUPPORTED_OPS - tested == {"coreml_update_state"}
