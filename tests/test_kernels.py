"""The fused LTC step (ncps_mlx.kernels) against MLX operations: the primitive alone, the
cell and layer in every calling convention, the build and its fallback."""

import fnmatch
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
import tomllib
from mlx.utils import tree_flatten

from ncps_mlx import LTC, LTCCell, kernels
from ncps_mlx.kernels import build, library
from ncps_mlx.training import make_train_step
from ncps_mlx.wirings import NCP, AutoNCP, FullyConnected
from tests.kernel_checks import (
    CALLS,
    both_paths,
    check_layer_on_both_paths,
    close,
    needs_kernels,
)


@needs_kernels
def test_kernels_build_and_load_here():
    # Where the kernels are tested (Linux, macOS), a silent fallback would leave the
    # fused path untested.
    assert kernels.unavailable_reason() is None


# --- the primitive against the formula, written with MLX operations ------------------


def reference_step(v, cm, numerator, denominator, synapses, unfolds):
    pre, post = synapses["pre"], synapses["post"]
    zeros = mx.zeros(v.shape)
    for _ in range(unfolds):
        a = mx.sigmoid(synapses["sigma"] * (v[:, pre] - synapses["mu"]))
        num = cm * v + numerator + zeros.at[:, post].add(synapses["w_erev"] * a)
        den = cm + denominator + zeros.at[:, post].add(synapses["w"] * a)
        v = num / den
    return v


def random_step(batch=5, neurons=7, count=16, seed=0):
    rng = np.random.default_rng(seed)

    def uniform(low, high, shape):
        return mx.array(rng.uniform(low, high, shape).astype(np.float32))

    per_neuron = [
        uniform(-1, 1, (batch, neurons)),  # v
        uniform(1, 3, (batch, neurons)),  # cm
        uniform(-1, 1, (batch, neurons)),  # numerator
        uniform(0.5, 1, (batch, neurons)),  # denominator
    ]
    synapses = {
        "pre": mx.array(rng.integers(0, neurons, count).astype(np.int32)),
        "post": mx.array(rng.integers(0, neurons, count).astype(np.int32)),
        "sigma": uniform(3, 8, count),
        "mu": uniform(-0.5, 0.8, count),
        "w": uniform(0.01, 1, count),
        "w_erev": uniform(-1, 1, count),
    }
    return per_neuron, synapses


DIFFERENTIABLE = ("sigma", "mu", "w", "w_erev")


def loss_of(step, synapses, unfolds, weights):
    """A scalar of every differentiable input, weighting each output differently."""

    def loss(v, cm, numerator, denominator, *params):
        merged = synapses | dict(zip(DIFFERENTIABLE, params, strict=True))
        return (step(v, cm, numerator, denominator, merged, unfolds) * weights).sum()

    return loss


@needs_kernels
@pytest.mark.parametrize(("batch", "unfolds"), [(5, 3), (1, 1), (32, 6)])
def test_primitive_matches_the_formula_forward_and_backward(batch, unfolds):
    per_neuron, synapses = random_step(batch=batch)
    close(
        kernels.ltc_step(*per_neuron, synapses, unfolds),
        reference_step(*per_neuron, synapses, unfolds),
    )
    args = per_neuron + [synapses[name] for name in DIFFERENTIABLE]
    weights = mx.arange(per_neuron[0].size).reshape(per_neuron[0].shape) / 10
    argnums = list(range(len(args)))
    ours = mx.grad(loss_of(kernels.ltc_step, synapses, unfolds, weights), argnums)(*args)
    theirs = mx.grad(loss_of(reference_step, synapses, unfolds, weights), argnums)(*args)
    for a, b in zip(ours, theirs, strict=True):
        close(a, b, tol=2e-5)
    compiled = mx.compile(mx.grad(loss_of(kernels.ltc_step, synapses, unfolds, weights), argnums))
    for a, b in zip(compiled(*args), ours, strict=True):
        close(a, b, tol=0)


@needs_kernels
def test_primitive_reads_strided_and_broadcast_inputs():
    (v, cm, numerator, denominator), synapses = random_step()
    views = (
        mx.array(np.ascontiguousarray(np.array(v).T)).T,  # a transposed view
        mx.broadcast_to(cm[:1], cm.shape),  # stride 0 along the batch
        numerator,
        mx.broadcast_to(mx.array(0.75), denominator.shape),
    )
    sliced = dict(synapses, sigma=mx.repeat(synapses["sigma"], 2)[::2])
    expected = reference_step(*(mx.array(np.array(a)) for a in views), synapses, 2)
    close(kernels.ltc_step(*views, sliced, 2), expected)


@needs_kernels
def test_primitive_rejects_what_it_cannot_take():
    (v, cm, numerator, denominator), synapses = random_step()
    with pytest.raises(ValueError, match="'cm' must be float32 of the state's shape"):
        kernels.ltc_step(v, cm[:, :3], numerator, denominator, synapses, 2)
    with pytest.raises(ValueError, match="'v' must be float32"):
        kernels.ltc_step(v.astype(mx.float16), cm, numerator, denominator, synapses, 2)
    with pytest.raises(ValueError, match="synapse 'pre' must be"):
        bad = dict(synapses, pre=synapses["pre"].astype(mx.float32))
        kernels.ltc_step(v, cm, numerator, denominator, bad, 2)
    with pytest.raises(ValueError, match="synapse 'mu' must be"):
        kernels.ltc_step(v, cm, numerator, denominator, dict(synapses, mu=synapses["mu"][:3]), 2)
    with pytest.raises(ValueError, match="'unfolds' must be an int >= 1"):
        kernels.ltc_step(v, cm, numerator, denominator, synapses, 0)


# --- the cell and the layer: fused against MLX operations ----------------------------


WIRINGS = {
    "autoncp": lambda: AutoNCP(12, 3, seed=1),
    "dense": lambda: FullyConnected(6),
    "ncp": lambda: NCP(4, 3, 2, 3, 2, 2, 2, seed=5),
}


@needs_kernels
@pytest.mark.parametrize("wiring", WIRINGS)
@pytest.mark.parametrize("call", CALLS)
def test_layer_fused_matches_graph_path(wiring, call):
    check_layer_on_both_paths(LTC(4, WIRINGS[wiring](), ode_unfolds=3), call)


@needs_kernels
def test_mixed_memory_and_compiled_training_match_graph_path():
    def train():
        mx.random.seed(3)
        model = LTC(4, AutoNCP(10, 2, seed=2), mixed_memory=True)
        step = make_train_step(model, optim.Adam(learning_rate=1e-2), nn.losses.mse_loss)
        x, y = mx.random.normal((4, 8, 4)), mx.random.normal((4, 8, 2))
        losses = [step(x, y) for _ in range(3)]
        return losses + [p for _, p in tree_flatten(model.parameters())]

    fused, graph = both_paths(train)
    for a, b in zip(fused, graph, strict=True):
        close(a, b, tol=2e-5)


@needs_kernels
@pytest.mark.parametrize("dt", [0.7, "per-sample"])
def test_fused_stepper_steps_as_the_cell_does(dt):
    cell = LTCCell(AutoNCP(8, 2, seed=0), in_features=3)
    x, h = mx.random.normal((2, 3)), mx.random.normal((2, 8))
    dt = mx.array([[0.3], [1.5]]) if dt == "per-sample" else dt
    stepper = kernels.graph_stepper(cell)
    consts = stepper.derive()
    fused = stepper.step(consts, stepper.project(consts, x), h, dt)
    for a, b in zip(fused, cell(x, h, dt), strict=True):
        close(a, b)


def test_a_cell_derives_the_same_whatever_the_kernels():
    # What a cell computes does not depend on the device, a switch or a module flag.
    cell = LTCCell(AutoNCP(8, 2, seed=0), in_features=3)
    derived = cell.derive()
    with kernels.disabled():
        plain = cell.derive()
    for (key, a), (name, b) in zip(tree_flatten(derived), tree_flatten(plain), strict=True):
        assert key == name
        assert mx.array_equal(a, b) if isinstance(a, mx.array) else a == b, key


def test_adapters_match_the_exact_cell_type():
    class Mine(LTCCell):  # may compute something else: no kernel until it registers one
        pass

    assert kernels.graph_stepper(Mine(FullyConnected(4), 3)) is None
    assert kernels.direct_stepper(Mine(FullyConnected(4), 3)) is None


def test_a_library_numbering_modes_otherwise_is_refused():
    class Library:
        cfc_mode_names = staticmethod(lambda: ["default", "no_gate", "pure"])
        cfc_activation_names = staticmethod(lambda: ["lecun_tanh", "tanh", "relu", "silu", "gelu"])

    with pytest.raises(build.BuildError, match=r"CfC modes \['default', 'no_gate', 'pure'\]"):
        library._check_codes(Library())


def float16_cell():
    cell = LTCCell(FullyConnected(4), 3)
    cell.set_dtype(mx.float16)
    return cell


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: LTCCell(FullyConnected(4), 3, solver="rk4"), "another solver"),
        (float16_cell, "float16"),
    ],
)
def test_fused_step_only_where_it_applies(make, why):
    cell = make()
    assert kernels.graph_stepper(cell) is None, why
    assert kernels.direct_stepper(cell) is None, why


def test_disabled_and_environment_switch_the_kernels_off(monkeypatch):
    cell = LTCCell(FullyConnected(4), 3)
    with kernels.disabled():
        assert kernels.graph_stepper(cell) is None
    monkeypatch.setenv("NCPS_MLX_KERNELS", "0")
    assert kernels.unavailable_reason() == "disabled by NCPS_MLX_KERNELS=0"
    assert kernels.graph_stepper(cell) is None


def test_every_kernel_source_ships_with_the_package():
    # The sources are compiled where the package is installed: a file the wheel leaves out
    # turns into a failed build (and the slow path) for every user.
    root = Path(__file__).parents[1]
    with open(root / "pyproject.toml", "rb") as file:
        shipped = tomllib.load(file)["tool"]["setuptools"]["package-data"]["ncps_mlx"]
    for source in library.SOURCES:
        name = source.relative_to(root / "ncps_mlx").as_posix()
        assert any(fnmatch.fnmatch(name, pattern) for pattern in shipped), name
