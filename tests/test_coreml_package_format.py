"""Damaged or foreign Core ML packages, read by the numpy evaluator: each damage is refused
with a PackageFormatError (or UnsupportedOpError) that names the part at fault, never an
unrelated exception or a silently wrong result.

One small package (a linear layer whose weights live in weight.bin, then tanh) is saved
once; each test damages a copy of it: the manifest, the model protobuf, a weight record.
"""

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.proto import MIL_pb2, Model_pb2  # noqa: E402

from ncps_mlx.errors import NCPSError  # noqa: E402
from ncps_mlx.export.evaluator import (  # noqa: E402
    PackageFormatError,
    UnsupportedOpError,
    evaluate,
    load_program,
)

WEIGHT = np.random.default_rng(0).uniform(-1, 1, (16, 16)).astype(np.float32)
BIAS = np.linspace(-1, 1, 16, dtype=np.float32)
MODEL = Path("Data/com.apple.CoreML/model.mlmodel")
WEIGHTS = Path("Data/com.apple.CoreML/weights/weight.bin")


def _save(program, path: Path) -> Path:
    model = ct.convert(
        program,
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.macOS13,
        skip_model_load=True,
    )
    model.save(str(path))
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    @mb.program(input_specs=[mb.TensorSpec((2, 16))], opset_version=ct.target.iOS16)
    def linear_tanh(x):
        return mb.tanh(x=mb.linear(x=x, weight=WEIGHT, bias=BIAS))

    return _save(linear_tanh, tmp_path_factory.mktemp("saved") / "p.mlpackage")


@pytest.fixture
def package(saved, tmp_path) -> Path:
    """A copy of the saved package, to damage."""
    return Path(shutil.copytree(saved, tmp_path / "p.mlpackage"))


def test_the_undamaged_package_computes_tanh_of_the_linear_layer(package):
    x = np.random.default_rng(1).uniform(-1, 1, (2, 16)).astype(np.float32)
    (out,) = evaluate(package, {"x": x})[0].values()
    expected = np.tanh(x.astype(np.float64) @ WEIGHT.T + BIAS)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


# -- damage ----------------------------------------------------------------------------


def _spec(package: Path) -> Model_pb2.Model:
    spec = Model_pb2.Model()
    spec.ParseFromString((package / MODEL).read_bytes())
    return spec


def _edit_spec(package: Path, change: Callable[[Model_pb2.Model], None]) -> None:
    spec = _spec(package)
    change(spec)
    (package / MODEL).write_bytes(spec.SerializeToString())


def _main(spec: Model_pb2.Model):
    function = spec.mlProgram.functions["main"]
    return function, function.block_specializations[function.opset]


def _operation(spec: Model_pb2.Model, kind: str):
    return next(op for op in _main(spec)[1].operations if op.type == kind)


def _weight_blob(spec: Model_pb2.Model):
    """The blobFileValue of the linear layer's weight constant."""
    for op in _main(spec)[1].operations:
        if op.type == "const" and "weight" in op.outputs[0].name:
            return op.attributes["val"].blobFileValue
    raise AssertionError("no weight constant")


def _edit_manifest(package: Path, change: Callable[[dict], object]) -> None:
    path = package / "Manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _root_entry(manifest: dict) -> dict:
    return manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]


def _edit_weight_header(package: Path, field: int, value: int) -> None:
    """Set one field of the weight record's header: sentinel, data type code, size,
    data offset (in this order)."""
    offset = _weight_blob(_spec(package)).offset
    data = bytearray((package / WEIGHTS).read_bytes())
    header = list(struct.unpack_from("<IIQQ", data, offset))
    header[field] = value
    struct.pack_into("<IIQQ", data, offset, *header)
    (package / WEIGHTS).write_bytes(bytes(data))


def _garbage_model(package):
    (package / MODEL).write_bytes(b"\xff" * 64)


def _neural_network(package):
    spec = Model_pb2.Model(specificationVersion=7)
    spec.neuralNetwork.SetInParent()
    (package / MODEL).write_bytes(spec.SerializeToString())


def _rename_main(package):
    def change(spec):
        functions = spec.mlProgram.functions
        functions["other"].CopyFrom(functions["main"])
        del functions["main"]

    _edit_spec(package, change)


def _unknown_opset(package):
    _edit_spec(package, lambda spec: setattr(_main(spec)[0], "opset", "CoreML99"))


def _list_input(package):
    _edit_spec(package, lambda spec: _main(spec)[0].inputs[0].type.listType.SetInParent())


def _string_input(package):
    def change(spec):
        _main(spec)[0].inputs[0].type.tensorType.dataType = MIL_pb2.DataType.Value("STRING")

    _edit_spec(package, change)


def _tuple_constant(package):
    def change(spec):
        value = _operation(spec, "const").attributes["val"]
        value.immediateValue.tuple.SetInParent()  # replaces the blobFileValue

    _edit_spec(package, change)


def _short_constant(package):
    def change(spec):
        value = _operation(spec, "const").attributes["val"]
        value.immediateValue.tensor.floats.values.extend([1.0, 2.0])  # declared 16x16

    _edit_spec(package, change)


def _weights_outside_model_path(package):
    _edit_spec(package, lambda spec: setattr(_weight_blob(spec), "fileName", "/etc/weight.bin"))


def _weights_missing(package):
    (package / WEIGHTS).unlink()


def _offset_past_the_end(package):
    _edit_spec(package, lambda spec: setattr(_weight_blob(spec), "offset", 10**9))


DAMAGES = {
    "manifest-not-json": (
        lambda p: (p / "Manifest.json").write_text("{not json"),
        r"Manifest.json: malformed manifest \(JSONDecodeError",
    ),
    "manifest-without-root": (
        lambda p: _edit_manifest(p, lambda m: m.pop("rootModelIdentifier")),
        r"Manifest.json: malformed manifest \(KeyError\('rootModelIdentifier'\)\)",
    ),
    "manifest-names-a-missing-file": (
        lambda p: _edit_manifest(p, lambda m: _root_entry(m).update(path="com.apple.CoreML/x")),
        r"Manifest.json: names 'com.apple.CoreML/x', which is missing",
    ),
    "manifest-escapes-the-package": (
        lambda p: _edit_manifest(p, lambda m: _root_entry(m).update(path="../../../etc/passwd")),
        r"path '../../../etc/passwd' points outside the package",
    ),
    "model-not-a-protobuf": (_garbage_model, r"model.mlmodel: not a Core ML model protobuf"),
    "model-not-an-ml-program": (
        _neural_network,
        r"model.mlmodel: a neuralNetwork, not an mlProgram",
    ),
    "no-main-function": (_rename_main, r"the program has no 'main' function"),
    "no-block-for-the-opset": (_unknown_opset, r"no block for the function's opset"),
    "input-not-a-tensor": (_list_input, r"'x': a listType, not a tensor"),
    "input-of-an-unsupported-type": (
        _string_input,
        r"'x': data type STRING is not supported here",
    ),
    "constant-of-an-unsupported-kind": (
        _tuple_constant,
        r"a value of kind 'immediateValue' is not supported here",
    ),
    "constant-of-the-wrong-size": (
        _short_constant,
        r"const holds 2 values, declared shape \(16, 16\)",
    ),
    "weights-outside-model-path": (
        _weights_outside_model_path,
        r"weight file '/etc/weight.bin' is not under @model_path",
    ),
    "weight-file-missing": (_weights_missing, r"weight file .*weight.bin is missing"),
    "weight-header-past-the-end": (
        _offset_past_the_end,
        r"at offset 1000000000: blob header beyond the file's \d+ bytes",
    ),
    "weight-of-another-data-type": (
        lambda p: _edit_weight_header(p, 1, 1),  # fp16's code, for fp32 values
        r"blob data type code 1, declared float32",
    ),
    "weight-size-not-its-shape": (
        lambda p: _edit_weight_header(p, 2, 16 * 4),
        r"64 bytes, declared \(16, 16\) float32",
    ),
    "weight-data-past-the-end": (
        lambda p: _edit_weight_header(p, 3, 10**9),
        r"blob data beyond the end of the file",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_package_is_refused_naming_the_damage(package, damage):
    apply, message = DAMAGES[damage]
    apply(package)
    with pytest.raises(PackageFormatError, match=message) as raised:
        load_program(package)
    assert isinstance(raised.value, NCPSError)


# -- ops the package declares otherwise than they compute --------------------------------


def _refused_at_evaluation(package, error, message):
    program = load_program(package)
    with pytest.raises(error, match=message):
        evaluate(program, {"x": np.zeros((2, 16), np.float32)})


def test_an_op_input_the_evaluator_does_not_know_is_refused(package):
    def change(spec):
        tanh = _operation(spec, "tanh")
        tanh.inputs["alpha"].arguments.add().name = "x"

    _edit_spec(package, change)
    _refused_at_evaluation(package, UnsupportedOpError, r"op 'tanh': inputs \['alpha'\] are not")


def test_an_op_declaring_more_outputs_than_it_computes_is_refused(package):
    def change(spec):
        tanh = _operation(spec, "tanh")
        extra = tanh.outputs.add()
        extra.CopyFrom(tanh.outputs[0])
        extra.name = "second"

    _edit_spec(package, change)
    _refused_at_evaluation(
        package, PackageFormatError, r"op 'tanh' produced 1 values, the package declares 2"
    )


def test_an_op_declaring_another_shape_than_it_computes_is_refused(package):
    def change(spec):
        dimensions = _operation(spec, "tanh").outputs[0].type.tensorType.dimensions
        dimensions[1].constant.size = 8

    _edit_spec(package, change)
    _refused_at_evaluation(
        package,
        PackageFormatError,
        r"op 'tanh' output 'tanh_0': computed shape \(2, 16\), the package declares \(2, 8\)",
    )


# -- ops and options the evaluator has that the exporter does not use yet --------------


def _run(tmp_path, fn, *inputs):
    specs = [mb.TensorSpec(value.shape) for value in inputs]
    program = mb.program(input_specs=specs, opset_version=ct.target.iOS16)(fn)
    path = _save(program, tmp_path / "op.mlpackage")
    feeds = {f"x{i}" if len(inputs) > 1 else "x": v for i, v in enumerate(inputs)}
    names = list(load_program(path).inputs)
    outputs, _ = evaluate(path, dict(zip(names, feeds.values(), strict=True)))
    return outputs


def test_interleaved_concat_takes_one_slice_of_each_input_in_turn(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = -np.arange(6, dtype=np.float32).reshape(2, 3) - 10

    def concat(x0, x1):
        return mb.concat(values=[x0, x1], axis=1, interleave=True)

    (out,) = _run(tmp_path, concat, a, b).values()
    np.testing.assert_array_equal(out, [[0, -10, 1, -11, 2, -12], [3, -13, 4, -14, 5, -15]])


def test_batch_norm_without_scale_and_shift_only_normalises(tmp_path):
    x = np.random.default_rng(2).normal(size=(2, 3, 4)).astype(np.float32)
    mean = np.array([0.5, -1.0, 2.0], np.float32)
    variance = np.array([1.0, 4.0, 0.25], np.float32)

    def batch_norm(x):
        return mb.batch_norm(x=x, mean=mean, variance=variance, epsilon=0.0)

    (out,) = _run(tmp_path, batch_norm, x).values()
    expected = (x - mean[:, None]) / np.sqrt(variance[:, None])
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
