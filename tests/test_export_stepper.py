"""PackageController: an exported step or stateful package run one step per call follows
the Controller of the model it was exported from.

The packages are run by the numpy evaluator (Core ML only runs on macOS); the Core ML
branch runs through `CoreMLRuntime` over a stand-in for coremltools' MLModel.
"""

import mlx.core as mx
import numpy as np
import pytest

pytest.importorskip("coremltools")

from ncps_mlx import LTC, CfC, Controller  # noqa: E402
from ncps_mlx.errors import NumericsError  # noqa: E402
from ncps_mlx.export import (  # noqa: E402
    PackageController,
    PackageInfo,
    evaluator,  # noqa: E402
    to_coreml,
)
from ncps_mlx.export.evaluator import PackageFormatError, evaluate, load_program  # noqa: E402
from ncps_mlx.export.verify import CoreMLRuntime  # noqa: E402
from ncps_mlx.wirings import NCP, AutoNCP  # noqa: E402

FP32_ATOL = 1e-5
# The export's documented float16 error (docs/deployment.md, tests/test_export.py): largest
# absolute error over the reference's largest magnitude.
FP16_TOLERANCE = 3e-2
STEPS = 20

# name -> (builder, batch the packages are exported for)
MODELS = {
    "cfc": (lambda: CfC(3, AutoNCP(8, 2)), 1),  # batch 1: unbatched calls
    "ltc": (lambda: LTC(3, NCP(4, 3, 2, 3, 2, 2, 2)), 2),  # per-sample timespans
    "cfc_mixed": (lambda: CfC(3, 6, backbone_units=8, mixed_memory=True), 2),  # state (h, c)
}
# Stateful packages hold their state in float16 Core ML state tensors: float16 only.
CASES = [("step", "float32"), ("step", "float16"), ("stateful", "float16")]


@pytest.fixture(scope="module")
def models():
    built = {}
    for index, (name, (build, _)) in enumerate(MODELS.items()):
        mx.random.seed(index)
        built[name] = build()
    return built


@pytest.fixture(scope="module")
def packages(models, tmp_path_factory):
    """Every case of every model, exported with timespans once for the module."""
    folder = tmp_path_factory.mktemp("packages")
    return {
        (name, kind, precision): to_coreml(
            models[name],
            folder / f"{name}_{kind}_{precision}.mlpackage",
            kind=kind,
            precision=precision,
            batch_size=MODELS[name][1],
            timespans=True,
        )
        for name in MODELS
        for kind, precision in CASES
    }


@pytest.fixture(scope="module")
def untimed(models, tmp_path_factory):
    """A CfC step package exported without timespans (every step lasts 1)."""
    path = tmp_path_factory.mktemp("untimed") / "m.mlpackage"
    return to_coreml(models["cfc"], path, precision="float32")


def _rollout(stepper, batch: int, size: int, seed: int = 0) -> np.ndarray:
    """Outputs of STEPS calls with random inputs and varying timespans: unbatched for a
    batch of 1, one timespan per sample otherwise."""
    rng = np.random.default_rng(seed)
    ys = []
    for _ in range(STEPS):
        if batch == 1:
            x, dt = rng.normal(size=size), float(rng.uniform(0.2, 2.0))
        else:
            x, dt = rng.normal(size=(batch, size)), rng.uniform(0.2, 2.0, size=batch)
        ys.append(stepper(x, timespan=dt))
    return np.stack(ys)


def _assert_close(value, reference, precision: str) -> None:
    value, reference = np.asarray(value), np.asarray(reference)
    assert value.shape == reference.shape
    if precision == "float32":
        np.testing.assert_allclose(value, reference, rtol=0, atol=FP32_ATOL)
    else:
        error = np.abs(value - reference).max() / np.abs(reference).max()
        assert error < FP16_TOLERANCE, error


@pytest.mark.parametrize("kind,precision", CASES)
@pytest.mark.parametrize("name", list(MODELS))
def test_the_package_follows_the_controller_of_its_model(models, packages, name, kind, precision):
    model, batch = models[name], MODELS[name][1]
    package = PackageController(packages[name, kind, precision], runtime="evaluator")

    produced = _rollout(package, batch, model.input_size)
    expected = _rollout(Controller(model), batch, model.input_size)

    assert produced.dtype == np.float32
    assert produced.shape == (STEPS, *([batch] if batch > 1 else []), model.output_size)
    _assert_close(produced, expected, precision)
    states = package.state if model.mixed_memory else (package.state,)
    for state in states:
        assert state.dtype == np.float32
        assert state.shape == ((model.state_size,) if batch == 1 else (batch, model.state_size))


def test_unbatched_calls_of_a_batch_one_package_return_one_sample(models, packages):
    package = PackageController(packages["cfc", "step", "float32"])
    y = package(np.zeros(3, np.float32))
    assert y.shape == (2,) and package.state.shape == (8,)
    y = package(np.zeros((1, 3)))  # the batched form of the same batch
    assert y.shape == (1, 2) and package.state.shape == (1, 8)


def test_info_describes_the_package(models, packages):
    info = PackageController(packages["ltc", "stateful", "float16"]).info
    assert info == PackageInfo(
        kind="stateful",
        precision="float16",
        batch_size=2,
        input_size=3,
        output_size=2,
        state_size=models["ltc"].state_size,
        mixed_memory=False,
        timespans=True,
        positive_timespans=True,
        timespan_range=(0.01, 1000.0),
        model=models["ltc"].get_config(),
    )
    mixed = PackageController(packages["cfc_mixed", "step", "float32"]).info
    assert mixed.mixed_memory and not mixed.positive_timespans and mixed.timespan_range is None


@pytest.mark.parametrize("kind,precision", CASES)
def test_reset_starts_again_from_zeros(models, packages, kind, precision):
    package = PackageController(packages["ltc", kind, precision])
    first = _rollout(package, 2, 3)
    assert package.state is not None

    package.reset()

    assert package.state is None
    np.testing.assert_array_equal(_rollout(package, 2, 3), first)


@pytest.mark.parametrize("kind,precision", CASES)
def test_reset_with_a_state_starts_from_it(models, packages, kind, precision):
    model = models["cfc_mixed"]
    package = PackageController(packages["cfc_mixed", kind, precision])
    controller = Controller(model)
    rng = np.random.default_rng(3)
    state = tuple(rng.uniform(-0.5, 0.5, size=(2, model.state_size)) for _ in range(2))
    _rollout(package, 2, 3, seed=1)  # somewhere else first

    package.reset(state)
    controller.reset(state)

    stored = package.state
    for part, given in zip(stored, state, strict=True):
        _assert_close(part, given, precision)
    _assert_close(_rollout(package, 2, 3), _rollout(controller, 2, 3), precision)


def test_reset_takes_an_unbatched_state_for_a_batch_one_package(models, packages):
    package = PackageController(packages["cfc", "step", "float32"])
    controller = Controller(models["cfc"])
    state = np.linspace(-0.5, 0.5, 8)
    package.reset(state)
    controller.reset(state)
    np.testing.assert_array_equal(package.state, state.astype(np.float32))
    np.testing.assert_allclose(package(np.ones(3)), controller(np.ones(3)), atol=FP32_ATOL)


def test_the_state_property_is_a_copy(packages):
    package = PackageController(packages["cfc", "step", "float32"])
    package(np.ones(3))
    package.state[:] = 100.0
    assert np.abs(package.state).max() < 100.0


def test_a_float16_package_clamps_timespans_to_its_range(packages):
    def output(timespan):
        package = PackageController(packages["cfc", "step", "float16"])
        return package(np.ones(3), timespan=timespan)

    high = PackageController(packages["cfc", "step", "float16"]).info.timespan_range[1]
    np.testing.assert_array_equal(output(high * 5), output(high))
    assert not np.array_equal(output(1.0), output(high))


def test_a_package_without_timespans_takes_only_the_default(models, untimed):
    package = PackageController(untimed)
    controller = Controller(models["cfc"])
    assert not package.info.timespans
    for timespan in (1.0, 1, np.ones(1)):
        np.testing.assert_allclose(package(np.ones(3), timespan), controller(np.ones(3)), atol=1e-5)
    before = package.state

    with pytest.raises(ValueError, match=r"exported without timespans .*timespans=True") as error:
        package(np.ones(3), timespan=0.5)

    assert str(error.value).endswith("#export-timespans.")
    np.testing.assert_array_equal(package.state, before)


def test_a_sequence_package_is_refused(models, tmp_path):
    path = to_coreml(models["cfc"], tmp_path / "q.mlpackage", kind="sequence", seq_len=4)
    with pytest.raises(
        ValueError, match=r"'sequence' package.*\['step', 'stateful'\].*kind='step'"
    ):
        PackageController(path)


def test_a_missing_or_broken_package_is_refused(tmp_path):
    with pytest.raises(PackageFormatError, match="no package at .*to_coreml") as error:
        PackageController(tmp_path / "missing.mlpackage")
    assert str(error.value).endswith("#package-format.")
    (tmp_path / "empty.mlpackage").mkdir()
    with pytest.raises(PackageFormatError, match="no Manifest.json"):
        PackageController(tmp_path / "empty.mlpackage")


@pytest.mark.parametrize(
    "x,timespan,message",
    [
        (
            np.ones(4),
            1.0,
            r"'x' must have shape \(3,\) or \(1, 3\) .*batch of 1.* got shape \(4,\)",
        ),
        (np.ones((2, 3)), 1.0, r"'x' must have shape \(3,\) or \(1, 3\)"),
        ("abc", 1.0, "'x' must be a numeric"),
        (np.array([1.0, np.nan, 0.0]), 1.0, r"'x' must be finite but holds nan at \[1\]"),
        (np.array([np.inf, 0.0, 0.0]), 1.0, "'x' must be finite but holds inf"),
        (np.ones(3), -1.0, "'timespan' must be finite and >= 0"),
        (np.ones(3), np.nan, "'timespan' must be finite"),
        (np.ones(3), np.ones(2), r"'timespan' must be a number or have shape \(1,\)"),
    ],
)
def test_bad_calls_are_refused_and_keep_the_state(packages, x, timespan, message):
    package = PackageController(packages["cfc", "step", "float32"])
    package(np.ones(3))
    before = package.state

    with pytest.raises(ValueError, match=message):
        package(x, timespan=timespan)

    np.testing.assert_array_equal(package.state, before)


def test_batched_packages_refuse_other_batches_and_zero_ltc_timespans(packages):
    package = PackageController(packages["ltc", "step", "float32"])
    with pytest.raises(ValueError, match=r"'x' must have shape \(2, 3\) \(.*batch of 2"):
        package(np.ones(3))
    with pytest.raises(ValueError, match=r"'x' must have shape \(2, 3\)"):
        package(np.ones((3, 3)))
    with pytest.raises(ValueError, match="'timespan' must be finite and > 0"):
        package(np.ones((2, 3)), timespan=np.array([1.0, 0.0]))
    assert package(np.ones((2, 3)), timespan=np.array([1.0, 0.5])).shape == (2, 2)


def test_a_float16_package_refuses_inputs_it_cannot_hold(packages):
    package = PackageController(packages["cfc", "step", "float16"])
    with pytest.raises(ValueError, match="'x' holds values beyond 65504.*precision='float32'"):
        package(np.array([1e5, 0.0, 0.0]))
    package(np.zeros((1, 3)))
    before = package.state
    with pytest.raises(ValueError, match="the state 'h' holds values beyond 65504"):
        package.reset(np.full(8, 1e6))
    np.testing.assert_array_equal(package.state, before)  # batched as it was


@pytest.mark.parametrize(
    "state,message",
    [
        (np.zeros((2, 6)), r"must be a pair \(h, c\)"),
        ((np.zeros((2, 5)), np.zeros((2, 6))), r"must have shape \(2, 6\) .*got \(2, 5\)"),
        ((np.zeros(6), np.zeros(6)), r"must have shape \(2, 6\)"),
        ((np.zeros((2, 6)), np.full((2, 6), np.nan)), "the state 'c' must be finite"),
    ],
)
def test_bad_states_are_refused(packages, state, message):
    package = PackageController(packages["cfc_mixed", "step", "float32"])
    with pytest.raises(ValueError, match=message):
        package.reset(state)
    assert package.state is None


@pytest.mark.parametrize(
    "options,message",
    [
        ({"runtime": "coreml"}, "'runtime' must be None .*'evaluator' or a CoreMLRuntime"),
        ({"runtime": object()}, "'runtime' must be None"),
        ({"compute_units": "gpu"}, r"unknown compute_units 'gpu'; choose one of \['cpu_only'"),
    ],
)
def test_bad_options_are_refused(packages, options, message):
    with pytest.raises(ValueError, match=message):
        PackageController(packages["cfc", "step", "float32"], **options)


def test_the_evaluator_runs_the_package_off_the_mac(packages, monkeypatch):
    monkeypatch.setattr(CoreMLRuntime, "available", staticmethod(lambda: False))
    assert PackageController(packages["cfc", "step", "float32"]).runtime_name == "evaluator"


def test_the_program_is_parsed_once(packages, monkeypatch):
    parsed = []
    load = evaluator.load_program
    monkeypatch.setattr(evaluator, "load_program", lambda path: parsed.append(path) or load(path))
    package = PackageController(packages["ltc", "stateful", "float16"], runtime="evaluator")
    _rollout(package, 2, 3)
    package.reset()
    _rollout(package, 2, 3)
    assert len(parsed) == 1


class FakeState:
    def __init__(self):
        self.values = {}

    def write_state(self, name, value):
        FakeMLModel.fed.add(value.dtype)
        self.values[name] = np.array(value)

    def read_state(self, name):
        return self.values[name]


class FakeMLModel:
    """coremltools.models.MLModel's predict/make_state API over the numpy evaluator: a
    state is written once, then kept by the model, as Core ML's is."""

    made = []
    fed = set()  # dtypes of the inputs and states given to Core ML

    def __init__(self, path, compute_units=None):
        FakeMLModel.made.append(compute_units)
        self.program = load_program(path)

    def make_state(self):
        return FakeState()

    def predict(self, inputs, state=None):
        FakeMLModel.fed |= {value.dtype for value in inputs.values()}
        outputs, final = evaluate(self.program, inputs, state.values if state else None)
        if state is not None:
            state.values.update(final)
        return outputs


@pytest.fixture
def core_ml(monkeypatch):
    """Core ML as on a Mac: CoreMLRuntime available, its MLModel the stand-in above."""
    monkeypatch.setattr(CoreMLRuntime, "available", staticmethod(lambda: True))
    monkeypatch.setattr("coremltools.models.MLModel", FakeMLModel)
    monkeypatch.setattr(FakeMLModel, "made", [])
    monkeypatch.setattr(FakeMLModel, "fed", set())
    return FakeMLModel.made


@pytest.mark.parametrize("kind,precision", CASES)
def test_on_macos_core_ml_runs_the_package(packages, core_ml, kind, precision):
    import coremltools as ct

    path = packages["cfc_mixed", kind, precision]
    package = PackageController(path, compute_units="cpu_only")
    evaluated = PackageController(path, runtime="evaluator")
    assert package.runtime_name == "coreml" and evaluated.runtime_name == "evaluator"
    assert core_ml == [ct.ComputeUnit.CPU_ONLY]

    np.testing.assert_array_equal(_rollout(package, 2, 3), _rollout(evaluated, 2, 3))
    state = tuple(np.full((2, 6), value) for value in (0.25, -0.25))
    package.reset(state)
    evaluated.reset(state)
    np.testing.assert_array_equal(_rollout(package, 2, 3), _rollout(evaluated, 2, 3))
    for part, expected in zip(package.state, evaluated.state, strict=True):
        np.testing.assert_array_equal(part, expected)
    # A stateful package gets a fresh Core ML state at reset: the model is loaded again.
    assert len(core_ml) == (2 if kind == "stateful" else 1)
    assert FakeMLModel.fed == {np.dtype(precision)}  # fed in the package's precision


class NanOnceRuntime:
    """A runtime whose predictions are the evaluator's but for one call, whose output and
    state are nan; for a stateful package the state it keeps takes that step, as Core ML's
    would."""

    def __init__(self, bad_call: int):
        self.bad_call, self.calls, self.predictors = bad_call, 0, 0

    def predictor(self, path, compute_units):
        program = load_program(path)
        self.predictors += 1
        kept = {}

        def predict(inputs, states):
            if states and not kept:
                kept.update(states)
            outputs, final = evaluate(program, inputs, kept or None)
            self.calls += 1
            if self.calls == self.bad_call:
                outputs = {name: np.full_like(value, np.nan) for name, value in outputs.items()}
                final = {name: np.full_like(value, np.nan) for name, value in final.items()}
            kept.update(final)
            return outputs, final

        return predict


@pytest.mark.parametrize("kind", ["step", "stateful"])
def test_nan_results_raise_and_keep_the_state(packages, kind):
    runtime = NanOnceRuntime(bad_call=3)
    path = packages["ltc", kind, "float16"]
    package = PackageController(path, runtime=runtime)
    reference = PackageController(path, runtime="evaluator")
    x = np.ones((2, 3))
    for _ in range(2):
        package(x), reference(x)
    before = package.state

    with pytest.raises(NumericsError, match="gave nan or inf in the output y and the state h"):
        package(x)

    np.testing.assert_array_equal(package.state, before)
    # The next call starts from the state before the failed one, in Core ML too.
    np.testing.assert_array_equal(package(x), reference(x))
    assert runtime.predictors == (2 if kind == "stateful" else 1)


def test_the_docstring_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = to_coreml(CfC(3, AutoNCP(8, 2)), "policy.mlpackage", timespans=True)
    controller = PackageController(path)
    action = controller(np.zeros(3), timespan=0.5)
    assert action.shape == (2,) and action.dtype == np.float32
    controller.reset()  # back to zeros
    assert controller.state is None
