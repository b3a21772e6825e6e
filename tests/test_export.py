"""Core ML export: every kind of every supported model exports, saves and verifies.

The saved packages are evaluated by the numpy evaluator (Core ML itself only runs on
macOS) and compared with the MLX model over multi-step rollouts.
"""

import json
import struct
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest

pytest.importorskip("coremltools")

import ncps_mlx  # noqa: E402
from ncps_mlx import LTC, CfC, cli  # noqa: E402
from ncps_mlx.export import coreml, read_metadata, to_coreml, verify  # noqa: E402
from ncps_mlx.export.evaluator import evaluate, load_program  # noqa: E402
from ncps_mlx.export.verify import CoreMLRuntime  # noqa: E402
from ncps_mlx.wirings import NCP, AutoNCP, Random  # noqa: E402

FP32_TOLERANCE = 1e-4  # relative to the output's largest magnitude
FP16_TOLERANCE = 3e-2
BATCH, STEPS = 2, 6


def _ncp():
    return NCP(4, 3, 2, 3, 2, 2, 2)


# name -> (builder, exported with timespans)
MODELS = {
    "cfc_default": (lambda: CfC(3, 6, backbone_units=8), True),
    "cfc_pure_silu_2_layers": (
        lambda: CfC(3, 6, mode="pure", backbone_layers=2, backbone_units=8, activation="silu"),
        True,
    ),
    "cfc_no_gate_no_backbone": (lambda: CfC(3, 6, mode="no_gate", backbone_layers=0), False),
    "cfc_ncp": (lambda: CfC(3, AutoNCP(10, 2)), True),
    "cfc_ncp_strict_pure": (lambda: CfC(3, _ncp(), mode="pure", strict_wiring=True), False),
    "cfc_mixed_proj_last": (
        lambda: CfC(3, 6, backbone_units=8, mixed_memory=True, proj_size=2, return_sequences=False),
        True,
    ),
    "ltc_autoncp": (lambda: LTC(3, AutoNCP(10, 2)), True),
    "ltc_fc_linear_3_unfolds": (
        lambda: LTC(3, 5, input_mapping="linear", output_mapping=None, ode_unfolds=3),
        False,
    ),
    "ltc_random_rk4": (
        lambda: LTC(
            3, Random(6, 2, sparsity_level=0.5, random_seed=3), solver="rk4", ode_unfolds=2
        ),
        True,
    ),
    "ltc_ncp_euler_unmapped": (
        lambda: LTC(3, _ncp(), solver="explicit_euler", input_mapping=None, ode_unfolds=4),
        False,
    ),
    "ltc_mixed_proj": (lambda: LTC(3, AutoNCP(10, 2), mixed_memory=True, proj_size=2), True),
}
CASES = [
    ("step", "float32"),
    ("sequence", "float32"),
    ("step", "float16"),
    ("sequence", "float16"),
    ("stateful", "float16"),
]


@pytest.fixture(scope="module")
def models():
    built = {}
    for index, (name, (build, _)) in enumerate(MODELS.items()):
        mx.random.seed(index)
        built[name] = build()
    return built


def _inputs(model, timespans: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = {
        "x": rng.normal(size=(BATCH, STEPS, model.input_size)),
        "h": rng.uniform(-0.5, 0.5, size=(BATCH, model.state_size)),
    }
    if model.mixed_memory:
        inputs["c"] = rng.uniform(-0.5, 0.5, size=(BATCH, model.state_size))
    if timespans:
        inputs["dt"] = rng.uniform(0.2, 2.0, size=(BATCH, STEPS))
    return inputs


def _export(model, path: Path, kind: str, precision: str, timespans: bool) -> Path:
    return to_coreml(
        model,
        path,
        kind=kind,
        precision=precision,
        batch_size=BATCH,
        seq_len=STEPS if kind == "sequence" else None,
        timespans=timespans,
    )


@pytest.mark.parametrize("kind,precision", CASES)
@pytest.mark.parametrize("name", list(MODELS))
def test_export_matches_mlx(models, name, kind, precision, tmp_path):
    model, timespans = models[name], MODELS[name][1]
    path = _export(model, tmp_path / f"{name}.mlpackage", kind, precision, timespans)

    report = verify(path, model, _inputs(model, timespans))

    tolerance = FP32_TOLERANCE if precision == "float32" else FP16_TOLERANCE
    assert report.max_rel_error < tolerance, str(report)
    assert set(report.outputs) == {"y", "h_out"} | ({"c_out"} if model.mixed_memory else set())
    assert report.steps == STEPS
    assert not report.coreml  # no Core ML runtime off macOS


def _program_ops(path: Path) -> list[str]:
    return load_program(path).op_types


@pytest.mark.parametrize("name", ["cfc_mixed_proj_last", "cfc_ncp", "ltc_mixed_proj"])
@pytest.mark.parametrize("kind", ["step", "stateful", "sequence"])
def test_packages_hold_only_neural_engine_friendly_ops(models, name, kind, tmp_path):
    path = _export(models[name], tmp_path / "m.mlpackage", kind, "float16", True)
    ops = _program_ops(path)

    assert set(ops) <= coreml.ALLOWED_OPS, sorted(set(ops) - coreml.ALLOWED_OPS)
    # Layout changes happen at the boundary only: a step has none inside.
    boundary = {"step": 0, "stateful": 0, "sequence": 2}[kind]
    assert ops.count("transpose") <= boundary
    assert "conv" in ops and "linear" not in ops and "matmul" not in ops


def test_float16_package_is_float16_end_to_end(models, tmp_path):
    path = _export(models["ltc_autoncp"], tmp_path / "m.mlpackage", "step", "float16", True)
    program = load_program(path)
    assert {dtype for _, dtype in program.inputs.values()} == {np.dtype(np.float16)}
    assert "cast" not in program.op_types
    outputs, _ = evaluate(
        program,
        {
            k: v[:, 0] if k == "x" else v
            for k, v in {
                "x": np.zeros((BATCH, 1, 3)),
                "h": np.zeros((BATCH, 10)),
                "dt": np.ones((BATCH, 1)),
            }.items()
        },
    )
    assert all(value.dtype == np.float16 for value in outputs.values())


def test_interface_names_and_metadata(models, tmp_path):
    model = models["cfc_mixed_proj_last"]
    step = read_metadata(_export(model, tmp_path / "s.mlpackage", "step", "float16", True))
    assert step["inputs"] == {"x": [2, 3], "h": [2, 6], "c": [2, 6], "dt": [2, 1]}
    assert step["outputs"] == {"y": [2, 2], "h_out": [2, 6], "c_out": [2, 6]}
    assert step["timespan_range"] == list(coreml.FP16_TIMESPAN_RANGE["CfC"])
    assert step["model"] == model.get_config()
    assert step["ncps_mlx_version"] == ncps_mlx.__version__

    sequence = read_metadata(_export(model, tmp_path / "q.mlpackage", "sequence", "float32", False))
    assert sequence["inputs"] == {"x": [2, STEPS, 3], "h0": [2, 6], "c0": [2, 6]}
    assert sequence["outputs"]["y"] == [2, 2]  # return_sequences=False: the last step only
    assert sequence["timespan_range"] is None

    stateful = read_metadata(_export(model, tmp_path / "t.mlpackage", "stateful", "float16", False))
    assert stateful["inputs"] == {"x": [2, 3]}
    assert stateful["states"] == {"h": [2, 6], "c": [2, 6]}
    assert stateful["outputs"] == {"y": [2, 2]}


def test_float16_clamps_timespans_to_the_documented_range(models, tmp_path):
    model = models["ltc_autoncp"]
    path = _export(model, tmp_path / "m.mlpackage", "step", "float16", True)
    inputs = _inputs(model, True)
    low, high = coreml.FP16_TIMESPAN_RANGE["LTC"]
    tiny = dict(inputs, dt=np.full((BATCH, STEPS), low / 100))
    clamped = dict(inputs, dt=np.full((BATCH, STEPS), low))

    # Far below the range the package behaves as at the range's edge, without overflow.
    def package(i):
        feed = {"x": i["x"][:, 0], "h": i["h"], "dt": i["dt"][:, :1]}
        return evaluate(path, feed)[0]["h_out"].astype(np.float32)

    np.testing.assert_array_equal(package(tiny), package(clamped))
    assert np.isfinite(package(tiny)).all()
    assert high > 1.0


def _largest_weight_offset(path: Path) -> tuple[int, int]:
    """Byte offset and dtype code of the largest-magnitude element of the biggest blob."""
    program = load_program(path)
    function = program.spec.mlProgram.functions["main"]
    offsets = [
        op.attributes["val"].blobFileValue.offset
        for op in function.block_specializations[function.opset].operations
        if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue"
    ]
    data = (path / "Data/com.apple.CoreML/weights/weight.bin").read_bytes()
    records = [struct.unpack_from("<IIQQ", data, offset) for offset in offsets]
    _, code, size, start = max(records, key=lambda record: record[2])
    dtype = {1: np.float16, 2: np.float32}[code]
    values = np.frombuffer(data, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=start)
    return start + int(np.argmax(np.abs(values))) * np.dtype(dtype).itemsize, code


@pytest.mark.parametrize("name", ["cfc_ncp", "ltc_autoncp"])
def test_a_perturbed_weight_in_the_saved_file_is_caught(models, name, tmp_path):
    model, timespans = models[name], MODELS[name][1]
    path = _export(model, tmp_path / "m.mlpackage", "step", "float32", timespans)
    inputs = _inputs(model, timespans)
    assert verify(path, model, inputs).max_rel_error < FP32_TOLERANCE

    weight_file = path / "Data/com.apple.CoreML/weights/weight.bin"
    data = bytearray(weight_file.read_bytes())
    position, code = _largest_weight_offset(path)
    value = struct.unpack_from("<f", data, position)[0]
    struct.pack_into("<f", data, position, value * 1.01)  # a 1% change of one weight
    weight_file.write_bytes(bytes(data))

    assert verify(path, model, inputs).max_rel_error > FP32_TOLERANCE


@pytest.mark.parametrize(
    "arguments,message",
    [
        ({"kind": "loop"}, "unknown kind 'loop'"),
        ({"precision": "bfloat16"}, "unknown precision 'bfloat16'"),
        ({"kind": "stateful", "precision": "float32"}, "must be float16"),
        ({"kind": "sequence"}, "'seq_len' must be an int >= 1"),
        ({"kind": "step", "seq_len": 4}, "'seq_len' is only for kind='sequence'"),
        ({"batch_size": 0}, "'batch_size' must be an int >= 1"),
        ({"compute_units": "gpu"}, "unknown compute_units 'gpu'"),
        ({"kind": "stateful", "minimum_deployment_target": "macOS13"}, "needs minimum_deploy"),
        ({"minimum_deployment_target": "macOS99"}, "unknown minimum_deployment_target"),
    ],
)
def test_unsupported_requests_raise_before_writing(models, arguments, message, tmp_path):
    path = tmp_path / "m.mlpackage"
    with pytest.raises(ValueError, match=message):
        to_coreml(models["cfc_default"], path, **arguments)
    assert list(tmp_path.iterdir()) == []


def test_bad_model_and_path_raise(models, tmp_path):
    with pytest.raises(TypeError, match="CfC or LTC layer"):
        to_coreml(object(), tmp_path / "m.mlpackage")
    with pytest.raises(ValueError, match=r"must end in \.mlpackage"):
        to_coreml(models["cfc_default"], tmp_path / "m.mlmodel")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_coreml(models["cfc_default"], tmp_path / "missing" / "m.mlpackage")


def test_export_replaces_a_package_atomically(models, tmp_path, monkeypatch):
    path = tmp_path / "m.mlpackage"
    _export(models["cfc_default"], path, "step", "float32", True)
    before = read_metadata(path)

    def failing_save(self, target):
        Path(target).mkdir()
        (Path(target) / "partial").write_text("half written")
        raise OSError("disk full")

    monkeypatch.setattr("coremltools.models.MLModel.save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _export(models["cfc_ncp"], path, "step", "float32", True)

    assert read_metadata(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.mlpackage"]


def test_export_leaves_the_model_mode_alone(models, tmp_path):
    model = models["cfc_default"]
    model.train()
    _export(model, tmp_path / "m.mlpackage", "step", "float32", False)
    assert model.training
    model.eval()


@pytest.mark.parametrize(
    "inputs,message",
    [
        ({"x": np.zeros((2, 6))}, r"\(batch, steps, features\)"),
        ({"x": np.zeros((3, 6, 3)), "dt": np.ones((3, 6))}, "'x' must have shape"),
        ({"x": np.zeros((2, 6, 3))}, "pass 'dt'"),
        ({"x": np.zeros((2, 6, 3)), "dt": np.ones((2, 5))}, "'dt' must have shape"),
        ({"x": np.zeros((2, 6, 3)), "dt": np.ones((2, 6)), "c": np.zeros((2, 6))}, "unexpected"),
    ],
)
def test_verify_rejects_bad_inputs(models, inputs, message, tmp_path):
    path = _export(models["cfc_default"], tmp_path / "m.mlpackage", "step", "float32", True)
    with pytest.raises(ValueError, match=message):
        verify(path, models["cfc_default"], inputs)


class FakeRuntime(CoreMLRuntime):
    """Stands in for Core ML on Linux: 'predicts' with the numpy evaluator."""

    def __init__(self):
        self.calls = []

    def predictor(self, path, compute_units):
        self.calls.append(compute_units)
        program = load_program(path)
        return lambda inputs, states: evaluate(program, inputs, states)

    def placement(self, path, compute_units):
        return {"MLNeuralEngineComputeDevice": 40, "MLCPUComputeDevice": 2}


def test_verify_runs_core_ml_when_a_runtime_is_there(models, tmp_path):
    model = models["ltc_mixed_proj"]
    path = _export(model, tmp_path / "m.mlpackage", "stateful", "float16", True)
    runtime = FakeRuntime()

    report = verify(path, model, _inputs(model, True), runtime=runtime)

    assert runtime.calls == ["cpu_only", "cpu_and_ne"]
    assert set(report.coreml) == {"cpu_only", "cpu_and_ne"}
    assert report.coreml["cpu_and_ne"] == report.outputs
    assert report.placement["cpu_and_ne"]["MLNeuralEngineComputeDevice"] == 40
    text = str(report)
    assert "Core ML cpu_and_ne" in text and "placement (cpu_only)" in text


class FakeState:
    def __init__(self):
        self.values = {}

    def write_state(self, name, value):
        self.values[name] = np.array(value)

    def read_state(self, name):
        return self.values[name]


class FakeMLModel:
    """coremltools.models.MLModel's predict/make_state API over the numpy evaluator."""

    def __init__(self, path, compute_units=None):
        self.program = load_program(path)

    def make_state(self):
        return FakeState()

    def predict(self, inputs, state=None):
        states = state.values if state is not None else None
        outputs, final = evaluate(self.program, inputs, states)
        if state is not None:
            state.values.update(final)
        return outputs


@pytest.mark.parametrize("kind", ["step", "stateful"])
def test_core_ml_runtime_drives_predict_and_state(models, kind, tmp_path, monkeypatch):
    model = models["cfc_mixed_proj_last"]
    path = _export(model, tmp_path / "m.mlpackage", kind, "float16", True)
    monkeypatch.setattr("coremltools.models.MLModel", FakeMLModel)
    runtime = CoreMLRuntime()
    monkeypatch.setattr(runtime, "placement", lambda path, units: {})

    report = verify(path, model, _inputs(model, True), runtime=runtime)

    assert report.coreml["cpu_only"] == report.outputs


class _Operation:
    def __init__(self, operator_name, device):
        self.operator_name, self.device = operator_name, device


class MLNeuralEngineComputeDevice:
    """Named as Core ML's device classes are: the count is by class name."""


class MLCPUComputeDevice:
    pass


class FakeComputePlan:
    """MLComputePlan's structure and per-operation device usage, for a compiled path."""

    loaded = []

    def __init__(self, functions):
        node = SimpleNamespace
        programs = {name: node(block=node(operations=ops)) for name, ops in functions.items()}
        self.model_structure = node(program=node(functions=programs))

    @classmethod
    def load_from_path(cls, path, compute_units):
        cls.loaded.append((path, compute_units))
        ane, cpu = MLNeuralEngineComputeDevice(), MLCPUComputeDevice()
        main = [_Operation("const", cpu), _Operation("matmul", ane), _Operation("add", ane)]
        step = [_Operation("tanh", cpu), _Operation("custom", None), _Operation("const", None)]
        return cls({"main": main, "step": step})

    def get_compute_device_usage_for_mlprogram_operation(self, operation):
        if operation.device is None:
            return None  # Core ML gives no usage for some operations
        return SimpleNamespace(preferred_compute_device=operation.device)


def test_placement_counts_operations_per_preferred_device(monkeypatch, tmp_path):
    import coremltools as ct

    compiled = []
    compile_model = lambda path: compiled.append(path) or "m.mlmodelc"  # noqa: E731
    monkeypatch.setattr("coremltools.models.utils.compile_model", compile_model)
    monkeypatch.setattr("coremltools.models.compute_plan.MLComputePlan", FakeComputePlan)
    monkeypatch.setattr(FakeComputePlan, "loaded", [])

    counts = CoreMLRuntime().placement(tmp_path / "m.mlpackage", "cpu_and_ne")

    # Constants are not operations that run; an operation without usage is "unknown".
    assert counts == {"MLNeuralEngineComputeDevice": 2, "MLCPUComputeDevice": 1, "unknown": 1}
    assert compiled == [str(tmp_path / "m.mlpackage")]
    assert FakeComputePlan.loaded == [("m.mlmodelc", ct.ComputeUnit.CPU_AND_NE)]


def test_cli_exports_and_verifies_a_checkpoint(models, tmp_path, capsys):
    checkpoint = ncps_mlx.save(models["ltc_autoncp"], tmp_path / "model.safetensors")
    out = tmp_path / "model.mlpackage"

    code = cli.main(
        [
            "export",
            str(checkpoint),
            "--out",
            str(out),
            "--kind",
            "sequence",
            "--seq-len",
            "4",
            "--timespans",
            "--verify",
        ]
    )

    assert code == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "numpy evaluator" in printed
    assert json.loads(json.dumps(read_metadata(out)))["kind"] == "sequence"
